package attest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// Child modes of the exec-after-connect attack:
//
//   - "pass-then-exec" connects, waits until the server has accepted the
//     connection, starts an "ask-inherited" child that inherits the
//     connection, and then (with WID_ATTEST_EXEC set) executes that binary
//     in "wait" mode, keeping its pid; without it, it just waits.
//   - "ask-inherited" waits until its parent runs the binary it should,
//     then calls Who/Am over the inherited connection (fd 3) and prints the
//     reply.
const (
	childExecEnv = "WID_ATTEST_EXEC"
	childWantEnv = "WID_ATTEST_PARENT_EXE"
)

func init() {
	platformChildModes["pass-then-exec"] = childPassThenExec
	platformChildModes["ask-inherited"] = childAskInherited
}

func childPassThenExec() int {
	fail := func(err error) int { fmt.Fprintln(os.Stderr, "pass-then-exec:", err); return 1 }
	c, err := net.Dial("unix", os.Getenv(childSocketEnv))
	if err != nil {
		return fail(err)
	}
	uc := c.(*net.UnixConn)
	// The server's first HTTP/2 frame follows its handshake: peek at it
	// (leaving it for the child) so that the handshake saw this program.
	raw, err := uc.SyscallConn()
	if err != nil {
		return fail(err)
	}
	var perr error
	if err := raw.Read(func(fd uintptr) bool {
		var b [1]byte
		_, _, perr = unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK)
		return perr != unix.EAGAIN
	}); err != nil || perr != nil {
		return fail(fmt.Errorf("waiting for the server: %v, %v", err, perr))
	}
	f, err := uc.File()
	if err != nil {
		return fail(err)
	}
	next := os.Getenv(childExecEnv)
	want, _ := os.Executable()
	if next != "" {
		want = next
	}
	ask := exec.Command(os.Args[0], "-test.run=^$")
	ask.Env = childEnv(childModeEnv+"=ask-inherited", childWantEnv+"="+want)
	ask.ExtraFiles = []*os.File{f}
	ask.Stdout, ask.Stderr = os.Stdout, os.Stderr
	if err := ask.Start(); err != nil {
		return fail(err)
	}
	if next == "" {
		fmt.Println("ready")
		_ = ask.Wait()
		return 0
	}
	// The connection stays with the child only (the socket is close-on-exec
	// here); the pid the server saw connect now runs next.
	return fail(syscall.Exec(next, []string{next, "-test.run=^$"}, childEnv(childModeEnv+"=wait")))
}

// childEnv is this process's environment without the child-mode settings,
// plus set. (execve takes duplicates as they come, and Go's getenv reads
// the first.)
func childEnv(set ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); k != childModeEnv && k != childExecEnv && k != childWantEnv {
			env = append(env, kv)
		}
	}
	return append(env, set...)
}

func childAskInherited() int {
	fail := func(err error) int { fmt.Fprintln(os.Stderr, "ask-inherited:", err); return 1 }
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	parent := "/proc/" + strconv.Itoa(os.Getppid()) + "/exe"
	for {
		if exe, err := os.Readlink(parent); err == nil && exe == os.Getenv(childWantEnv) {
			break
		}
		select {
		case <-ctx.Done():
			return fail(fmt.Errorf("the parent did not come to run %s", os.Getenv(childWantEnv)))
		case <-time.After(5 * time.Millisecond):
		}
	}
	c, err := net.FileConn(os.NewFile(3, "inherited"))
	if err != nil {
		return fail(err)
	}
	var used atomic.Bool
	conn, err := grpc.NewClient("passthrough:///inherited",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(context.Context, string) (net.Conn, error) {
			if used.Swap(true) {
				return nil, errors.New("the inherited connection is spent")
			}
			return c, nil
		}))
	if err != nil {
		return fail(err)
	}
	defer conn.Close()
	reply, err := invokeWho(ctx, conn)
	if err != nil {
		return fail(err)
	}
	if err := json.NewEncoder(os.Stdout).Encode(reply); err != nil {
		return fail(err)
	}
	return 0
}

// TestAttestExecAfterConnect: a process connects, hands the connection to
// a child and executes a binary that a path rule would trust; the child,
// asking over the inherited connection, must not be attested as that
// binary. Without the exec the child is attested as the program that
// connected, as before.
func TestAttestExecAfterConnect(t *testing.T) {
	self := testExecutable(t)
	trusted := filepath.Join(t.TempDir(), "trusted")
	b, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(trusted, b, 0o755); err != nil {
		t.Fatal(err)
	}
	sock, _ := startWho(t, NewUnix(UnixOptions{}))

	for _, tt := range []struct {
		name string
		exec string
	}{
		{name: "no exec"},
		{name: "exec", exec: trusted},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(childExecEnv, tt.exec)
			c := startChild(t, "pass-then-exec", sock)
			var reply *whoReply
			for reply == nil {
				line := c.readLine(t)
				if line == "ready\n" {
					continue
				}
				var r whoReply
				if err := json.Unmarshal([]byte(line), &r); err != nil {
					t.Fatalf("child said %q", line)
				}
				reply = &r
			}
			if reply.Peer.PID != int32(c.cmd.Process.Pid) {
				t.Fatalf("the server saw pid %d connect, want the connecting process %d", reply.Peer.PID, c.cmd.Process.Pid)
			}
			if tt.exec == "" {
				if reply.AttestError != "" || reply.Attributes[AttrPath] != self {
					t.Fatalf("without exec: attributes %v, error %q; want the path %s of the program that connected", reply.Attributes, reply.AttestError, self)
				}
				return
			}
			if got := reply.Attributes[AttrPath]; got != "" {
				t.Fatalf("the child was attested with path %s of the binary its parent executed after connecting", got)
			}
			if !strings.Contains(reply.AttestError, "executed another program since it connected") {
				t.Fatalf("attest error %q, want a refusal saying the process executed another program", reply.AttestError)
			}
		})
	}
}
