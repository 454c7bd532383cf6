package ca

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/cli/cmdutil"
	"github.com/wid-project/wid/internal/cli/iostreams"
	"github.com/wid-project/wid/internal/cli/output"
	coreca "github.com/wid-project/wid/internal/core/ca"
	"github.com/wid-project/wid/internal/core/client"
)

// ImportOptions are the settings of `widctl ca import`.
type ImportOptions struct {
	IO      *iostreams.IOStreams
	Client  func(context.Context) (*client.Client, error)
	Printer func() (*output.Printer, error)

	Type       string
	CertFile   string
	KeyFile    string
	BundleFile string
}

// NewCmdImport builds `widctl ca import`.
func NewCmdImport(f *cmdutil.Factory, runF func(*ImportOptions) error) *cobra.Command {
	opts := &ImportOptions{IO: f.IOStreams, Client: f.Client, Printer: f.Printer}
	cmd := &cobra.Command{
		Use:   "import --type spiffe --cert FILE [--key FILE] [--bundle FILE]",
		Short: "Put the spiffe CA under your own root CA (upstream CA), or install its signed intermediate",
		Long: `Make the spiffe CA an intermediate of your own CA, as SPIRE's
UpstreamAuthority "disk" with upstream_bundle does: SVID chains then carry
wid's intermediate, and the trust bundle holds your root, so anything that
trusts the root alone verifies wid's SVIDs.

With --key, --cert is your root (or intermediate) CA certificate and --key
its private key: wid keeps the key sealed like its own CA keys and signs
each new intermediate with it, so rotations need nothing from you.

Without --key (an offline root), --cert is the certificate you signed from
the CSR that "widctl ca csr" printed; the key stays in the auth service.

When --cert does not end in a self-signed root, give the root with --bundle.
If the trust bundle's root changes (the first import, or a new root), the
new intermediate joins as the new key of a rotation in init: move it on with
widctl ca rotate. Under the same root it signs at once.`,
		Example: `  widctl ca import --type spiffe --cert root.pem --key root.key
  widctl ca import --type spiffe --cert issuing.pem --key issuing.key --bundle root.pem
  widctl ca csr --type spiffe -o wid.csr
  widctl ca import --type spiffe --cert signed.pem --bundle root.pem`,
		Args: cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkSPIFFEType(opts.Type); err != nil {
				return err
			}
			if opts.CertFile == "" {
				return cmdutil.InputErrorf("say which certificate with --cert FILE: your CA certificate (with --key) or the signed intermediate")
			}
			if runF != nil {
				return runF(opts)
			}
			return importRun(cmd.Context(), opts)
		},
	}
	cmd.Flags().StringVar(&opts.Type, "type", "", "the CA `TYPE`: spiffe")
	cmd.Flags().StringVar(&opts.CertFile, "cert", "", "PEM `FILE` with the upstream CA certificate (or the signed intermediate), then its chain")
	cmd.Flags().StringVar(&opts.KeyFile, "key", "", "PEM `FILE` with the upstream CA's private key (leave out for a signed intermediate)")
	cmd.Flags().StringVar(&opts.BundleFile, "bundle", "", "PEM `FILE` with the root CA certificate(s), when --cert does not end in one")
	_ = cmd.RegisterFlagCompletionFunc("type", cobra.FixedCompletions([]string{"spiffe"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

func checkSPIFFEType(t string) error {
	if t == "" {
		return cmdutil.InputErrorf("say which CA with --type spiffe: only the spiffe CA can have an upstream CA")
	}
	ct, err := coreca.ParseType(t)
	if err != nil {
		return cmdutil.InputError(err)
	}
	if ct != coreca.TypeSPIFFE {
		return cmdutil.InputErrorf("only the spiffe CA can have an upstream CA, not the %s CA: use --type spiffe", ct)
	}
	return nil
}

// Import is what `widctl ca import` prints in JSON and YAML.
type Import struct {
	Type            string     `json:"type" yaml:"type"`
	Mode            string     `json:"mode" yaml:"mode"`
	Phase           string     `json:"phase" yaml:"phase"`
	StartedRotation bool       `json:"started_rotation" yaml:"started_rotation"`
	ForRotation     bool       `json:"for_rotation,omitempty" yaml:"for_rotation,omitempty"`
	NewFingerprint  string     `json:"new_fingerprint" yaml:"new_fingerprint"`
	Replaced        string     `json:"replaced_fingerprint,omitempty" yaml:"replaced_fingerprint,omitempty"`
	NotAfter        time.Time  `json:"not_after" yaml:"not_after"`
	CappedAt        *time.Time `json:"capped_at,omitempty" yaml:"capped_at,omitempty"`
	Roots           []string   `json:"roots" yaml:"roots"`
}

func importRun(ctx context.Context, opts *ImportOptions) error {
	p, err := opts.Printer()
	if err != nil {
		return err
	}
	req := &authv1.ImportCARequest{Type: strings.ToLower(opts.Type)}
	if req.CertPem, err = cmdutil.ReadFile(opts.IO, "--cert", opts.CertFile, coreca.MaxUpstreamPEM); err != nil {
		return err
	}
	if opts.KeyFile != "" {
		if req.KeyPem, err = cmdutil.ReadFile(opts.IO, "--key", opts.KeyFile, coreca.MaxUpstreamPEM); err != nil {
			return err
		}
	}
	if opts.BundleFile != "" {
		if req.BundlePem, err = cmdutil.ReadFile(opts.IO, "--bundle", opts.BundleFile, coreca.MaxUpstreamPEM); err != nil {
			return err
		}
	}
	c, err := opts.Client(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	resp, err := c.ImportCA(ctx, req)
	clear(req.KeyPem)
	if err != nil {
		return err
	}
	out := Import{
		Type: req.Type, Mode: resp.Mode, Phase: resp.GetCa().GetPhase(), StartedRotation: resp.StartedRotation, ForRotation: resp.ForRotation,
		NewFingerprint: resp.NewFingerprint, Replaced: resp.ReplacedFingerprint, CappedAt: timePtr(resp.CappedAt), Roots: []string{},
	}
	if cert, err := x509.ParseCertificate(resp.Intermediate); err == nil {
		out.NotAfter = cert.NotAfter
	}
	for _, der := range resp.Roots {
		if r, err := x509.ParseCertificate(der); err == nil {
			out.Roots = append(out.Roots, r.Subject.String()+" "+coreca.Fingerprint(r.RawSubjectPublicKeyInfo))
		}
	}
	return p.Print(out, func(w io.Writer) error {
		how := "signed with the upstream key wid now holds"
		if out.Mode == string(coreca.UpstreamCSR) {
			how = "signed by the upstream CA from wid's CSR"
		}
		fmt.Fprintf(w, "The %s CA's new intermediate %s is %s, valid until %s.\n", out.Type, short(out.NewFingerprint), how, p.Time(out.NotAfter))
		if out.CappedAt != nil {
			fmt.Fprintf(w, "  It ends early, with the upstream chain, at %s: import a longer-lived upstream certificate before then.\n", p.Time(*out.CappedAt))
		}
		for _, r := range out.Roots {
			fmt.Fprintf(w, "  trust bundle root: %s\n", r)
		}
		switch {
		case out.ForRotation:
			fmt.Fprintf(w, "It is the signature the rotation waited for: the rotation is in init, and the old key %s still signs.\n", short(out.Replaced))
			fmt.Fprintf(w, "Next: widctl ca rotate --type %s --phase update_clients (then update_servers, then standby), or let an automatic rotation run.\n", out.Type)
		case out.StartedRotation:
			fmt.Fprintf(w, "The trust anchors change, so it joined a rotation in init: the old key %s still signs.\n", short(out.Replaced))
			fmt.Fprintf(w, "Next: widctl ca rotate --type %s --phase update_clients (then update_servers, then standby).\n", out.Type)
		default:
			fmt.Fprintf(w, "It signs now; the old intermediate %s chains to the same root and is retired.\n", short(out.Replaced))
		}
		return nil
	})
}

// CSROptions are the settings of `widctl ca csr`.
type CSROptions struct {
	IO      *iostreams.IOStreams
	Client  func(context.Context) (*client.Client, error)
	Printer func() (*output.Printer, error)

	Type   string
	Output string
}

// NewCmdCSR builds `widctl ca csr`.
func NewCmdCSR(f *cmdutil.Factory, runF func(*CSROptions) error) *cobra.Command {
	opts := &CSROptions{IO: f.IOStreams, Client: f.Client, Printer: f.Printer}
	cmd := &cobra.Command{
		Use:   "csr --type spiffe [-o FILE]",
		Short: "Print a CSR for the spiffe CA's next intermediate, for an offline root to sign",
		Long: `Print (or write to -o FILE) a certificate signing request for a new spiffe CA
intermediate key. The key is made and kept, sealed, in the auth service; it
never leaves it. Sign the CSR with your root CA as a CA certificate
(basicConstraints CA:TRUE, keyUsage keyCertSign) and install the result
with widctl ca import --type spiffe --cert signed.pem.

While a CSR waits, running this again prints the same CSR. A rotation of a
spiffe CA whose upstream key is offline makes one too, and waits for it.`,
		Example: `  widctl ca csr --type spiffe -o wid.csr
  openssl x509 -req -in wid.csr -CA root.pem -CAkey root.key -days 30 \
    -extfile <(printf 'basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign,digitalSignature\nsubjectAltName=URI:spiffe://example.org') -out signed.pem
  widctl ca import --type spiffe --cert signed.pem --bundle root.pem`,
		Args: cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkSPIFFEType(opts.Type); err != nil {
				return err
			}
			if runF != nil {
				return runF(opts)
			}
			return csrRun(cmd.Context(), opts)
		},
	}
	cmd.Flags().StringVar(&opts.Type, "type", "", "the CA `TYPE`: spiffe")
	cmd.Flags().StringVarP(&opts.Output, "output", "o", "", "write the CSR to `FILE` instead of printing it")
	_ = cmd.RegisterFlagCompletionFunc("type", cobra.FixedCompletions([]string{"spiffe"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// CSR is what `widctl ca csr` prints in JSON and YAML.
type CSR struct {
	Type        string `json:"type" yaml:"type"`
	Fingerprint string `json:"fingerprint" yaml:"fingerprint"`
	Rotation    bool   `json:"rotation" yaml:"rotation"`
	CSR         string `json:"csr" yaml:"csr"`
	File        string `json:"file,omitempty" yaml:"file,omitempty"`
}

func csrRun(ctx context.Context, opts *CSROptions) error {
	p, err := opts.Printer()
	if err != nil {
		return err
	}
	c, err := opts.Client(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	resp, err := c.CreateCACSR(ctx, &authv1.CreateCACSRRequest{Type: strings.ToLower(opts.Type)})
	if err != nil {
		return err
	}
	if blk, _ := pem.Decode(resp.CsrPem); blk == nil || blk.Type != "CERTIFICATE REQUEST" {
		return fmt.Errorf("the auth service answered with no CSR")
	}
	out := CSR{Type: strings.ToLower(opts.Type), Fingerprint: resp.Fingerprint, Rotation: resp.Rotation, CSR: string(resp.CsrPem), File: opts.Output}
	if opts.Output != "" {
		if err := os.WriteFile(opts.Output, resp.CsrPem, 0o600); err != nil {
			return cmdutil.InputErrorf("cannot write -o %s: %v", opts.Output, err)
		}
	}
	return p.Print(out, func(w io.Writer) error {
		if opts.Output == "" {
			fmt.Fprint(w, out.CSR)
			return nil
		}
		fmt.Fprintf(w, "Wrote the CSR of the %s CA's next intermediate (key %s) to %s.\n", out.Type, short(out.Fingerprint), opts.Output)
		fmt.Fprintf(w, "Sign it with your root CA as a CA certificate, then run: widctl ca import --type %s --cert signed.pem\n", out.Type)
		return nil
	})
}
