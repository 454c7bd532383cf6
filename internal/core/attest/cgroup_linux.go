package attest

import (
	"fmt"
	"strconv"

	"golang.org/x/sys/unix"
)

// readCgroups reads /proc/<pid>/cgroup of p under procRoot. The process is
// checked against p.StartTime first, through the same directory descriptor,
// so a pid given to another process since the connection was accepted is
// never read.
func readCgroups(procRoot string, p Peer) (Cgroups, error) {
	if p.PID <= 0 {
		return nil, fmt.Errorf("reading the cgroups of pid %d: the kernel reported no pid for the caller", p.PID)
	}
	dirPath := procRoot + "/" + strconv.FormatInt(int64(p.PID), 10)
	dir, err := unix.Open(dirPath, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if isGone(err) {
		return nil, gone("process %d exited before attestation", p.PID)
	}
	if err != nil {
		return nil, fmt.Errorf("reading the cgroups of process %d: opening %s: %w", p.PID, dirPath, err)
	}
	defer unix.Close(dir)
	bufp := getBuf()
	defer putBuf(bufp)
	st, err := readStat(dir, dirPath, bufp)
	if isGone(err) {
		return nil, gone("process %d exited before attestation", p.PID)
	}
	if err != nil {
		return nil, fmt.Errorf("reading the cgroups of process %d: %w", p.PID, err)
	}
	if st.exited() {
		return nil, gone("process %d exited before attestation", p.PID)
	}
	if p.StartTime != 0 && st.startTime != p.StartTime {
		return nil, gone("pid %d now belongs to another process: it started at clock tick %d, the caller at %d", p.PID, st.startTime, p.StartTime)
	}
	b, err := readFileAt(dir, "cgroup", bufp)
	if isGone(err) {
		return nil, gone("process %d exited during attestation", p.PID)
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s/cgroup: %w", dirPath, err)
	}
	cg, err := ParseCgroups(b)
	if err != nil {
		return nil, fmt.Errorf("parsing %s/cgroup: %w", dirPath, err)
	}
	return cg, nil
}
