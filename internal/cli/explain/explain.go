// Package explain holds `widctl explain`: would a user, bot or role get a
// given SPIFFE ID, and if not, which check fails; and which workload
// identities a bot's agent would issue a workload with given attributes.
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
	"github.com/wid-project/wid/internal/advice"
	"github.com/wid-project/wid/internal/cli/cmdutil"
	"github.com/wid-project/wid/internal/cli/iostreams"
	"github.com/wid-project/wid/internal/cli/output"
	"github.com/wid-project/wid/internal/cli/resourcecmd"
	"github.com/wid-project/wid/internal/core/client"
	"github.com/wid-project/wid/internal/core/condition"
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
	// WorkloadAttributes, when set, asks which workload identities a
	// workload with these attributes gets from the bot PrincipalName,
	// instead of asking about SPIFFEID.
	WorkloadAttributes map[string]string
	// DefaultBot says PrincipalName is DefaultWorkloadBot because no --bot was given.
	DefaultBot bool
}

// DefaultWorkloadBot is the bot --workload-attrs explains for without
// --bot: the agent that runs next to the auth service.
const DefaultWorkloadBot = "local-agent"

// NewCmdExplain builds `widctl explain`.
func NewCmdExplain(f *cmdutil.Factory, runF func(*Options) error) *cobra.Command {
	opts := &Options{IO: f.IOStreams, Client: f.Client, Printer: f.Printer}
	var user, bot, role string
	var attrs []string
	cmd := &cobra.Command{
		Use:   "explain ((--user | --bot | --role) NAME --spiffe-id ID | --workload-attrs ATTR=VALUE,... [--bot NAME]) [flags]",
		Short: "Say whether a SPIFFE ID or a workload identity would be issued, and why",
		Long: `Check a request the way the auth service would, without issuing anything.

With --spiffe-id: the SPIFFE ID, the SANs and the TTL against the roles of a
user or bot, or against one role. The answer is ALLOWED or DENIED with the
reason; a denial names the check that failed and the role and rule that
decided. Exits 0 when allowed and 1 when denied.

With --workload-attrs: which workload identities the agent of a bot would
issue to a workload with these attestation attributes (the bot local-agent,
the agent next to the auth service, unless --bot names another). Every
workload identity gets a line: issued, with the SPIFFE ID filled in from the
attributes, or refused, with the reason (no rule matches, the template
cannot be filled in, the bot's roles do not select it or do not grant the
SPIFFE ID, SANs or TTL it gives). Attributes are ATTR=VALUE pairs separated
by commas, with \, for a comma inside a value; the flag may be repeated.
Exits 0 when at least one identity is issued and 1 when none is.`,
		Example: `  widctl explain --bot web-agent --spiffe-id /svc/web
  widctl explain --user alice --spiffe-id spiffe://example.org/svc/admin --ttl 2h
  widctl explain --role web --spiffe-id /svc/web --dns-san web.example.com --ip-san 10.1.2.3

  # Which workload identities would uid 1000 running /opt/web/bin/server get?
  widctl explain --workload-attrs workload.unix.uid=1000,workload.unix.user=web,workload.unix.path=/opt/web/bin/server
  widctl explain --bot web-agent --workload-attrs workload.unix.uid=1000 --format json`,
		Args: cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if cmd.Flags().Changed("workload-attrs") {
				err = opts.setWorkload(attrs, user, bot, role, cmd)
			} else if err = opts.setPrincipal(user, bot, role); err == nil {
				err = opts.check()
			}
			if err != nil {
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
	fl.StringArrayVar(&attrs, "workload-attrs", nil, "explain which workload identities a workload with the `ATTR=VALUE,...` attributes gets (repeatable)")
	_ = cmd.RegisterFlagCompletionFunc("workload-attrs", func(_ *cobra.Command, _ []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		return condition.CompleteAttribute(toComplete), cobra.ShellCompDirectiveNoSpace | cobra.ShellCompDirectiveNoFileComp
	})
	_ = cmd.RegisterFlagCompletionFunc("user", resourcecmd.CompleteNames(f, resource.KindUser))
	_ = cmd.RegisterFlagCompletionFunc("bot", resourcecmd.CompleteNames(f, resource.KindBot))
	_ = cmd.RegisterFlagCompletionFunc("role", resourcecmd.CompleteNames(f, resource.KindRole))
	return cmd
}

// setWorkload reads --workload-attrs and the bot it is asked for.
func (opts *Options) setWorkload(attrs []string, user, bot, role string, cmd *cobra.Command) error {
	for _, other := range []struct{ flag, value string }{{"user", user}, {"role", role}} {
		if other.value != "" {
			return cmdutil.InputErrorf("--workload-attrs asks what the agent of a bot would issue, not a %s: use --bot NAME, or no principal for the bot %s", other.flag, DefaultWorkloadBot)
		}
	}
	for _, flag := range []string{"spiffe-id", "dns-san", "ip-san", "ttl"} {
		if cmd.Flags().Changed(flag) {
			return cmdutil.InputErrorf("--workload-attrs and --%s ask different questions: explain one of them at a time", flag)
		}
	}
	opts.PrincipalKind, opts.PrincipalName = "bot", bot
	if bot == "" {
		opts.PrincipalName, opts.DefaultBot = DefaultWorkloadBot, true
	}
	if err := resource.ValidateName(opts.PrincipalName); err != nil {
		return cmdutil.InputErrorf("--bot: %v", err)
	}
	opts.WorkloadAttributes = map[string]string{}
	for _, a := range attrs {
		parsed, err := condition.ParseAttributes(a)
		if err != nil {
			return cmdutil.InputErrorf("--workload-attrs: %v", err)
		}
		for k, v := range parsed {
			if _, dup := opts.WorkloadAttributes[k]; dup {
				return cmdutil.InputErrorf("--workload-attrs: attribute %s is given twice: a workload has one value for each", k)
			}
			opts.WorkloadAttributes[k] = v
		}
	}
	return nil
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
		return cmdutil.InputErrorf("explain for whom? pass one of --user NAME, --bot NAME or --role NAME with --spiffe-id, or --workload-attrs ATTR=VALUE,... for a workload")
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
	if opts.WorkloadAttributes != nil {
		return runWorkload(ctx, c, p, opts)
	}
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
		Reason:    resp.GetReason() + advice.Explained(resp.GetCheck(), ""),
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
