package attest

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// ownStartTime reads field 22 of /proc/<pid>/stat independently of parseStat.
func ownStartTime(t *testing.T, pid int) uint64 {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	fields := strings.Fields(s[strings.LastIndex(s, ")")+1:])
	start, err := strconv.ParseUint(fields[19], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return start
}

// exeOf names the executable of pid by device and inode, as a stat of
// /proc/<pid>/exe sees it.
func exeOf(t *testing.T, pid int) ExeID {
	t.Helper()
	fi, err := os.Stat("/proc/" + strconv.Itoa(pid) + "/exe")
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if st.Ino == 0 {
		t.Fatalf("executable of %d has inode 0", pid)
	}
	return ExeID{Dev: uint64(st.Dev), Ino: st.Ino}
}

// withoutMemo checks that the connection carries a memo and drops it, so
// that peers compare by what the kernel said.
func withoutMemo(t *testing.T, p Peer) Peer {
	t.Helper()
	if p.memo == nil {
		t.Error("the peer of a connection accepted with Credentials has no memo")
	}
	p.memo = nil
	return p
}

func TestCredentialsSameProcess(t *testing.T) {
	sock, who := startWho(t, nil)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()

	reply, err := callWho(ctx, sock)
	if err != nil {
		t.Fatalf("calling over %s: %v", sock, err)
	}
	got := withoutMemo(t, <-who.peers)
	if got != reply.Peer {
		t.Fatalf("handler saw %+v, reply says %+v", got, reply.Peer)
	}
	want := Peer{PID: int32(os.Getpid()), UID: uint32(os.Geteuid()), GID: uint32(os.Getegid())}
	if runtime.GOOS == "linux" {
		want.StartTime = ownStartTime(t, os.Getpid())
		if want.StartTime == 0 {
			t.Fatal("own start time is 0")
		}
		want.Exe = exeOf(t, os.Getpid())
	}
	if got != want {
		t.Fatalf("PeerFromContext = %+v, want %+v", got, want)
	}
}

func TestCredentialsChildProcess(t *testing.T) {
	var attestor *Unix
	if runtime.GOOS == "linux" {
		attestor = NewUnix(UnixOptions{})
	}
	sock, who := startWho(t, attestor)
	c := startChild(t, "call-wait", sock)
	reply := c.reply(t)
	got := withoutMemo(t, <-who.peers)

	childPID := int32(c.cmd.Process.Pid)
	want := Peer{PID: childPID, UID: uint32(os.Geteuid()), GID: uint32(os.Getegid())}
	if runtime.GOOS == "linux" {
		// The child is still alive (it waits for stdin), so its start time is readable.
		want.StartTime = ownStartTime(t, int(childPID))
		want.Exe = exeOf(t, int(childPID))
	}
	if got != want || reply.Peer != want {
		t.Fatalf("PeerFromContext = %+v, reply %+v, want %+v", got, reply.Peer, want)
	}
	if attestor != nil {
		if reply.AttestError != "" {
			t.Fatalf("attesting the child: %s", reply.AttestError)
		}
		self := testExecutable(t)
		if reply.Attributes[AttrPID] != strconv.Itoa(int(childPID)) || reply.Attributes[AttrPath] != self {
			t.Fatalf("child attributes = %v, want pid %d and path %s", reply.Attributes, childPID, self)
		}
	}
	c.exit(t)
}

func TestCredentialsRefuseNonUnix(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := lis.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	client, err := net.Dial("tcp", lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server := <-accepted
	defer server.Close()

	conn, info, err := Credentials().ServerHandshake(server)
	const want = "peer credentials need a unix socket, got *net.TCPConn"
	if err == nil || err.Error() != want {
		t.Fatalf("ServerHandshake over tcp = %v, %v, %v; want error %q", conn, info, err, want)
	}
}

func TestCredentialsClientSideUnsupported(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	_, _, err := Credentials().ClientHandshake(t.Context(), "x", a)
	const want = "attest credentials are for servers only: dial the Workload API with insecure credentials"
	if err == nil || err.Error() != want {
		t.Fatalf("ClientHandshake error = %v, want %q", err, want)
	}
	if got := Credentials().Info().SecurityProtocol; got != "wid-unix-peer" {
		t.Fatalf("SecurityProtocol = %q", got)
	}
}

type otherAuthInfo struct{ credentials.CommonAuthInfo }

func (otherAuthInfo) AuthType() string { return "other" }

func TestPeerFromContextElsewhere(t *testing.T) {
	if p, ok := PeerFromContext(t.Context()); ok {
		t.Fatalf("PeerFromContext without a peer = %+v, true", p)
	}
	ctx := peer.NewContext(t.Context(), &peer.Peer{AuthInfo: otherAuthInfo{}})
	if p, ok := PeerFromContext(ctx); ok {
		t.Fatalf("PeerFromContext with foreign AuthInfo = %+v, true", p)
	}
	want := Peer{PID: 1, UID: 2, GID: 3, StartTime: 4}
	ctx = peer.NewContext(t.Context(), &peer.Peer{AuthInfo: authInfo{peer: want}})
	if p, ok := PeerFromContext(ctx); !ok || p != want {
		t.Fatalf("PeerFromContext = %+v, %v; want %+v", p, ok, want)
	}
}

// testExecutable is the path of the running test binary, symlinks resolved.
func testExecutable(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return mustEvalSymlinks(t, exe)
}

func mustEvalSymlinks(t *testing.T, p string) string {
	t.Helper()
	r, err := filepath.EvalSymlinks(p)
	if err != nil {
		t.Fatal(err)
	}
	return r
}
