// Package auth is the wid auth service: it owns the trust domain's CAs, its
// roles, users, bots, join tokens and workload identities, issues SVIDs after
// checking the caller's roles, and records every decision in the audit log.
// Private CA keys never leave it and never appear in logs or audit events.
package auth

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
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
	"github.com/wid-project/wid/internal/core/anchor"
	"github.com/wid-project/wid/internal/core/audit"
	"github.com/wid-project/wid/internal/core/ca"
	"github.com/wid-project/wid/internal/core/datadir"
	"github.com/wid-project/wid/internal/core/issuance"
	"github.com/wid-project/wid/internal/core/issuer"
	"github.com/wid-project/wid/internal/core/kubejoin"
	"github.com/wid-project/wid/internal/core/login"
	"github.com/wid-project/wid/internal/core/paths"
	"github.com/wid-project/wid/internal/core/peercred"
	"github.com/wid-project/wid/internal/core/rotation"
	"github.com/wid-project/wid/internal/core/store"
	"github.com/wid-project/wid/internal/core/store/sqlite"
	"github.com/wid-project/wid/internal/core/x509pop"
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
	// Store opens the backend that holds the trust domain; nil means the
	// SQLite store <DataDir>/wid.db. The server closes what it returns.
	Store func(ctx context.Context) (store.Backend, error)
	// StoreFile is the file Store opens when the store is a SQLite file,
	// and "" when it is a database server: a data dir with keys but no
	// such file is refused before the file is made anew.
	StoreFile string
	// KEKFile, when set, is the key encryption key that seals the CA keys,
	// instead of <DataDir>/keys/ca.key: a copy of the one the first
	// replica wrote, which every replica on a shared store needs.
	KEKFile string
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
	// Init lets Open make a new trust domain in a data dir that is not
	// empty (keys/ without a store, after the operator chose not to restore
	// one). Without it a trust domain is made only in an empty data dir.
	Init bool
	// LeaseTTL is how long the periodic-work lease (automatic rotations,
	// sweeps) outlives a replica that stopped renewing it; 0 means
	// lease.DefaultTTL. Tests shorten it.
	LeaseTTL time.Duration
	// KubernetesClusters are the clusters kubernetes join tokens may name:
	// the only API servers and JWKS URLs the auth service calls, and the
	// only files it reads for them.
	KubernetesClusters []kubejoin.Cluster
	// AgentSync is how agents are kept up to date: AgentSyncIncremental
	// ("" too) or AgentSyncFull.
	AgentSync string
	// CASubject is the subject of the CA certificates this service makes
	// from now on (ca_subject); existing ones keep theirs until rotated.
	CASubject ca.Subject
	// SVIDTTL and JWTSVIDTTL are an SVID's life when neither the request
	// nor its workload identity names one; 0 means issuer.DefaultX509TTL
	// and issuer.DefaultJWTTTL. Roles' max_svid_ttl still caps them.
	SVIDTTL    time.Duration
	JWTSVIDTTL time.Duration
	// AgentSendTimeout ends an agent stream that has not taken a message
	// for this long (default 30s).
	AgentSendTimeout time.Duration
	// BundleEndpointListen is host:port for the SPIFFE bundle endpoint
	// ("" disables it). It serves with the https_spiffe profile unless
	// BundleEndpointCertFile and BundleEndpointKeyFile are given
	// (https_web), read again when they change.
	BundleEndpointListen   string
	BundleEndpointCertFile string
	BundleEndpointKeyFile  string
	// BundleRefreshHint is the spiffe_refresh_hint the endpoint serves;
	// 0 means ca.BundleRefreshHint.
	BundleRefreshHint time.Duration
	// JWTIssuer, when set, is the iss of every JWT-SVID, and the bundle
	// endpoint serves OIDC discovery for it.
	JWTIssuer string
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
	// BundleEndpoint is the bundle endpoint's URL; "" when there is none.
	BundleEndpoint string
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
	// issuance is the one path of every SVID the RPCs issue.
	issuance *issuance.Service
	res      *resources
	host     string
	// replica names this process among the auth replicas of one store:
	// its host and a random suffix, new at every start.
	replica string

	// lock keeps every other process off the data dir while this one runs.
	lock     *datadir.Lock
	tlsLis   net.Listener
	adminLis net.Listener
	info     Info

	certMu     sync.Mutex
	serverCert *tls.Certificate

	// changes wakes agent streams when what they serve from may have
	// changed, with the full sync: resource writes and CA reloads call it.
	changes *stateNotifier
	// agentLog is the change log agent streams follow; nil with the full sync.
	agentLog *agentFeed
	// agentSendTimeout ends agent streams that take nothing.
	agentSendTimeout time.Duration
	// snapshotSends bounds the snapshots sent at once (maxSnapshotSends).
	snapshotSends chan struct{}
	metrics       *serverMetrics
	// generation numbers the agent states pushed (see WatchAgent).
	generation atomic.Int64
	// stopping is closed when Run begins to stop, ending agent streams
	// that would otherwise hold up a graceful stop.
	stopping chan struct{}
	stopOnce sync.Once
	// legacyHosts maps the serial of a bot certificate that carries no
	// host to the host its open WatchAgent stream named (rememberLegacyHost).
	legacyHosts sync.Map
	// attestations remembers recently recorded attestation ids.
	attestations *recentIDs
	// agents follows what each agent holds, for CA rotations.
	agents *rotation.Tracker
	// anchor keeps keys/anchor level with the store.
	anchor *anchor.Keeper
	// kube checks the service-account tokens of kubernetes joins.
	kube *kubejoin.Verifier
	// popChallenges are the x509pop joins' challenges.
	popChallenges *x509pop.Challenges
	// kek seals secrets at rest: CA keys and TOTP secrets.
	kek *ca.KEK
	// credLocks serializes credential writes per user.
	credLocks login.Locks
	// denials rate-limits denial audit events per source.
	denials *denialLimiter
	// logins bounds the cost that login attempts may ask for.
	logins *login.Limiter
	// feed follows the store's change log (see changefeed.go).
	feed changeFeed
	// fed holds the foreign trust domains' bundles (see federation.go).
	fed *federations
	// bundleEndpoint serves the bundle endpoint (see bundleendpoint.go).
	bundleEndpoint *bundleEndpoint
	// lockSt holds the locks and the streams they may end (see locks.go).
	lockSt lockState
	// crl is the last CRL built (see revoke.go).
	crl crlCache
	// revokedInt holds the revoked logins and bot certificates (see autorevoke.go).
	revokedInt internalRevoked
}

// Open loads or creates the trust domain in cfg.DataDir and binds the
// listeners. Call Run to serve, or Close to release everything.
func Open(ctx context.Context, cfg Config) (_ *Server, err error) {
	if cfg.DataDir == "" {
		return nil, errors.New("a data dir is required")
	}
	if err := kubejoin.ValidateClusters(cfg.KubernetesClusters); err != nil {
		return nil, err
	}
	if err := validateSettings(cfg); err != nil {
		return nil, err
	}
	switch cfg.AgentSync {
	case "", AgentSyncIncremental, AgentSyncFull:
	default:
		return nil, fmt.Errorf("agent sync %q is unknown: use %s or %s", cfg.AgentSync, AgentSyncIncremental, AgentSyncFull)
	}
	if cfg.AgentSendTimeout <= 0 {
		cfg.AgentSendTimeout = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	clock := cfg.Clock
	if clock == nil {
		clock = time.Now
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, datadir.Explain(cfg.DataDir, "creating it", err)
	}
	if err := os.Chmod(cfg.DataDir, 0o700); err != nil {
		return nil, datadir.Explain(cfg.DataDir, "making it private (chmod 700)", err)
	}
	lock, err := datadir.Acquire(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	openStore, file := cfg.Store, cfg.StoreFile
	if openStore == nil {
		file = filepath.Join(cfg.DataDir, storeFile)
		openStore = func(ctx context.Context) (store.Backend, error) {
			db, err := sqlite.Open(ctx, file)
			if err != nil {
				return nil, datadir.Explain(cfg.DataDir, "opening the store", err)
			}
			return db, nil
		}
	}
	cfg.StoreFile = file
	if err := checkDataDir(cfg.DataDir, file, cfg.Init); err != nil {
		lock.Release()
		return nil, err
	}
	db, err := openStore(ctx)
	if err != nil {
		lock.Release()
		return nil, err
	}
	// Before anything is read from the store: every later change reaches
	// the caches through the change feed.
	feedFrom, err := db.ChangeHead(ctx)
	if err != nil {
		db.Close()
		lock.Release()
		return nil, fmt.Errorf("reading the store's change log: %w", err)
	}
	s := &Server{
		cfg: cfg, log: cfg.Logger, clock: clock, db: db, lock: lock,
		changes: newStateNotifier(), stopping: make(chan struct{}), attestations: newRecentIDs(maxRecentAttestations),
		denials: newDenialLimiter(time.Now), logins: login.NewLimiter(time.Now),
		agentSendTimeout: cfg.AgentSendTimeout, metrics: newServerMetrics(), snapshotSends: make(chan struct{}, maxSnapshotSends),
	}
	s.feed.revision = feedFrom
	// Seeded with the time so that generations also grow across restarts.
	s.generation.Store(clock().UnixMicro())
	s.host, _ = os.Hostname()
	s.replica = newReplicaID(s.host)
	defer func() {
		if err != nil {
			s.Close()
		}
	}()

	s.res = newResources(db, s.log, s.resourcesChanged)
	s.res.incremental = cfg.AgentSync != AgentSyncFull
	created, err := s.openTrustDomain(ctx)
	if err != nil {
		return nil, err
	}
	td := s.td
	// TOTP secrets written in plaintext by earlier versions are sealed now.
	if err := login.SealTOTPSecrets(ctx, s.db, s.kek, s.log); err != nil {
		return nil, err
	}
	s.fed = newFederations()
	if err := s.reloadFederations(ctx); err != nil {
		s.log.Warn("the federated bundles could not be read; workloads get them once they can be", "error", err)
	}
	if cfg.AgentSync != AgentSyncFull {
		s.agentLog = newAgentFeed(td.Name(), s.log, s.res, s.cas.AgentView, clock)
		s.agentLog.federated = s.fed.agentBundles
		s.agentLog.locks = s.agentLocks
		s.agentLog.crls = s.agentCRLs
		s.agentLog.revokedIDs = s.agentRevokedIDs
		s.agentLog.ca, _ = s.agentLog.buildCAs()
	}
	s.cas.OnChange(func() { s.agentChanged(context.Background(), feedKindCA, "") })
	// The anchor follows every CA change once it is in the store.
	s.cas.OnChange(func() { s.anchor.SetCAKeys(s.cas.KeyIDs()) })
	s.issuer = issuer.New(s.cas, clock)
	if err := checkJWTIssuer(cfg.JWTIssuer); err != nil {
		return nil, err
	}
	s.issuer.SetJWTIssuer(cfg.JWTIssuer)
	s.issuance = issuance.New(td, s.issuer, clock)
	s.issuance.Locked = func(id spiffeid.ID) (string, string) { return s.lockedIDReason(context.Background(), id) }
	s.kube = kubejoin.NewVerifier(kubejoin.Options{Clock: clock, Logger: s.log, Clusters: cfg.KubernetesClusters})
	s.popChallenges = x509pop.NewChallenges(clock)
	s.agents = rotation.NewTracker(db, clock, s.log, s.replica)
	if s.audit, err = audit.Open(ctx, db, s.log); err != nil {
		return nil, fmt.Errorf("opening the audit log: %w", err)
	}
	s.audit.OnCommit(s.anchor.SetAuditHead)
	s.info = Info{TrustDomain: td, Created: created, CAPin: s.cas.HostPin(), DataDir: cfg.DataDir}

	if err := s.listen(); err != nil {
		return nil, err
	}
	return s, nil
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
	return s.openBundleEndpoint()
}

// Info returns what the service is and where it listens.
func (s *Server) Info() Info { return s.info }

// TrustDomain is the served trust domain.
func (s *Server) TrustDomain() spiffeid.TrustDomain { return s.td }

// stopGrace bounds how long a stop waits for in-flight RPCs to finish
// before it cuts them off.
const stopGrace = 5 * time.Second

// Run serves until ctx is cancelled, then stops gracefully: the listeners
// close, in-flight RPCs finish (within stopGrace), and then the audit log
// commits what they queued and stops.
func (s *Server) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	// The audit log outlives the RPCs: an RPC accepted before the stop
	// records its event and answers, and only then does the log stop.
	auditCtx, stopAudit := context.WithCancel(context.WithoutCancel(ctx))
	defer stopAudit()
	g.Go(func() error { return s.audit.Run(auditCtx) })
	g.Go(func() error { return s.anchor.Run(auditCtx) })
	g.Go(func() error { return s.runPeriodic(ctx) })
	g.Go(func() error { return s.runDenialSummaries(ctx) })
	g.Go(func() error { return s.followChanges(ctx) })
	if s.bundleEndpoint != nil {
		g.Go(func() error { return s.runBundleEndpoint(ctx) })
	}
	g.Go(func() error { return s.refreshAgentCRLs(ctx) })

	if _, err := s.audit.Emit(ctx, audit.Event{
		Type: audit.TypeAuthStarted, Actor: s.adminActor(), Host: s.host, Outcome: audit.OutcomeSuccess,
		Details: map[string]string{"trust_domain": s.td.Name(), "addr": s.info.Addr, "version": s.cfg.Version},
	}); err != nil {
		return fmt.Errorf("recording start: %w", err)
	}

	admin := grpc.NewServer(
		grpc.Creds(peercred.NewCredentials()),
		grpc.ChainUnaryInterceptor(markUnary, s.unaryAuth(listenerAdmin), s.unaryLimits()),
		grpc.ChainStreamInterceptor(markStream, s.streamAuth(listenerAdmin), s.lockStreamInterceptor, s.streamLimits()),
	)
	authv1.RegisterAuthServiceServer(admin, s)
	servers := []*grpc.Server{admin}
	g.Go(func() error { return serve(admin, s.adminLis) })

	if s.tlsLis != nil {
		tlsSrv := grpc.NewServer(
			grpc.Creds(credentials.NewTLS(s.tlsConfig())),
			// Clients ping every few seconds to find a dead peer quickly
			// (authv1.KeepaliveTime); the default policy would answer
			// such pings with GOAWAY.
			grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: authv1.KeepaliveTime / 2, PermitWithoutStream: true}),
			grpc.ChainUnaryInterceptor(markUnary, s.unaryAuth(listenerTLS), s.unaryLimits()),
			grpc.ChainStreamInterceptor(markStream, s.streamAuth(listenerTLS), s.lockStreamInterceptor, s.streamLimits()),
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
		case <-time.After(stopGrace):
			s.log.Warn("RPCs still running after the grace period; stopping them", "grace", stopGrace)
			for _, srv := range servers {
				srv.Stop()
			}
			<-stopped
		}
		stopAudit()
		return nil
	})
	err := g.Wait()
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	// The audit log has committed its last event: anchor it.
	if ferr := s.anchor.Flush(); ferr != nil {
		err = errors.Join(err, fmt.Errorf("recording the audit head in the trust domain's anchor: %w", ferr))
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
	if s.bundleEndpoint != nil {
		s.bundleEndpoint.lis.Close()
	}
	var err error
	if s.db != nil {
		err = s.db.Close()
	}
	// Last: the store is closed before another process may open it.
	s.lock.Release()
	return err
}

// newReplicaID names an auth process: host plus random, so that two
// processes on one host, or one process and its restart, differ.
func newReplicaID(host string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return host + "/" + hex.EncodeToString(b[:])
}

func (s *Server) adminActor() string { return "admin@" + s.host }
