package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/wid-project/wid/internal/core/paths"
)

// lockFile, in the data dir, is held by the agent that keeps its identity
// there for as long as it runs.
const lockFile = "agent.lock"

// claimDataDir makes sure an agent may keep its identity in idDir under the
// data dir dir, before a join token is spent on it: dir is not the data dir
// of a running auth service, no other agent runs on it, and idDir can be
// written. It holds a lock on dir until release is called.
func claimDataDir(dir, idDir string) (release func(), err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating the data dir %s: %w", dir, err)
	}
	if admin := paths.AdminSocket(dir); paths.SocketAnswers(admin) {
		return nil, fmt.Errorf("the data dir %s belongs to a running auth service (%s answers): give this agent a --data-dir of its own", dir, admin)
	}
	f, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("the agent cannot use the data dir %s: %w", dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("another agent runs on the data dir %s: stop it, or give this agent a --data-dir of its own", dir)
		}
		return nil, fmt.Errorf("locking the data dir %s: %w", dir, err)
	}
	release = func() { _ = f.Close() }
	// The identity is written only after the join; a dir it cannot be
	// written to must be found now, while the token is still unspent.
	if err := os.MkdirAll(idDir, 0o700); err != nil {
		release()
		return nil, fmt.Errorf("the agent cannot keep its identity in %s: %w", idDir, err)
	}
	probe, err := os.CreateTemp(idDir, ".probe-")
	if err != nil {
		release()
		return nil, fmt.Errorf("the agent cannot keep its identity in %s: %w", idDir, err)
	}
	_ = probe.Close()
	_ = os.Remove(probe.Name())
	return release, nil
}
