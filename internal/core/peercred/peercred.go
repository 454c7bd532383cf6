// Package peercred gives gRPC servers on unix sockets the kernel's word on
// who is calling (SO_PEERCRED): the admin socket uses it to admit only the
// daemon's own uid or root, and the Workload API to attest workloads.
package peercred

import (
	"context"
	"errors"
	"fmt"
	"net"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// Info is the calling process as the kernel saw it when it connected.
type Info struct {
	credentials.CommonAuthInfo
	PID int32
	UID uint32
	GID uint32
}

// AuthType implements credentials.AuthInfo.
func (Info) AuthType() string { return "peercred" }

// Of reads the peer's credentials from a unix connection.
func Of(conn net.Conn) (Info, error) {
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		return Info{}, fmt.Errorf("peer credentials need a unix socket, got %T", conn)
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return Info{}, fmt.Errorf("reading peer credentials: %w", err)
	}
	var (
		info Info
		serr error
	)
	if err := raw.Control(func(fd uintptr) { info, serr = fromFD(int(fd)) }); err != nil {
		return Info{}, fmt.Errorf("reading peer credentials: %w", err)
	}
	if serr != nil {
		return Info{}, fmt.Errorf("reading peer credentials: %w", serr)
	}
	info.CommonAuthInfo = credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity}
	return info, nil
}

// FromContext returns the caller's credentials inside a gRPC handler.
func FromContext(ctx context.Context) (Info, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return Info{}, false
	}
	info, ok := p.AuthInfo.(Info)
	return info, ok
}

// Credentials is a grpc TransportCredentials for unix sockets that records
// the peer's credentials. It adds no encryption: the socket never leaves the host.
type Credentials struct{}

// NewCredentials returns server credentials for a unix-socket gRPC server.
func NewCredentials() credentials.TransportCredentials { return Credentials{} }

func (Credentials) ClientHandshake(_ context.Context, _ string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return conn, Info{CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity}}, nil
}

func (Credentials) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	info, err := Of(conn)
	if err != nil {
		return nil, nil, err
	}
	return conn, info, nil
}

func (Credentials) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "peercred"}
}

func (c Credentials) Clone() credentials.TransportCredentials { return c }

func (Credentials) OverrideServerName(string) error {
	return errors.New("peercred credentials have no server name")
}
