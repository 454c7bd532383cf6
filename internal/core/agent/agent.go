// Package agent is wid's agent: it joins the trust domain as a bot, follows
// the auth service's pushed state (trust bundle and workload identities),
// attests each local caller of its unix socket, and serves the SPIFFE
// Workload API from an in-memory SVID cache that it renews at half life. It
// also writes SVIDs to files for software that cannot speak the API.
//
// The agent generates every workload key itself and sends the auth service
// only CSRs and public keys. It never serves an SVID past its expiry, and it
// never polls: every change reaches it on one stream.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/attest"
	"github.com/wid-project/wid/internal/core/client"
	"github.com/wid-project/wid/internal/core/rbac"
	"github.com/wid-project/wid/internal/core/x509pop"
	"golang.org/x/sync/errgroup"
)

// Attestor tells who a Workload API caller is.
type Attestor interface {
	Attest(ctx context.Context, peer attest.Peer) (attest.Result, error)
}

// Config is everything the agent needs; widagent fills it from flags and
// its config file.
type Config struct {
	// SocketPath is the Workload API's unix socket.
	SocketPath string
	// DataDir holds the agent's bot identity (<DataDir>/agent).
	DataDir string
	// Host names this machine in the auth service's audit log.
	Host string

	// AuthAddr is the auth service's host:port.
	AuthAddr string
	// CAPin pins the auth service's host CA on first contact.
	CAPin string
	// JoinToken joins the trust domain when the data dir holds no identity:
	// the secret of a token join, or the join token's name for the
	// kubernetes method.
	JoinToken string
	// JoinMethod is "token" (the default) or "kubernetes".
	JoinMethod string
	// ServiceAccountTokenFile holds the projected Kubernetes service-account
	// token of the kubernetes method; it is read afresh on every join
	// because the kubelet rotates it.
	ServiceAccountTokenFile string
	// X509PopCertFile and X509PopKeyFile are the x509pop method's
	// certificate (PEM, with any intermediates) and its private key.
	X509PopCertFile string
	X509PopKeyFile  string
	// ExtraWorkloadAPIs are more Workload API sockets, each with its own
	// config SVIDs.
	ExtraWorkloadAPIs []WorkloadAPIConfig
	// LocalIdentity, set when the agent runs in the auth service's own
	// process, mints the agent's bot identity without a join token. The
	// agent still talks to the auth service over AuthAddr, with mTLS.
	LocalIdentity func(ctx context.Context) (*client.Identity, error)

	// DiagAddr, when set, serves /healthz, /readyz and /metrics.
	DiagAddr string
	// AuthReady, set when the agent runs in the auth service's process,
	// must be nil too for /readyz: the process serves both.
	AuthReady func(ctx context.Context) error
	// SVIDs are SVIDs from the agent's own config.
	SVIDs []ConfigSVID
	// Outputs are SVIDs written to files.
	Outputs []Output
	// AllowUnauthenticatedVerifiers lets callers entitled to no identity
	// fetch bundles and validate JWT-SVIDs, as SPIRE's option of that name.
	AllowUnauthenticatedVerifiers bool
	// SDS names the secrets Envoy may ask for besides SPIFFE IDs and trust
	// domains.
	SDS SDSConfig
	// StreamSendTimeout ends a Workload API or SDS stream whose client has
	// read nothing for this long while the agent had an update for it
	// (default 30s): its unread responses would otherwise stay queued in
	// the agent for as long as the client keeps the stream open.
	StreamSendTimeout time.Duration

	// Attestors configures the attestors; by default only unix is on.
	Attestors AttestorsConfig
	// Attestor, when set, replaces the attestors Attestors configures.
	Attestor Attestor
	Logger   *slog.Logger
	// OnListen, if set, is told the socket path and diagnostics address
	// once they are listening.
	OnListen func(socket, diag string)
	// Collectors are more metrics for /metrics: those of an auth service
	// in the same process.
	Collectors []prometheus.Collector
	// DiagHandlers are more paths for the diagnostics listener: those an
	// auth service in the same process serves on its own (its CRLs), so
	// one --diag-addr serves the same paths in every role.
	DiagHandlers map[string]http.Handler
}

// Agent is one running agent. Build it with New, run it with Run.
type Agent struct {
	cfg      Config
	sds      SDSConfig
	logger   *slog.Logger
	metrics  *metrics
	attestor Attestor
	// closeAttestors releases what the attestors hold (a D-Bus connection).
	closeAttestors func()
	config         []*rbac.Workload
	// extraConfig are the config SVIDs of Config.ExtraWorkloadAPIs.
	extraConfig [][]*rbac.Workload
	cache       *cache
	attests     *attestLog
	// dropLog bounds the log lines about streams ended for not reading.
	dropLog rateLog
	// retryLog bounds the log lines about reconnecting to the auth service.
	retryLog rateLog

	// conn is the current client of the auth service; replaced when the
	// bot certificate is renewed.
	conn atomic.Pointer[client.Client]
	id   atomic.Pointer[client.Identity]
	// idChanged is notified when the identity is replaced.
	idChanged *notifier
	// renewNow asks for the bot certificate to be renewed at once (a host
	// CA rotation moved signing to a new key).
	renewNow chan struct{}
	// hostCAsTrusted is the host CA sequence whose certificates the agent
	// trusts for the auth service.
	hostCAsTrusted atomic.Int64
	// started is when Run began.
	started time.Time

	st           atomic.Pointer[state]
	stateChanged *notifier
	haveState    chan struct{}
	haveOnce     sync.Once

	watchMu     sync.Mutex
	watchCancel context.CancelFunc
	// following is true while a stream from the auth service is up and
	// has delivered a state.
	following atomic.Bool
	// skipped are the workload identities the last state could not serve,
	// as reportSkipped last logged them; only the watch loop touches it.
	skipped map[string]bool
	// resync makes the next stream ask for a snapshot, after a delta the
	// agent could not apply; only the watch loop touches it.
	resync bool

	entMu  sync.Mutex
	entGen *state
	ents   map[string]*entitlements
}

// New checks cfg and builds the agent; nothing runs until Run.
func New(cfg Config) (*Agent, error) {
	if cfg.SocketPath == "" {
		return nil, errors.New("the agent needs a workload socket path")
	}
	if cfg.AuthAddr == "" {
		return nil, errors.New("the agent needs the auth service's address: pass --auth HOST:PORT")
	}
	switch cfg.JoinMethod {
	case "", JoinMethodToken:
	case JoinMethodKubernetes:
		if cfg.ServiceAccountTokenFile == "" {
			return nil, errors.New("the kubernetes join method needs the projected service-account token's file: pass --sa-token-file")
		}
	case JoinMethodX509Pop:
		// The files are read now, so that a wrong one is named at start;
		// the host is the certificate's, as the auth service records it.
		cred, err := loadX509PopCredential(cfg.X509PopCertFile, cfg.X509PopKeyFile)
		if err != nil {
			return nil, err
		}
		cfg.Host = x509pop.HostName(cred.chain[0])
	default:
		return nil, fmt.Errorf("join method %q is unknown: use %s, %s or %s", cfg.JoinMethod, JoinMethodToken, JoinMethodKubernetes, JoinMethodX509Pop)
	}
	if cfg.LocalIdentity == nil && cfg.DataDir == "" {
		return nil, errors.New("the agent needs a data dir to keep its identity in")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.StreamSendTimeout <= 0 {
		cfg.StreamSendTimeout = 30 * time.Second
	}
	if cfg.Host == "" {
		cfg.Host, _ = os.Hostname()
	}
	configSVIDs, err := compileConfigSVIDs(cfg.SVIDs)
	if err != nil {
		return nil, err
	}
	extraConfig, err := compileSockets(cfg.SocketPath, cfg.ExtraWorkloadAPIs)
	if err != nil {
		return nil, err
	}
	sds, err := cfg.SDS.withDefaults()
	if err != nil {
		return nil, err
	}
	for i, o := range cfg.Outputs {
		if err := o.validate(); err != nil {
			return nil, fmt.Errorf("agent config outputs[%d]: %w", i+1, err)
		}
	}
	a := &Agent{
		cfg:          cfg,
		sds:          sds,
		logger:       cfg.Logger,
		metrics:      newMetrics(cfg.Collectors...),
		attestor:     cfg.Attestor,
		config:       configSVIDs,
		extraConfig:  extraConfig,
		stateChanged: newNotifier(),
		idChanged:    newNotifier(),
		renewNow:     make(chan struct{}, 1),
		haveState:    make(chan struct{}),
		ents:         map[string]*entitlements{},
	}
	a.closeAttestors = func() {}
	if a.attestor == nil {
		if a.attestor, a.closeAttestors, err = cfg.Attestors.buildAttestor(cfg.Logger); err != nil {
			return nil, err
		}
	}
	a.cache = newCache(a.issue, cfg.Logger, a.metrics)
	a.cache.authDown = func() bool { return !a.following.Load() }
	a.attests = newAttestLog(cfg.Logger)
	return a, nil
}

// Run joins (or loads its identity), then serves until ctx ends. A part
// that fails stops the others and its error is returned.
func (a *Agent) Run(ctx context.Context) error {
	a.started = time.Now()
	defer a.closeAttestors()
	// Everything local is taken before a join token is spent: a join that
	// then fails on a taken socket, port or data dir would burn the token.
	if a.cfg.LocalIdentity == nil {
		release, err := claimDataDir(a.cfg.DataDir, a.identityDir())
		if err != nil {
			return err
		}
		defer release()
	}
	srv, lis, err := a.listen()
	if err != nil {
		return err
	}
	extraSrvs, extraLiss, err := a.listenExtra()
	if err != nil {
		_ = lis.Close()
		return err
	}
	var diagLis net.Listener
	if a.cfg.DiagAddr != "" {
		if diagLis, err = net.Listen("tcp", a.cfg.DiagAddr); err != nil {
			_ = lis.Close()
			return fmt.Errorf("listening for diagnostics on %s: %w", a.cfg.DiagAddr, err)
		}
	}
	id, err := a.obtainIdentity(ctx)
	if err == nil {
		err = a.useIdentity(id)
	}
	if err != nil {
		_ = lis.Close()
		_ = os.Remove(a.cfg.SocketPath)
		for i, l := range extraLiss {
			_ = l.Close()
			_ = os.Remove(a.cfg.ExtraWorkloadAPIs[i].Listen)
		}
		if diagLis != nil {
			_ = diagLis.Close()
		}
		return err
	}
	defer func() {
		if c := a.conn.Load(); c != nil {
			_ = c.Close()
		}
	}()

	g, ctx := errgroup.WithContext(ctx)
	diagAddr := ""
	diagReady := make(chan struct{})
	if a.cfg.DiagAddr != "" {
		d := &diagServer{lis: diagLis, ready: a.ready, m: a.metrics, extra: a.cfg.DiagHandlers, bound: func(addr string) {
			diagAddr = addr
			close(diagReady)
		}}
		g.Go(func() error { return d.Run(ctx) })
	} else {
		close(diagReady)
	}
	for i, s := range extraSrvs {
		g.Go(func() error { return serve(ctx, s, extraLiss[i], a.cfg.ExtraWorkloadAPIs[i].Listen) })
	}
	g.Go(func() error { return a.watchLoop(ctx) })
	g.Go(func() error { return a.cache.Run(ctx) })
	g.Go(func() error { return a.attests.Run(ctx, a.sendAttestations) })
	g.Go(func() error { return a.renewIdentityLoop(ctx) })
	g.Go(func() error { return a.reportLoop(ctx) })
	for i := range a.cfg.Outputs {
		o := &a.cfg.Outputs[i]
		g.Go(func() error { return a.runOutput(ctx, i, o) })
	}
	g.Go(func() error { return serve(ctx, srv, lis, a.cfg.SocketPath) })
	if a.cfg.OnListen != nil {
		go func() {
			select {
			case <-diagReady:
				a.cfg.OnListen(a.cfg.SocketPath, diagAddr)
			case <-ctx.Done():
			}
		}()
	}
	return g.Wait()
}

// ready is nil while the agent follows the auth service: it has a state
// and its stream is up. A stream found dead (keepalives find a frozen auth
// host within seconds) makes it not ready, although cached SVIDs stay
// servable meanwhile: what is served may be going stale.
func (a *Agent) ready() error {
	if a.st.Load() == nil {
		return errors.New("no state from the auth service yet")
	}
	if !a.following.Load() {
		return errors.New("the stream from the auth service is down (see the agent's log); cached SVIDs are served until they expire")
	}
	if a.cfg.AuthReady != nil {
		if err := a.cfg.AuthReady(context.Background()); err != nil {
			return fmt.Errorf("the auth service in this process is not ready: %w", err)
		}
	}
	return nil
}

// waitState returns the current state, waiting for the first one up to a
// bound: a workload that asks while the agent starts gets its SVID as soon
// as the agent has one, rather than an error and a client-side backoff.
func (a *Agent) waitState(ctx context.Context) (*state, error) {
	if st := a.st.Load(); st != nil {
		return st, nil
	}
	t := time.NewTimer(15 * time.Second)
	defer t.Stop()
	select {
	case <-a.haveState:
		return a.st.Load(), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-t.C:
		return nil, errNoState
	}
}

var errNoState = errors.New("the agent has not reached the auth service yet")

func (a *Agent) setState(st *state) {
	// Drop what the new state no longer gives before anything can ask for
	// it under the new state, and before refusals are retried, so that a
	// removed identity is not asked for again.
	a.cache.prune(st)
	prev := a.st.Swap(st)
	a.haveOnce.Do(func() { close(a.haveState) })
	if prev == nil || prev.generation != st.generation || !sameBundle(prev, st) {
		a.cache.resetRefusals()
	}
	a.followRotation(st)
	a.attests.retryNow()
	a.stateChanged.notify()
}

// identityDir is where a remote agent keeps its bot identity.
func (a *Agent) identityDir() string { return filepath.Join(a.cfg.DataDir, "agent") }

// client is the current connection to the auth service.
func (a *Agent) client() *client.Client { return a.conn.Load() }

// issue is the cache's way to the auth service.
func (a *Agent) issue(ctx context.Context, req *authv1.IssueWorkloadSVIDsRequest) (*authv1.IssueWorkloadSVIDsResponse, error) {
	return a.client().IssueWorkloadSVIDs(ctx, req)
}
