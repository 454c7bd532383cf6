package role

import (
	"context"
	"slices"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/wid-project/wid/internal/cli/cmdutil"
	"github.com/wid-project/wid/internal/cli/iostreams"
	"github.com/wid-project/wid/internal/cli/output"
	"github.com/wid-project/wid/internal/cli/resourcecmd"
	"github.com/wid-project/wid/internal/core/client"
	"github.com/wid-project/wid/internal/core/resource"
)

// UpdateOptions are the settings of `widctl role update`. Only the settings
// whose flag was given change.
type UpdateOptions struct {
	IO      *iostreams.IOStreams
	Client  func(context.Context) (*client.Client, error)
	Printer func() (*output.Printer, error)

	Name string
	Flags
	// Changed holds the names of the flags given.
	Changed map[string]bool
}

// NewCmdUpdate builds `widctl role update`.
func NewCmdUpdate(f *cmdutil.Factory, runF func(*UpdateOptions) error) *cobra.Command {
	opts := &UpdateOptions{IO: f.IOStreams, Client: f.Client, Printer: f.Printer}
	cmd := &cobra.Command{
		Use:   "update NAME [flags]",
		Short: "Change a role's grants, SANs or TTL",
		Long: `Change a role. Each flag given replaces that setting; the rest stay.

--spiffe-path replaces the granted paths; a path that was granted before
keeps its SANs. --dns-san and --ip-san replace the SANs of every granted path
(give '' to remove them). --deny-path replaces the denied paths.

The change is made only if nobody changed the role since it was read.`,
		Example: `  widctl role update web --max-ttl 4h
  widctl role update web --spiffe-path '/svc/web/*' --spiffe-path /svc/api
  widctl role update web --dns-san ''`,
		Args:              cmdutil.ExactArgs(1, "the role's name"),
		ValidArgsFunction: resourcecmd.CompleteNames(f, resource.KindRole),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Name = args[0]
			opts.Changed = map[string]bool{}
			cmd.Flags().Visit(func(fl *pflag.Flag) { opts.Changed[fl.Name] = true })
			if err := opts.check(); err != nil {
				return err
			}
			if runF != nil {
				return runF(opts)
			}
			return updateRun(cmd.Context(), opts)
		},
	}
	opts.Flags.register(cmd.Flags())
	return cmd
}

var roleFlagNames = []string{"spiffe-path", "dns-san", "ip-san", "deny-path", "max-ttl", "description"}

func (opts *UpdateOptions) check() error {
	if err := resource.ValidateName(opts.Name); err != nil {
		return cmdutil.InputError(err)
	}
	if !slices.ContainsFunc(roleFlagNames, func(n string) bool { return opts.Changed[n] }) {
		return cmdutil.InputErrorf("nothing to change: give at least one of --spiffe-path, --dns-san, --ip-san, --deny-path, --max-ttl or --description")
	}
	if err := checkPaths("spiffe-path", opts.SPIFFEPaths); err != nil {
		return err
	}
	return checkPaths("deny-path", opts.DenyPaths)
}

// Apply changes r as the flags say and checks the result.
func (opts *UpdateOptions) Apply(r *resource.Role) error {
	if opts.Changed["description"] {
		r.Metadata.Description = opts.Description
	}
	if opts.Changed["spiffe-path"] {
		old := r.Spec.Allow.SPIFFE
		r.Spec.Allow.SPIFFE = grants(opts.SPIFFEPaths, nil, nil)
		for i, g := range r.Spec.Allow.SPIFFE {
			if j := slices.IndexFunc(old, func(o resource.SPIFFEGrant) bool { return o.Path == g.Path }); j >= 0 {
				r.Spec.Allow.SPIFFE[i].DNSSANs = old[j].DNSSANs
				r.Spec.Allow.SPIFFE[i].IPSANs = old[j].IPSANs
			}
		}
	}
	for i := range r.Spec.Allow.SPIFFE {
		if opts.Changed["dns-san"] {
			r.Spec.Allow.SPIFFE[i].DNSSANs = nonEmpty(opts.DNSSANs)
		}
		if opts.Changed["ip-san"] {
			r.Spec.Allow.SPIFFE[i].IPSANs = nonEmpty(opts.IPSANs)
		}
	}
	if (opts.Changed["dns-san"] && len(nonEmpty(opts.DNSSANs)) > 0 || opts.Changed["ip-san"] && len(nonEmpty(opts.IPSANs)) > 0) && len(r.Spec.Allow.SPIFFE) == 0 {
		return cmdutil.InputErrorf("role %q grants no paths for the SANs to apply to: give --spiffe-path too", opts.Name)
	}
	if opts.Changed["deny-path"] {
		r.Spec.Deny.SPIFFE = grants(opts.DenyPaths, nil, nil)
	}
	if opts.Changed["max-ttl"] {
		r.Spec.Options.MaxSVIDTTL = opts.MaxTTL
	}
	return validate(r)
}

// nonEmpty drops empty values, so that an empty --dns-san clears the list.
func nonEmpty(ss []string) []string {
	var out []string
	for _, s := range ss {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}

func updateRun(ctx context.Context, opts *UpdateOptions) error {
	p, err := opts.Printer()
	if err != nil {
		return err
	}
	c, err := opts.Client(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	cur, err := cmdutil.GetResource(ctx, c, resource.KindRole, opts.Name)
	if err != nil {
		return err
	}
	r, ok := cur.(*resource.Role)
	if !ok {
		return cmdutil.InputErrorf("role/%s is a %s, not a role", opts.Name, cur.GetKind())
	}
	// Revision stays as read: the auth service refuses the update if the
	// role changed in between.
	if err := opts.Apply(r); err != nil {
		return err
	}
	updated, err := cmdutil.UpdateResource(ctx, c, r)
	if err != nil {
		return err
	}
	if p.Format != output.Text {
		return p.Resource(updated)
	}
	return printChange(opts.IO.Out, "updated", updated)
}
