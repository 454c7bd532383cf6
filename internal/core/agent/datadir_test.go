package agent

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wid-project/wid/internal/core/paths"
)

// Two agents on one data dir would overwrite each other's identity, and an
// agent on a running auth service's data dir would write into it: both are
// refused before anything is written, and the lock goes with its holder.
func TestClaimDataDir(t *testing.T) {
	dir, err := os.MkdirTemp("", "wid-dd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	idDir := filepath.Join(dir, "agent")

	release, err := claimDataDir(dir, idDir)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(idDir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("identity dir: %v %v", err, fi)
	}
	if _, err := claimDataDir(dir, idDir); err == nil || !strings.Contains(err.Error(), "another agent runs on the data dir") {
		t.Fatalf("a second agent on the data dir: %v", err)
	}
	release()
	release, err = claimDataDir(dir, idDir)
	if err != nil {
		t.Fatalf("after the first agent stopped: %v", err)
	}
	release()

	authDir, err := os.MkdirTemp("", "wid-dd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(authDir) })
	lis, err := net.Listen("unix", paths.AdminSocket(authDir))
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	_, err = claimDataDir(authDir, filepath.Join(authDir, "agent"))
	if err == nil || !strings.Contains(err.Error(), "belongs to a running auth service") {
		t.Fatalf("the data dir of a running auth service: %v", err)
	}
	if entries, _ := os.ReadDir(authDir); len(entries) != 1 {
		t.Errorf("the refused agent wrote into the auth service's data dir: %v", entries)
	}
}
