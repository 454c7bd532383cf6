// Package bundle holds `widctl bundle`: the trust domain's trust bundle,
// which relying parties use to verify the SVIDs the trust domain issues.
package bundle

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/cli/cmdutil"
	"github.com/wid-project/wid/internal/cli/iostreams"
	"github.com/wid-project/wid/internal/core/client"
)

// Bundle formats.
const (
	FormatPEM = "pem"
	// FormatSPIFFE is the SPIFFE bundle: what a bundle endpoint serves and
	// what `widctl federation create --bundle` takes on the other side.
	FormatSPIFFE = "spiffe"
	FormatJWKS   = "jwks"
)

// NewCmdBundle builds the `widctl bundle` group.
func NewCmdBundle(f *cmdutil.Factory) *cobra.Command {
	cmd := cmdutil.Group(&cobra.Command{
		Use:   "bundle <command>",
		Short: "Export the trust bundle that verifies the trust domain's SVIDs",
		Example: `  widctl bundle export > bundle.pem
  widctl bundle export --format jwks -o bundle.json`,
	})
	cmd.AddCommand(NewCmdExport(f, nil))
	return cmd
}

// ExportOptions are the settings of `widctl bundle export`.
type ExportOptions struct {
	IO     *iostreams.IOStreams
	Client func(context.Context) (*client.Client, error)

	// Format is pem or jwks.
	Format string
	// Output is the file to write; empty writes to stdout.
	Output string
	// Force replaces Output if it exists.
	Force bool
	// CRL appends the CRL of each X.509 CA key to the PEM bundle.
	CRL bool
}

// NewCmdExport builds `widctl bundle export`.
func NewCmdExport(f *cmdutil.Factory, runF func(*ExportOptions) error) *cobra.Command {
	opts := &ExportOptions{IO: f.IOStreams, Client: f.Client}
	cmd := &cobra.Command{
		Use:   "export [--format pem|spiffe|jwks] [-o FILE [--force]]",
		Short: "Export the trust bundle as PEM, as a SPIFFE bundle, or as a JWKS",
		Long: `Export the trust domain's trust bundle.

pem is the X.509 authorities that verify X509-SVIDs. spiffe is the SPIFFE
bundle: a JWK set with the x509-svid keys and the jwt-svid keys that verify
JWT-SVIDs, with spiffe_sequence, as the bundle endpoint serves it and as
"widctl federation create --bundle" takes it on the other side. jwks (and
json) is the same document. This command's --format takes pem, spiffe or
jwks, not text or yaml.

--crl appends, after the authorities, a signed CRL (an "X509 CRL" PEM
block) per X.509 CA key, listing the serials revoked with "widctl svid
revoke" that have not expired yet; it needs --format pem.

-o writes the file atomically, and refuses to replace one that exists
unless --force is given.`,
		Example: `  widctl bundle export > bundle.pem
  widctl bundle export --format spiffe -o example.org.json   # for widctl federation create --bundle
  widctl bundle export --format jwks -o /etc/wid/bundle.jwks
  widctl bundle export -o /etc/wid/bundle.pem --force   # e.g. from cron
  widctl bundle export --crl -o /etc/wid/bundle-crl.pem`,
		Args: cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts.Format = strings.ToLower(strings.TrimSpace(opts.Format))
			if opts.Format == "json" {
				// The SPIFFE bundle is a JSON document: what --format json means here.
				opts.Format = FormatJWKS
			}
			if opts.Format != FormatPEM && opts.Format != FormatJWKS && opts.Format != FormatSPIFFE {
				return cmdutil.InputErrorf("unknown bundle format %q: use pem, spiffe, or jwks (also called json)", opts.Format)
			}
			if opts.CRL && opts.Format != FormatPEM {
				return cmdutil.InputErrorf("--crl needs --format pem: a JWKS bundle has no place for a CRL")
			}
			if opts.Output != "" && !opts.Force {
				if _, err := os.Lstat(opts.Output); err == nil {
					return cmdutil.InputErrorf("%s already exists: pass --force to replace it", opts.Output)
				}
			}
			if runF != nil {
				return runF(opts)
			}
			return exportRun(cmd.Context(), opts)
		},
	}
	// This --format shadows the global one: a bundle is PEM or JWKS, never a table.
	cmd.Flags().StringVar(&opts.Format, "format", FormatPEM, "bundle `FORMAT`: pem, spiffe, or jwks (also called json)")
	cmd.Flags().StringVarP(&opts.Output, "output", "o", "", "write the bundle to `FILE` instead of stdout")
	cmd.Flags().BoolVar(&opts.Force, "force", false, "replace the -o file if it exists")
	cmd.Flags().BoolVar(&opts.CRL, "crl", false, "append the CRL of each X.509 CA key (PEM only)")
	_ = cmd.RegisterFlagCompletionFunc("format", cobra.FixedCompletions([]string{FormatPEM, FormatSPIFFE, FormatJWKS, "json"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

func exportRun(ctx context.Context, opts *ExportOptions) error {
	c, err := opts.Client(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	resp, err := c.GetBundle(ctx, &authv1.GetBundleRequest{})
	if err != nil {
		return err
	}
	data := resp.GetX509Pem()
	if opts.Format == FormatJWKS || opts.Format == FormatSPIFFE {
		data = resp.GetJwks()
		// Indented for the people who read bundles; parsers do not mind.
		var buf bytes.Buffer
		if json.Indent(&buf, data, "", "  ") == nil {
			data = buf.Bytes()
		}
	}
	if len(data) == 0 {
		return fmt.Errorf("the auth service sent an empty %s bundle: check that widagent finished creating the trust domain", opts.Format)
	}
	if !bytes.HasSuffix(data, []byte("\n")) {
		data = append(data, '\n')
	}
	if opts.CRL {
		crls, err := c.GetCRLs(ctx, &authv1.GetCRLsRequest{})
		if err != nil {
			return err
		}
		for _, crl := range crls.GetCrls() {
			data = append(data, pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: crl.GetDer()})...)
		}
	}
	if opts.Output == "" {
		_, err := opts.IO.Out.Write(data)
		return err
	}
	// Atomic, so that a service reading the bundle never sees half of it.
	if err := client.WriteFileAtomic(opts.Output, data, 0o644); err != nil {
		return err
	}
	_, err = fmt.Fprintf(opts.IO.ErrOut, "wrote the %s bundle of %s (sequence %d) to %s\n", opts.Format, resp.GetTrustDomain(), resp.GetSequence(), opts.Output)
	return err
}
