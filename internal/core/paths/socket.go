package paths

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"
)

// Socket is a unix socket wid listens on. Name ("workload socket") and Flag
// ("--workload-socket") let a refusal say what is wrong and what to change.
type Socket struct {
	Path string
	Name string
	Flag string
}

// Prepare makes the socket's path ready to listen on: it creates the
// directory with perm when it is missing, refuses a directory that another
// user could tamper with, and removes a socket left by a process that is
// gone.
//
// The directory is checked after it is created, not before: an existing
// one may have been made by someone else (a /tmp/wid-<uid> made in advance
// by another user), and whoever can write to it can swap the socket for a
// symbolic link to their own server.
func (s Socket) Prepare(perm os.FileMode) error {
	dir := filepath.Dir(s.Path)
	if err := os.MkdirAll(dir, perm); err != nil {
		return fmt.Errorf("creating the %s's directory %s: %w: choose another %s", s.Name, dir, err, s.Flag)
	}
	if err := s.checkDir(dir); err != nil {
		return err
	}
	return s.removeStale()
}

// checkDir refuses a directory that is a symbolic link, is owned by another
// uid, or that group or others may write to: any of them lets another user
// replace the socket inside.
func (s Socket) checkDir(dir string) error {
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("checking the %s's directory %s: %w", s.Name, dir, err)
	}
	switch {
	case fi.Mode()&os.ModeSymlink != 0:
		return fmt.Errorf("the %s's directory %s is a symbolic link, which another user may have planted: point %s at a directory this user owns", s.Name, dir, s.Flag)
	case !fi.IsDir():
		return fmt.Errorf("the %s's directory %s is not a directory: choose another %s", s.Name, dir, s.Flag)
	}
	if owner, ok := ownerOf(fi); ok && owner != os.Geteuid() {
		return fmt.Errorf("the %s's directory %s belongs to uid %d, not to uid %d that runs widagent, so that user could replace the socket: remove the directory or choose another %s", s.Name, dir, owner, os.Geteuid(), s.Flag)
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("the %s's directory %s has mode %#o, so other users could replace the socket: make it writable only by its owner or choose another %s", s.Name, dir, fi.Mode().Perm(), s.Flag)
	}
	return nil
}

// removeStale removes a socket nobody answers on. A live one means another
// process serves the path; a file that is not a socket is not ours to
// remove.
func (s Socket) removeStale() error {
	fi, err := os.Lstat(s.Path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("checking the %s %s: %w", s.Name, s.Path, err)
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("%s exists and is not a socket: remove it or choose another %s", s.Path, s.Flag)
	}
	if SocketAnswers(s.Path) {
		return fmt.Errorf("another process serves the %s %s: stop it or choose another %s", s.Name, s.Path, s.Flag)
	}
	if err := os.Remove(s.Path); err != nil {
		return fmt.Errorf("removing the stale %s %s: %w", s.Name, s.Path, err)
	}
	return nil
}

// SocketAnswers reports whether path is a unix socket that a process
// accepts connections on.
func SocketAnswers(path string) bool {
	fi, err := os.Lstat(path)
	if err != nil || fi.Mode()&os.ModeSocket == 0 {
		return false
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err != nil {
		return false
	}
	_ = c.Close()
	return true
}
