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
	"slices"
	"strings"
	"sync/atomic"
	"time"

	authv1 "github.com/wid-project/wid/api/auth/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
)

// Config says how to reach the auth service. Exactly one of AdminSocket or Auth.
type Config struct {
	// AdminSocket is the path of the local admin socket.
	AdminSocket string
	// Auth is host:port of the auth service's TLS listener, or several,
	// separated by commas, of its replicas.
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
	KeepaliveTime    = authv1.KeepaliveTime
	KeepaliveTimeout = authv1.KeepaliveTimeout
)

// Client is a connection to the auth service: to its admin socket, or to
// one of its replicas, moving on to the next when one is unavailable.
type Client struct {
	authv1.AuthServiceClient
	conns *replicas
	// Target says what we are connected to, for people: the admin socket,
	// or the addresses of the auth service as given.
	Target string
}

// ErrNoTarget: Dial was given neither an admin socket nor an auth address.
var ErrNoTarget = errors.New("no auth service given")

// Dial connects lazily: errors reaching the server surface on the first RPC.
// cfg.Auth may list several replicas, separated by commas, and a host name
// that resolves to several addresses stands for each of them: a call that
// finds its replica unavailable is tried on the next.
func Dial(cfg Config) (*Client, error) {
	var (
		targets []string
		opts    []grpc.DialOption
		shown   string
	)
	switch {
	case cfg.AdminSocket != "" && cfg.Auth != "":
		return nil, errors.New("give either an admin socket or an auth address, not both")
	case cfg.AdminSocket != "":
		targets = []string{"unix://" + cfg.AdminSocket}
		shown = cfg.AdminSocket
		opts = append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))
	case cfg.Auth != "":
		addrs, err := SplitAuth(cfg.Auth)
		if err != nil {
			return nil, err
		}
		tc, err := TLSConfig(cfg)
		if err != nil {
			return nil, err
		}
		for _, a := range resolveAll(addrs) {
			targets = append(targets, "passthrough:///"+a)
		}
		shown = strings.Join(addrs, ",")
		opts = append(opts, grpc.WithTransportCredentials(credentials.NewTLS(tc)),
			// A peer that stops answering (a frozen or partitioned auth
			// host) is found within seconds rather than when TCP gives up,
			// minutes later: a stream over it fails, and the agent says so.
			grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: KeepaliveTime, Timeout: KeepaliveTimeout, PermitWithoutStream: true}))
		if len(targets) > 1 {
			// A replica that accepts connections but never finishes a
			// handshake (a stopped process) fails a call in seconds, so
			// that it moves to the next replica; and one that comes back
			// is found again within seconds, not gRPC's two minutes.
			opts = append(opts, grpc.WithConnectParams(grpc.ConnectParams{
				Backoff:           backoff.Config{BaseDelay: 200 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 5 * time.Second},
				MinConnectTimeout: ConnectTimeout,
			}))
		}
	default:
		return nil, ErrNoTarget
	}
	opts = append(opts, cfg.DialOptions...)
	r := &replicas{}
	for _, target := range targets {
		conn, err := grpc.NewClient(target, opts...)
		if err != nil {
			r.close()
			return nil, fmt.Errorf("connecting to %s: %w", shown, err)
		}
		r.addrs = append(r.addrs, strings.TrimPrefix(strings.TrimPrefix(target, "passthrough:///"), "unix://"))
		r.conns = append(r.conns, conn)
	}
	return &Client{AuthServiceClient: authv1.NewAuthServiceClient(r), conns: r, Target: shown}, nil
}

// ConnectTimeout bounds one attempt to connect to a replica, handshake
// included.
const ConnectTimeout = 4 * time.Second

// maxAuthAddrs bounds the replicas one --auth may name, after host names
// are resolved.
const maxAuthAddrs = 16

// SplitAuth splits an --auth value, host:port[,host:port...], checking each.
func SplitAuth(auth string) ([]string, error) {
	var addrs []string
	for _, a := range strings.Split(auth, ",") {
		a = strings.TrimSpace(a)
		if a == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(a); err != nil {
			return nil, fmt.Errorf("auth address %q is not host:port", a)
		}
		if !slices.Contains(addrs, a) {
			addrs = append(addrs, a)
		}
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("auth address %q names no host:port", auth)
	}
	if len(addrs) > maxAuthAddrs {
		return nil, fmt.Errorf("--auth names %d addresses; at most %d are taken", len(addrs), maxAuthAddrs)
	}
	return addrs, nil
}

// lookupHost resolves host names; tests give names several addresses.
var lookupHost = net.DefaultResolver.LookupHost

// resolveAll expands each host name to its addresses, so that a name with
// several A records stands for several replicas. A name that does not
// resolve now is kept as it is, to be resolved when it is dialled.
func resolveAll(addrs []string) []string {
	var out []string
	for _, a := range addrs {
		host, port, _ := net.SplitHostPort(a)
		if net.ParseIP(host) != nil {
			out = append(out, a)
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), ConnectTimeout)
		ips, err := lookupHost(ctx, host)
		cancel()
		if err != nil || len(ips) == 0 {
			out = append(out, a)
			continue
		}
		for _, ip := range ips {
			out = append(out, net.JoinHostPort(ip, port))
		}
	}
	seen := map[string]bool{}
	out = slices.DeleteFunc(out, func(a string) bool {
		dup := seen[a]
		seen[a] = true
		return dup
	})
	if len(out) > maxAuthAddrs {
		out = out[:maxAuthAddrs]
	}
	return out
}

// replicas is a connection to each replica of the auth service, of which
// one is current: calls go to it, and a call that finds it unavailable
// goes on to the next, which becomes current.
type replicas struct {
	addrs []string
	conns []*grpc.ClientConn
	cur   atomic.Int32
}

func (r *replicas) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	i := int(r.cur.Load())
	var err error
	for range r.conns {
		err = r.conns[i].Invoke(ctx, method, args, reply, opts...)
		if !r.moveOn(ctx, err) {
			return err
		}
		i = r.next(i)
	}
	return err
}

// NewStream opens a stream on the current replica, or the next that is
// available. A stream that breaks later is the caller's to reopen; it may
// call MoveOn first.
func (r *replicas) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	i := int(r.cur.Load())
	var err error
	for range r.conns {
		var s grpc.ClientStream
		s, err = r.conns[i].NewStream(ctx, desc, method, opts...)
		if !r.moveOn(ctx, err) {
			return s, err
		}
		i = r.next(i)
	}
	return nil, err
}

// moveOn says whether a call that ended with err should be tried on the
// next replica: only when there is one, and this one was unavailable.
func (r *replicas) moveOn(ctx context.Context, err error) bool {
	return len(r.conns) > 1 && status.Code(err) == codes.Unavailable && ctx.Err() == nil
}

// next makes the replica after i current, unless another call already
// moved on from i, and returns the current one.
func (r *replicas) next(i int) int {
	r.cur.CompareAndSwap(int32(i), int32((i+1)%len(r.conns)))
	return int(r.cur.Load())
}

func (r *replicas) close() error {
	var errs []error
	for _, c := range r.conns {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}

// Current is the address of the replica calls go to now.
func (c *Client) Current() string { return c.conns.addrs[c.conns.cur.Load()] }

// Addrs are the replicas' addresses, host names resolved.
func (c *Client) Addrs() []string { return slices.Clone(c.conns.addrs) }

// MoveOn makes the next replica current if addr still is: for a caller
// whose stream from addr broke or went silent, which the client cannot see.
func (c *Client) MoveOn(addr string) {
	for i, a := range c.conns.addrs {
		if a == addr {
			c.conns.next(i)
			return
		}
	}
}

// Follow makes addr current, when it is one of the replicas: a new
// client carries on with the replica an old one had moved to.
func (c *Client) Follow(addr string) {
	for i, a := range c.conns.addrs {
		if a == addr {
			c.conns.cur.Store(int32(i))
			return
		}
	}
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

// Close closes the connections.
func (c *Client) Close() error { return c.conns.close() }

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
