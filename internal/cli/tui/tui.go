// Package tui is `widctl tui`: it connects the way every widctl command does
// and runs the dashboard of internal/tui until the user quits.
package tui

import (
	"context"
	"errors"
	"fmt"
	"os"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/spf13/cobra"
	"github.com/wid-project/wid/internal/cli/cmdutil"
	"github.com/wid-project/wid/internal/cli/iostreams"
	"github.com/wid-project/wid/internal/core/client"
	"github.com/wid-project/wid/internal/tui"
	"golang.org/x/sync/errgroup"
)

// Options are the settings of `widctl tui`.
type Options struct {
	IO     *iostreams.IOStreams
	Client func(context.Context) (*client.Client, error)
	Getenv func(string) string
}

// NewCmdTUI builds `widctl tui`.
func NewCmdTUI(f *cmdutil.Factory, runF func(*Options) error) *cobra.Command {
	opts := &Options{IO: f.IOStreams, Client: f.Client, Getenv: os.Getenv}
	return &cobra.Command{
		Use:   "tui",
		Short: "Watch SVIDs, attestations, bundles and roles live",
		Long: `Open a live dashboard of the trust domain in the terminal: every SVID issued
or denied, newest first; each workload attestation the agents report; the
trust bundle's authorities and JWT keys; the roles and workload identities
with their grants.

It connects like every widctl command (the admin socket, or --auth with your
identity), shows the last 500 audit events and then follows the log. When the
connection drops it shows "reconnecting" and resumes where it stopped.

Keys: tab/shift+tab or 1-4 switch tabs, arrows or j/k move, / filters, esc
clears, enter opens an event's details (for an X509-SVID, the certificate
issued, decoded and as PEM), ? shows every key, q quits. On the Roles tab, e
asks whether the selected role may issue a SPIFFE ID (with SANs and a TTL),
or which workload identities a workload with given attributes gets, and
shows the failing check. It needs a terminal of at least 80x24 and honours
NO_COLOR.`,
		Example: `  widctl tui
  NO_COLOR=1 widctl tui
  widctl --auth auth.example.com:3025 --identity ~/.wid/identity tui`,
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
	if !opts.IO.IsStdoutTTY() {
		return cmdutil.InputErrorf("widctl tui needs a terminal: use widctl audit tail to follow the audit log from a script")
	}
	c, err := opts.Client(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	feed := tui.NewFeed(c)
	m := tui.New(tui.Options{
		Target:   c.Target,
		Replica:  c.Current,
		Messages: feed.Messages(),
		Explain:  feed.Explain,
		Renderer: tui.NewRenderer(opts.IO.Out, opts.Getenv),
	})
	p := tea.NewProgram(m, tea.WithContext(ctx), tea.WithInput(opts.IO.In), tea.WithOutput(opts.IO.Out), tea.WithAltScreen())
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return feed.Run(gctx) })
	g.Go(func() error {
		defer cancel()
		_, err := p.Run()
		if errors.Is(err, tea.ErrProgramKilled) && ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return fmt.Errorf("running the dashboard: %w", err)
		}
		return nil
	})
	return g.Wait()
}
