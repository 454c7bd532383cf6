package explain

import (
	"context"
	"fmt"
	"io"

	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/advice"
	"github.com/wid-project/wid/internal/cli/cmdutil"
	"github.com/wid-project/wid/internal/cli/output"
	"github.com/wid-project/wid/internal/core/client"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// WorkloadAnswer is the answer to --workload-attrs in JSON and YAML.
type WorkloadAnswer struct {
	// Principal is the bot whose agent would issue, as "bot NAME".
	Principal  string            `json:"principal" yaml:"principal"`
	Attributes map[string]string `json:"attributes" yaml:"attributes"`
	// Identities has one entry per workload identity, in the auth service's order.
	Identities []IdentityAnswer `json:"identities" yaml:"identities"`
}

// IdentityAnswer says whether one workload identity would be issued.
type IdentityAnswer struct {
	Identity string `json:"identity" yaml:"identity"`
	Issued   bool   `json:"issued" yaml:"issued"`
	// SPIFFEID is the SPIFFE ID filled in from the attributes, when the
	// rules match.
	SPIFFEID string `json:"spiffe_id,omitempty" yaml:"spiffe_id,omitempty"`
	Reason   string `json:"reason,omitempty" yaml:"reason,omitempty"`
	// Check is the failed check: rules, template, not_selected (the bot's
	// roles do not select the identity by label), or one of the SPIFFE ID
	// checks (path_not_granted, ttl_over_max, denied, ...).
	Check string `json:"check,omitempty" yaml:"check,omitempty"`
}

// Results of the text table.
const (
	resultIssued  = "issued"
	resultRefused = "refused"
)

func runWorkload(ctx context.Context, c *client.Client, p *output.Printer, opts *Options) error {
	resp, err := c.Explain(ctx, &authv1.ExplainRequest{
		PrincipalKind:      opts.PrincipalKind,
		PrincipalName:      opts.PrincipalName,
		WorkloadAttributes: opts.WorkloadAttributes,
	})
	if status.Code(err) == codes.NotFound && opts.DefaultBot {
		// The user named no bot, so "bot/local-agent does not exist" alone
		// would leave them wondering where it came from.
		return &cmdutil.Error{Code: cmdutil.ExitNotFound, Err: err,
			Message: "the bot " + DefaultWorkloadBot + " does not exist: widagent start makes it when it runs an agent, or pass --bot NAME"}
	}
	if err != nil {
		return err
	}
	a := newWorkloadAnswer(opts, resp.GetWorkloads())
	if len(a.Identities) == 0 && p.Format == output.Text {
		// Nothing on stdout, so that scripts reading the table see no rows.
		if _, err := fmt.Fprintf(opts.IO.ErrOut, "no workload identities to explain for %s: create one with widctl workload-identity create\n", a.Principal); err != nil {
			return err
		}
	} else if err := p.Print(a, a.text); err != nil {
		return err
	}
	if !a.anyIssued() {
		return cmdutil.SilentError(cmdutil.ExitError)
	}
	return nil
}

func newWorkloadAnswer(opts *Options, ws []*authv1.WorkloadExplanation) WorkloadAnswer {
	a := WorkloadAnswer{
		Principal:  opts.PrincipalKind + " " + opts.PrincipalName,
		Attributes: opts.WorkloadAttributes,
		Identities: make([]IdentityAnswer, 0, len(ws)),
	}
	for _, w := range ws {
		a.Identities = append(a.Identities, IdentityAnswer{
			Identity: w.GetIdentity(),
			Issued:   w.GetAllowed(),
			SPIFFEID: w.GetSpiffeId(),
			Reason:   w.GetReason() + advice.Explained(w.GetCheck(), w.GetIdentity()),
			Check:    w.GetCheck(),
		})
	}
	return a
}

func (a WorkloadAnswer) anyIssued() bool {
	for _, i := range a.Identities {
		if i.Issued {
			return true
		}
	}
	return false
}

func (a WorkloadAnswer) text(w io.Writer) error {
	t := output.NewTable(w, "identity", "result", "spiffe id", "reason")
	for _, i := range a.Identities {
		result := resultRefused
		if i.Issued {
			result = resultIssued
		}
		t.Row(i.Identity, result, i.SPIFFEID, i.Reason)
	}
	return t.Flush()
}
