package datadir

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// Explain turns a failure to use data dir dir for what (e.g. "securing it")
// into a sentence that says what to do when the cause is the directory
// itself: a read-only file system, or a directory of another user. Other
// errors are wrapped as they are.
func Explain(dir, what string, err error) error {
	switch {
	case errors.Is(err, syscall.EROFS):
		return fmt.Errorf("data dir %s is on a read-only file system (%s failed): widagent writes its store, keys and sockets there; mount it read-write, or pick a writable --data-dir: %w", dir, what, err)
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		owner := ""
		if info, serr := os.Stat(dir); serr == nil {
			if st, ok := info.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
				owner = fmt.Sprintf(" it belongs to uid %d and", st.Uid)
			}
		}
		return fmt.Errorf("data dir %s cannot be used by uid %d (%s failed):%s widagent needs it as its own: run widagent as its owner, chown it to uid %d, or pick another --data-dir: %w", dir, os.Geteuid(), what, owner, os.Geteuid(), err)
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return fmt.Errorf("data dir %s has no space left (%s failed): free space on its file system, or pick another --data-dir: %w", dir, what, err)
	}
	return fmt.Errorf("data dir %s: %s: %w", dir, what, err)
}
