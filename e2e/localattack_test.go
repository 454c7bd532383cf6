package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A non-root widagent without XDG_RUNTIME_DIR puts its workload socket in
// $TMPDIR/wid-<uid>. When another user made that directory first, open to
// all, widagent must refuse to start rather than serve from a directory
// where that user can swap the socket, and say so naming --workload-socket.
func TestWorkloadSocketDirMadeByAnotherUser(t *testing.T) {
	t.Parallel()
	runAs := os.Getuid()
	tmp := newDataDir(t)
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		// Root plays the other user, widagent runs as nobody.
		runAs = 65534
		cred = &syscall.Credential{Uid: 65534, Gid: 65534}
		for _, p := range []string{binDir, tmp} {
			if err := os.Chmod(p, 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	dataDir := filepath.Join(tmp, "data")
	if err := os.Mkdir(dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dataDir, runAs, runAs); err != nil {
		t.Fatal(err)
	}
	planted := filepath.Join(tmp, "wid-"+strconv.Itoa(runAs))
	if err := os.Mkdir(planted, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(planted, 0o777); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "widagent"), "start", "--data-dir", dataDir, "--auth-listen", "127.0.0.1:0")
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "XDG_RUNTIME_DIR=") && !strings.HasPrefix(kv, "TMPDIR=") && !strings.HasPrefix(kv, "HOME=") {
			env = append(env, kv)
		}
	}
	cmd.Env = append(env, "TMPDIR="+tmp, "HOME="+dataDir)
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("widagent with a planted socket directory: %v, want exit 1\n%s", err, out)
	}
	msg := string(out)
	if !strings.Contains(msg, "error: the workload socket's directory "+planted) || !strings.Contains(msg, "--workload-socket") {
		t.Fatalf("the refusal does not say which directory and name --workload-socket:\n%s", msg)
	}
	if root := os.Geteuid() == 0; root && !strings.Contains(msg, "belongs to uid 0") || !root && !strings.Contains(msg, "mode 0777") {
		t.Fatalf("the refusal does not say what is wrong with the directory:\n%s", msg)
	}
	if entries, err := os.ReadDir(planted); err != nil || len(entries) != 0 {
		t.Fatalf("widagent left something in the planted directory: %v, %v", entries, err)
	}
}
