package attest

import (
	"context"
	"errors"
	"net"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/wid-project/wid/internal/core/peercred"
)

// connectInfo is what the handshake reads from /proc.
type connectInfo struct {
	start     uint64
	exe       ExeID
	exeHidden bool
}

// authInfo is the credentials.AuthInfo of a connection accepted with Credentials.
type authInfo struct {
	credentials.CommonAuthInfo
	peer Peer
}

func (authInfo) AuthType() string { return "wid-unix-peer" }

type transportCredentials struct{}

// Credentials returns gRPC transport credentials for a unix-socket server:
// the handshake reads SO_PEERCRED of the accepted conn and, on Linux, the
// process start time and executable right away, so that a pid reused later
// is not mistaken for the caller, nor a binary executed after connecting
// for the one that connected. A Linux caller whose start time cannot be read (it already
// exited, or it is in a pid namespace the server cannot see) is refused, as
// are non-unix conns. ClientHandshake is unsupported (server-side only).
// The credentials add no encryption: the socket never leaves the host.
func Credentials() credentials.TransportCredentials { return transportCredentials{} }

// PeerFromContext returns the Peer of a gRPC call served with Credentials().
func PeerFromContext(ctx context.Context) (Peer, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return Peer{}, false
	}
	info, ok := p.AuthInfo.(authInfo)
	if !ok {
		return Peer{}, false
	}
	return info.peer, true
}

func (transportCredentials) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	cred, err := peercred.Of(conn)
	if err != nil {
		return nil, nil, err
	}
	info, err := handshakeProcess(cred.PID)
	if err != nil {
		return nil, nil, err
	}
	memo := newConnMemo()
	return &memoConn{Conn: conn, memo: memo}, authInfo{
		CommonAuthInfo: cred.CommonAuthInfo,
		peer: Peer{PID: cred.PID, UID: cred.UID, GID: cred.GID, StartTime: info.start,
			Exe: info.exe, exeHidden: info.exeHidden, memo: memo},
	}, nil
}

// memoConn releases the connection's memo when the connection closes.
type memoConn struct {
	net.Conn
	memo *connMemo
}

func (c *memoConn) Close() error {
	c.memo.close()
	return c.Conn.Close()
}

func (transportCredentials) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("attest credentials are for servers only: dial the Workload API with insecure credentials")
}

func (transportCredentials) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "wid-unix-peer"}
}

func (c transportCredentials) Clone() credentials.TransportCredentials { return c }

func (transportCredentials) OverrideServerName(string) error {
	return errors.New("attest credentials have no server name")
}
