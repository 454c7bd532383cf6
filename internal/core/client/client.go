// Package client connects to the wid auth service, over the local admin
// socket or over mTLS TCP, for widctl, the agent and the TUI alike. It pins
// the auth service's host CA; it never trusts the system roots.
package client

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	authv1 "github.com/wid-project/wid/api/auth/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
)

// Config says how to reach the auth service. Exactly one of AdminSocket or Auth.
type Config struct {
	// AdminSocket is the path of the local admin socket.
	AdminSocket string
	// Auth is host:port of the auth service's TLS listener.
	Auth string
	// CAPin is sha256:<hex> of the host CA's SubjectPublicKeyInfo; used when
	// Identity carries no host CAs (first contact).
	CAPin string
	// Identity is the client certificate to present, if any (bots, users).
	Identity *Identity
	// DialOptions are added to the connection's own (interceptors, say).
	DialOptions []grpc.DialOption
}

// Keepalive pings on a TCP connection to the auth service: one after
// KeepaliveTime without traffic (gRPC's least), and the connection is
// dropped when no answer comes within KeepaliveTimeout. The auth service
// permits pings this often (see auth's keepalive enforcement). The agent's
// state stream also carries heartbeats, which find a dead peer sooner.
const (
	KeepaliveTime    = 10 * time.Second
	KeepaliveTimeout = 3 * time.Second
)

// Client is a connection to the auth service.
type Client struct {
	authv1.AuthServiceClient
	conn *grpc.ClientConn
	// Target says what we are connected to, for people.
	Target string
}

// Dial connects lazily: errors reaching the server surface on the first RPC.
func Dial(cfg Config) (*Client, error) {
	var (
		target string
		opts   []grpc.DialOption
		shown  string
	)
	switch {
	case cfg.AdminSocket != "" && cfg.Auth != "":
		return nil, errors.New("give either an admin socket or an auth address, not both")
	case cfg.AdminSocket != "":
		target = "unix://" + cfg.AdminSocket
		shown = cfg.AdminSocket
		opts = append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))
	case cfg.Auth != "":
		if _, _, err := net.SplitHostPort(cfg.Auth); err != nil {
			return nil, fmt.Errorf("auth address %q is not host:port", cfg.Auth)
		}
		tc, err := TLSConfig(cfg)
		if err != nil {
			return nil, err
		}
		target = "passthrough:///" + cfg.Auth
		shown = cfg.Auth
		opts = append(opts, grpc.WithTransportCredentials(credentials.NewTLS(tc)),
			// A peer that stops answering (a frozen or partitioned auth
			// host) is found within seconds rather than when TCP gives up,
			// minutes later: a stream over it fails, and the agent says so.
			grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: KeepaliveTime, Timeout: KeepaliveTimeout, PermitWithoutStream: true}))
	default:
		return nil, errors.New("no auth service given: run widctl next to a running widagent, or pass --auth HOST:PORT")
	}
	opts = append(opts, cfg.DialOptions...)
	conn, err := grpc.NewClient(target, opts...)
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", shown, err)
	}
	return &Client{AuthServiceClient: authv1.NewAuthServiceClient(conn), conn: conn, Target: shown}, nil
}

// maxListPages bounds one ListAll, so that a server that keeps answering
// with a next page cannot keep a client looping forever.
const maxListPages = 100_000

// ListAll lists every resource of kind, asking for page after page, with
// the corrupt stored documents the pages named.
func ListAll(ctx context.Context, c authv1.AuthServiceClient, kind string) ([][]byte, []*authv1.CorruptResource, error) {
	var (
		docs    [][]byte
		corrupt []*authv1.CorruptResource
		token   string
	)
	for range maxListPages {
		resp, err := c.ListResources(ctx, &authv1.ListResourcesRequest{Kind: kind, PageToken: token})
		if err != nil {
			return nil, nil, err
		}
		docs = append(docs, resp.GetResources()...)
		corrupt = append(corrupt, resp.GetCorrupt()...)
		if resp.GetNextPageToken() == "" {
			return docs, corrupt, nil
		}
		if resp.GetNextPageToken() == token {
			return nil, nil, fmt.Errorf("listing %s: the auth service answered the same page twice", kind)
		}
		token = resp.GetNextPageToken()
	}
	return nil, nil, fmt.Errorf("listing %s: the auth service answered over %d pages", kind, maxListPages)
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Conn is the underlying connection, for other services on the same server.
func (c *Client) Conn() *grpc.ClientConn { return c.conn }

// TLSConfig builds the client TLS configuration: TLS 1.3, the server's chain
// verified against the identity's host CAs or, failing those, the pinned CA.
func TLSConfig(cfg Config) (*tls.Config, error) {
	var roots []*x509.Certificate
	if cfg.Identity != nil {
		roots = cfg.Identity.HostCAs
	}
	pin := strings.TrimSpace(cfg.CAPin)
	if len(roots) == 0 && pin == "" {
		return nil, errors.New("the auth service's CA is not known: pass --ca-pin sha256:... as printed by widagent start")
	}
	if pin != "" {
		if _, err := ParsePin(pin); err != nil {
			return nil, err
		}
	}
	tc := &tls.Config{
		MinVersion: tls.VersionTLS13,
		// Verification is by CA, not by host name: the pin or the joined
		// host CA is the trust anchor, as with tctl and tbot.
		InsecureSkipVerify: true, //nolint:gosec // replaced by VerifyConnection below
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verifyServer(cs.PeerCertificates, roots, pin)
		},
	}
	if cfg.Identity != nil {
		tc.Certificates = []tls.Certificate{cfg.Identity.TLSCertificate()}
	}
	return tc, nil
}

// ParsePin checks a "sha256:<64 hex>" pin and returns its bytes.
func ParsePin(pin string) ([]byte, error) {
	h, ok := strings.CutPrefix(pin, "sha256:")
	if ok {
		b, err := hex.DecodeString(h)
		if err == nil && len(b) == sha256.Size {
			return b, nil
		}
	}
	return nil, fmt.Errorf("CA pin %q is malformed: it is sha256: followed by 64 hex digits, as printed by widagent start", pin)
}

// Pin returns the pin of a CA certificate.
func Pin(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func verifyServer(chain []*x509.Certificate, roots []*x509.Certificate, pin string) error {
	if len(chain) == 0 {
		return errors.New("the auth service sent no certificate")
	}
	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	if pin != "" {
		// The pinned CA travels in the server's chain; trust it only if its key matches.
		found := false
		for _, c := range chain[1:] {
			if c.IsCA && Pin(c) == pin {
				pool.AddCert(c)
				found = true
			}
		}
		if !found && len(roots) == 0 {
			return fmt.Errorf("the auth service's CA does not match the pin %s: check --ca-pin against what widagent start printed; if the CA was not rotated, someone may be impersonating the auth service", pin)
		}
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	_, err := chain[0].Verify(x509.VerifyOptions{
		Roots:         pool,
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		CurrentTime:   time.Now(),
	})
	if err != nil {
		return fmt.Errorf("the auth service's certificate is not from its trust domain's host CA: %w", err)
	}
	return nil
}
