// Package federation holds `widctl federation`: the foreign trust domains
// this one trusts, whose bundles the auth service fetches from their
// bundle endpoints (SPIFFE Federation) and hands to the workloads whose
// identities federate with them.
package federation

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
	"github.com/wid-project/wid/internal/core/resource"
)

// NewCmdFederation builds the `widctl federation` group.
func NewCmdFederation(f *cmdutil.Factory) *cobra.Command {
	cmd := cmdutil.Group(&cobra.Command{
		Use:   "federation <command>",
		Short: "Trust other trust domains: fetch their bundles from their bundle endpoints",
		Long: `A federation makes this trust domain trust another one (SPIFFE Federation).
The auth service fetches the foreign trust domain's bundle from its bundle
endpoint, as often as the bundle's refresh hint says, and keeps the last good
bundle when a fetch fails. Workloads whose workload identities list the
trust domain in federates_with (--federates-with) get its bundle.

"widctl federation ls" shows each one's last refresh, sequence and error.`,
		Example: `  widctl federation create partner.test --url https://partner.test:8443/ --profile https_spiffe --bundle partner.json
  widctl federation ls
  widctl wi create web --spiffe-id /svc/web --rule workload.unix.uid=1000 --federates-with partner.test`,
	})
	cmd.AddCommand(
		NewCmdCreate(f, nil),
		resourcecmd.NewCmdListKind(f, resource.KindFederation, resourcecmd.Help{
			Short: "List federations, with each one's last refresh, sequence and error",
			Long: `List federations: the foreign trust domain, the profile and URL of its bundle
endpoint, when its bundle was last refreshed, the bundle's sequence, and why
the last refresh failed, if it did (the last good bundle is kept).`,
			Example: `  widctl federation ls
  widctl federation ls --format yaml`,
		}, nil),
		resourcecmd.NewCmdGetKind(f, resource.KindFederation, resourcecmd.Help{
			Short: "Show a federation",
			Long: `Show a federation. With --format yaml this is the document that
"widctl create -f" accepts, with its status (which the auth service ignores).`,
			Example: `  widctl federation get partner.test
  widctl federation get partner.test --format yaml`,
		}, nil),
		resourcecmd.NewCmdRemoveKind(f, resource.KindFederation, resourcecmd.Help{
			Short: "Remove a federation",
			Long: `Remove a federation. Workloads stop getting the foreign trust domain's
bundle, and so stop accepting its peers.`,
			Example: `  widctl federation rm partner.test`,
		}, nil),
	)
	return cmd
}

// CreateOptions are the settings of `widctl federation create`.
type CreateOptions struct {
	IO      *iostreams.IOStreams
	Client  func(context.Context) (*client.Client, error)
	Printer func() (*output.Printer, error)

	TrustDomain string
	URL         string
	Profile     string
	EndpointID  string
	// BundleFile holds the foreign trust domain's SPIFFE bundle.
	BundleFile  string
	Description string
	// File is a trust_domain_federation document to create instead of flags.
	File  string
	Force bool
}

// NewCmdCreate builds `widctl federation create`.
func NewCmdCreate(f *cmdutil.Factory, runF func(*CreateOptions) error) *cobra.Command {
	opts := &CreateOptions{IO: f.IOStreams, Client: f.Client, Printer: f.Printer}
	cmd := &cobra.Command{
		Use:   "create TRUST_DOMAIN --url URL --profile https_spiffe|https_web [--endpoint-spiffe-id ID] [--bundle FILE]",
		Short: "Federate with a trust domain: fetch its bundle from its bundle endpoint",
		Long: `Federate with the trust domain TRUST_DOMAIN, whose bundle endpoint is at --url.

With --profile https_spiffe the endpoint is authenticated with the foreign
trust domain's own bundle, which --bundle gives (on the other side:
"widctl bundle export --format spiffe"), and must present the SPIFFE ID
--endpoint-spiffe-id (default spiffe://TRUST_DOMAIN/_wid/bundle-endpoint, a
wid endpoint's; a SPIRE server's is spiffe://TRUST_DOMAIN/spire/server).
With --profile https_web it is authenticated by its web certificate.

-f creates one from a trust_domain_federation document instead, as
"widctl create -f" does.`,
		Example: `  widctl federation create partner.test --url https://partner.test:8443/ \
    --profile https_spiffe --bundle partner.json
  widctl federation create spire.test --url https://spire.test:8443/ \
    --profile https_spiffe --endpoint-spiffe-id spiffe://spire.test/spire/server --bundle spire.json
  widctl federation create cloud.example --url https://bundle.cloud.example/ --profile https_web
  widctl federation create -f federation.yaml`,
		Args: func(cmd *cobra.Command, args []string) error {
			if opts.File != "" {
				return cmdutil.NoArgs(cmd, args)
			}
			return cmdutil.ExactArgs(1, "the foreign trust domain")(cmd, args)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				opts.TrustDomain = args[0]
			}
			if runF != nil {
				return runF(opts)
			}
			return createRun(cmd.Context(), opts)
		},
	}
	fs := cmd.Flags()
	fs.SortFlags = false
	fs.StringVar(&opts.URL, "url", "", "the foreign bundle endpoint's https `URL`")
	fs.StringVar(&opts.Profile, "profile", "", "how the endpoint is authenticated: https_spiffe or https_web")
	fs.StringVar(&opts.EndpointID, "endpoint-spiffe-id", "", "the SPIFFE `ID` an https_spiffe endpoint presents (default spiffe://TRUST_DOMAIN/_wid/bundle-endpoint)")
	fs.StringVar(&opts.BundleFile, "bundle", "", "`FILE` holding the foreign trust domain's SPIFFE bundle, to start from (required with https_spiffe)")
	fs.StringVar(&opts.Description, "description", "", "say what the federation is for in `TEXT`")
	fs.StringVarP(&opts.File, "filename", "f", "", "create from the trust_domain_federation document in `FILE` (- for stdin)")
	fs.BoolVar(&opts.Force, "force", false, "replace a federation with the same trust domain")
	_ = cmd.RegisterFlagCompletionFunc("profile", cobra.FixedCompletions([]string{resource.ProfileHTTPSSPIFFE, resource.ProfileHTTPSWeb}, cobra.ShellCompDirectiveNoFileComp))
	for _, name := range []string{"url", "endpoint-spiffe-id", "description"} {
		_ = cmd.RegisterFlagCompletionFunc(name, cobra.NoFileCompletions)
	}
	return cmd
}

// Federation builds and checks the federation the options describe.
func (opts *CreateOptions) Federation() (*resource.Federation, error) {
	if opts.File != "" {
		if opts.URL != "" || opts.Profile != "" || opts.EndpointID != "" || opts.BundleFile != "" {
			return nil, cmdutil.InputErrorf("-f and --url, --profile, --endpoint-spiffe-id or --bundle were both given: the file says everything, so give one or the other")
		}
		data, err := cmdutil.ReadFile(opts.IO, "file", opts.File, resource.MaxBundleSize*2)
		if err != nil {
			return nil, err
		}
		rs, err := resource.Decode(data)
		if err != nil {
			return nil, cmdutil.InputErrorf("%s: %v", opts.File, err)
		}
		if len(rs) != 1 {
			return nil, cmdutil.InputErrorf("%s holds %d resources: give one trust_domain_federation, or use widctl create -f", opts.File, len(rs))
		}
		fed, ok := rs[0].(*resource.Federation)
		if !ok {
			return nil, cmdutil.InputErrorf("%s holds a %s, not a trust_domain_federation: use widctl create -f for other kinds", opts.File, rs[0].GetKind())
		}
		fed.Status = nil
		return fed, nil
	}
	fed := &resource.Federation{
		Header: resource.Header{Kind: resource.KindFederation, Version: resource.V1,
			Metadata: resource.Metadata{Name: strings.TrimPrefix(opts.TrustDomain, "spiffe://"), Description: opts.Description}},
		Spec: resource.FederationSpec{BundleEndpointURL: opts.URL, Profile: opts.Profile, EndpointSPIFFEID: opts.EndpointID},
	}
	if opts.BundleFile != "" {
		data, err := cmdutil.ReadFile(opts.IO, "file", opts.BundleFile, resource.MaxBundleSize)
		if err != nil {
			return nil, err
		}
		fed.Spec.Bundle = string(data)
	}
	if err := fed.Validate(); err != nil {
		var fe *resource.FieldError
		if errors.As(err, &fe) {
			if flag := flagFor(fe.Field); flag != "" {
				return nil, cmdutil.InputErrorf("%s %s", flag, strings.TrimPrefix(fe.Message, fe.Field+" "))
			}
		}
		return nil, cmdutil.InputError(err)
	}
	return fed, nil
}

// flagFor maps a federation field to its flag.
func flagFor(field string) string {
	switch field {
	case "metadata.name":
		return "TRUST_DOMAIN"
	case "spec.bundle_endpoint_url":
		return "--url"
	case "spec.profile":
		return "--profile"
	case "spec.endpoint_spiffe_id":
		return "--endpoint-spiffe-id"
	case "spec.bundle":
		return "--bundle"
	}
	return ""
}

func createRun(ctx context.Context, opts *CreateOptions) error {
	fed, err := opts.Federation()
	if err != nil {
		return err
	}
	created, printed, err := cmdutil.CreateOne(ctx, opts.Client, opts.Printer, opts.Force, fed)
	if err != nil || printed {
		return err
	}
	verb := "created"
	if opts.Force {
		verb = "created or replaced"
	}
	_, err = fmt.Fprintf(opts.IO.Out, "%s %s: the auth service fetches its bundle now (see widctl federation ls)\n", verb, resource.Ref(created))
	return err
}
