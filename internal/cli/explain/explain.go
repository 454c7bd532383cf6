// Package explain holds `widctl explain`: would a user, bot or role get a
// given SPIFFE ID, and if not, which check fails.
package explain

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/cli/cmdutil"
	"github.com/wid-project/wid/internal/cli/iostreams"
	"github.com/wid-project/wid/internal/cli/output"
	"github.com/wid-project/wid/internal/core/client"
	"github.com/wid-project/wid/internal/core/resource"
)

// Options are the settings of `widctl explain`.
type Options struct {
	IO      *iostreams.IOStreams
	Client  func(context.Context) (*client.Client, error)
	Printer func() (*output.Printer, error)

	// PrincipalKind is user, bot or role.
	PrincipalKind string
	PrincipalName string
	SPIFFEID      string
	DNSSANs       []string
	IPSANs        []string
	TTL           resource.Duration
}

// NewCmdExplain builds `widctl explain`.
func NewCmdExplain(f *cmdutil.Factory, runF func(*Options) error) *cobra.Command {
	opts := &Options{IO: f.IOStreams, Client: f.Client, Printer: f.Printer}
	var user, bot, role string
	cmd := &cobra.Command{
		Use:   "explain (--user NAME | --bot NAME | --role NAME) --spiffe-id ID [flags]",
		Short: "Say whether a user, bot or role may get a SPIFFE ID, and why",
		Long: `Check a request the way the auth service would, without issuing anything:
the SPIFFE ID, the SANs and the TTL against the roles of a user or bot, or
against one role. The answer is ALLOWED or DENIED with the reason; a denial
names the check that failed and the role and rule that decided.

Exits 0 when allowed and 1 when denied, so scripts can test the answer.`,
		Example: `  widctl explain --bot web-agent --spiffe-id /svc/web
  widctl explain --user alice --spiffe-id spiffe://example.org/svc/admin --ttl 2h
  widctl explain --role web --spiffe-id /svc/web --dns-san web.example.com --ip-san 10.1.2.3`,
		Args: cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := opts.setPrincipal(user, bot, role); err != nil {
				return err
			}
			if err := opts.check(); err != nil {
				return err
			}
			if runF != nil {
				return runF(opts)
			}
			return run(cmd.Context(), opts)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&user, "user", "", "explain for the user `NAME`, with all their roles")
	fl.StringVar(&bot, "bot", "", "explain for the bot `NAME`, with all its roles")
	fl.StringVar(&role, "role", "", "explain for the role `NAME` alone")
	fl.StringVar(&opts.SPIFFEID, "spiffe-id", "", "the SPIFFE `ID` asked for, in full or as a path")
	fl.StringSliceVar(&opts.DNSSANs, "dns-san", nil, "a DNS SAN `NAME` asked for (repeatable, comma-separated)")
	fl.StringSliceVar(&opts.IPSANs, "ip-san", nil, "an `IP` SAN asked for (repeatable, comma-separated)")
	cmdutil.DurationVar(fl, &opts.TTL, "ttl", "the SVID lifetime asked for, as a `DURATION` (default: the issuer's default)")
	return cmd
}

func (opts *Options) setPrincipal(user, bot, role string) error {
	var given []string
	for _, p := range []struct{ kind, name string }{{"user", user}, {"bot", bot}, {"role", role}} {
		if p.name != "" {
			opts.PrincipalKind, opts.PrincipalName = p.kind, p.name
			given = append(given, "--"+p.kind)
		}
	}
	switch len(given) {
	case 0:
		return cmdutil.InputErrorf("explain for whom? pass one of --user NAME, --bot NAME or --role NAME")
	case 1:
		return nil
	}
	return cmdutil.InputErrorf("%s given together: explain for one of them at a time", strings.Join(given, " and "))
}

func (opts *Options) check() error {
	if err := resource.ValidateName(opts.PrincipalName); err != nil {
		return cmdutil.InputErrorf("--%s: %v", opts.PrincipalKind, err)
	}
	if opts.SPIFFEID == "" {
		return cmdutil.InputErrorf("no SPIFFE ID given: pass --spiffe-id, for example --spiffe-id /svc/web")
	}
	if err := cmdutil.CheckSPIFFEID(opts.SPIFFEID); err != nil {
		return cmdutil.InputErrorf("--spiffe-id: %v", err)
	}
	for _, ip := range opts.IPSANs {
		if _, err := netip.ParseAddr(ip); err != nil {
			return cmdutil.InputErrorf("--ip-san %q is not an IP address: give one address such as 10.1.2.3 or fd00::1", ip)
		}
	}
	for _, d := range opts.DNSSANs {
		if err := resource.ValidateDNSSAN(d); err != nil {
			return cmdutil.InputErrorf("--dns-san: %v", err)
		}
	}
	return nil
}

// Explanation is the answer in JSON and YAML.
type Explanation struct {
	Allowed   bool   `json:"allowed" yaml:"allowed"`
	Principal string `json:"principal" yaml:"principal"`
	SPIFFEID  string `json:"spiffe_id" yaml:"spiffe_id"`
	TTL       string `json:"ttl,omitempty" yaml:"ttl,omitempty"`
	Reason    string `json:"reason" yaml:"reason"`
	// Check is the failed check: path_not_granted, dns_san_not_granted,
	// ip_san_not_granted, ttl_over_max, denied or no_roles.
	Check string   `json:"check,omitempty" yaml:"check,omitempty"`
	Role  string   `json:"role,omitempty" yaml:"role,omitempty"`
	Rule  int32    `json:"rule,omitempty" yaml:"rule,omitempty"`
	Roles []string `json:"roles" yaml:"roles"`
}

func run(ctx context.Context, opts *Options) error {
	p, err := opts.Printer()
	if err != nil {
		return err
	}
	c, err := opts.Client(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	resp, err := c.Explain(ctx, &authv1.ExplainRequest{
		PrincipalKind: opts.PrincipalKind,
		PrincipalName: opts.PrincipalName,
		SpiffeId:      opts.SPIFFEID,
		DnsSans:       opts.DNSSANs,
		IpSans:        opts.IPSANs,
		TtlSeconds:    int64(opts.TTL.D() / time.Second),
	})
	if err != nil {
		return err
	}
	e := Explanation{
		Allowed:   resp.GetAllowed(),
		Principal: opts.PrincipalKind + " " + opts.PrincipalName,
		SPIFFEID:  resp.GetSpiffeId(),
		Reason:    resp.GetReason(),
		Check:     resp.GetCheck(),
		Role:      resp.GetRole(),
		Rule:      resp.GetRule(),
		Roles:     resp.GetRoles(),
	}
	if e.SPIFFEID == "" {
		e.SPIFFEID = opts.SPIFFEID
	}
	if e.Roles == nil {
		e.Roles = []string{}
	}
	if s := resp.GetTtlSeconds(); s > 0 {
		e.TTL = resource.FormatDuration(time.Duration(s) * time.Second)
	}
	if err := p.Print(e, func(w io.Writer) error { return e.text(w) }); err != nil {
		return err
	}
	if !e.Allowed {
		return cmdutil.SilentError(cmdutil.ExitError)
	}
	return nil
}

func (e Explanation) text(w io.Writer) error {
	verdict := "ALLOWED"
	if !e.Allowed {
		verdict = "DENIED"
	}
	if _, err := fmt.Fprintf(w, "%s: %s %s get %s\n", verdict, e.Principal, map[bool]string{true: "may", false: "may not"}[e.Allowed], e.SPIFFEID); err != nil {
		return err
	}
	d := output.NewDetails(w)
	d.Field("Reason", e.Reason)
	d.Field("Check", e.Check)
	if e.Role != "" {
		decided := e.Role
		if e.Rule > 0 {
			decided += ", rule " + strconv.Itoa(int(e.Rule))
		}
		d.Field("Decided by", "role "+decided)
	}
	d.Field("TTL", e.TTL)
	d.Field("Roles", strings.Join(e.Roles, ", "))
	return d.Flush()
}
