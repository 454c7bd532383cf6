// Package auth is the wid auth service: it owns the trust domain's CAs, its
// roles, users, bots, join tokens and workload identities, issues SVIDs after
// checking the caller's roles, and records every decision in the audit log.
// Private CA keys never leave it and never appear in logs or audit events.
package auth

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/audit"
	"github.com/wid-project/wid/internal/core/ca"
	"github.com/wid-project/wid/internal/core/client"
	"github.com/wid-project/wid/internal/core/issuer"
	"github.com/wid-project/wid/internal/core/kubejoin"
	"github.com/wid-project/wid/internal/core/paths"
	"github.com/wid-project/wid/internal/core/peercred"
	"github.com/wid-project/wid/internal/core/store"
	"github.com/wid-project/wid/internal/core/store/sqlite"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
)

// DefaultTrustDomain is used on first start when none is given.
const DefaultTrustDomain = "example.org"

// DefaultListenAddr is the TLS listener's default address.
const DefaultListenAddr = "127.0.0.1:3025"

// metaTrustDomain is the store meta key holding the trust domain name.
const metaTrustDomain = "trust_domain"

// Config configures the auth service.
type Config struct {
	// DataDir holds wid.db, keys/ and admin.sock.
	DataDir string
	// TrustDomain is required to match the stored one, if any; "" accepts it.
	TrustDomain string
	// ListenAddr is host:port for the TLS listener ("" disables it).
	ListenAddr string
	// ServerNames are extra DNS names or IPs for the auth service's certificate.
	ServerNames []string
	Logger      *slog.Logger
	Version     string
	// Clock is for tests; nil means time.Now.
	Clock func() time.Time
}

// Info describes a started auth service, for people.
type Info struct {
	TrustDomain spiffeid.TrustDomain
	// Created is true when this start created the trust domain.
	Created     bool
	Addr        string
	AdminSocket string
	CAPin       string
	DataDir     string
}

// Server is a running auth service.
type Server struct {
	authv1.UnimplementedAuthServiceServer

	cfg    Config
	log    *slog.Logger
	clock  func() time.Time
	td     spiffeid.TrustDomain
	db     store.Backend
	audit  *audit.Log
	cas    *ca.Manager
	issuer *issuer.Issuer
	res    *resources
	host   string

	tlsLis   net.Listener
	adminLis net.Listener
	info     Info

	certMu     sync.Mutex
	serverCert *tls.Certificate

	// changes wakes agent streams when what they serve from may have
	// changed: resource writes and CA reloads call it.
	changes *stateNotifier
	// generation numbers the agent states pushed (see WatchAgent).
	generation atomic.Int64
	// stopping is closed when Run begins to stop, ending agent streams
	// that would otherwise hold up a graceful stop.
	stopping chan struct{}
	stopOnce sync.Once
	// agentHosts maps a bot's name to the host its agent last named, for
	// audit events of calls that carry no host.
	agentHosts sync.Map
	// attestations remembers recently recorded attestation ids.
	attestations *recentIDs
	// unknown counts failed logins of names that are not users.
	unknown unknownFailures
	// agents follows what each agent holds, for CA rotations.
	agents *agentTracker
	// kube checks the service-account tokens of kubernetes joins.
	kube *kubejoin.Verifier
	// kek seals secrets at rest: CA keys and TOTP secrets.
	kek *ca.KEK
	// credLocks serializes credential writes per user.
	credLocks credentialLocks
	// denials rate-limits denial audit events per source.
	denials *denialLimiter
	// logins bounds the cost that login attempts may ask for.
	logins *loginLimiter
}

// Open loads or creates the trust domain in cfg.DataDir and binds the
// listeners. Call Run to serve, or Close to release everything.
func Open(ctx context.Context, cfg Config) (_ *Server, err error) {
	if cfg.DataDir == "" {
		return nil, errors.New("a data dir is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	clock := cfg.Clock
	if clock == nil {
		clock = time.Now
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("creating data dir: %w", err)
	}
	if err := os.Chmod(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("securing data dir: %w", err)
	}
	db, err := sqlite.Open(ctx, filepath.Join(cfg.DataDir, "wid.db"))
	if err != nil {
		return nil, fmt.Errorf("opening the store in %s: %w", cfg.DataDir, err)
	}
	s := &Server{
		cfg: cfg, log: cfg.Logger, clock: clock, db: db,
		changes: newStateNotifier(), stopping: make(chan struct{}), attestations: newRecentIDs(maxRecentAttestations),
		denials: newDenialLimiter(time.Now), logins: newLoginLimiter(time.Now),
	}
	// Seeded with the time so that generations also grow across restarts.
	s.generation.Store(clock().UnixMicro())
	s.host, _ = os.Hostname()
	defer func() {
		if err != nil {
			s.Close()
		}
	}()

	td, created, err := s.loadTrustDomain(ctx)
	if err != nil {
		return nil, err
	}
	s.td = td
	kek, err := ca.LoadOrCreateKEK(filepath.Join(cfg.DataDir, "keys"))
	if err != nil {
		return nil, fmt.Errorf("loading the CA key encryption key: %w", err)
	}
	s.kek = kek
	if err := s.sealTOTPSecrets(ctx); err != nil {
		return nil, err
	}
	s.cas = ca.NewManager(db, kek, td, clock)
	casCreated, err := s.cas.Init(ctx)
	if err != nil {
		return nil, fmt.Errorf("loading the trust domain's CAs: %w", err)
	}
	if created != casCreated {
		// The meta row and the CAs are written by the same first start; one
		// without the other means a first start died half-way. Finishing it
		// is safe because nothing was ever issued.
		s.log.Warn("trust domain setup was incomplete; completed it now", "trust_domain", td.Name())
	}
	s.cas.OnChange(s.changes.changed)
	s.issuer = issuer.New(s.cas, clock)
	s.res = newResources(db, s.log, s.changes.changed)
	s.kube = kubejoin.NewVerifier(kubejoin.Options{Clock: clock, Logger: s.log})
	if created || casCreated {
		if err := s.res.ensureBuiltinRoles(ctx); err != nil {
			return nil, err
		}
	}
	s.agents = newAgentTracker(db, clock, s.log)
	if err := s.agents.load(ctx); err != nil {
		return nil, err
	}
	if s.audit, err = audit.Open(ctx, db, s.log); err != nil {
		return nil, fmt.Errorf("opening the audit log: %w", err)
	}
	s.info = Info{TrustDomain: td, Created: created, CAPin: s.cas.HostPin(), DataDir: cfg.DataDir}

	if err := s.listen(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Server) loadTrustDomain(ctx context.Context) (spiffeid.TrustDomain, bool, error) {
	stored, err := s.db.GetMeta(ctx, metaTrustDomain)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return spiffeid.TrustDomain{}, false, fmt.Errorf("reading the trust domain: %w", err)
	}
	if stored != "" {
		if s.cfg.TrustDomain != "" && s.cfg.TrustDomain != stored {
			return spiffeid.TrustDomain{}, false, fmt.Errorf("data dir %s holds trust domain %q, not %q: drop --trust-domain or use another --data-dir", s.cfg.DataDir, stored, s.cfg.TrustDomain)
		}
		td, err := spiffeid.TrustDomainFromString(stored)
		if err != nil {
			return spiffeid.TrustDomain{}, false, fmt.Errorf("stored trust domain %q is invalid: %w", stored, err)
		}
		return td, false, nil
	}
	name := s.cfg.TrustDomain
	if name == "" {
		name = DefaultTrustDomain
	}
	td, err := spiffeid.TrustDomainFromString(name)
	if err != nil {
		return spiffeid.TrustDomain{}, false, fmt.Errorf("trust domain %q is invalid: use lower-case letters, digits, dots, dashes and underscores, like example.org", name)
	}
	if err := s.db.PutMetaOnce(ctx, metaTrustDomain, td.Name()); err != nil {
		return spiffeid.TrustDomain{}, false, fmt.Errorf("recording the trust domain: %w", err)
	}
	return td, true, nil
}

func (s *Server) listen() error {
	sock := paths.AdminSocket(s.cfg.DataDir)
	if err := (paths.Socket{Path: sock, Name: "admin socket", Flag: "--data-dir"}).Prepare(0o700); err != nil {
		return err
	}
	lis, err := net.Listen("unix", sock)
	if err != nil {
		return fmt.Errorf("listening on the admin socket %s: %w", sock, err)
	}
	if err := os.Chmod(sock, 0o600); err != nil {
		lis.Close()
		return fmt.Errorf("securing the admin socket: %w", err)
	}
	s.adminLis = lis
	s.info.AdminSocket = sock
	if s.cfg.ListenAddr != "" {
		l, err := net.Listen("tcp", s.cfg.ListenAddr)
		if err != nil {
			return fmt.Errorf("listening on %s: %w (is another widagent running? pick another address with --auth-listen)", s.cfg.ListenAddr, err)
		}
		s.tlsLis = l
		s.info.Addr = l.Addr().String()
	}
	return nil
}

// Info returns what the service is and where it listens.
func (s *Server) Info() Info { return s.info }

// TrustDomain is the served trust domain.
func (s *Server) TrustDomain() spiffeid.TrustDomain { return s.td }

// Run serves until ctx is cancelled, then stops gracefully.
func (s *Server) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.audit.Run(ctx) })
	g.Go(func() error { return s.runRotations(ctx) })
	g.Go(func() error { return s.runDenialSummaries(ctx) })

	if _, err := s.audit.Emit(ctx, audit.Event{
		Type: audit.TypeAuthStarted, Actor: s.adminActor(), Host: s.host, Outcome: audit.OutcomeSuccess,
		Details: map[string]string{"trust_domain": s.td.Name(), "addr": s.info.Addr, "version": s.cfg.Version},
	}); err != nil {
		return fmt.Errorf("recording start: %w", err)
	}

	admin := grpc.NewServer(
		grpc.Creds(peercred.NewCredentials()),
		grpc.ChainUnaryInterceptor(s.unaryAuth(listenerAdmin), s.unaryLimits()),
		grpc.ChainStreamInterceptor(s.streamAuth(listenerAdmin), s.streamLimits()),
	)
	authv1.RegisterAuthServiceServer(admin, s)
	servers := []*grpc.Server{admin}
	g.Go(func() error { return serve(admin, s.adminLis) })

	if s.tlsLis != nil {
		tlsSrv := grpc.NewServer(
			grpc.Creds(credentials.NewTLS(s.tlsConfig())),
			// Clients ping every few seconds to find a dead peer quickly
			// (client.KeepaliveTime); the default policy would answer
			// such pings with GOAWAY.
			grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: client.KeepaliveTime / 2, PermitWithoutStream: true}),
			grpc.ChainUnaryInterceptor(s.unaryAuth(listenerTLS), s.unaryLimits()),
			grpc.ChainStreamInterceptor(s.streamAuth(listenerTLS), s.streamLimits()),
		)
		authv1.RegisterAuthServiceServer(tlsSrv, s)
		servers = append(servers, tlsSrv)
		g.Go(func() error { return serve(tlsSrv, s.tlsLis) })
	}
	g.Go(func() error {
		<-ctx.Done()
		s.stopOnce.Do(func() { close(s.stopping) })
		stopped := make(chan struct{})
		go func() {
			for _, srv := range servers {
				srv.GracefulStop()
			}
			close(stopped)
		}()
		select {
		case <-stopped:
		case <-time.After(5 * time.Second):
			for _, srv := range servers {
				srv.Stop()
			}
		}
		return nil
	})
	err := g.Wait()
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}

func serve(srv *grpc.Server, lis net.Listener) error {
	if err := srv.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("serving on %s: %w", lis.Addr(), err)
	}
	return nil
}

// Close releases the store and listeners. Safe after Run returned.
func (s *Server) Close() error {
	if s.adminLis != nil {
		s.adminLis.Close()
	}
	if s.tlsLis != nil {
		s.tlsLis.Close()
	}
	if s.db != nil {
		return s.db.Close()
	}
	return nil
}

func (s *Server) adminActor() string { return "admin@" + s.host }
