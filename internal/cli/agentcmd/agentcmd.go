// Package agentcmd is widagent's command tree: `widagent start` runs the auth
// service (and, with later roles, the agent) until it is told to stop.
package agentcmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"
	"github.com/wid-project/wid/internal/core/agent"
	"github.com/wid-project/wid/internal/core/auth"
	"github.com/wid-project/wid/internal/core/client"
	"github.com/wid-project/wid/internal/core/kubejoin"
	"github.com/wid-project/wid/internal/core/paths"
	"github.com/wid-project/wid/internal/core/store/storeurl"
	"github.com/wid-project/wid/internal/version"
	"golang.org/x/sync/errgroup"
)

// NewRootCmd builds widagent's command tree, printing to out and errOut.
func NewRootCmd(out, errOut io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "widagent",
		Short: "Run a wid auth service and agent",
		Long: `widagent runs the wid auth service: the trust domain's certificate
authorities, roles, users, bots, join tokens and audit log. With no
configuration, "widagent start" creates a trust domain in its data dir and
serves it; widctl finds it through the admin socket.`,
		Example:       "  widagent start\n  widagent start --trust-domain example.org --data-dir /var/lib/wid",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(out)
	root.SetErr(errOut)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return FlagError{err} })
	root.AddCommand(newStartCmd(out, errOut), newAPICmd(out), newVersionCmd(out))
	return root
}

// FlagError is a command-line mistake: exit code 2.
type FlagError struct{ Err error }

func (e FlagError) Error() string { return e.Err.Error() + ": see widagent --help" }
func (e FlagError) Unwrap() error { return e.Err }

func newVersionCmd(out io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:     "version",
		Short:   "Print widagent's version",
		Example: "  widagent version",
		Args:    cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			_, err := fmt.Fprintf(out, "widagent %s\n", version.Version)
			return err
		},
	}
}

// StartOptions are widagent start's settings after flags, environment and config file.
type StartOptions struct {
	Roles       []string `mapstructure:"roles" yaml:"roles"`
	DataDir     string   `mapstructure:"data_dir" yaml:"data_dir"`
	Store       string   `mapstructure:"store" yaml:"store"`
	KEKFile     string   `mapstructure:"kek_file" yaml:"kek_file"`
	TrustDomain string   `mapstructure:"trust_domain" yaml:"trust_domain"`
	AuthListen  string   `mapstructure:"auth_listen" yaml:"auth_listen"`
	ServerNames []string `mapstructure:"server_names" yaml:"server_names"`
	LogLevel    string   `mapstructure:"log_level" yaml:"log_level"`
	// AgentSync is how the auth service keeps agents up to date.
	AgentSync string `mapstructure:"agent_sync" yaml:"agent_sync"`
	// Init makes a new trust domain in a data dir that is not empty.
	Init bool `mapstructure:"init" yaml:"init"`
	// KubernetesClusters are what kubernetes join tokens may name (config file only).
	KubernetesClusters []kubejoin.Cluster `mapstructure:"kubernetes_clusters" yaml:"kubernetes_clusters"`

	// Agent settings.
	Auth                          string                `mapstructure:"auth" yaml:"auth"`
	JoinToken                     string                `mapstructure:"join_token" yaml:"join_token"`
	JoinTokenFile                 string                `mapstructure:"join_token_file" yaml:"join_token_file"`
	JoinMethod                    string                `mapstructure:"join_method" yaml:"join_method"`
	SATokenFile                   string                `mapstructure:"sa_token_file" yaml:"sa_token_file"`
	CAPin                         string                `mapstructure:"ca_pin" yaml:"ca_pin"`
	WorkloadSocket                string                `mapstructure:"workload_socket" yaml:"workload_socket"`
	DiagAddr                      string                `mapstructure:"diag_addr" yaml:"diag_addr"`
	NoDevIdentity                 bool                  `mapstructure:"no_dev_identity" yaml:"no_dev_identity"`
	AllowUnauthenticatedVerifiers bool                  `mapstructure:"allow_unauthenticated_verifiers" yaml:"allow_unauthenticated_verifiers"`
	SVIDs                         []agent.ConfigSVID    `mapstructure:"svids" yaml:"svids"`
	Outputs                       []agent.Output        `mapstructure:"outputs" yaml:"outputs"`
	Attestors                     agent.AttestorsConfig `mapstructure:"attestors" yaml:"attestors"`
	SDS                           agent.SDSConfig       `mapstructure:"sds" yaml:"sds"`
}

// flagKeys maps each flag to its config key.
var flagKeys = map[string]string{
	"roles": "roles", "data-dir": "data_dir", "trust-domain": "trust_domain", "auth-listen": "auth_listen",
	"server-name": "server_names", "store": "store", "kek-file": "kek_file", "log-level": "log_level", "auth": "auth", "join-token": "join_token",
	"ca-pin": "ca_pin", "workload-socket": "workload_socket", "diag-addr": "diag_addr",
	"no-dev-identity": "no_dev_identity", "allow-unauthenticated-verifiers": "allow_unauthenticated_verifiers",
	"sds-spiffe-validator": "sds.spiffe_validator",
	"join-method":          "join_method", "sa-token-file": "sa_token_file",
	"join-token-file": "join_token_file",
	"init":            "init",
	"agent-sync":      "agent_sync",
}

// configKeys are the keys a config file may hold; others are refused.
var configKeys = []string{"roles", "data_dir", "store", "kek_file", "trust_domain", "auth_listen", "server_names", "log_level",
	"auth", "join_token", "ca_pin", "workload_socket", "diag_addr", "no_dev_identity",
	"allow_unauthenticated_verifiers", "svids", "outputs", "attestors", "sds", "join_method", "sa_token_file",
	"join_token_file", "kubernetes_clusters", "agent_sync"}

// configAliases are config keys spelt as their flags are (--server-name,
// --sds-spiffe-validator), as docs/start.md says the file takes the flags'
// names; each stands for the key it maps to.
var configAliases = map[string]string{"server_name": "server_names", "sds_spiffe_validator": "sds.spiffe_validator"}

// sdsKeys are the keys of the config file's sds section.
var sdsKeys = []string{"default_svid_name", "default_bundle_name", "default_all_bundles_name", "spiffe_validator"}

func newStartCmd(out, errOut io.Writer) *cobra.Command {
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
docs/kubernetes.md).

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
token names one with cluster (see docs/kubernetes.md). Unknown keys are
refused.`,
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

  # An agent in a Kubernetes DaemonSet, joining with its service-account token
  widagent start --roles agent --auth wid-auth.wid.svc:3025 --ca-pin sha256:... \
    --join-method kubernetes --join-token k8s-nodes --sa-token-file /var/run/secrets/tokens/wid`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts, err := loadStartOptions(cmd.Flags(), configFile)
			if err != nil {
				return err
			}
			return runStart(cmd.Context(), opts, out, errOut)
		},
	}
	f := cmd.Flags()
	f.StringVar(&configFile, "config", "", "YAML config file")
	f.StringSlice("roles", []string{"auth", "agent"}, "what this process runs: auth, agent, or both")
	f.String("data-dir", paths.DefaultDataDir(), "where the store, keys, admin socket and agent identity live")
	f.String("store", "", "where the trust domain is kept: sqlite://PATH or postgres://USER:PASSWORD@HOST:PORT/DATABASE (default sqlite in the data dir)")
	f.String("kek-file", "", "`FILE` holding the key encryption key of the CA keys in a shared --store: a copy of keys/ca.key of the replica that created the trust domain (mode 0600)")
	f.String("trust-domain", "", "trust domain to create on first start (default "+auth.DefaultTrustDomain+"); must match on later starts")
	f.String("auth-listen", auth.DefaultListenAddr, "host:port of the auth service's TLS listener")
	f.StringSlice("server-name", nil, "extra DNS name or IP for the auth service's certificate (repeatable)")
	f.String("log-level", "info", "log level: debug, info, warn or error")
	f.String("agent-sync", auth.AgentSyncIncremental, "how the auth service keeps agents up to date: incremental (what changed since the revision an agent holds) or full (its whole state on every change, as before; for comparison)")
	f.Bool("init", false, "make a new trust domain even though the data dir holds keys from an earlier one (its store is gone); never needed on an empty data dir")
	f.String("auth", "", "host:port of the auth service, or of its replicas separated by commas (--roles agent)")
	f.String("join-token", "", "join token for the agent's first start (--roles agent); visible to local users in the process list: prefer WID_JOIN_TOKEN or --join-token-file")
	f.String("join-token-file", "", "`FILE` holding the join token for the agent's first start (--roles agent)")
	f.String("join-method", agent.JoinMethodToken, "how the agent joins: token (a secret from widctl token create) or kubernetes (a projected service-account token)")
	f.String("sa-token-file", kubejoin.DefaultTokenFile, "projected service-account token of --join-method kubernetes, read afresh on every join")
	f.String("ca-pin", "", "sha256:... pin of the auth service's CA, as printed by widagent start (--roles agent)")
	f.String("workload-socket", paths.DefaultWorkloadSocket(), "unix socket of the SPIFFE Workload API")
	f.String("diag-addr", "", "host:port for /healthz, /readyz and /metrics (off when empty); /readyz fails while the auth service cannot read its store")
	f.Bool("no-dev-identity", false, "do not create the dev-uid workload identity on a fresh data dir")
	f.Bool("allow-unauthenticated-verifiers", false, "let callers with no identity fetch bundles and validate JWT-SVIDs")
	f.Bool("sds-spiffe-validator", false, "serve Envoy validation contexts as its SPIFFE validator (per trust domain) instead of trusted_ca")
	return cmd
}

// LoadStartConfig reads widagent start's settings from configFile and args
// as `widagent start --config FILE ARGS...` would, without starting
// anything: tests of shipped config files use it.
func LoadStartConfig(configFile string, args ...string) (StartOptions, error) {
	cmd := newStartCmd(io.Discard, io.Discard)
	if err := cmd.Flags().Parse(args); err != nil {
		return StartOptions{}, FlagError{err}
	}
	return loadStartOptions(cmd.Flags(), configFile)
}

func loadStartOptions(flags *pflag.FlagSet, configFile string) (StartOptions, error) {
	v := viper.New()
	v.SetEnvPrefix("WIDAGENT")
	v.SetEnvKeyReplacer(strings.NewReplacer("-", "_", ".", "_"))
	v.AutomaticEnv()
	for flag, key := range flagKeys {
		if err := v.BindPFlag(key, flags.Lookup(flag)); err != nil {
			return StartOptions{}, fmt.Errorf("binding --%s: %w", flag, err)
		}
	}
	if configFile != "" {
		raw := viper.New()
		raw.SetConfigFile(configFile)
		raw.SetConfigType("yaml")
		if err := raw.ReadInConfig(); err != nil {
			return StartOptions{}, fmt.Errorf("reading config file %s: %w", configFile, err)
		}
		settings := raw.AllSettings()
		for _, k := range raw.AllKeys() {
			if key, ok := configAliases[k]; ok {
				if raw.IsSet(key) {
					return StartOptions{}, fmt.Errorf("config file %s has both %q and %q: keep one of them", configFile, k, key)
				}
				delete(settings, k)
				setNested(settings, key, raw.Get(k))
				continue
			}
			top := strings.SplitN(k, ".", 2)[0]
			if !slices.Contains(configKeys, top) {
				return StartOptions{}, fmt.Errorf("config file %s has unknown key %q: known keys are %s", configFile, k, strings.Join(configKeys, ", "))
			}
			if sub, ok := strings.CutPrefix(k, "sds."); ok && !slices.Contains(sdsKeys, sub) {
				return StartOptions{}, fmt.Errorf("config file %s has unknown key %q: sds takes %s", configFile, k, strings.Join(sdsKeys, ", "))
			}
		}
		if err := v.MergeConfigMap(settings); err != nil {
			return StartOptions{}, fmt.Errorf("reading config file %s: %w", configFile, err)
		}
	}
	var o StartOptions
	// ErrorUnused refuses unknown keys inside svids and outputs too.
	if err := v.Unmarshal(&o, func(c *mapstructure.DecoderConfig) {
		c.ErrorUnused = true
		// yaml tags, so that svids[].rules read like a workload identity's rules.
		c.TagName = "yaml"
	}); err != nil {
		return StartOptions{}, fmt.Errorf("reading settings from %s: %s", configFileName(configFile), strings.ReplaceAll(err.Error(), "\n", " "))
	}
	token, err := resolveJoinToken(flags, o)
	if err != nil {
		return StartOptions{}, err
	}
	o.JoinToken, o.JoinTokenFile = token, ""
	if o.DataDir == "" {
		return StartOptions{}, errors.New("--data-dir must not be empty")
	}
	if _, err := storeurl.Parse(o.Store, o.DataDir); err != nil {
		return StartOptions{}, FlagError{err}
	}
	for _, r := range o.Roles {
		if r != "auth" && r != "agent" {
			return StartOptions{}, FlagError{fmt.Errorf("role %q is unknown: --roles takes auth, agent or both", r)}
		}
	}
	if len(o.Roles) == 0 {
		return StartOptions{}, FlagError{errors.New("--roles is empty: give auth, agent or both")}
	}
	if o.AgentSync != auth.AgentSyncIncremental && o.AgentSync != auth.AgentSyncFull {
		return StartOptions{}, FlagError{fmt.Errorf("--agent-sync %q is unknown: give %s or %s", o.AgentSync, auth.AgentSyncIncremental, auth.AgentSyncFull)}
	}
	if !slices.Contains(o.Roles, "auth") {
		if o.Auth == "" {
			return StartOptions{}, FlagError{errors.New("--roles agent needs --auth HOST:PORT of the auth service")}
		}
		if o.Store != "" {
			return StartOptions{}, FlagError{errors.New("--store is for the auth service; an agent alone (--roles agent) keeps only its identity in --data-dir")}
		}
		if o.KEKFile != "" {
			return StartOptions{}, FlagError{errors.New("--kek-file is for the auth service; an agent alone (--roles agent) holds no CA keys")}
		}
		if _, err := client.SplitAuth(o.Auth); err != nil {
			return StartOptions{}, FlagError{err}
		}
	} else if o.Auth != "" || o.JoinToken != "" || (o.JoinMethod != "" && o.JoinMethod != agent.JoinMethodToken) {
		return StartOptions{}, FlagError{errors.New("--auth, a join token (--join-token, --join-token-file or " + JoinTokenEnv + ") and --join-method are for an agent alone (--roles agent); with the auth service in this process the agent joins it directly")}
	}
	if len(o.KubernetesClusters) > 0 {
		if !slices.Contains(o.Roles, "auth") {
			return StartOptions{}, errors.New("kubernetes_clusters configure the auth service, which this process does not run: move them to the auth service's config file")
		}
		if err := kubejoin.ValidateClusters(o.KubernetesClusters); err != nil {
			return StartOptions{}, fmt.Errorf("%s: %w", configFileName(configFile), err)
		}
	}
	switch o.JoinMethod {
	case "", agent.JoinMethodToken, agent.JoinMethodKubernetes:
	default:
		return StartOptions{}, FlagError{fmt.Errorf("--join-method %q is unknown: use %s or %s", o.JoinMethod, agent.JoinMethodToken, agent.JoinMethodKubernetes)}
	}
	return o, nil
}

// JoinTokenEnv holds the join token out of the process's command line,
// which every local user can read in /proc.
const JoinTokenEnv = "WID_JOIN_TOKEN"

// maxJoinTokenFile bounds a join token file: a token is a 64-character
// secret or a kubernetes join token's name.
const maxJoinTokenFile = 4096

// resolveJoinToken picks the join token from the first place that sets one:
// --join-token, --join-token-file, WID_JOIN_TOKEN, WIDAGENT_JOIN_TOKEN,
// WIDAGENT_JOIN_TOKEN_FILE, then the config file's join_token or
// join_token_file. o holds what viper merged (flag, else environment, else
// config file) for join_token and join_token_file.
func resolveJoinToken(flags *pflag.FlagSet, o StartOptions) (string, error) {
	tokenFlag, fileFlag := flags.Changed("join-token"), flags.Changed("join-token-file")
	switch {
	case tokenFlag && fileFlag:
		return "", FlagError{errors.New("--join-token and --join-token-file both give a join token: pass one")}
	case tokenFlag:
		return o.JoinToken, nil
	case fileFlag:
		return readJoinTokenFile(o.JoinTokenFile)
	}
	if t := os.Getenv(JoinTokenEnv); t != "" {
		return strings.TrimSpace(t), nil
	}
	if os.Getenv("WIDAGENT_JOIN_TOKEN") != "" {
		return o.JoinToken, nil
	}
	if os.Getenv("WIDAGENT_JOIN_TOKEN_FILE") != "" {
		return readJoinTokenFile(o.JoinTokenFile)
	}
	switch {
	case o.JoinToken != "" && o.JoinTokenFile != "":
		return "", errors.New("the config file sets both join_token and join_token_file: keep one")
	case o.JoinTokenFile != "":
		return readJoinTokenFile(o.JoinTokenFile)
	}
	return o.JoinToken, nil
}

// readJoinTokenFile reads a join token from path: the whole file, without
// surrounding white space.
func readJoinTokenFile(path string) (string, error) {
	if path == "" {
		return "", FlagError{errors.New("--join-token-file is empty: name the file that holds the join token")}
	}
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("the join token file %s does not exist: write the token that widctl bot create printed into it", path)
		}
		return "", fmt.Errorf("reading the join token file %s: %w", path, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxJoinTokenFile+1))
	if err != nil {
		return "", fmt.Errorf("reading the join token file %s: %w", path, err)
	}
	if len(b) > maxJoinTokenFile {
		return "", fmt.Errorf("the join token file %s is larger than %d bytes, so it does not hold only a join token: write the token alone into it", path, maxJoinTokenFile)
	}
	token := strings.TrimSpace(string(b))
	if token == "" {
		return "", fmt.Errorf("the join token file %s is empty: write the token that widctl bot create printed into it", path)
	}
	if strings.ContainsAny(token, " \t\r\n") {
		return "", fmt.Errorf("the join token file %s holds more than one word: write the token alone into it", path)
	}
	return token, nil
}

// setNested sets a dotted key ("sds.spiffe_validator") in a settings map.
func setNested(m map[string]any, key string, val any) {
	parts := strings.Split(key, ".")
	for _, p := range parts[:len(parts)-1] {
		sub, ok := m[p].(map[string]any)
		if !ok {
			sub = map[string]any{}
			m[p] = sub
		}
		m = sub
	}
	m[parts[len(parts)-1]] = val
}

func configFileName(f string) string {
	if f == "" {
		return "flags and environment"
	}
	return f
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("log level %q is unknown: use debug, info, warn or error", s)
	}
	return l, nil
}

func runStart(ctx context.Context, o StartOptions, out, errOut io.Writer) error {
	level, err := parseLevel(o.LogLevel)
	if err != nil {
		return err
	}
	logger := slog.New(slog.NewTextHandler(errOut, &slog.HandlerOptions{Level: level}))
	runAuth, runAgent := slices.Contains(o.Roles, "auth"), slices.Contains(o.Roles, "agent")
	host, _ := os.Hostname()
	g, ctx := errgroup.WithContext(ctx)
	var p printer
	p.out = out

	agentCfg := agent.Config{
		SocketPath: o.WorkloadSocket, DataDir: o.DataDir, Host: host,
		AuthAddr: o.Auth, CAPin: o.CAPin, JoinToken: o.JoinToken,
		JoinMethod: o.JoinMethod, ServiceAccountTokenFile: o.SATokenFile,
		DiagAddr: o.DiagAddr, SVIDs: o.SVIDs, Outputs: o.Outputs, Attestors: o.Attestors,
		AllowUnauthenticatedVerifiers: o.AllowUnauthenticatedVerifiers,
		SDS:                           o.SDS,
		Logger:                        logger.With("service", "agent"),
	}
	if runAuth {
		st, err := storeurl.Parse(o.Store, o.DataDir)
		if err != nil {
			return FlagError{err}
		}
		// Debug only: a refused start must print one line, its error.
		logger.Debug("opening the store", "store", st.String())
		srv, err := auth.Open(ctx, auth.Config{
			DataDir: o.DataDir, Store: st.Open, StoreFile: st.Path, KEKFile: o.KEKFile, TrustDomain: o.TrustDomain, ListenAddr: o.AuthListen,
			ServerNames: o.ServerNames, Logger: logger, Version: version.Version, Init: o.Init,
			KubernetesClusters: o.KubernetesClusters, AgentSync: o.AgentSync,
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
		agentCfg.AuthAddr = info.Addr
		agentCfg.Collectors = srv.Collectors()
		agentCfg.LocalIdentity = func(ctx context.Context) (*client.Identity, error) {
			return srv.LocalAgentIdentity(ctx, host)
		}
		agentCfg.AuthReady = srv.Ready
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

// printer writes the start banner once everything it names is listening.
type printer struct {
	mu  sync.Mutex
	out io.Writer
}

func (p *printer) line(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.out, format+"\n", args...)
}

func (p *printer) flush(adminSocket, workloadSocket string) {
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

// Message is what people see for err: the sentence, and with WID_DEBUG=1 the
// whole chain as well.
func Message(err error) string {
	if os.Getenv("WID_DEBUG") == "1" {
		return fmt.Sprintf("%v\n  (debug: %#v)", err, err)
	}
	return err.Error()
}
