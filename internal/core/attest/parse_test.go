package attest

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// statLine renders /proc/<pid>/stat the way the kernel does, with comm unescaped.
func statLine(pid int, comm string, state byte, start uint64) string {
	return fmt.Sprintf("%d (%s) %c 1 1 1 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 %d 1000 100 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 3 0 0 0 0 0\n", pid, comm, state, start)
}

func TestParseStat(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    procStat
		wantErr string
	}{
		{name: "plain", in: statLine(1, "sleep", 'S', 123456), want: procStat{state: 'S', startTime: 123456}},
		{name: "spaces in comm", in: statLine(1, "my prog", 'R', 7), want: procStat{state: 'R', startTime: 7}},
		{name: "fake fields in comm", in: statLine(1, "x) Z 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 0 0 1 0 99 (", 'S', 42), want: procStat{state: 'S', startTime: 42}},
		{name: "newline in comm", in: statLine(1, "a\n) Z 9", 'S', 5), want: procStat{state: 'S', startTime: 5}},
		{name: "zombie", in: statLine(1, "z", 'Z', 5), want: procStat{state: 'Z', startTime: 5}},
		{name: "no trailing newline", in: strings.TrimSuffix(statLine(1, "a", 'S', 8), "\n"), want: procStat{state: 'S', startTime: 8}},
		{name: "exactly 22 fields", in: "1 (a) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 0 0 1 0 77\n", want: procStat{state: 'S', startTime: 77}},
		{name: "empty", in: "", wantErr: "no ')' after the command name"},
		{name: "no paren", in: "1 sleep S 1", wantErr: "no ')' after the command name"},
		{name: "nothing after comm", in: "1 (a)\n", wantErr: "no fields after the command name"},
		{name: "truncated", in: "1 (a) S 1 1 1\n", wantErr: "6 fields, want at least 22"},
		{name: "long state", in: "1 (a) SS 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 0 0 1 0 77\n", wantErr: `process state "SS" is not one letter`},
		{name: "bad start", in: "1 (a) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 0 0 1 0 -77\n", wantErr: `start time "-77" is not a number`},
		{name: "double space", in: "1 (a)  S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 0 0 1 0 77\n", wantErr: `process state "" is not one letter`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStat([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("parseStat error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseStat: %v", err)
			}
			if got != tt.want {
				t.Fatalf("parseStat = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// statusText renders the start of /proc/<pid>/status.
func statusText(uid, euid, gid, egid uint32, groups string) string {
	s := fmt.Sprintf("Name:\tprog\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t42\nNgid:\t0\nPid:\t42\nPPid:\t1\nTracerPid:\t0\nUid:\t%d\t%d\t%d\t%d\nGid:\t%d\t%d\t%d\t%d\nFDSize:\t64\n", uid, euid, euid, euid, gid, egid, egid, egid)
	if groups != "-" {
		s += "Groups:\t" + groups + "\n"
	}
	return s + "NStgid:\t42\nVmPeak:\t  1000 kB\n"
}

func TestParseStatus(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    procStatus
		wantErr string
	}{
		{name: "typical", in: statusText(1000, 1000, 100, 100, "4 24 27 "), want: procStatus{ruid: 1000, euid: 1000, rgid: 100, egid: 100, groups: "4,24,27"}},
		{name: "setuid", in: statusText(1000, 0, 100, 0, ""), want: procStatus{ruid: 1000, euid: 0, rgid: 100, egid: 0}},
		{name: "unsorted duplicates", in: statusText(1, 1, 1, 1, "27 4 100 4 27"), want: procStatus{ruid: 1, euid: 1, rgid: 1, egid: 1, groups: "4,27,100"}},
		{name: "missing groups line", in: statusText(5, 5, 6, 6, "-"), want: procStatus{ruid: 5, euid: 5, rgid: 6, egid: 6}},
		{name: "many groups", in: statusText(5, 5, 6, 6, strings.Repeat("7 ", 100)+"1"), want: procStatus{ruid: 5, euid: 5, rgid: 6, egid: 6, groups: "1,7"}},
		{name: "first line counts", in: statusText(5, 5, 6, 6, "1") + "Uid:\t0\t0\t0\t0\n", want: procStatus{ruid: 5, euid: 5, rgid: 6, egid: 6, groups: "1"}},
		{name: "max id", in: statusText(4294967295, 4294967295, 0, 0, ""), want: procStatus{ruid: 4294967295, euid: 4294967295}},
		{name: "no uid", in: "Name:\tx\nGid:\t1\t1\t1\t1\n", wantErr: "no Uid line"},
		{name: "no gid", in: "Name:\tx\nUid:\t1\t1\t1\t1\n", wantErr: "no Gid line"},
		{name: "only real uid", in: "Uid:\t1\nGid:\t1\t1\n", wantErr: "uid line: no effective id"},
		{name: "empty uid", in: "Uid:\nGid:\t1\t1\n", wantErr: "uid line: no real id"},
		{name: "bad uid", in: "Uid:\tx\t1\nGid:\t1\t1\n", wantErr: `uid line: "x" is not an id`},
		{name: "uid overflow", in: "Uid:\t4294967296\t1\nGid:\t1\t1\n", wantErr: `uid line: "4294967296" is not an id`},
		{name: "bad group", in: "Uid:\t1\t1\nGid:\t1\t1\nGroups:\t1 -2\n", wantErr: `groups line: "-2" is not an id`},
		{name: "name line that looks like uid", in: "Name:\tUid:\t0\t0\nUid:\t7\t7\nGid:\t1\t1\n", want: procStatus{ruid: 7, euid: 7, rgid: 1, egid: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStatus([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("parseStatus error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseStatus: %v", err)
			}
			if got != tt.want {
				t.Fatalf("parseStatus = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// refParseStat is parseStat written the obvious way, as the fuzz oracle.
func refParseStat(s string) (procStat, bool) {
	i := strings.LastIndex(s, ")")
	if i < 0 {
		return procStat{}, false
	}
	rest := strings.TrimSuffix(s[i+1:], "\n")
	if !strings.HasPrefix(rest, " ") {
		return procStat{}, false
	}
	fields := strings.Split(rest[1:], " ")
	if len(fields) < startTimeField-2 || len(fields[0]) != 1 {
		return procStat{}, false
	}
	start, err := strconv.ParseUint(fields[startTimeField-3], 10, 64)
	if err != nil {
		return procStat{}, false
	}
	return procStat{state: fields[0][0], startTime: start}, true
}

func FuzzParseStat(f *testing.F) {
	f.Add([]byte(statLine(1234, "sleep", 'S', 9876543)))
	f.Add([]byte(statLine(1, "a) b (c", 'Z', 1)))
	f.Add([]byte("1 (a) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 0 0 1 0 77"))
	f.Add([]byte(") ) )"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		// Arbitrary input: agree with the reference parser, never panic.
		got, err := parseStat(data)
		want, ok := refParseStat(string(data))
		if (err == nil) != ok {
			t.Fatalf("parseStat(%q) error = %v, reference ok = %v", data, err, ok)
		}
		if ok && got != want {
			t.Fatalf("parseStat(%q) = %+v, reference %+v", data, got, want)
		}
		// The same bytes as a command name: whatever a process names
		// itself, the kernel's fields after it are what gets parsed.
		if len(data) > 64 {
			data = data[:64]
		}
		line := statLine(77, string(data), 'S', 31337)
		got, err = parseStat([]byte(line))
		if err != nil || got != (procStat{state: 'S', startTime: 31337}) {
			t.Fatalf("parseStat with comm %q = %+v, %v; want state S, start 31337", data, got, err)
		}
	})
}

// refParseStatus is parseStatus written the obvious way, as the fuzz oracle.
func refParseStatus(s string) (procStatus, bool) {
	var (
		st                  procStatus
		uid, gid, groupLine bool
	)
	blank := func(r rune) bool { return r == ' ' || r == '\t' }
	ids := func(fields []string) ([]uint32, bool) {
		var out []uint32
		for _, f := range fields {
			n, err := strconv.ParseUint(f, 10, 32)
			if err != nil {
				return nil, false
			}
			out = append(out, uint32(n))
		}
		return out, true
	}
	for _, line := range strings.Split(s, "\n") {
		if uid && gid && groupLine {
			break
		}
		switch {
		case !uid && strings.HasPrefix(line, "Uid:"), !gid && strings.HasPrefix(line, "Gid:"):
			// Real and effective ids; saved and fs ids are not read.
			fields := strings.FieldsFunc(line[4:], blank)
			if len(fields) < 2 {
				return procStatus{}, false
			}
			v, ok := ids(fields[:2])
			if !ok {
				return procStatus{}, false
			}
			if line[0] == 'U' {
				st.ruid, st.euid, uid = v[0], v[1], true
			} else {
				st.rgid, st.egid, gid = v[0], v[1], true
			}
		case !groupLine && strings.HasPrefix(line, "Groups:"):
			v, ok := ids(strings.FieldsFunc(line[len("Groups:"):], blank))
			if !ok {
				return procStatus{}, false
			}
			slices.Sort(v)
			v = slices.Compact(v)
			parts := make([]string, 0, len(v))
			for _, id := range v {
				parts = append(parts, strconv.FormatUint(uint64(id), 10))
			}
			st.groups, groupLine = strings.Join(parts, ","), true
		}
	}
	return st, uid && gid
}

func FuzzParseStatus(f *testing.F) {
	f.Add([]byte(statusText(1000, 1000, 100, 100, "4 24 27 ")))
	f.Add([]byte(statusText(0, 0, 0, 0, "-")))
	f.Add([]byte("Uid:\t1\t2\t3\t4\nGid:\t5\t6\nGroups:\t9 8 9\n"))
	f.Add([]byte("Uid:\t1 \t2\nGid:\t5\t6 x\n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := parseStatus(data)
		want, ok := refParseStatus(string(data))
		if (err == nil) != ok {
			t.Fatalf("parseStatus(%q) = %+v, %v; reference ok = %v", data, got, err, ok)
		}
		if ok && got != want {
			t.Fatalf("parseStatus(%q) = %+v, reference %+v", data, got, want)
		}
	})
}
