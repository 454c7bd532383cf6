package attest

import (
	"errors"
	"os"
	"strings"
	"testing"
)

// The kernel's own cgroup file of this process parses, line for line, and a
// later process with the caller's pid is never read.
func TestReadCgroupsSelf(t *testing.T) {
	p := selfPeer(t)
	cg, err := readCgroups(DefaultProcRoot, p)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
	if len(cg) != len(lines) {
		t.Fatalf("%d cgroups parsed from %d lines:\n%s", len(cg), len(lines), raw)
	}
	for i, e := range cg {
		if !strings.HasSuffix(lines[i], ":"+e.Path) || !strings.HasPrefix(lines[i], strings.SplitN(lines[i], ":", 2)[0]+":"+e.Controllers+":") {
			t.Errorf("line %q parsed as %+v", lines[i], e)
		}
	}
	p.StartTime++
	if _, err := readCgroups(DefaultProcRoot, p); !errors.Is(err, ErrProcessGone) {
		t.Fatalf("readCgroups of a later process with this pid = %v, want ErrProcessGone", err)
	}
	if _, err := readCgroups(t.TempDir(), selfPeer(t)); !errors.Is(err, ErrProcessGone) {
		t.Fatalf("readCgroups of a process not in the proc root = %v, want ErrProcessGone", err)
	}
}
