package token

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/cli/cmdutil"
	"github.com/wid-project/wid/internal/cli/output"
	"github.com/wid-project/wid/internal/core/resource"
)

func (opts *CreateOptions) checkX509Pop() error {
	switch {
	case opts.Name == "":
		return cmdutil.InputErrorf("an x509pop join token needs a name that agents pass as --join-token: pass --name NAME")
	case opts.usesSet:
		return cmdutil.InputErrorf("--uses is not for --method x509pop: every admitted certificate joins with the token, as often as needed")
	case opts.CABundle == "":
		return cmdutil.InputErrorf("an x509pop join token needs the CA that issues the agents' certificates: pass --ca-bundle FILE (PEM)")
	case opts.Issuer != "" || opts.JWKSFile != "" || opts.TokenReview || opts.Cluster != "":
		return cmdutil.InputErrorf("--issuer, --jwks-file, --token-review and --cluster are for --method kubernetes")
	}
	if err := opts.checkNamed(); err != nil {
		return err
	}
	for _, a := range opts.Allow {
		if _, _, err := resource.ParseX509PopAllow(a); err != nil {
			return cmdutil.InputErrorf("--allow %v", err)
		}
	}
	return nil
}

// x509PopToken builds the join token resource that opts describe.
func (opts *CreateOptions) x509PopToken(now time.Time) (*resource.JoinToken, error) {
	b, err := cmdutil.ReadFile(opts.IO, "--ca-bundle", opts.CABundle, resource.MaxX509PopBundle)
	if err != nil {
		return nil, err
	}
	if _, err := resource.ParseX509PopBundle(string(b)); err != nil {
		return nil, cmdutil.InputErrorf("--ca-bundle %s %v", opts.CABundle, err)
	}
	return opts.namedToken(now, resource.JoinTokenSpec{Method: resource.JoinMethodX509Pop,
		X509Pop: &resource.X509PopJoin{CABundle: string(b), Allow: opts.Allow}})
}

// X509PopJoin is what `widctl token create --method x509pop` prints. Its
// JSON and YAML field names are stable.
type X509PopJoin struct {
	Bot         string    `json:"bot" yaml:"bot"`
	TokenName   string    `json:"token_name" yaml:"token_name"`
	CAs         []string  `json:"cas" yaml:"cas"`
	Allow       []string  `json:"allow" yaml:"allow"`
	Expires     time.Time `json:"expires,omitzero" yaml:"expires,omitempty"`
	JoinCommand string    `json:"join_command" yaml:"join_command"`
}

// NewX509PopJoin describes a created x509pop join token.
func NewX509PopJoin(ping *authv1.PingResponse, t *resource.JoinToken) *X509PopJoin {
	j := &X509PopJoin{Bot: t.Spec.Bot, TokenName: t.Metadata.Name, Allow: t.Spec.X509Pop.Allow, Expires: t.Spec.Expires}
	if cas, err := resource.ParseX509PopBundle(t.Spec.X509Pop.CABundle); err == nil {
		for _, c := range cas {
			j.CAs = append(j.CAs, c.Subject.String())
		}
	}
	j.JoinCommand = fmt.Sprintf("widagent start --roles agent --auth %s --ca-pin %s --join-method x509pop --join-token %s --cert CERT.pem --key KEY.pem",
		hostPort(ping.GetAuthAddr()), ping.GetCaPin(), t.Metadata.Name)
	return j
}

// Print writes j for people, or as JSON or YAML.
func (j *X509PopJoin) Print(p *output.Printer) error {
	return p.Print(j, func(w io.Writer) error {
		var b strings.Builder
		allow := "every certificate the CAs issue"
		if len(j.Allow) > 0 {
			allow = strings.Join(j.Allow, ", ")
		}
		fmt.Fprintf(&b, "x509pop join token %s for bot %s (%s):\n", j.TokenName, j.Bot, expiresText(p, j.Expires))
		fmt.Fprintf(&b, "  CAs:      %s\n", strings.Join(j.CAs, "; "))
		fmt.Fprintf(&b, "  allowed:  %s\n\n", allow)
		fmt.Fprintf(&b, "Run the agent with its certificate and key:\n  %s\n", j.JoinCommand)
		_, err := io.WriteString(w, b.String())
		return err
	})
}

func createX509PopRun(ctx context.Context, opts *CreateOptions) error {
	tok, err := opts.x509PopToken(time.Now())
	if err != nil {
		return err
	}
	p, ping, t, err := createNamed(ctx, opts, tok)
	if err != nil {
		return err
	}
	if t.Spec.X509Pop == nil {
		return fmt.Errorf("the auth service answered with an x509pop join token without its CAs")
	}
	return NewX509PopJoin(ping, t).Print(p)
}
