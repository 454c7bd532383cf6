package audit

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
	"google.golang.org/protobuf/types/known/timestamppb"
)

// ListOptions are the settings of `widctl audit ls`.
type ListOptions struct {
	IO      *iostreams.IOStreams
	Client  func(context.Context) (*client.Client, error)
	Printer func() (*output.Printer, error)

	Filter
	Since time.Time
	Until time.Time
	Limit int
}

// NewCmdList builds `widctl audit ls`.
func NewCmdList(f *cmdutil.Factory, runF func(*ListOptions) error) *cobra.Command {
	opts := &ListOptions{IO: f.IOStreams, Client: f.Client, Printer: f.Printer}
	var since, until string
	cmd := &cobra.Command{
		Use:   "ls [flags]",
		Short: "List audit events, oldest first",
		Long: `List the newest audit events that match the filters (100 unless --limit
says otherwise), oldest first. --since and --until take a duration back from
now (30m, 24h) or an RFC 3339 time.`,
		Example: `  widctl audit ls
  widctl audit ls --since 1h --outcome denied
  widctl audit ls --type svid.x509.issued --actor bot:web-agent --limit 20
  widctl audit ls --spiffe-id spiffe://example.org/svc/web --format json`,
		Args: cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			now := time.Now()
			var err error
			if opts.Since, err = ParseTime("since", since, now); err != nil {
				return err
			}
			if opts.Until, err = ParseTime("until", until, now); err != nil {
				return err
			}
			if err := opts.check(); err != nil {
				return err
			}
			if runF != nil {
				return runF(opts)
			}
			return listRun(cmd.Context(), opts)
		},
	}
	opts.Filter.register(cmd.Flags())
	cmd.Flags().StringVar(&since, "since", "", "only events after `WHEN`: a duration back from now or an RFC 3339 time")
	cmd.Flags().StringVar(&until, "until", "", "only events before `WHEN`: a duration back from now or an RFC 3339 time")
	cmd.Flags().IntVar(&opts.Limit, "limit", 100, "show at most `N` events, the newest")
	return cmd
}

func (opts *ListOptions) check() error {
	if err := opts.Filter.check(); err != nil {
		return err
	}
	if opts.Limit < 1 || opts.Limit > 1<<20 {
		return cmdutil.InputErrorf("--limit %d is out of range: give a number from 1 to %d", opts.Limit, 1<<20)
	}
	if !opts.Since.IsZero() && !opts.Until.IsZero() && !opts.Since.Before(opts.Until) {
		return cmdutil.InputErrorf("--since is not before --until: nothing can match")
	}
	return nil
}

func listRun(ctx context.Context, opts *ListOptions) error {
	p, err := opts.Printer()
	if err != nil {
		return err
	}
	c, err := opts.Client(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := opts.resolve(ctx, c); err != nil {
		return err
	}
	q := opts.query()
	q.Limit = int32(opts.Limit)
	if !opts.Since.IsZero() {
		q.Since = timestamppb.New(opts.Since)
	}
	if !opts.Until.IsZero() {
		q.Until = timestamppb.New(opts.Until)
	}
	// The auth service answers at most a few MiB at a time, newest first:
	// page back until the limit is reached or nothing older matches.
	var pages [][]*authv1.AuditEvent
	total := 0
	for total < opts.Limit {
		q.Limit = int32(opts.Limit - total)
		resp, err := c.ListAuditEvents(ctx, &authv1.ListAuditEventsRequest{Query: q})
		if err != nil {
			return err
		}
		pages = append(pages, resp.GetEvents())
		total += len(resp.GetEvents())
		if resp.GetNextBeforeSeq() == 0 || len(resp.GetEvents()) == 0 {
			break
		}
		q.BeforeSeq = resp.GetNextBeforeSeq()
	}
	events := make([]Event, 0, total)
	for i := len(pages) - 1; i >= 0; i-- {
		for _, e := range pages[i] {
			events = append(events, NewEvent(e))
		}
	}
	if len(events) == 0 && p.Format == output.Text {
		_, err := fmt.Fprintln(opts.IO.ErrOut, "no audit events match")
		return err
	}
	return p.Print(events, func(w io.Writer) error {
		t := output.NewTable(w, headers...)
		for _, e := range events {
			t.Row(e.cells()...)
		}
		return t.Flush()
	})
}
