package agentcmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"github.com/wid-project/wid/internal/advice"
	"github.com/wid-project/wid/internal/cli/cmdutil"
	"github.com/wid-project/wid/internal/core/agent"
	"github.com/wid-project/wid/internal/core/auth"
	"github.com/wid-project/wid/internal/core/client"
	"github.com/wid-project/wid/internal/core/kubejoin"
	"github.com/wid-project/wid/internal/core/paths"
	"github.com/wid-project/wid/internal/core/store/storeurl"
	"github.com/wid-project/wid/internal/version"
	"golang.org/x/sync/errgroup"
)

// NewCmdStart builds `widagent start`. runF, when set, gets the settings
// instead of starting anything.
func NewCmdStart(f *cmdutil.Factory, runF func(*StartOptions) error) *cobra.Command {
	var configFile string
	cmd := &cobra.Command{
		Use:   "start",
		Short: "Start the auth service and the agent in the foreground",
		Long: `Start widagent in the foreground until SIGINT or SIGTERM.

With no --roles, one process runs both the auth service and the agent: the
agent joins its own auth service in-process (no token needed) as the bot
local-agent, which holds the built-in role local-agent, and serves the SPIFFE
Workload API on --workload-socket. On the first start of a fresh data dir it
also creates the workload identity dev-uid, which gives processes of the
starting user spiffe://<trust domain>/uid/<uid> (--no-dev-identity skips it;
"widctl rm workload_identity/dev-uid" removes it).

The first start on an empty data dir creates the trust domain: its CAs
(ECDSA P-256, private keys encrypted at rest with a key in <data-dir>/keys),
the built-in roles editor and local-agent, and the audit log. Later starts
load it, after checking the store against the trust domain's anchor
(<data-dir>/keys/anchor: the trust domain, its CA keys and the audit log's
head, sealed outside the store). A store that lost changes, CAs or itself is
refused with what is missing: restore the data dir from a backup (see
docs/operations.md). Only --init makes a new trust domain in a data dir that
is not empty, such as one whose keys/ survived but whose store did not.
One process at a time holds a data dir (a lock on <data-dir>/lock).

--store keeps the trust domain somewhere else than <data-dir>/wid.db:
sqlite://PATH, or postgres://USER:PASSWORD@HOST:PORT/DATABASE for a
PostgreSQL database, whose schema the first start creates (see docs/ha.md).
The data dir still holds keys/ (the CA key encryption key) and admin.sock.
Several replicas of the auth service may share one PostgreSQL store, each
with its own data dir and --auth-listen: the first creates the trust
domain, and each other one joins it when --kek-file names a copy of the
first one's keys/ca.key (mode 0600), which opens the CA keys in the store.
A replica whose key does not open them, or whose --trust-domain differs
from the store's, refuses to start.

--roles agent runs an agent alone, for another host: it joins with --auth,
a join token and --ca-pin, keeps its bot identity in <data-dir>/agent, and
joins again only when that identity is gone or revoked. The token comes from
the WID_JOIN_TOKEN environment variable or --join-token-file, which keep it
out of the process list that every local user can read; --join-token
still works. Taken in this order: --join-token, --join-token-file,
WID_JOIN_TOKEN, WIDAGENT_JOIN_TOKEN, WIDAGENT_JOIN_TOKEN_FILE, then the
config file's join_token or join_token_file. The workload socket, the
diagnostics port and the data dir are checked before the token is spent;
the data dir must be the agent's own, not a running auth service's. On Kubernetes,
--join-method kubernetes joins with the pod's projected service-account
token instead of a secret: --join-token names a kubernetes join token and
--sa-token-file is the token's file, read afresh on every join. The token's
audience is "wid:" and the trust domain, e.g. wid:example.org (see
docs/kubernetes.md). --join-method x509pop joins with a certificate from
your own CA: --join-token names an x509pop join token, --cert and --key are
the machine's certificate and key, and the agent signs a fresh challenge
from the auth service with the key; its host name becomes
x509pop/<sha256 of the certificate> (see docs/bots.md).

Settings come from flags, then WIDAGENT_* environment variables (for example
WIDAGENT_DATA_DIR), then the --config YAML file, then defaults. The config
file takes the flags' names with underscores (data_dir, workload_socket, ...)
and also svids (SVIDs the agent serves from its own config, each with path,
hint, dns_sans and rules) and outputs (SVIDs written to files, each with type
x509 or jwt, path, dir and, for jwt, audiences), attestors (unix, on by
default, and kubernetes, docker and systemd, each switched on with enabled:
true; see docs/agent.md) and sds (the names Envoy asks the socket's SDS
service for: default_svid_name, default_bundle_name,
default_all_bundles_name, spiffe_validator; see docs/envoy.md). For the auth
service it also takes kubernetes_clusters (each with name, api_server,
jwks_url, ca_file, token_file): the only Kubernetes servers the auth service
calls, and files it reads, to check kubernetes joins; a kubernetes join
token names one with cluster (see docs/kubernetes.md), ca_subject (country,
organization, common_name of the CA certificates it makes from then on) and
svid_ttl and jwt_svid_ttl (an SVID's life when neither the request nor its
workload identity names one; defaults 1h and 5m). Unknown keys are refused.
The file may also be in Teleport tbot's shape (version: v2, onboarding,
services of type spiffe-workload-api, each on its own socket with its own
svids); each field maps to widagent's own and one wid cannot honour is
refused by its path (see docs/agent.md).

--log-format json writes every log line as one JSON object (slog's JSON
handler); --log-file appends the logs to a file (created 0600) instead of
stderr. The kubernetes attestor takes its node's name from WID_NODE_NAME
(the downward API's spec.nodeName) and then asks that node's kubelet at
https://<node>:10250 unless kubelet_url says otherwise.`,
		Example: `  # A whole dev trust domain (example.org) with its Workload API
  widagent start

  # A named trust domain with its own data dir
  widagent start --trust-domain prod.example.com --data-dir /var/lib/wid --auth-listen 0.0.0.0:3025

  # The trust domain in PostgreSQL (the URL may also come from WIDAGENT_STORE)
  widagent start --store postgres://wid:PASSWORD@db.example.com:5432/wid

  # Envoy validating peers per trust domain with its SPIFFE validator (SDS)
  widagent start --sds-spiffe-validator

  # An agent on another host, joining with a token from 'widctl bot create'
  WID_JOIN_TOKEN=TOKEN widagent start --roles agent --auth auth.example.com:3025 --ca-pin sha256:...

  # The same, with the token in a file only the agent's user can read
  widagent start --roles agent --auth auth.example.com:3025 --join-token-file /etc/wid/join-token --ca-pin sha256:...

  # An agent joining with a certificate from your CA
  widagent start --roles agent --auth auth.example.com:3025 --ca-pin sha256:... \
    --join-method x509pop --join-token nodes --cert /etc/wid/node.pem --key /etc/wid/node.key

  # An agent in a Kubernetes DaemonSet, joining with its service-account token
  widagent start --roles agent --auth wid-auth.wid.svc:3025 --ca-pin sha256:... \
    --join-method kubernetes --join-token k8s-nodes --sa-token-file /var/run/secrets/tokens/wid`,
		Args: cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts, err := loadStartOptions(cmd.Flags(), configFile)
			if err != nil {
				return err
			}
			if runF != nil {
				return runF(&opts)
			}
			if err := runStart(cmd.Context(), opts, f.IOStreams.Out, f.IOStreams.ErrOut); err != nil {
				return startError(err)
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&configFile, configFlag, "", "YAML config file")
	fl.StringSlice("roles", []string{"auth", "agent"}, "what this process runs: auth, agent, or both")
	fl.String("data-dir", paths.DefaultDataDir(), "where the store, keys, admin socket and agent identity live")
	fl.String("store", "", "where the trust domain is kept: sqlite://PATH or postgres://USER:PASSWORD@HOST:PORT/DATABASE (default sqlite in the data dir)")
	fl.String("kek-file", "", "`FILE` holding the key encryption key of the CA keys in a shared --store: a copy of keys/ca.key of the replica that created the trust domain (mode 0600)")
	fl.String("trust-domain", "", "trust domain to create on first start (default "+auth.DefaultTrustDomain+"); must match on later starts")
	fl.String("auth-listen", auth.DefaultListenAddr, "host:port of the auth service's TLS listener")
	fl.StringSlice("server-name", nil, "extra DNS name or IP for the auth service's certificate (repeatable)")
	fl.String("log-level", "info", "log level: debug, info, warn or error")
	fl.String("log-format", LogFormatText, "log format: text (slog's key=value lines) or json (one JSON object a line)")
	fl.String("log-file", "", "`FILE` to append the logs to instead of stderr (created 0600)")
	fl.String("agent-sync", auth.AgentSyncIncremental, "how the auth service keeps agents up to date: incremental (what changed since the revision an agent holds) or full (its whole state on every change, as before; for comparison)")
	fl.String("bundle-endpoint-listen", "", "host:port of the SPIFFE bundle endpoint that other trust domains federate with (off when empty); https_spiffe profile unless --bundle-endpoint-cert is given")
	fl.String("bundle-endpoint-cert", "", "`FILE` of the certificate (PEM) the bundle endpoint serves with under the https_web profile; read again when it changes")
	fl.String("bundle-endpoint-key", "", "`FILE` of the private key (PEM) of --bundle-endpoint-cert")
	fl.Duration("bundle-refresh-hint", 5*time.Minute, "spiffe_refresh_hint the bundle endpoint serves: how often federated trust domains look for a new bundle")
	fl.String("jwt-issuer", "", "https `URL` put in JWT-SVIDs as iss; the bundle endpoint then serves its OIDC discovery document and JWKS")
	fl.Bool("init", false, "make a new trust domain even though the data dir holds keys from an earlier one (its store is gone); never needed on an empty data dir")
	fl.String("auth", "", "host:port of the auth service, or of its replicas separated by commas (--roles agent)")
	fl.String("join-token", "", "join token for the agent's first start (--roles agent); visible to local users in the process list: prefer WID_JOIN_TOKEN or --join-token-file")
	fl.String("join-token-file", "", "`FILE` holding the join token for the agent's first start (--roles agent)")
	fl.String("join-method", agent.JoinMethodToken, "how the agent joins: token (a secret from widctl token create), kubernetes (a projected service-account token) or x509pop (a certificate from your CA, --cert and --key)")
	fl.String("cert", "", "`FILE` of the machine's certificate (PEM, then any intermediates) for --join-method x509pop")
	fl.String("key", "", "`FILE` of that certificate's private key (PEM) for --join-method x509pop")
	fl.String("sa-token-file", kubejoin.DefaultTokenFile, "projected service-account token of --join-method kubernetes, read afresh on every join")
	fl.String("ca-pin", "", "sha256:... pin of the auth service's CA, as printed by widagent start (--roles agent)")
	fl.String("workload-socket", paths.DefaultWorkloadSocket(), "unix socket of the SPIFFE Workload API")
	fl.String("diag-addr", "", "host:port for /healthz, /readyz and /metrics (off when empty); /readyz fails while the auth service cannot read its store")
	fl.Bool("no-dev-identity", false, "do not create the dev-uid workload identity on a fresh data dir")
	fl.Bool("allow-unauthenticated-verifiers", false, "let callers with no identity fetch bundles and validate JWT-SVIDs")
	fl.Bool("sds-spiffe-validator", false, "serve Envoy validation contexts as its SPIFFE validator (per trust domain) instead of trusted_ca")
	return cmd
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("log level %q is unknown: use debug, info, warn or error", s)
	}
	return l, nil
}

func runStart(ctx context.Context, o StartOptions, out, errOut io.Writer) error {
	logger, closeLog, err := openLog(o.LogFormat, o.LogLevel, o.LogFile, errOut)
	if err != nil {
		return err
	}
	defer closeLog()
	if o.LogFormat == LogFormatJSON || o.LogFile != "" {
		routeProcessLogs(logger)
	}
	runAuth, runAgent := slices.Contains(o.Roles, "auth"), slices.Contains(o.Roles, "agent")
	host, _ := os.Hostname()
	g, ctx := errgroup.WithContext(ctx)
	p := &banner{out: out}

	agentCfg := agent.Config{
		SocketPath: o.WorkloadSocket, DataDir: o.DataDir, Host: host,
		AuthAddr: o.Auth, CAPin: o.CAPin, JoinToken: o.JoinToken,
		JoinMethod: o.JoinMethod, ServiceAccountTokenFile: o.SATokenFile,
		X509PopCertFile: o.CertFile, X509PopKeyFile: o.KeyFile,
		ExtraWorkloadAPIs: o.ExtraWorkloadAPIs,
		DiagAddr:          o.DiagAddr, SVIDs: o.SVIDs, Outputs: o.Outputs, Attestors: o.Attestors,
		AllowUnauthenticatedVerifiers: o.AllowUnauthenticatedVerifiers,
		SDS:                           o.SDS,
		Logger:                        logger.With("service", "agent"),
	}
	if runAuth {
		st, err := storeurl.Parse(o.Store, o.DataDir)
		if err != nil {
			return cmdutil.InputError(err)
		}
		// Debug only: a refused start must print one line, its error.
		logger.Debug("opening the store", "store", st.String())
		srv, err := auth.Open(ctx, auth.Config{
			DataDir: o.DataDir, Store: st.Open, StoreFile: st.Path, KEKFile: o.KEKFile, TrustDomain: o.TrustDomain, ListenAddr: o.AuthListen,
			ServerNames: o.ServerNames, Logger: logger, Version: version.Version, Init: o.Init,
			KubernetesClusters: o.KubernetesClusters, AgentSync: o.AgentSync,
			BundleEndpointListen: o.BundleEndpointListen, BundleEndpointCertFile: o.BundleEndpointCert,
			BundleEndpointKeyFile: o.BundleEndpointKey, BundleRefreshHint: o.BundleRefreshHint, JWTIssuer: o.JWTIssuer,
			CASubject: o.CASubject, SVIDTTL: o.SVIDTTL, JWTSVIDTTL: o.JWTSVIDTTL,
		})
		if err != nil {
			return err
		}
		defer srv.Close()
		info := srv.Info()
		state := "loaded"
		if info.Created {
			state = "created"
		}
		p.line("wid auth service %s", version.Version)
		p.line("  trust domain:  %s (%s)", info.TrustDomain.IDString(), state)
		p.line("  store:         %s", st.String())
		p.line("  auth address:  %s", info.Addr)
		p.line("  admin socket:  %s", info.AdminSocket)
		p.line("  CA pin:        %s", info.CAPin)
		if info.BundleEndpoint != "" {
			p.line("  bundle endpoint: %s", info.BundleEndpoint)
		}
		agentCfg.AuthAddr = info.Addr
		agentCfg.Collectors = srv.Collectors()
		agentCfg.LocalIdentity = func(ctx context.Context) (*client.Identity, error) {
			return srv.LocalAgentIdentity(ctx, host)
		}
		agentCfg.AuthReady = srv.Ready
		agentCfg.DiagHandlers = map[string]http.Handler{"/crl/": srv.CRLHandler()}
		if !runAgent && o.DiagAddr != "" {
			lis, err := net.Listen("tcp", o.DiagAddr)
			if err != nil {
				return fmt.Errorf("listening for diagnostics on %s: %w (pick another address with --diag-addr)", o.DiagAddr, err)
			}
			p.line("  diagnostics:   http://%s/metrics", lis.Addr())
			g.Go(func() error { return srv.ServeDiag(ctx, lis) })
		}
		if !runAgent {
			p.flush(info.AdminSocket, "")
		}
		g.Go(func() error { return srv.Run(ctx) })
		if runAgent && info.Created && !o.NoDevIdentity {
			uid := os.Getuid()
			created, err := srv.EnsureDevIdentity(ctx, uid)
			if err != nil {
				return fmt.Errorf("creating the dev-uid workload identity: %w", err)
			}
			if created {
				p.line("  dev identity:  workload_identity/dev-uid gives processes of uid %d %s", uid, info.TrustDomain.IDString()+"/uid/"+strconv.Itoa(uid))
				p.line("                 (remove it with: widctl rm workload_identity/dev-uid)")
			}
		}
		if runAgent {
			agentCfg.OnListen = func(socket, diag string) { p.flush(info.AdminSocket, socket) }
		}
	}
	if runAgent {
		if !runAuth {
			agentCfg.OnListen = func(socket, diag string) { p.flush("", socket) }
		}
		inner := agentCfg.OnListen
		agentCfg.OnListen = func(socket, diag string) {
			if diag != "" {
				p.line("  diagnostics:   http://%s/metrics", diag)
			}
			inner(socket, diag)
		}
		a, err := agent.New(agentCfg)
		if err != nil {
			return err
		}
		g.Go(func() error { return a.Run(ctx) })
	}
	return g.Wait()
}

// banner writes the start banner once everything it names is listening.
type banner struct {
	mu  sync.Mutex
	out io.Writer
}

func (p *banner) line(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.out, format+"\n", args...)
}

func (p *banner) flush(adminSocket, workloadSocket string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var try []string
	if workloadSocket != "" {
		fmt.Fprintf(p.out, "  workload API:  unix://%s\n", workloadSocket)
		fmt.Fprintf(p.out, "\nSPIFFE_ENDPOINT_SOCKET=unix://%s\n", workloadSocket)
		try = append(try, fmt.Sprintf("SPIFFE_ENDPOINT_SOCKET=unix://%s widagent api fetch x509", workloadSocket))
	}
	if adminSocket != "" {
		if adminSocket != paths.AdminSocket(paths.DefaultDataDir()) {
			try = append(try, fmt.Sprintf("WIDCTL_ADMIN_SOCKET=%s widctl role ls", adminSocket))
		} else {
			try = append(try, "widctl role ls")
		}
	}
	for i, t := range try {
		if i == 0 {
			fmt.Fprintf(p.out, "\nTry: %s\n", t)
		} else {
			fmt.Fprintf(p.out, "     %s\n", t)
		}
	}
	if f, ok := p.out.(*os.File); ok {
		_ = f.Sync()
	}
}

// startError is how a start that failed ends: exit 1 with the error's
// sentence as it is. The auth service and the agent write their errors for
// people; a gRPC status inside one (a join the auth service refused) is
// part of that sentence, not a widctl call to rephrase; the next step the
// error names (a join token to get, a refusal's) follows it.
func startError(err error) error {
	var ce *cmdutil.Error
	if errors.As(err, &ce) {
		return err
	}
	return &cmdutil.Error{Code: cmdutil.ExitError, Message: err.Error() + advice.Local(err), Err: err}
}
