// Package datadir guards a widagent data dir: one process at a time holds
// it, through an OS file lock that the kernel releases when the process
// ends, however it ends.
package datadir

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// LockFileName is the lock file inside the data dir.
const LockFileName = "lock"

// Lock is a held data dir lock.
type Lock struct {
	f *os.File
}

// Acquire takes the exclusive lock on dir/lock, or says which process holds
// it. The admin socket alone is no guard: it can be removed while its
// server runs, and two processes writing one SQLite store diverge.
func Acquire(dir string) (*Lock, error) {
	path := filepath.Join(dir, LockFileName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, Explain(dir, "creating its lock file "+LockFileName, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		defer f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			holder := "another process"
			if pid := readPID(f); pid > 0 {
				holder = "widagent pid " + strconv.Itoa(pid)
			}
			return nil, fmt.Errorf("data dir %s is in use by %s (it holds %s): stop that process first, or use another --data-dir", dir, holder, path)
		}
		return nil, fmt.Errorf("locking the data dir %s: %w", path, err)
	}
	// The pid is for the message above and for people; the lock is the flock.
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &Lock{f: f}, nil
}

func readPID(f *os.File) int {
	buf := make([]byte, 32)
	n, _ := f.ReadAt(buf, 0)
	pid, err := strconv.Atoi(string(bytes.TrimSpace(buf[:n])))
	if err != nil {
		return 0
	}
	return pid
}

// Release gives the lock up. The file stays: removing it would let a
// process that opened the old file and one that creates a new one both
// believe they hold the lock.
func (l *Lock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}
