package role

import (
	"context"

	"github.com/spf13/cobra"
	"github.com/wid-project/wid/internal/cli/cmdutil"
	"github.com/wid-project/wid/internal/cli/iostreams"
	"github.com/wid-project/wid/internal/cli/output"
	"github.com/wid-project/wid/internal/core/client"
	"github.com/wid-project/wid/internal/core/resource"
)

// CreateOptions are the settings of `widctl role create`.
type CreateOptions struct {
	IO      *iostreams.IOStreams
	Client  func(context.Context) (*client.Client, error)
	Printer func() (*output.Printer, error)

	Name  string
	Force bool
	Flags
}

// NewCmdCreate builds `widctl role create`.
func NewCmdCreate(f *cmdutil.Factory, runF func(*CreateOptions) error) *cobra.Command {
	opts := &CreateOptions{IO: f.IOStreams, Client: f.Client, Printer: f.Printer}
	cmd := &cobra.Command{
		Use:   "create NAME --spiffe-path PATH... [flags]",
		Short: "Create a role that grants SPIFFE ID paths",
		Long: `Create a role. Every --spiffe-path is granted with the SANs given by
--dns-san and --ip-san; --deny-path denies a path even where another role
grants it. The role is checked here before it is sent.

The same role written as YAML and created with "widctl create -f" is
identical: "widctl get role/NAME --format yaml" prints that YAML. An
existing role of the same name is refused unless --force replaces it.`,
		Example: `  # Any one service under /svc, for an hour at most
  widctl role create services --spiffe-path '/svc/*' --max-ttl 1h

  # One service with its DNS and IP SANs, but not its admin endpoint
  widctl role create europe-foo \
    --spiffe-path /region/europe/svc/foo \
    --dns-san foo.example.com --ip-san 10.0.0.0/8 \
    --deny-path /region/europe/svc/foo/admin \
    --max-ttl 24h --description "issues foo's SVIDs"

  # Replace the role "services" with a narrower one
  widctl role create services --spiffe-path '/svc/web' --force`,
		Args: cmdutil.ExactArgs(1, "the role's name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Name = args[0]
			if runF != nil {
				return runF(opts)
			}
			return createRun(cmd.Context(), opts)
		},
	}
	opts.Flags.register(cmd.Flags())
	cmd.Flags().BoolVar(&opts.Force, "force", false, "replace a role of the same name")
	return cmd
}

// Role builds and checks the role the options describe.
func (opts *CreateOptions) Role() (*resource.Role, error) {
	if err := resource.ValidateName(opts.Name); err != nil {
		return nil, cmdutil.InputError(err)
	}
	if len(opts.SPIFFEPaths) == 0 && len(opts.DenyPaths) == 0 {
		return nil, cmdutil.InputErrorf("role %q grants nothing: give at least one --spiffe-path (or --deny-path)", opts.Name)
	}
	if len(opts.SPIFFEPaths) == 0 && (len(nonEmpty(opts.DNSSANs)) > 0 || len(nonEmpty(opts.IPSANs)) > 0) {
		return nil, cmdutil.InputErrorf("--dns-san and --ip-san apply to the granted paths: give at least one --spiffe-path")
	}
	if err := checkPaths("spiffe-path", opts.SPIFFEPaths); err != nil {
		return nil, err
	}
	if err := checkPaths("deny-path", opts.DenyPaths); err != nil {
		return nil, err
	}
	r := &resource.Role{
		Header: resource.Header{
			Kind:     resource.KindRole,
			Version:  resource.V1,
			Metadata: resource.Metadata{Name: opts.Name, Description: opts.Description},
		},
	}
	r.Spec.Allow.SPIFFE = grants(opts.SPIFFEPaths, nonEmpty(opts.DNSSANs), nonEmpty(opts.IPSANs))
	r.Spec.Deny.SPIFFE = grants(opts.DenyPaths, nil, nil)
	r.Spec.Options.MaxSVIDTTL = opts.MaxTTL
	if err := validate(r); err != nil {
		return nil, err
	}
	return r, nil
}

func createRun(ctx context.Context, opts *CreateOptions) error {
	r, err := opts.Role()
	if err != nil {
		return err
	}
	created, printed, err := cmdutil.CreateOne(ctx, opts.Client, opts.Printer, opts.Force, r)
	if err != nil || printed {
		return err
	}
	return printChange(opts.IO.Out, "created", created)
}
