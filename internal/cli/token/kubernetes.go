package token

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/cli/cmdutil"
	"github.com/wid-project/wid/internal/cli/output"
	"github.com/wid-project/wid/internal/core/kubejoin"
	"github.com/wid-project/wid/internal/core/resource"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func (opts *CreateOptions) checkKubernetes() error {
	switch {
	case opts.Name == "":
		return cmdutil.InputErrorf("a kubernetes join token needs a name that agents pass as --join-token: pass --name NAME")
	case opts.usesSet:
		return cmdutil.InputErrorf("--uses is not for --method kubernetes: every allowed agent joins with the token, as often as needed")
	case len(opts.Allow) == 0:
		return cmdutil.InputErrorf("no service account may join: pass --allow NAMESPACE:SERVICE_ACCOUNT (repeatable), e.g. --allow wid:wid-agent")
	case !opts.TokenReview && opts.Cluster == "" && opts.JWKSFile == "":
		return cmdutil.InputErrorf("say how to check service-account tokens: pass --token-review, or --issuer with --jwks-file or --cluster")
	case opts.Cluster != "" && opts.JWKSFile != "":
		return cmdutil.InputErrorf("--cluster and --jwks-file both give the issuer's keys: pass one")
	case opts.TokenReview && (opts.JWKSFile != "" || opts.Issuer != ""):
		return cmdutil.InputErrorf("--token-review and --issuer/--jwks-file are two ways to check tokens: pass one")
	case !opts.TokenReview && opts.Issuer == "":
		return cmdutil.InputErrorf("--jwks-file and --cluster need --issuer, the cluster's service-account issuer (kubectl get --raw /.well-known/openid-configuration shows it)")
	}
	if err := opts.checkNamed(); err != nil {
		return err
	}
	for _, a := range opts.Allow {
		if _, _, err := resource.ParseServiceAccount(a, true); err != nil {
			return cmdutil.InputErrorf("--allow %v", err)
		}
	}
	return nil
}

// kubernetesToken builds the join token resource that opts describe.
func (opts *CreateOptions) kubernetesToken(now time.Time) (*resource.JoinToken, error) {
	k := &resource.KubernetesJoin{
		Issuer: opts.Issuer, TokenReview: opts.TokenReview, Cluster: opts.Cluster,
	}
	for _, a := range opts.Allow {
		k.Allow = append(k.Allow, resource.KubernetesAllow{ServiceAccount: a})
	}
	if opts.JWKSFile != "" {
		b, err := os.ReadFile(opts.JWKSFile)
		if err != nil {
			return nil, cmdutil.InputErrorf("reading --jwks-file: %v", err)
		}
		k.JWKS = strings.TrimSpace(string(b))
		if k.JWKS == "" {
			return nil, cmdutil.InputErrorf("--jwks-file %s is empty: save the cluster's keys with kubectl get --raw /openid/v1/jwks > FILE", opts.JWKSFile)
		}
	}
	return opts.namedToken(now, resource.JoinTokenSpec{Method: resource.JoinMethodKubernetes, Kubernetes: k})
}

// KubernetesJoin is what `widctl token create --method kubernetes` prints. Its
// JSON and YAML field names are stable.
type KubernetesJoin struct {
	Bot         string    `json:"bot" yaml:"bot"`
	TokenName   string    `json:"token_name" yaml:"token_name"`
	Allow       []string  `json:"allow" yaml:"allow"`
	Check       string    `json:"check" yaml:"check"`
	Audience    string    `json:"audience" yaml:"audience"`
	Expires     time.Time `json:"expires,omitzero" yaml:"expires,omitempty"`
	JoinCommand string    `json:"join_command" yaml:"join_command"`
}

// NewKubernetesJoin describes a created kubernetes join token.
func NewKubernetesJoin(ping *authv1.PingResponse, t *resource.JoinToken) *KubernetesJoin {
	k := t.Spec.Kubernetes
	j := &KubernetesJoin{Bot: t.Spec.Bot, TokenName: t.Metadata.Name, Audience: kubejoin.Audience(ping.GetTrustDomain()), Expires: t.Spec.Expires}
	for _, a := range k.Allow {
		j.Allow = append(j.Allow, a.ServiceAccount)
	}
	switch {
	case k.TokenReview && k.Cluster != "":
		j.Check = "token review by cluster " + k.Cluster
	case k.TokenReview:
		j.Check = "token review"
	case k.Cluster != "":
		j.Check = "issuer keys of cluster " + k.Cluster
	default:
		j.Check = "issuer keys given in the token"
	}
	j.JoinCommand = fmt.Sprintf("widagent start --roles agent --auth %s --ca-pin %s --join-method kubernetes --join-token %s --sa-token-file %s",
		hostPort(ping.GetAuthAddr()), ping.GetCaPin(), t.Metadata.Name, kubejoin.DefaultTokenFile)
	return j
}

// Print writes j for people, or as JSON or YAML.
func (j *KubernetesJoin) Print(p *output.Printer) error {
	return p.Print(j, func(w io.Writer) error {
		var b strings.Builder
		fmt.Fprintf(&b, "Kubernetes join token %s for bot %s (%s):\n", j.TokenName, j.Bot, expiresText(p, j.Expires))
		fmt.Fprintf(&b, "  service accounts allowed: %s\n", strings.Join(j.Allow, ", "))
		fmt.Fprintf(&b, "  checked by:               %s\n", j.Check)
		fmt.Fprintf(&b, "  token audience:           %s\n\n", j.Audience)
		fmt.Fprintf(&b, "Mount a projected service-account token with audience %s at %s\n", j.Audience, kubejoin.DefaultTokenFile)
		fmt.Fprintf(&b, "(deploy/kubernetes does), and run the agent with:\n  %s\n", j.JoinCommand)
		_, err := io.WriteString(w, b.String())
		return err
	})
}

func createKubernetesRun(ctx context.Context, opts *CreateOptions) error {
	tok, err := opts.kubernetesToken(time.Now())
	if err != nil {
		return err
	}
	p, ping, t, err := createNamed(ctx, opts, tok)
	if err != nil {
		return err
	}
	return NewKubernetesJoin(ping, t).Print(p)
}

// createNamed creates tok, a join token without a secret (kubernetes,
// x509pop), and returns it as stored, with the printer and the auth
// service's ping that the join command is made from.
func createNamed(ctx context.Context, opts *CreateOptions, tok *resource.JoinToken) (*output.Printer, *authv1.PingResponse, *resource.JoinToken, error) {
	p, err := opts.Printer()
	if err != nil {
		return nil, nil, nil, err
	}
	c, err := opts.Client(ctx)
	if err != nil {
		return nil, nil, nil, err
	}
	defer c.Close()
	ping, err := c.Ping(ctx, &authv1.PingRequest{})
	if err != nil {
		return nil, nil, nil, err
	}
	created, err := cmdutil.CreateResources(ctx, c, false, tok)
	if status.Code(err) == codes.AlreadyExists {
		// token create has no --force, so the usual advice would not do.
		ref := resource.Ref(tok)
		return nil, nil, nil, &cmdutil.Error{Code: cmdutil.ExitBadInput, Err: err,
			Message: ref + " already exists: remove it first with widctl rm " + ref + ", or replace it with widctl create -f FILE --force"}
	}
	if err != nil {
		return nil, nil, nil, err
	}
	t, ok := created[0].(*resource.JoinToken)
	if !ok || t.Spec.Method != tok.Spec.Method {
		return nil, nil, nil, fmt.Errorf("the auth service answered with a %s instead of a %s join token", created[0].GetKind(), tok.Spec.Method)
	}
	return p, ping, t, nil
}
