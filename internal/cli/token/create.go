package token

import (
	"context"
	"time"

	authv1 "github.com/wid-project/wid/api/auth/v1"

	"github.com/spf13/cobra"
	"github.com/wid-project/wid/internal/cli/cmdutil"
	"github.com/wid-project/wid/internal/cli/iostreams"
	"github.com/wid-project/wid/internal/cli/output"
	"github.com/wid-project/wid/internal/core/client"
	"github.com/wid-project/wid/internal/core/resource"
)

// CreateOptions are the settings of `widctl token create`.
type CreateOptions struct {
	IO      *iostreams.IOStreams
	Client  func(context.Context) (*client.Client, error)
	Printer func() (*output.Printer, error)

	Bot  string
	TTL  resource.Duration
	Uses int

	// Method is token (a secret) or kubernetes; the rest is kubernetes only.
	Method      string
	usesSet     bool
	Name        string
	Allow       []string
	Issuer      string
	JWKSFile    string
	TokenReview bool
	Cluster     string
	// CABundle is the x509pop method's PEM file of CA certificates.
	CABundle string
}

// NewCmdCreate builds `widctl token create`.
func NewCmdCreate(f *cmdutil.Factory, runF func(*CreateOptions) error) *cobra.Command {
	opts := &CreateOptions{IO: f.IOStreams, Client: f.Client, Printer: f.Printer}
	cmd := &cobra.Command{
		Use:     "create --bot NAME [--ttl DURATION] [--uses N] | --method kubernetes --name NAME --bot NAME --allow NS:SA ... | --method x509pop --name NAME --bot NAME --ca-bundle FILE [--allow cn=...|san=...]",
		Aliases: []string{"add"},
		Short:   "Make a join token for a bot",
		Long: `Make a join token for an existing bot and print it with the command that
joins an agent with it. The token is shown only this once.

With --method kubernetes, make a named kubernetes join token instead: agents
in a Kubernetes cluster join with their projected service-account token
(whose audience is "wid:" and the trust domain, e.g. wid:example.org) if its
service account is in --allow (namespace:name, or namespace:* for all of a
namespace). The token is
checked against the cluster's OIDC issuer keys (--issuer with --jwks-file,
or with --cluster whose jwks_url the auth service fetches) or by the
cluster's TokenReview API (--token-review: of the cluster the auth service
runs in, or of --cluster). A --cluster is one of the kubernetes_clusters of
the auth service's config file, where its URLs and the files on the auth
host that authenticate them are set. Such a token has no secret, no use
count and, without --ttl, no expiry; "widctl create -f" makes the same from
YAML (see docs/kubernetes.md).

With --method x509pop, make a named x509pop join token: agents join with a
certificate from your own CA (--ca-bundle, PEM) by signing a fresh
challenge from the auth service with its key. The certificate must chain to
the bundle, be valid now and, with --allow, match one entry: cn=VALUE (its
subject's common name) or san=VALUE (one of its DNS, URI, e-mail or IP
SANs). Like a kubernetes token it has no secret and no use count (see
docs/bots.md).`,
		Example: `  widctl token create --bot web-agent
  widctl token create --bot web-agent --ttl 15m --uses 5

  # Agents in the wid namespace's wid-agent service account, checked by the
  # TokenReview API of the cluster the auth service runs in
  widctl token create --method kubernetes --name k8s-nodes --bot k8s-agent \
    --allow wid:wid-agent --token-review

  # The same, checked against the issuer keys of the auth service's
  # configured cluster eks (kubernetes_clusters: [{name: eks, jwks_url: ...}])
  widctl token create --method kubernetes --name k8s-nodes --bot k8s-agent --allow wid:wid-agent \
    --issuer https://oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLE --cluster eks

  # Keys saved with: kubectl get --raw /openid/v1/jwks > jwks.json
  widctl token create --method kubernetes --name k8s-nodes --bot k8s-agent --allow wid:wid-agent \
    --issuer https://kubernetes.default.svc.cluster.local --jwks-file jwks.json

  # Machines holding a certificate from your CA whose CN is node-1 or node-2
  widctl token create --method x509pop --name nodes --bot node-agent --ca-bundle ca.pem \
    --allow cn=node-1 --allow cn=node-2`,
		Args: cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts.usesSet = cmd.Flags().Changed("uses")
			if err := opts.check(); err != nil {
				return err
			}
			if runF != nil {
				return runF(opts)
			}
			switch opts.Method {
			case resource.JoinMethodKubernetes:
				return createKubernetesRun(cmd.Context(), opts)
			case resource.JoinMethodX509Pop:
				return createX509PopRun(cmd.Context(), opts)
			}
			return createRun(cmd.Context(), opts)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&opts.Bot, "bot", "", "`NAME` of the bot that joins with the token")
	cmdutil.DurationVar(fl, &opts.TTL, "ttl", "the token expires after `DURATION` (default 1h; kubernetes tokens: never)")
	fl.IntVar(&opts.Uses, "uses", 1, "the token allows `N` joins")
	fl.StringVar(&opts.Method, "method", resource.JoinMethodToken, "join `METHOD`: token (a secret), kubernetes (a service-account token) or x509pop (a certificate from your CA)")
	fl.StringVar(&opts.Name, "name", "", "`NAME` of a kubernetes or x509pop join token, which agents pass as --join-token")
	fl.StringSliceVar(&opts.Allow, "allow", nil, "who may join (repeatable): kubernetes: service account `NS:NAME` (NS:* for a whole namespace); x509pop: cn=VALUE or san=VALUE")
	fl.StringVar(&opts.CABundle, "ca-bundle", "", "`FILE` of PEM CA certificates that x509pop agents' certificates chain to")
	fl.StringVar(&opts.Issuer, "issuer", "", "the cluster's service-account issuer `URL` (the tokens' iss)")
	fl.StringVar(&opts.JWKSFile, "jwks-file", "", "`FILE` holding the issuer's keys (JWKS), stored in the token")
	fl.BoolVar(&opts.TokenReview, "token-review", false, "check tokens with the cluster's TokenReview API")
	fl.StringVar(&opts.Cluster, "cluster", "", "`NAME` of a cluster in the auth service's kubernetes_clusters, whose API server or JWKS URL checks tokens")
	return cmd
}

func (opts *CreateOptions) check() error {
	if opts.Bot == "" {
		return cmdutil.InputErrorf("no bot given: pass --bot NAME (see widctl bot ls)")
	}
	if err := resource.ValidateName(opts.Bot); err != nil {
		return cmdutil.InputErrorf("--bot: %v", err)
	}
	switch opts.Method {
	case resource.JoinMethodToken:
		if opts.Name != "" || len(opts.Allow) > 0 || opts.Issuer != "" || opts.JWKSFile != "" || opts.TokenReview || opts.Cluster != "" || opts.CABundle != "" {
			return cmdutil.InputErrorf("--name, --allow, --issuer, --jwks-file, --token-review, --cluster and --ca-bundle are for --method kubernetes or x509pop")
		}
	case resource.JoinMethodKubernetes:
		if opts.CABundle != "" {
			return cmdutil.InputErrorf("--ca-bundle is for --method x509pop")
		}
		return opts.checkKubernetes()
	case resource.JoinMethodX509Pop:
		return opts.checkX509Pop()
	default:
		return cmdutil.InputErrorf("--method %q is unknown: use token, kubernetes or x509pop", opts.Method)
	}
	if opts.Uses < 1 {
		return cmdutil.InputErrorf("--uses %d is too few: a token allows at least 1 join", opts.Uses)
	}
	return nil
}

func createRun(ctx context.Context, opts *CreateOptions) error {
	p, err := opts.Printer()
	if err != nil {
		return err
	}
	c, err := opts.Client(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	ping, err := c.Ping(ctx, &authv1.PingRequest{})
	if err != nil {
		return err
	}
	resp, err := c.CreateJoinToken(ctx, &authv1.CreateJoinTokenRequest{
		Bot:        opts.Bot,
		TtlSeconds: int64(opts.TTL.D() / time.Second),
		Uses:       int32(opts.Uses),
	})
	if err != nil {
		return err
	}
	j, err := NewJoin(ping, resp.GetToken(), resp.GetJoinToken())
	if err != nil {
		return err
	}
	return j.Print(p, "")
}

// checkNamed checks what every named join token (kubernetes, x509pop)
// needs of --ttl and --name.
func (opts *CreateOptions) checkNamed() error {
	if opts.TTL < 0 {
		return cmdutil.InputErrorf("--ttl %s is negative: give a positive duration such as 720h, or leave it out for no expiry", opts.TTL)
	}
	if err := resource.ValidateName(opts.Name); err != nil {
		return cmdutil.InputErrorf("--name: %v", err)
	}
	return nil
}

// namedToken is the join token resource without a secret that spec (its
// method and that method's settings) describes, named --name, for --bot,
// expiring after --ttl if given.
func (opts *CreateOptions) namedToken(now time.Time, spec resource.JoinTokenSpec) (*resource.JoinToken, error) {
	spec.Bot = opts.Bot
	if opts.TTL > 0 {
		spec.Expires = now.Add(opts.TTL.D()).UTC().Truncate(time.Second)
	}
	t := &resource.JoinToken{
		Header: resource.Header{Kind: resource.KindJoinToken, Version: resource.V1, Metadata: resource.Metadata{Name: opts.Name}},
		Spec:   spec,
	}
	if err := t.Validate(); err != nil {
		return nil, cmdutil.InputError(err)
	}
	return t, nil
}
