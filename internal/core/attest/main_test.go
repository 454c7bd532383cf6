package attest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// The test binary doubles as the child process of the tests: with
// WID_ATTEST_CHILD set it runs that mode instead of the tests.
const (
	childModeEnv   = "WID_ATTEST_CHILD"
	childSocketEnv = "WID_ATTEST_SOCKET"
)

func TestMain(m *testing.M) {
	switch os.Getenv(childModeEnv) {
	case "":
		os.Exit(m.Run())
	case "call":
		// Call the test service, print its reply, exit.
		os.Exit(childCall(false))
	case "call-wait":
		// Call, print, then live until stdin closes.
		os.Exit(childCall(true))
	case "wait":
		fmt.Println("ready")
		_, _ = io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	default:
		if run, ok := platformChildModes[os.Getenv(childModeEnv)]; ok {
			os.Exit(run())
		}
		fmt.Fprintf(os.Stderr, "unknown %s %q\n", childModeEnv, os.Getenv(childModeEnv))
		os.Exit(2)
	}
}

// platformChildModes are the child modes that only some platforms have.
var platformChildModes = map[string]func() int{}

func childCall(wait bool) int {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	reply, err := callWho(ctx, os.Getenv(childSocketEnv))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := json.NewEncoder(os.Stdout).Encode(reply); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if wait {
		_, _ = io.Copy(io.Discard, os.Stdin)
	}
	return 0
}

// whoReply is what the test service tells its caller about itself.
type whoReply struct {
	Peer        Peer              `json:"peer"`
	Attributes  map[string]string `json:"attributes,omitempty"`
	AttestError string            `json:"attest_error,omitempty"`
}

const whoMethod = "/wid.attest.test.Who/Am"

// whoServer answers Who/Am with the caller's Peer and, if it has an
// attestor, its attributes. It also hands each Peer to the test.
type whoServer struct {
	attestor *Unix
	peers    chan Peer
}

var whoDesc = grpc.ServiceDesc{
	ServiceName: "wid.attest.test.Who",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Am",
		Handler: func(srv any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			if err := dec(new(emptypb.Empty)); err != nil {
				return nil, err
			}
			return srv.(*whoServer).am(ctx)
		},
	}},
}

func (s *whoServer) am(ctx context.Context) (*wrapperspb.StringValue, error) {
	p, ok := PeerFromContext(ctx)
	if !ok {
		return nil, status.Error(codes.Unauthenticated, "no peer")
	}
	select {
	case s.peers <- p:
	default:
	}
	reply := whoReply{Peer: p}
	if s.attestor != nil {
		res, err := s.attestor.Attest(ctx, p)
		if err != nil {
			reply.AttestError = err.Error()
		}
		reply.Attributes = res.Attributes
	}
	b, err := json.Marshal(reply)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return wrapperspb.String(string(b)), nil
}

// startWho serves the test service with Credentials() on a unix socket in a
// temp dir and returns the socket path.
func startWho(t *testing.T, attestor *Unix) (string, *whoServer) {
	t.Helper()
	dir, err := os.MkdirTemp("", "attest")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "w.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	who := &whoServer{attestor: attestor, peers: make(chan Peer, 16)}
	srv := grpc.NewServer(grpc.Creds(Credentials()))
	srv.RegisterService(&whoDesc, who)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return sock, who
}

func callWho(ctx context.Context, sock string) (whoReply, error) {
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return whoReply{}, err
	}
	defer conn.Close()
	return invokeWho(ctx, conn)
}

func invokeWho(ctx context.Context, conn *grpc.ClientConn) (whoReply, error) {
	out := new(wrapperspb.StringValue)
	if err := conn.Invoke(ctx, whoMethod, &emptypb.Empty{}, out); err != nil {
		return whoReply{}, err
	}
	var reply whoReply
	if err := json.Unmarshal([]byte(out.GetValue()), &reply); err != nil {
		return whoReply{}, err
	}
	return reply, nil
}

// child is a re-exec of the test binary in one of the modes of TestMain.
type child struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stdout *bufio.Reader
}

func startChild(t *testing.T, mode, sock string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	// The race detector sleeps a second before exiting unless told not to.
	cmd.Env = append(os.Environ(), childModeEnv+"="+mode, childSocketEnv+"="+sock, "GORACE=atexit_sleep_ms=0")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, stdin: stdin, stdout: bufio.NewReader(stdout)}
	t.Cleanup(func() {
		stdin.Close()
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	return c
}

func (c *child) readLine(t *testing.T) string {
	t.Helper()
	line, err := c.stdout.ReadString('\n')
	if err != nil {
		t.Fatalf("reading from child %d: %v", c.cmd.Process.Pid, err)
	}
	return line
}

func (c *child) reply(t *testing.T) whoReply {
	t.Helper()
	var r whoReply
	if err := json.Unmarshal([]byte(c.readLine(t)), &r); err != nil {
		t.Fatal(err)
	}
	return r
}

// exit closes the child's stdin and reaps it.
func (c *child) exit(t *testing.T) {
	t.Helper()
	c.stdin.Close()
	if err := c.cmd.Wait(); err != nil {
		t.Fatalf("child %d: %v", c.cmd.Process.Pid, err)
	}
}
