package audit

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"

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
	// Head is an exported head (SEQ:HASH) the log must contain.
	Head string
}

// Verification is the result of `widctl audit verify` in JSON and YAML.
type Verification struct {
	OK       bool   `json:"ok" yaml:"ok"`
	Events   int64  `json:"events" yaml:"events"`
	HeadSeq  int64  `json:"head_seq,omitempty" yaml:"head_seq,omitempty"`
	HeadHash string `json:"head_hash,omitempty" yaml:"head_hash,omitempty"`
	// Head is HeadSeq:HeadHash, the form --head takes.
	Head string `json:"head,omitempty" yaml:"head,omitempty"`
	// AnchoredSeq is the newest event the trust domain's anchor (kept
	// outside the store) vouches for.
	AnchoredSeq  int64     `json:"anchored_seq,omitempty" yaml:"anchored_seq,omitempty"`
	AnchoredHash string    `json:"anchored_hash,omitempty" yaml:"anchored_hash,omitempty"`
	Problems     []Problem `json:"problems" yaml:"problems"`
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
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Check the audit log's hash chain",
		Long: `Check every audit event against its hash and the hash chain. Each problem
is printed on its own line with the event's sequence number and what is wrong:
edited (the event was changed), gap (events are missing), broken_link (an
event does not follow the one before) or truncated (the newest events are
gone). Exits 0 when the log is intact and 1 when it is not.

The log must also contain the head that the trust domain's anchor records
(keys/anchor in the data dir, sealed outside the store), so newest events
removed together with a rewritten head are still found. A verified log
prints its head as SEQ:HASH: keep it somewhere else and pass it to --head
later to check that nothing up to it was removed or replaced since.`,
		Example: `  widctl audit verify
  widctl audit verify --format json
  widctl audit verify --head 1042:3f9a...`,
		Args: cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if runF != nil {
				return runF(opts)
			}
			return verifyRun(cmd.Context(), opts)
		},
	}
	cmd.Flags().StringVar(&opts.Head, "head", "", "a head printed by an earlier verify (SEQ:HASH) that the log must still contain")
	return cmd
}

// ParseHead reads SEQ:HASH as widctl audit verify prints it.
func ParseHead(s string) (int64, string, error) {
	seqText, hash, ok := strings.Cut(s, ":")
	seq, err := strconv.ParseInt(seqText, 10, 64)
	if !ok || err != nil || seq < 1 || len(hash) != 64 || strings.Trim(hash, "0123456789abcdef") != "" {
		return 0, "", cmdutil.InputErrorf("--head %q is not a head: give SEQ:HASH as widctl audit verify prints it, e.g. 42:%s", s, strings.Repeat("0", 64))
	}
	return seq, hash, nil
}

func verifyRun(ctx context.Context, opts *VerifyOptions) error {
	req := &authv1.VerifyAuditRequest{}
	if opts.Head != "" {
		seq, hash, err := ParseHead(opts.Head)
		if err != nil {
			return err
		}
		req.HeadSeq, req.HeadHash = seq, hash
	}
	p, err := opts.Printer()
	if err != nil {
		return err
	}
	c, err := opts.Client(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	resp, err := c.VerifyAudit(ctx, req)
	if err != nil {
		return err
	}
	return printVerification(p, NewVerification(resp))
}

// NewVerification converts the wire form.
func NewVerification(resp *authv1.VerifyAuditResponse) Verification {
	v := Verification{OK: resp.GetOk(), Events: resp.GetEvents(), HeadSeq: resp.GetHeadSeq(), HeadHash: resp.GetHeadHash(),
		AnchoredSeq: resp.GetAnchoredSeq(), AnchoredHash: resp.GetAnchoredHash(), Problems: []Problem{}}
	if v.HeadSeq > 0 && v.HeadHash != "" {
		v.Head = fmt.Sprintf("%d:%s", v.HeadSeq, v.HeadHash)
	}
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
			if v.Head == "" {
				_, err := fmt.Fprintf(w, "audit log verified: %s, head %s\n", plural(v.Events, "event", "events"), short(v.HeadHash))
				return err
			}
			_, err := fmt.Fprintf(w, "audit log verified: %s, head %s\nanchored up to event %d; to check later, keep elsewhere: --head %s\n",
				plural(v.Events, "event", "events"), short(v.HeadHash), v.AnchoredSeq, v.Head)
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
