package audit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/cli/cmdutil"
	"github.com/wid-project/wid/internal/cli/iostreams"
	"github.com/wid-project/wid/internal/cli/output"
	"github.com/wid-project/wid/internal/core/client"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TailOptions are the settings of `widctl audit tail`.
type TailOptions struct {
	IO      *iostreams.IOStreams
	Client  func(context.Context) (*client.Client, error)
	Printer func() (*output.Printer, error)

	Filter
	Backlog int
}

// NewCmdTail builds `widctl audit tail`.
func NewCmdTail(f *cmdutil.Factory, runF func(*TailOptions) error) *cobra.Command {
	opts := &TailOptions{IO: f.IOStreams, Client: f.Client, Printer: f.Printer}
	cmd := &cobra.Command{
		Use:   "tail [flags]",
		Short: "Follow the audit log live",
		Long: `Print the last --backlog matching events, then every new one as it happens,
until interrupted with Ctrl-C. With --format json each event is one line of
JSON; with --format yaml each is a YAML document.`,
		Example: `  widctl audit tail
  widctl audit tail --backlog 0 --outcome denied
  widctl audit tail --format json | jq .spiffe_id`,
		Args: cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := opts.Filter.check(); err != nil {
				return err
			}
			if opts.Backlog < 0 || opts.Backlog > 10000 {
				return cmdutil.InputErrorf("--backlog %d is out of range: give a number from 0 to 10000", opts.Backlog)
			}
			if runF != nil {
				return runF(opts)
			}
			return tailRun(cmd.Context(), opts)
		},
	}
	opts.Filter.register(cmd.Flags())
	cmd.Flags().IntVar(&opts.Backlog, "backlog", 20, "print the last `N` matching events first")
	return cmd
}

func tailRun(ctx context.Context, opts *TailOptions) error {
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
	stream, err := c.StreamAuditEvents(ctx, &authv1.StreamAuditEventsRequest{Query: opts.query(), Backlog: int32(opts.Backlog)})
	if err != nil {
		return err
	}
	w := &tailWriter{out: opts.IO.Out, format: p.Format}
	if p.Format == output.Text && p.TTY {
		if err := w.header(); err != nil {
			return err
		}
	}
	for {
		e, err := stream.Recv()
		switch {
		case errors.Is(err, io.EOF):
			return nil
		case err != nil && (ctx.Err() != nil || status.Code(err) == codes.Canceled):
			// Ctrl-C is how a tail ends.
			return nil
		case err != nil:
			return err
		}
		if err := w.event(NewEvent(e)); err != nil {
			return err
		}
	}
}

// tailWriter prints events one at a time. A table cannot be aligned before
// all its rows are known, so text columns have fixed widths.
type tailWriter struct {
	out    io.Writer
	format output.Format
	n      int
}

var tailWidths = []int{20, 20, 24, 40, 8}

func (w *tailWriter) line(cells []string) error {
	var b strings.Builder
	for i, c := range cells {
		if c == "" {
			c = "-"
		}
		if i < len(tailWidths) {
			fmt.Fprintf(&b, "%-*s  ", tailWidths[i], c)
		} else {
			b.WriteString(c)
		}
	}
	_, err := fmt.Fprintln(w.out, strings.TrimRight(b.String(), " "))
	return err
}

func (w *tailWriter) header() error {
	up := make([]string, len(headers))
	for i, h := range headers {
		up[i] = strings.ToUpper(h)
	}
	return w.line(up)
}

func (w *tailWriter) event(e Event) error {
	defer func() { w.n++ }()
	switch w.format {
	case output.JSON:
		b, err := json.Marshal(e)
		if err != nil {
			return fmt.Errorf("encoding event %d: %w", e.Seq, err)
		}
		_, err = fmt.Fprintf(w.out, "%s\n", b)
		return err
	case output.YAML:
		if w.n > 0 {
			if _, err := io.WriteString(w.out, "---\n"); err != nil {
				return err
			}
		}
		return output.WriteYAML(w.out, e)
	}
	return w.line(e.cells())
}
