// Package agentcmd is widagent's command tree: `widagent start` runs the auth
// service (and, with later roles, the agent) until it is told to stop.
package agentcmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"
	"github.com/wid-project/wid/internal/core/auth"
	"github.com/wid-project/wid/internal/core/paths"
	"github.com/wid-project/wid/internal/version"
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
	root.AddCommand(newStartCmd(out, errOut), newVersionCmd(out))
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
	DataDir     string   `mapstructure:"data_dir"`
	TrustDomain string   `mapstructure:"trust_domain"`
	AuthListen  string   `mapstructure:"auth_listen"`
	ServerNames []string `mapstructure:"server_names"`
	LogLevel    string   `mapstructure:"log_level"`
}

// configKeys are the keys a config file may hold; others are refused.
var configKeys = map[string]bool{"data_dir": true, "trust_domain": true, "auth_listen": true, "server_names": true, "log_level": true}

func newStartCmd(out, errOut io.Writer) *cobra.Command {
	var configFile string
	cmd := &cobra.Command{
		Use:   "start",
		Short: "Start the auth service in the foreground",
		Long: `Start the auth service in the foreground until SIGINT or SIGTERM.

The first start on a data dir creates the trust domain: its CAs (ECDSA P-256,
private keys encrypted at rest with a key in <data-dir>/keys), the built-in
roles editor and local-agent, and the audit log. Later starts load it.

Settings come from flags, then WIDAGENT_* environment variables (for example
WIDAGENT_DATA_DIR), then the --config YAML file (keys data_dir, trust_domain,
auth_listen, server_names, log_level), then defaults.`,
		Example: `  # A dev trust domain in ~/.local/share/wid, listening on 127.0.0.1:3025
  widagent start

  # A named trust domain with its own data dir
  widagent start --trust-domain prod.example.com --data-dir /var/lib/wid --auth-listen 0.0.0.0:3025`,
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
	f.String("data-dir", paths.DefaultDataDir(), "where the store, keys and admin socket live")
	f.String("trust-domain", "", "trust domain to create on first start (default "+auth.DefaultTrustDomain+"); must match on later starts")
	f.String("auth-listen", auth.DefaultListenAddr, "host:port of the auth service's TLS listener")
	f.StringSlice("server-name", nil, "extra DNS name or IP for the auth service's certificate (repeatable)")
	f.String("log-level", "info", "log level: debug, info, warn or error")
	return cmd
}

func loadStartOptions(flags *pflag.FlagSet, configFile string) (StartOptions, error) {
	v := viper.New()
	v.SetEnvPrefix("WIDAGENT")
	v.SetEnvKeyReplacer(strings.NewReplacer("-", "_"))
	v.AutomaticEnv()
	for flag, key := range map[string]string{"data-dir": "data_dir", "trust-domain": "trust_domain", "auth-listen": "auth_listen", "server-name": "server_names", "log-level": "log_level"} {
		if err := v.BindPFlag(key, flags.Lookup(flag)); err != nil {
			return StartOptions{}, fmt.Errorf("binding --%s: %w", flag, err)
		}
	}
	if configFile != "" {
		v.SetConfigFile(configFile)
		v.SetConfigType("yaml")
		if err := v.ReadInConfig(); err != nil {
			return StartOptions{}, fmt.Errorf("reading config file %s: %w", configFile, err)
		}
		raw := viper.New()
		raw.SetConfigFile(configFile)
		raw.SetConfigType("yaml")
		if err := raw.ReadInConfig(); err == nil {
			for _, k := range raw.AllKeys() {
				top := strings.SplitN(k, ".", 2)[0]
				if !configKeys[top] {
					return StartOptions{}, fmt.Errorf("config file %s has unknown key %q: known keys are data_dir, trust_domain, auth_listen, server_names, log_level", configFile, k)
				}
			}
		}
	}
	var o StartOptions
	if err := v.Unmarshal(&o); err != nil {
		return StartOptions{}, fmt.Errorf("reading settings: %w", err)
	}
	if o.DataDir == "" {
		return StartOptions{}, errors.New("--data-dir must not be empty")
	}
	return o, nil
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
	srv, err := auth.Open(ctx, auth.Config{
		DataDir: o.DataDir, TrustDomain: o.TrustDomain, ListenAddr: o.AuthListen,
		ServerNames: o.ServerNames, Logger: logger, Version: version.Version,
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
	fmt.Fprintf(out, "wid auth service %s\n", version.Version)
	fmt.Fprintf(out, "  trust domain:  %s (%s)\n", info.TrustDomain.IDString(), state)
	fmt.Fprintf(out, "  auth address:  %s\n", info.Addr)
	fmt.Fprintf(out, "  admin socket:  %s\n", info.AdminSocket)
	fmt.Fprintf(out, "  CA pin:        %s\n", info.CAPin)
	if info.AdminSocket != paths.AdminSocket(paths.DefaultDataDir()) {
		fmt.Fprintf(out, "\nTry: WIDCTL_ADMIN_SOCKET=%s widctl role ls\n", info.AdminSocket)
	} else {
		fmt.Fprintf(out, "\nTry: widctl role ls\n")
	}
	if f, ok := out.(*os.File); ok {
		f.Sync()
	}
	return srv.Run(ctx)
}

// Message is what people see for err: the sentence, and with WID_DEBUG=1 the
// whole chain as well.
func Message(err error) string {
	if os.Getenv("WID_DEBUG") == "1" {
		return fmt.Sprintf("%v\n  (debug: %#v)", err, err)
	}
	return err.Error()
}
