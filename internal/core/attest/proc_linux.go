package attest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Attestation reads every file through a descriptor of the /proc/<pid>
// directory opened first. That directory stays bound to the process it was
// opened for (the kernel keeps its struct pid, which is why
// pidfd_send_signal accepts such a descriptor): once the process is reaped,
// lookups through it fail with ENOENT even if the pid number is given to a
// new process. Only the open itself can race with pid reuse, which the
// start time check against Peer.StartTime catches.

// handshakeProcess reads, as the caller's connection is accepted, its
// start time and the executable it runs, from the host's /proc. The
// executable is what attestation holds the connection to: a process may
// connect, hand the connection to a child and then execute a binary that a
// rule trusts, and the child must not be credited with that binary.
func handshakeProcess(pid int32) (connectInfo, error) {
	if pid <= 0 {
		return connectInfo{}, errors.New("the kernel reported no pid for the caller: is it in a pid namespace this server cannot see?")
	}
	dirPath := DefaultProcRoot + "/" + strconv.FormatInt(int64(pid), 10)
	dir, err := unix.Open(dirPath, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if isGone(err) {
		return connectInfo{}, gone("process %d exited before its connection was accepted", pid)
	}
	if err != nil {
		return connectInfo{}, fmt.Errorf("reading process %d as its connection is accepted: opening %s: %w", pid, dirPath, err)
	}
	defer unix.Close(dir)
	bufp := getBuf()
	defer putBuf(bufp)
	st, err := readStat(dir, dirPath, bufp)
	if isGone(err) || err == nil && st.exited() {
		return connectInfo{}, gone("process %d exited before its connection was accepted", pid)
	}
	if err != nil {
		return connectInfo{}, fmt.Errorf("reading the start time of process %d: %w", pid, err)
	}
	info := connectInfo{start: st.startTime}
	exe, err := statExe(dir)
	switch {
	case err == nil:
		info.exe = ExeID{Dev: exe.dev, Ino: exe.ino}
	case isGone(err):
		// A zombie has no exe link.
		return connectInfo{}, gone("process %d exited before its connection was accepted", pid)
	case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM):
		// Another user's process to an agent that is not root: its
		// attestation gets no path or sha256 either.
		info.exeHidden = true
	default:
		return connectInfo{}, fmt.Errorf("reading process %d as its connection is accepted: inspecting %s/exe: %w", pid, dirPath, err)
	}
	return info, nil
}

func (u *Unix) attest(ctx context.Context, p Peer) (Result, error) {
	m := p.memo
	if m == nil {
		return u.attestFull(ctx, p, nil)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if res, ok := recheck(m); ok {
		return res, nil
	}
	m.forgetLocked()
	return u.attestFull(ctx, p, m)
}

// recheck answers from the connection's memo when the process still runs
// the binary it ran and with the uid, gid and groups it had: a stat of its
// exe and a read of its status, through the directory held since then.
func recheck(m *connMemo) (Result, bool) {
	if m.dir < 0 || m.closed || time.Now().After(m.expires) {
		return Result{}, false
	}
	exe, err := statExe(m.dir)
	if err != nil || exe != m.exe {
		return Result{}, false
	}
	bufp := getBuf()
	defer putBuf(bufp)
	b, err := readFileAt(m.dir, "status", bufp)
	if err != nil {
		return Result{}, false
	}
	st, err := parseStatus(b)
	if err != nil || st != m.status {
		return Result{}, false
	}
	return m.res, true
}

// attestFull attests p from scratch; with m, a success is remembered there
// together with the open /proc/<pid> directory.
func (u *Unix) attestFull(ctx context.Context, p Peer, m *connMemo) (Result, error) {
	if p.PID <= 0 {
		return Result{}, fmt.Errorf("attesting pid %d: the kernel reported no pid for the caller", p.PID)
	}
	dirPath := u.procRoot + "/" + strconv.FormatInt(int64(p.PID), 10)
	dir, err := unix.Open(dirPath, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if isGone(err) {
		return Result{}, gone("process %d exited before attestation", p.PID)
	}
	if err != nil {
		return Result{}, fmt.Errorf("attesting process %d: opening %s: %w", p.PID, dirPath, err)
	}
	defer func() {
		if dir >= 0 {
			unix.Close(dir)
		}
	}()
	bufp := getBuf()
	defer putBuf(bufp)

	first, err := readStat(dir, dirPath, bufp)
	if isGone(err) {
		return Result{}, gone("process %d exited before attestation", p.PID)
	}
	if err != nil {
		return Result{}, fmt.Errorf("attesting process %d: %w", p.PID, err)
	}
	if first.exited() {
		return Result{}, gone("process %d exited before attestation", p.PID)
	}
	if p.StartTime != 0 && first.startTime != p.StartTime {
		return Result{}, gone("pid %d now belongs to another process: it started at clock tick %d, the caller at %d", p.PID, first.startTime, p.StartTime)
	}

	// The executable. ENOENT means the process is a zombie by now (the
	// final check says so); EACCES that this agent may not look (another
	// user's process while the agent is not root): then no path or sha256.
	exe, err := statExe(dir)
	hasExe := err == nil
	switch {
	case err == nil, errors.Is(err, unix.ENOENT):
	case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM):
		u.debug(ctx, "cannot inspect the executable; path and sha256 omitted", p.PID, err)
	default:
		return Result{}, fmt.Errorf("attesting process %d: inspecting %s/exe: %w", p.PID, dirPath, err)
	}
	// The connection belongs to the program that opened it. One that was
	// executed since may be running for a child that holds the connection.
	if hasExe && p.Exe != (ExeID{}) && (exe.dev != p.Exe.Dev || exe.ino != p.Exe.Ino) {
		return Result{}, gone("process %d executed another program since it connected: a connection is attested as the program that opened it, so connect again from the program that asks", p.PID)
	}
	if hasExe && p.exeHidden {
		u.debug(ctx, "the executable could not be inspected when the process connected; path and sha256 omitted", p.PID, nil)
		hasExe = false
	}
	var path string
	if hasExe {
		path, err = readExeLink(dir, bufp)
		switch {
		case err == nil:
		case errors.Is(err, unix.ENOENT), errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM):
			hasExe = false
		default:
			return Result{}, fmt.Errorf("attesting process %d: reading %s/exe: %w", p.PID, dirPath, err)
		}
	}

	b, err := readFileAt(dir, "status", bufp)
	if isGone(err) {
		return Result{}, gone("process %d exited during attestation", p.PID)
	}
	if err != nil {
		return Result{}, fmt.Errorf("attesting process %d: reading %s/status: %w", p.PID, dirPath, err)
	}
	status, err := parseStatus(b)
	if err != nil {
		return Result{}, fmt.Errorf("attesting process %d: parsing %s/status: %w", p.PID, dirPath, err)
	}
	if status.euid != p.UID {
		return Result{}, gone("process %d now runs as uid %d, not as uid %d it connected with", p.PID, status.euid, p.UID)
	}
	if status.egid != p.GID {
		return Result{}, gone("process %d now runs as gid %d, not as gid %d it connected with", p.PID, status.egid, p.GID)
	}

	var sum string
	if hasExe {
		// The kernel marks a binary unlinked since exec " (deleted)": the
		// path names another file now, or none. (A file really named so
		// loses its path too; that errs on the safe side.)
		if strings.HasSuffix(path, " (deleted)") {
			u.debug(ctx, "executable deleted or replaced since the process started; path and sha256 omitted", p.PID, nil)
			hasExe = false
		} else if !filepath.IsAbs(path) {
			u.debug(ctx, "executable path is not absolute; path and sha256 omitted", p.PID, nil)
			hasExe = false
		}
	}
	if hasExe {
		sum, err = u.sha256(ctx, p.PID, dirPath+"/exe", exe)
		if err != nil {
			return Result{}, err
		}
	}
	userName, err := u.users.get(p.UID)
	if err != nil {
		u.debug(ctx, "looking up the user name failed; user omitted", p.PID, err)
	}
	groupName, err := u.groups.get(p.GID)
	if err != nil {
		u.debug(ctx, "looking up the group name failed; group omitted", p.PID, err)
	}

	if u.midway != nil {
		u.midway()
	}

	// Everything above must describe the process that connected: it still
	// runs, and runs the binary it ran at the start. Through dir its start
	// time cannot change (see the top of this file), so the check after is
	// about exit and exec: the exe link, which the exec check reads anyway,
	// is gone once the process exits (a zombie has none). That spares a
	// second read of stat, a fifth of the cost of a call. Without an exe
	// link to look at, stat is read again.
	if exe != (fileKey{}) {
		now, err := statExe(dir)
		switch {
		case isGone(err):
			return Result{}, gone("process %d exited during attestation", p.PID)
		case err != nil:
			return Result{}, fmt.Errorf("attesting process %d: inspecting %s/exe: %w", p.PID, dirPath, err)
		case now.dev != exe.dev || now.ino != exe.ino:
			return Result{}, gone("process %d executed another program during attestation", p.PID)
		case now.mtime != exe.mtime || now.size != exe.size:
			return Result{}, gone("the executable of process %d was modified during attestation", p.PID)
		}
	} else {
		last, err := readStat(dir, dirPath, bufp)
		if isGone(err) || err == nil && last.exited() {
			return Result{}, gone("process %d exited during attestation", p.PID)
		}
		if err != nil {
			return Result{}, fmt.Errorf("attesting process %d: %w", p.PID, err)
		}
		if last.startTime != first.startTime {
			return Result{}, gone("process %d was replaced during attestation: pid %d now belongs to a process started at clock tick %d", p.PID, p.PID, last.startTime)
		}
	}

	attrs := make(map[string]string, len(attrOrder)+1)
	attrs[AttrUnixAttested] = "true"
	attrs[AttrPID] = strconv.FormatInt(int64(p.PID), 10)
	attrs[AttrUID] = strconv.FormatUint(uint64(p.UID), 10)
	attrs[AttrGID] = strconv.FormatUint(uint64(p.GID), 10)
	if hasExe {
		attrs[AttrPath] = path
		if sum != "" {
			attrs[AttrSHA256] = sum
		}
	}
	if userName != "" {
		attrs[AttrUser] = userName
	}
	if groupName != "" {
		attrs[AttrGroup] = groupName
	}
	if status.groups != "" {
		attrs[AttrSupplementaryGIDs] = status.groups
	}
	res := Result{Attributes: attrs, Key: attestKey(p.PID, first.startTime, exe, attrs)}
	// Remember only what a recheck can vouch for: a process with an exe
	// link to stat.
	if m != nil && !m.closed && exe != (fileKey{}) {
		m.dir, dir = dir, -1
		m.res, m.exe, m.status, m.expires = res, exe, status, time.Now().Add(memoTTL)
	}
	return res, nil
}

// errExeChanged: /proc/<pid>/exe no longer is the file that was stat'ed.
var errExeChanged = errors.New("the executable changed")

// sha256 returns the hex digest of the executable k, from the cache when
// it can. "" without error means the binary is too large to hash.
func (u *Unix) sha256(ctx context.Context, pid int32, exePath string, k fileKey) (string, error) {
	if sum, ok := u.hashes.get(k); ok {
		return sum, nil
	}
	if u.maxHash < 0 || k.size > u.maxHash {
		if u.log.Enabled(ctx, slog.LevelDebug) {
			u.log.Debug("executable too large to hash; sha256 omitted", "pid", pid, "bytes", k.size, "max_bytes", u.maxHash)
		}
		return "", nil
	}
	// A caller that is gone already starts no hashing (select below would
	// pick the finished hash or the cancellation at random).
	if ctx.Err() != nil {
		return "", fmt.Errorf("attesting process %d: hashing its executable: %w", pid, context.Cause(ctx))
	}
	// Callers hashing the same file wait for the first; if its process
	// moved on before the file was opened, they hash through their own.
	for attempt := 0; ; attempt++ {
		ch := u.hashes.flight.DoChan(k.String(), func() (any, error) { return u.hashFile(exePath, k) })
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("attesting process %d: hashing its executable: %w", pid, context.Cause(ctx))
		case r := <-ch:
			switch {
			case r.Err == nil:
				return r.Val.(string), nil
			case !errors.Is(r.Err, errExeChanged):
				return "", fmt.Errorf("attesting process %d: %w", pid, r.Err)
			case attempt == 2:
				return "", gone("process %d executed another program during attestation", pid)
			}
		}
	}
}

func (u *Unix) hashFile(exePath string, k fileKey) (string, error) {
	start := time.Now()
	f, err := os.Open(exePath)
	if isGone(err) {
		return "", errExeChanged
	}
	if err != nil {
		return "", fmt.Errorf("hashing the executable: %w", err)
	}
	defer f.Close()
	if before, err := fileKeyOf(f); err != nil {
		return "", fmt.Errorf("hashing the executable: %w", err)
	} else if before != k {
		return "", errExeChanged
	}
	h := sha256.New()
	if _, err := io.CopyBuffer(h, f, make([]byte, 128<<10)); err != nil {
		return "", fmt.Errorf("hashing the executable: %w", err)
	}
	// A running binary cannot be written (ETXTBSY), but check: a digest of
	// a file that changed while it was read describes no version of it.
	if after, err := fileKeyOf(f); err != nil {
		return "", fmt.Errorf("hashing the executable: %w", err)
	} else if after.mtime != k.mtime || after.size != k.size || after.ctime != k.ctime {
		return "", errors.New("hashing the executable: it was modified while being read")
	}
	sum := hex.EncodeToString(h.Sum(nil))
	u.hashes.put(k, sum)
	u.log.Debug("hashed executable", "bytes", k.size, "took", time.Since(start))
	return sum, nil
}

func (u *Unix) debug(ctx context.Context, msg string, pid int32, err error) {
	if !u.log.Enabled(ctx, slog.LevelDebug) {
		return
	}
	if err != nil {
		u.log.Debug(msg, "pid", pid, "error", err)
		return
	}
	u.log.Debug(msg, "pid", pid)
}

func fileKeyOf(f *os.File) (fileKey, error) {
	fi, err := f.Stat()
	if err != nil {
		return fileKey{}, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileKey{}, fmt.Errorf("no stat data for %s", f.Name())
	}
	return fileKey{
		dev:   st.Dev,
		ino:   st.Ino,
		mtime: st.Mtim.Nano(),
		ctime: st.Ctim.Nano(),
		size:  st.Size,
	}, nil
}

// statExe stats the executable through /proc/<pid>/exe, which reaches the
// binary the process runs even when it was deleted.
func statExe(dir int) (fileKey, error) {
	var st unix.Stat_t
	for {
		err := unix.Fstatat(dir, "exe", &st, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fileKey{}, err
		}
		break
	}
	return fileKey{
		dev:   st.Dev,
		ino:   st.Ino,
		mtime: st.Mtim.Nano(),
		ctime: st.Ctim.Nano(),
		size:  st.Size,
	}, nil
}

func readExeLink(dir int, bufp *[]byte) (string, error) {
	b := (*bufp)[:cap(*bufp)]
	for {
		n, err := unix.Readlinkat(dir, "exe", b)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return "", err
		}
		if n < len(b) {
			return string(b[:n]), nil
		}
		if len(b) >= maxProcFile {
			return "", unix.ENAMETOOLONG
		}
		b = make([]byte, 2*len(b))
		*bufp = b
	}
}

func readStat(dir int, dirPath string, bufp *[]byte) (procStat, error) {
	b, err := readFileAt(dir, "stat", bufp)
	if err != nil {
		return procStat{}, fmt.Errorf("reading %s/stat: %w", dirPath, err)
	}
	st, err := parseStat(b)
	if err != nil {
		return procStat{}, fmt.Errorf("parsing %s/stat: %w", dirPath, err)
	}
	return st, nil
}

// isGone reports whether err means the process is no longer there: its
// /proc directory is gone (ENOENT) or it died while being read (ESRCH).
func isGone(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH)
}

// maxProcFile bounds reads of /proc files; status grows with the number of
// supplementary groups (at most 65536).
const maxProcFile = 1 << 20

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

func getBuf() *[]byte { return bufPool.Get().(*[]byte) }

func putBuf(b *[]byte) {
	if cap(*b) <= 64<<10 {
		bufPool.Put(b)
	}
}

// readFileAt reads a small file relative to dir into *bufp, growing it.
// procfs files report size 0, so read to EOF.
func readFileAt(dir int, name string, bufp *[]byte) ([]byte, error) {
	var (
		fd  int
		err error
	)
	for {
		fd, err = unix.Openat(dir, name, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	b := (*bufp)[:0]
	for {
		if len(b) == cap(b) {
			if cap(b) >= maxProcFile {
				return nil, fmt.Errorf("larger than %d bytes", maxProcFile)
			}
			nb := make([]byte, len(b), 2*cap(b))
			copy(nb, b)
			b = nb
		}
		n, err := unix.Read(fd, b[len(b):cap(b)])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		if n == 0 {
			break
		}
		b = b[:len(b)+n]
	}
	*bufp = b
	return b, nil
}
