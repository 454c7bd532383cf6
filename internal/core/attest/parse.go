package attest

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strconv"
)

// procStat is what Attest needs from /proc/<pid>/stat.
type procStat struct {
	state     byte   // field 3: R, S, D, Z, X, ...
	startTime uint64 // field 22: clock ticks after boot
}

// exited reports whether the process is dead but not reaped (Z) or dying (X, x).
func (s procStat) exited() bool { return s.state == 'Z' || s.state == 'X' || s.state == 'x' }

// startTimeField is the position of starttime in /proc/<pid>/stat (proc(5)).
const startTimeField = 22

// parseStat parses /proc/<pid>/stat. Field 2 is the command name in
// parentheses, which the process chooses and may hold spaces, ')' and
// newlines; the kernel does not escape it, so the fields after it start
// after the LAST ')'. The rest are single-space separated.
func parseStat(b []byte) (procStat, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, errors.New("no ')' after the command name")
	}
	rest := b[i+1:]
	rest = bytes.TrimSuffix(rest, []byte{'\n'})
	if len(rest) == 0 || rest[0] != ' ' {
		return procStat{}, errors.New("no fields after the command name")
	}
	rest = rest[1:]
	var st procStat
	for field := 3; field < startTimeField; field++ {
		j := bytes.IndexByte(rest, ' ')
		if j < 0 {
			return procStat{}, fmt.Errorf("%d fields, want at least %d", field, startTimeField)
		}
		if field == 3 {
			if j != 1 {
				return procStat{}, fmt.Errorf("process state %q is not one letter", rest[:j])
			}
			st.state = rest[0]
		}
		rest = rest[j+1:]
	}
	if j := bytes.IndexByte(rest, ' '); j >= 0 {
		rest = rest[:j]
	}
	start, err := strconv.ParseUint(string(rest), 10, 64)
	if err != nil {
		return procStat{}, fmt.Errorf("start time %q is not a number", rest)
	}
	st.startTime = start
	return st, nil
}

// procStatus is what Attest needs from /proc/<pid>/status.
type procStatus struct {
	ruid, euid uint32
	rgid, egid uint32
	// groups is the Groups: line as sorted, deduplicated, comma-separated
	// decimal gids; "" when the process has none or the line is missing.
	groups string
}

// parseStatus parses the Uid:, Gid: and Groups: lines of /proc/<pid>/status
// ("Uid:\treal\teffective\tsaved\tfs"). The first line of each kind counts.
// Other lines are skipped unread: the kernel escapes newlines in the one
// field a process controls there (Name:), so no line can be forged.
func parseStatus(b []byte) (procStatus, error) {
	var (
		st                       procStatus
		haveUID, haveGID, haveGs bool
	)
	for len(b) > 0 && !(haveUID && haveGID && haveGs) {
		line := b
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		switch {
		case !haveUID && bytes.HasPrefix(line, []byte("Uid:")):
			r, e, err := parseIDPair(line[len("Uid:"):])
			if err != nil {
				return procStatus{}, fmt.Errorf("uid line: %w", err)
			}
			st.ruid, st.euid, haveUID = r, e, true
		case !haveGID && bytes.HasPrefix(line, []byte("Gid:")):
			r, e, err := parseIDPair(line[len("Gid:"):])
			if err != nil {
				return procStatus{}, fmt.Errorf("gid line: %w", err)
			}
			st.rgid, st.egid, haveGID = r, e, true
		case !haveGs && bytes.HasPrefix(line, []byte("Groups:")):
			gs, err := formatGroups(line[len("Groups:"):])
			if err != nil {
				return procStatus{}, fmt.Errorf("groups line: %w", err)
			}
			st.groups, haveGs = gs, true
		}
	}
	switch {
	case !haveUID:
		return procStatus{}, errors.New("no Uid line")
	case !haveGID:
		return procStatus{}, errors.New("no Gid line")
	}
	return st, nil
}

// nextID returns the first blank-separated decimal id of b and what follows it.
func nextID(b []byte) (id uint32, rest []byte, ok bool, err error) {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	if len(b) == 0 {
		return 0, nil, false, nil
	}
	end := 0
	for end < len(b) && b[end] != ' ' && b[end] != '\t' {
		end++
	}
	n, err := strconv.ParseUint(string(b[:end]), 10, 32)
	if err != nil {
		return 0, nil, false, fmt.Errorf("%q is not an id", b[:end])
	}
	return uint32(n), b[end:], true, nil
}

// parseIDPair reads the real and effective ids; saved and fs ids may follow.
func parseIDPair(b []byte) (real, effective uint32, err error) {
	real, b, ok, err := nextID(b)
	if err != nil {
		return 0, 0, err
	}
	if !ok {
		return 0, 0, errors.New("no real id")
	}
	effective, _, ok, err = nextID(b)
	if err != nil {
		return 0, 0, err
	}
	if !ok {
		return 0, 0, errors.New("no effective id")
	}
	return real, effective, nil
}

// formatGroups turns " 4 24 27 " into "4,24,27", sorted numerically and
// deduplicated (the kernel keeps them sorted, but duplicates are allowed).
func formatGroups(b []byte) (string, error) {
	var buf [64]uint32
	ids := buf[:0]
	for {
		id, rest, ok, err := nextID(b)
		if err != nil {
			return "", err
		}
		if !ok {
			break
		}
		ids = append(ids, id)
		b = rest
	}
	if len(ids) == 0 {
		return "", nil
	}
	if !slices.IsSorted(ids) {
		slices.Sort(ids)
	}
	ids = slices.Compact(ids)
	out := make([]byte, 0, len(ids)*6)
	for i, id := range ids {
		if i > 0 {
			out = append(out, ',')
		}
		out = strconv.AppendUint(out, uint64(id), 10)
	}
	return string(out), nil
}
