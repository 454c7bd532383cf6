package audit

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"
	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/cli/cmdutil"
	"github.com/wid-project/wid/internal/cli/iostreams"
	"github.com/wid-project/wid/internal/cli/output"
	"github.com/wid-project/wid/internal/core/client"
)

// VerifyOptions are the settings of `widctl audit verify`.
type VerifyOptions struct {
	IO      *iostreams.IOStreams
	Client  func(context.Context) (*client.Client, error)
	Printer func() (*output.Printer, error)
}

// Verification is the result of `widctl audit verify` in JSON and YAML.
type Verification struct {
	OK       bool      `json:"ok" yaml:"ok"`
	Events   int64     `json:"events" yaml:"events"`
	HeadHash string    `json:"head_hash,omitempty" yaml:"head_hash,omitempty"`
	Problems []Problem `json:"problems" yaml:"problems"`
}

// Problem is one break in the audit log's hash chain.
type Problem struct {
	Seq int64 `json:"seq" yaml:"seq"`
	// Kind is edited, gap, broken_link or truncated.
	Kind    string `json:"kind" yaml:"kind"`
	Message string `json:"message" yaml:"message"`
}

// NewCmdVerify builds `widctl audit verify`.
func NewCmdVerify(f *cmdutil.Factory, runF func(*VerifyOptions) error) *cobra.Command {
	opts := &VerifyOptions{IO: f.IOStreams, Client: f.Client, Printer: f.Printer}
	return &cobra.Command{
		Use:   "verify",
		Short: "Check the audit log's hash chain",
		Long: `Check every audit event against its hash and the hash chain. Each problem
is printed on its own line with the event's sequence number and what is wrong:
edited (the event was changed), gap (events are missing), broken_link (an
event does not follow the one before) or truncated (the newest events are
gone). Exits 0 when the log is intact and 1 when it is not.`,
		Example: `  widctl audit verify
  widctl audit verify --format json`,
		Args: cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if runF != nil {
				return runF(opts)
			}
			return verifyRun(cmd.Context(), opts)
		},
	}
}

func verifyRun(ctx context.Context, opts *VerifyOptions) error {
	p, err := opts.Printer()
	if err != nil {
		return err
	}
	c, err := opts.Client(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	resp, err := c.VerifyAudit(ctx, &authv1.VerifyAuditRequest{})
	if err != nil {
		return err
	}
	return printVerification(p, NewVerification(resp))
}

// NewVerification converts the wire form.
func NewVerification(resp *authv1.VerifyAuditResponse) Verification {
	v := Verification{OK: resp.GetOk(), Events: resp.GetEvents(), HeadHash: resp.GetHeadHash(), Problems: []Problem{}}
	for _, pr := range resp.GetProblems() {
		v.Problems = append(v.Problems, Problem{Seq: pr.GetSeq(), Kind: pr.GetKind(), Message: pr.GetMessage()})
	}
	// A server that says ok but lists problems is not believed.
	v.OK = v.OK && len(v.Problems) == 0
	return v
}

func printVerification(p *output.Printer, v Verification) error {
	err := p.Print(v, func(w io.Writer) error {
		if v.OK {
			_, err := fmt.Fprintf(w, "audit log verified: %s, head %s\n", plural(v.Events, "event", "events"), short(v.HeadHash))
			return err
		}
		for _, pr := range v.Problems {
			if _, err := fmt.Fprintf(w, "seq %d: %s: %s\n", pr.Seq, pr.Kind, pr.Message); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if !v.OK {
		if p.Format != output.Text {
			return cmdutil.SilentError(cmdutil.ExitError)
		}
		return &cmdutil.Error{Code: cmdutil.ExitError, Message: fmt.Sprintf("the audit log failed verification: %s in %s, listed above: the events named there were edited or removed after they were written", plural(int64(len(v.Problems)), "problem", "problems"), plural(v.Events, "event", "events"))}
	}
	return nil
}

// short abbreviates a hash the way git does: enough to tell heads apart.
func short(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	if h == "" {
		return "(empty log)"
	}
	return h
}
