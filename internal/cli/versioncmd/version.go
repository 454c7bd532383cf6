// Package versioncmd holds `widctl version`: widctl's own version and, when
// it can reach one, the auth service's.
package versioncmd

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/cli/cmdutil"
	"github.com/wid-project/wid/internal/cli/iostreams"
	"github.com/wid-project/wid/internal/cli/output"
	"github.com/wid-project/wid/internal/core/client"
	"github.com/wid-project/wid/internal/version"
)

// pingTimeout keeps `widctl version` quick when the auth service is away.
const pingTimeout = 3 * time.Second

// Options are the settings of `widctl version`.
type Options struct {
	IO      *iostreams.IOStreams
	Client  func(context.Context) (*client.Client, error)
	Printer func() (*output.Printer, error)
	// Target names the auth service in the answer.
	Target func() string
}

// Versions is the answer in JSON and YAML.
type Versions struct {
	Client      string `json:"client" yaml:"client"`
	Server      string `json:"server,omitempty" yaml:"server,omitempty"`
	TrustDomain string `json:"trust_domain,omitempty" yaml:"trust_domain,omitempty"`
	// ServerError says why the server's version is missing.
	ServerError string `json:"server_error,omitempty" yaml:"server_error,omitempty"`
}

// NewCmdVersion builds `widctl version`.
func NewCmdVersion(f *cmdutil.Factory, runF func(*Options) error) *cobra.Command {
	opts := &Options{IO: f.IOStreams, Client: f.Client, Printer: f.Printer, Target: func() string {
		if cfg, err := f.Config(); err == nil {
			return cfg.Target()
		}
		return ""
	}}
	return &cobra.Command{
		Use:   "version",
		Short: "Print widctl's version and the auth service's",
		Long: `Print widctl's version and, if the auth service can be reached, its version
and trust domain. An unreachable auth service is reported, not an error.`,
		Example: `  widctl version
  widctl version --format json`,
		Args: cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if runF != nil {
				return runF(opts)
			}
			return run(cmd.Context(), opts)
		},
	}
}

func run(ctx context.Context, opts *Options) error {
	p, err := opts.Printer()
	if err != nil {
		return err
	}
	v := Versions{Client: version.Version}
	if err := opts.server(ctx, &v); err != nil {
		v.ServerError = cmdutil.Explain(err, opts.Target()).Message
	}
	return p.Print(v, func(w io.Writer) error {
		if _, err := fmt.Fprintf(w, "widctl %s\n", v.Client); err != nil {
			return err
		}
		if v.ServerError != "" {
			_, err := fmt.Fprintf(w, "auth service: unknown (%s)\n", v.ServerError)
			return err
		}
		_, err := fmt.Fprintf(w, "auth service %s (trust domain %s)\n", v.Server, v.TrustDomain)
		return err
	})
}

func (opts *Options) server(ctx context.Context, v *Versions) error {
	c, err := opts.Client(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, pingTimeout)
	defer cancel()
	resp, err := c.Ping(ctx, &authv1.PingRequest{})
	if err != nil {
		return err
	}
	v.Server, v.TrustDomain = resp.GetServerVersion(), resp.GetTrustDomain()
	if v.Server == "" {
		v.Server = "(version not reported)"
	}
	return nil
}
