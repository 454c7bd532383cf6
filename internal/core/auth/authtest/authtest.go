// Package authtest runs a real wid auth service in-process for tests: a
// fresh trust domain on a temp SQLite store, the admin socket and a loopback
// TLS listener. Nothing in it is faked.
package authtest

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/wid-project/wid/internal/core/anchor"
	"github.com/wid-project/wid/internal/core/auth"
	"github.com/wid-project/wid/internal/core/ca"
	"github.com/wid-project/wid/internal/core/client"
	"github.com/wid-project/wid/internal/core/kubejoin"
	"github.com/wid-project/wid/internal/core/store"
	"github.com/wid-project/wid/internal/core/store/postgres"
)

// Server is a running auth service.
type Server struct {
	*auth.Server
	AdminSocket string
	Addr        string
	CAPin       string
	TrustDomain string
	DataDir     string
}

// Option changes the auth configuration before start.
type Option func(*auth.Config)

// WithTrustDomain sets the trust domain name.
func WithTrustDomain(td string) Option { return func(c *auth.Config) { c.TrustDomain = td } }

// WithDataDir reuses a data dir, e.g. to restart on the same store.
func WithDataDir(dir string) Option { return func(c *auth.Config) { c.DataDir = dir } }

// WithListenAddr sets the TLS listener's address.
func WithListenAddr(addr string) Option { return func(c *auth.Config) { c.ListenAddr = addr } }

// WithServerNames adds names to the auth service's certificate.
func WithServerNames(names ...string) Option { return func(c *auth.Config) { c.ServerNames = names } }

// WithClock sets the auth service's clock (login lockouts, invite and
// token expiry, certificate times).
func WithClock(clock func() time.Time) Option { return func(c *auth.Config) { c.Clock = clock } }

// WithKubernetesClusters configures the clusters kubernetes join tokens may name.
func WithKubernetesClusters(clusters ...kubejoin.Cluster) Option {
	return func(c *auth.Config) { c.KubernetesClusters = clusters }
}

// WithLeaseTTL sets how long the periodic-work lease outlives a replica
// that stopped renewing it.
func WithLeaseTTL(d time.Duration) Option { return func(c *auth.Config) { c.LeaseTTL = d } }

// WithPostgres keeps the trust domain in the PostgreSQL database at dbURL
// (see pgtest.Database) instead of a SQLite file in the data dir.
func WithPostgres(dbURL string) Option {
	return func(c *auth.Config) {
		c.Store = func(ctx context.Context) (store.Backend, error) { return postgres.Open(ctx, dbURL) }
		c.StoreFile = ""
	}
}

// StartReplica starts another auth service on the store of primary, which
// must run on the PostgreSQL database at dbURL, in a new data dir made by
// ReplicaDataDir.
func StartReplica(t testing.TB, primary *Server, dbURL string, opts ...Option) *Server {
	t.Helper()
	dir := ReplicaDataDir(t, primary)
	return Start(t, append([]Option{WithPostgres(dbURL), WithDataDir(dir), WithTrustDomain(primary.TrustDomain)}, opts...)...)
}

// ReplicaDataDir makes a data dir for a replica of primary, removed when
// the test ends: a copy of primary's keys/ (the key encryption key every
// replica needs, and the anchor its store is checked against), as an
// operator copies them.
func ReplicaDataDir(t testing.TB, primary *Server) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "wid-auth-")
	if err != nil {
		t.Fatalf("making data dir: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	keys := filepath.Join(dir, "keys")
	if err := os.Mkdir(keys, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{ca.KEKFileName, anchor.FileName} {
		b, err := os.ReadFile(filepath.Join(primary.DataDir, "keys", name))
		if err != nil {
			t.Fatalf("copying the primary's keys: %v", err)
		}
		if err := os.WriteFile(filepath.Join(keys, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// Start opens and runs an auth service until the test ends.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	cfg := auth.Config{TrustDomain: "example.org", ListenAddr: "127.0.0.1:0", Version: "test"}
	if testing.Verbose() {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.DataDir == "" {
		// Unix socket paths are limited to ~100 bytes; t.TempDir() can be longer.
		dir, err := os.MkdirTemp("", "wid-auth-")
		if err != nil {
			t.Fatalf("making data dir: %v", err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		cfg.DataDir = dir
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := auth.Open(ctx, cfg)
	if err != nil {
		cancel()
		t.Fatalf("starting auth service: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("auth service stopped with: %v", err)
		}
		srv.Close()
	})
	info := srv.Info()
	return &Server{Server: srv, AdminSocket: info.AdminSocket, Addr: info.Addr, CAPin: info.CAPin, TrustDomain: info.TrustDomain.Name(), DataDir: cfg.DataDir}
}

// AdminClient connects to the admin socket.
func (s *Server) AdminClient(t testing.TB) *client.Client {
	t.Helper()
	c, err := client.Dial(client.Config{AdminSocket: s.AdminSocket})
	if err != nil {
		t.Fatalf("dialing admin socket: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// LocalAgentClient connects to the TLS listener as the in-process agent's
// bot (local-agent, holding the built-in local-agent role), as widagent
// start does.
func (s *Server) LocalAgentClient(t testing.TB) *client.Client {
	t.Helper()
	id, err := s.LocalAgentIdentity(context.Background(), "authtest")
	if err != nil {
		t.Fatalf("getting the local agent's identity: %v", err)
	}
	c, err := client.Dial(client.Config{Auth: s.Addr, Identity: id})
	if err != nil {
		t.Fatalf("dialing the auth service as the local agent: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
