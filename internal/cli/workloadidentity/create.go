package workloadidentity

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"github.com/wid-project/wid/internal/cli/cmdutil"
	"github.com/wid-project/wid/internal/cli/iostreams"
	"github.com/wid-project/wid/internal/cli/output"
	"github.com/wid-project/wid/internal/cli/resourcecmd"
	"github.com/wid-project/wid/internal/core/client"
	"github.com/wid-project/wid/internal/core/condition"
	"github.com/wid-project/wid/internal/core/resource"
)

// CreateOptions are the settings of `widctl workload-identity create`.
type CreateOptions struct {
	IO      *iostreams.IOStreams
	Client  func(context.Context) (*client.Client, error)
	Printer func() (*output.Printer, error)

	Name        string
	SPIFFEID    string
	Hint        string
	DNSSANs     []string
	X509TTL     resource.Duration
	JWTTTL      resource.Duration
	Labels      []string
	Rules       []string
	Description string
	// FederatesWith are foreign trust domains whose bundles the workloads get.
	FederatesWith []string
	// Force replaces a workload identity of the same name.
	Force bool
}

// NewCmdCreate builds `widctl workload-identity create`.
func NewCmdCreate(f *cmdutil.Factory, runF func(*CreateOptions) error) *cobra.Command {
	opts := &CreateOptions{IO: f.IOStreams, Client: f.Client, Printer: f.Printer}
	cmd := &cobra.Command{
		Use:   "create NAME --spiffe-id TEMPLATE --rule CONDITION[,CONDITION...]... [flags]",
		Short: "Create a workload identity from a SPIFFE ID template and rules",
		Long: `Create a workload identity. --spiffe-id is a SPIFFE ID path in which
{{ ATTRIBUTE }} placeholders are filled in from the workload's attributes;
--dns-san takes templates too. Unix workloads have the attributes
workload.unix.pid, .uid, .gid, .path (the binary), .sha256 (of the binary),
.user and .group.

Each --rule is one rule: conditions separated by commas, all of which must
hold. A workload matching any rule gets the identity. A condition is

  ATTR=VALUE      the attribute is VALUE
  ATTR!=VALUE     the attribute is not VALUE
  ATTR=A|B|C      the attribute is one of A, B and C
  ATTR!=A|B|C     the attribute is none of A, B and C
  ATTR~GLOB       the attribute matches the shell pattern GLOB (*, ?, [a-z])

A workload that lacks an attribute fails every condition on it, != included.
Spaces around conditions, operators and values are ignored. Inside a value,
write \, for a comma and \| for a "|" that does not separate values, as in
workload.unix.path=/opt/a\,b/server; other backslashes stay as they are.
Quote rules for the shell, which gives "|", "*", "?" and "\" meanings of its own.

The same workload identity written as YAML and created with "widctl create -f"
is identical: "widctl get workload_identity/NAME --format yaml" prints that YAML.
Existing workload identities are refused unless --force replaces them.`,
		Example: `  # Every process of the unix user web, as /svc/web
  widctl workload-identity create web --spiffe-id /svc/web --rule workload.unix.user=web

  # One SPIFFE ID per uid, for uids 1000 and 1001 running binaries under /opt/app
  widctl wi create per-uid \
    --spiffe-id '/uid/{{ workload.unix.uid }}' --hint per-uid \
    --dns-san '{{ workload.unix.user }}.users.example.com' \
    --x509-ttl 1h --jwt-ttl 5m --label env=prod \
    --rule 'workload.unix.uid=1000|1001,workload.unix.path~/opt/app/*'

  # Two rules: root's backup binary, or anyone in the group backup but root
  widctl wi create backup --spiffe-id /svc/backup \
    --rule 'workload.unix.uid=0,workload.unix.path=/usr/sbin/backupd' \
    --rule 'workload.unix.group=backup,workload.unix.user!=root'`,
		Args: createArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Name = args[0]
			if runF != nil {
				return runF(opts)
			}
			return createRun(cmd.Context(), opts)
		},
	}
	fs := cmd.Flags()
	fs.SortFlags = false
	fs.StringVar(&opts.SPIFFEID, "spiffe-id", "", "the SPIFFE ID path `TEMPLATE`, e.g. /svc/web or '/uid/{{ workload.unix.uid }}'")
	fs.StringArrayVar(&opts.Rules, "rule", nil, "allow workloads matching every `CONDITION` of a comma-separated list: ATTR=V, ATTR!=V, ATTR=A|B, ATTR!=A|B, ATTR~GLOB (repeatable, one rule each)")
	fs.StringVar(&opts.Hint, "hint", "", "a `HINT` for workloads that get several SVIDs to tell them apart")
	fs.StringSliceVar(&opts.DNSSANs, "dns-san", nil, "put the DNS SAN `TEMPLATE` in X509-SVIDs (repeatable, comma-separated)")
	cmdutil.DurationVar(fs, &opts.X509TTL, "x509-ttl", "issue X509-SVIDs for `DURATION`, e.g. 1h (default: the issuer's)")
	cmdutil.DurationVar(fs, &opts.JWTTTL, "jwt-ttl", "issue JWT-SVIDs for `DURATION`, e.g. 5m (default: the issuer's)")
	fs.StringArrayVar(&opts.Labels, "label", nil, "set the label `KEY=VALUE`, which roles select on (repeatable)")
	fs.StringVar(&opts.Description, "description", "", "say what the workload identity is for in `TEXT`")
	fs.StringArrayVar(&opts.FederatesWith, "federates-with", nil, "give the workloads the bundle of the federated `TRUST_DOMAIN`, so they accept its peers (repeatable)")
	fs.BoolVar(&opts.Force, "force", false, "replace a workload identity of the same name")
	_ = cmd.RegisterFlagCompletionFunc("rule", completeAttribute)
	_ = cmd.RegisterFlagCompletionFunc("federates-with", resourcecmd.CompleteNameList(f, resource.KindFederation))
	for _, name := range []string{"spiffe-id", "hint", "dns-san", "label", "description"} {
		_ = cmd.RegisterFlagCompletionFunc(name, cobra.NoFileCompletions)
	}
	return cmd
}

// completeAttribute completes the attribute names in --rule; what follows
// them is the user's to type.
func completeAttribute(_ *cobra.Command, _ []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	return condition.CompleteAttribute(toComplete), cobra.ShellCompDirectiveNoSpace | cobra.ShellCompDirectiveNoFileComp
}

// createArgs wants the name alone, and recognizes a template that the
// shell split at the spaces of "{{ workload.unix.uid }}".
func createArgs(cmd *cobra.Command, args []string) error {
	for _, a := range args[min(1, len(args)):] {
		if a == "}}" || strings.HasPrefix(a, "workload.") && !strings.ContainsAny(a, "=!~") {
			return cmdutil.InputErrorf("unexpected argument %q: the shell split a {{ ATTRIBUTE }} placeholder at its spaces, so quote the template, as in --spiffe-id '/uid/{{ workload.unix.uid }}'", a)
		}
	}
	return cmdutil.ExactArgs(1, "the workload identity's name")(cmd, args)
}

// WorkloadIdentity builds and checks the workload identity the options
// describe, as the auth service will check it.
func (opts *CreateOptions) WorkloadIdentity() (*resource.WorkloadIdentity, error) {
	if err := resource.ValidateName(opts.Name); err != nil {
		return nil, cmdutil.InputError(err)
	}
	if opts.SPIFFEID == "" {
		return nil, cmdutil.InputErrorf("no SPIFFE ID given: pass --spiffe-id with a path or template, for example --spiffe-id '/uid/{{ workload.unix.uid }}'")
	}
	if len(opts.Rules) == 0 {
		return nil, cmdutil.InputErrorf("workload identity %q has no rules, so no workload could get it: give at least one --rule, for example --rule workload.unix.uid=1000", opts.Name)
	}
	labels, err := parseLabels(opts.Labels)
	if err != nil {
		return nil, err
	}
	for _, f := range []struct {
		name string
		d    resource.Duration
	}{{"x509-ttl", opts.X509TTL}, {"jwt-ttl", opts.JWTTTL}} {
		if f.d.D() > resource.MaxSVIDTTL {
			limit := resource.FormatDuration(resource.MaxSVIDTTL)
			return nil, cmdutil.InputErrorf("--%s %s is over the %s that any SVID may live: set %s or less", f.name, f.d, limit, limit)
		}
	}
	wi := &resource.WorkloadIdentity{
		Header: resource.Header{
			Kind:     resource.KindWorkloadIdentity,
			Version:  resource.V1,
			Metadata: resource.Metadata{Name: opts.Name, Description: opts.Description, Labels: labels},
		},
	}
	wi.Spec.SPIFFE = resource.WorkloadSPIFFE{ID: opts.SPIFFEID, Hint: opts.Hint}
	wi.Spec.X509 = resource.WorkloadX509{DNSSANs: nonEmpty(opts.DNSSANs), TTL: opts.X509TTL}
	wi.Spec.JWT = resource.WorkloadJWT{TTL: opts.JWTTTL}
	wi.Spec.FederatesWith = opts.FederatesWith
	for i, s := range opts.Rules {
		r, err := condition.ParseRule(s)
		if err != nil {
			return nil, cmdutil.InputErrorf("--rule %s: %v", ruleRef(i, len(opts.Rules), s), err)
		}
		wi.Spec.Rules.Allow = append(wi.Spec.Rules.Allow, r)
	}
	if err := validate(wi); err != nil {
		return nil, err
	}
	return wi, nil
}

// ruleRef names a --rule in an error: its text, and its place when there
// are several.
func ruleRef(i, n int, s string) string {
	if n == 1 {
		return fmt.Sprintf("%q", s)
	}
	return fmt.Sprintf("%d %q", i+1, s)
}

// parseLabels reads --label KEY=VALUE flags.
func parseLabels(flags []string) (map[string]string, error) {
	if len(flags) == 0 {
		return nil, nil
	}
	labels := make(map[string]string, len(flags))
	for _, l := range flags {
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			return nil, cmdutil.InputErrorf("--label %q has no value: write it as KEY=VALUE, such as --label env=prod", l)
		}
		if err := resource.ValidateLabelKey(k); err != nil {
			return nil, cmdutil.InputErrorf("--label: %v", err)
		}
		if _, dup := labels[k]; dup {
			return nil, cmdutil.InputErrorf("--label sets %q twice: give each label once", k)
		}
		labels[k] = v
	}
	return labels, nil
}

func nonEmpty(ss []string) []string {
	var out []string
	for _, s := range ss {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// validate checks the workload identity as the auth service will, and words
// a field error in terms of the flags the user typed.
func validate(wi *resource.WorkloadIdentity) error {
	err := wi.Validate()
	if err == nil {
		return nil
	}
	var fe *resource.FieldError
	if errors.As(err, &fe) {
		if flag := flagFor(fe.Field); flag != "" && strings.HasPrefix(fe.Message, fe.Field) {
			// The core names document fields; here the user typed flags.
			return cmdutil.InputErrorf("%s%s", flag, strings.TrimPrefix(fe.Message, fe.Field))
		}
	}
	return cmdutil.InputError(err)
}

// flagFor maps a workload identity field (spec.x509.dns_sans[2]) to its flag.
func flagFor(field string) string {
	switch {
	case field == "metadata.description":
		return "--description"
	case field == "metadata.labels":
		return "--label"
	case field == "spec.spiffe.id":
		return "--spiffe-id"
	case field == "spec.spiffe.hint":
		return "--hint"
	case strings.HasPrefix(field, "spec.x509.dns_sans"):
		return "--dns-san"
	case field == "spec.x509.ttl":
		return "--x509-ttl"
	case field == "spec.jwt.ttl":
		return "--jwt-ttl"
	case strings.HasPrefix(field, "spec.rules"):
		return "--rule"
	}
	return ""
}

func createRun(ctx context.Context, opts *CreateOptions) error {
	wi, err := opts.WorkloadIdentity()
	if err != nil {
		return err
	}
	created, printed, err := cmdutil.CreateOne(ctx, opts.Client, opts.Printer, opts.Force, wi)
	if err != nil || printed {
		return err
	}
	verb := "created"
	if opts.Force {
		verb = "created or replaced"
	}
	_, err = fmt.Fprintf(opts.IO.Out, "%s %s\n", verb, resource.Ref(created))
	return err
}
