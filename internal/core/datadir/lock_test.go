package datadir_test

import (
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/wid-project/wid/internal/core/datadir"
)

func TestLockRefusesASecondHolderAndNamesTheFirst(t *testing.T) {
	dir := t.TempDir()
	l, err := datadir.Acquire(dir)
	if err != nil {
		t.Fatal(err)
	}
	// flock conflicts between two open file descriptions even within one
	// process, so this stands for a second widagent.
	_, err = datadir.Acquire(dir)
	if err == nil {
		t.Fatal("a second lock on the same data dir was granted")
	}
	if !strings.Contains(err.Error(), "pid "+strconv.Itoa(os.Getpid())) {
		t.Fatalf("refusal does not name the holder's pid: %v", err)
	}
	if err := l.Release(); err != nil {
		t.Fatal(err)
	}
	l2, err := datadir.Acquire(dir)
	if err != nil {
		t.Fatalf("lock not granted after release: %v", err)
	}
	l2.Release()
	fi, err := os.Stat(dir + "/" + datadir.LockFileName)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("lock file mode %#o, want 0600", fi.Mode().Perm())
	}
}
