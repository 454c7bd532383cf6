package agentcmd

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"github.com/wid-project/wid/internal/cli/cmdutil"
	"github.com/wid-project/wid/internal/cli/output"
	"github.com/wid-project/wid/internal/core/ca"
	"github.com/wid-project/wid/internal/core/svidfile"
)

// FetchX509Options are the settings of `widagent api fetch x509`.
type FetchX509Options struct {
	APIOptions
	// Write is the directory the first SVID's files go to; empty writes none.
	Write string
}

// X509Row is one X509-SVID as fetch x509 prints it, in JSON and YAML too.
type X509Row struct {
	SPIFFEID  string    `json:"spiffe_id" yaml:"spiffe_id"`
	Hint      string    `json:"hint,omitempty" yaml:"hint,omitempty"`
	Serial    string    `json:"serial" yaml:"serial"`
	NotAfter  time.Time `json:"not_after" yaml:"not_after"`
	DNSNames  []string  `json:"dns_names,omitempty" yaml:"dns_names,omitempty"`
	Bundle    string    `json:"bundle_trust_domain" yaml:"bundle_trust_domain"`
	Authority []string  `json:"bundle_authorities_sha256" yaml:"bundle_authorities_sha256"`
}

// NewCmdFetchX509 builds `widagent api fetch x509`.
func NewCmdFetchX509(f *cmdutil.Factory, runF func(*FetchX509Options) error) *cobra.Command {
	opts := &FetchX509Options{APIOptions: newAPIOptions(f)}
	cmd := &cobra.Command{
		Use:   "x509",
		Short: "Fetch X509-SVIDs and the trust bundle",
		Long: `Fetch the X509-SVIDs this process is entitled to and the trust bundle.
With --write DIR, writes svid.pem (chain), svid.key and bundle.pem for the
first SVID, each replaced atomically, key first and certificate last, all
mode 0600 in a directory made 0700.`,
		Example: "  widagent api fetch x509\n  SPIFFE_ENDPOINT_SOCKET=unix:///tmp/w.sock widagent api fetch x509 --format json\n  widagent api fetch x509 --write ./svid",
		Args:    cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runAPI(cmd.Context(), opts, &opts.APIOptions, func() error { return nil }, runF, fetchX509Run)
		},
	}
	opts.bind(cmd)
	cmd.Flags().StringVar(&opts.Write, "write", "", "write the first SVID's svid.pem, svid.key and bundle.pem into this directory")
	return cmd
}

func fetchX509Run(ctx context.Context, p *output.Printer, addr string, opts *FetchX509Options) error {
	x, err := workloadapi.FetchX509Context(ctx, workloadapi.WithAddr(addr))
	if err != nil {
		return apiError(addr, err)
	}
	var rows []X509Row
	for _, s := range x.SVIDs {
		leaf := s.Certificates[0]
		r := X509Row{SPIFFEID: s.ID.String(), Hint: s.Hint, Serial: ca.FormatSerial(leaf.SerialNumber),
			NotAfter: leaf.NotAfter.UTC(), DNSNames: leaf.DNSNames, Bundle: s.ID.TrustDomain().IDString()}
		if b, ok := x.Bundles.Get(s.ID.TrustDomain()); ok {
			for _, c := range b.X509Authorities() {
				sum := sha256.Sum256(c.Raw)
				r.Authority = append(r.Authority, hex.EncodeToString(sum[:]))
			}
		}
		rows = append(rows, r)
	}
	wrote := opts.Write != "" && len(x.SVIDs) > 0
	if wrote {
		if err := writeX509(opts.Write, x.SVIDs[0], x.Bundles); err != nil {
			return err
		}
	}
	return p.Print(rows, func(w io.Writer) error {
		t := output.NewTable(w, "SPIFFE ID", "HINT", "EXPIRES", "SERIAL")
		for _, r := range rows {
			t.Row(r.SPIFFEID, r.Hint, p.Time(r.NotAfter), r.Serial)
		}
		if err := t.Flush(); err != nil {
			return err
		}
		if wrote {
			_, err := fmt.Fprintf(w, "\nWrote svid.pem, svid.key and bundle.pem for %s to %s\n", rows[0].SPIFFEID, opts.Write)
			return err
		}
		return nil
	})
}

// writeX509 writes s and the bundle of its trust domain into dir.
func writeX509(dir string, s *x509svid.SVID, bundles *x509bundle.Set) error {
	key, err := x509.MarshalPKCS8PrivateKey(s.PrivateKey)
	if err != nil {
		return fmt.Errorf("encoding the SVID's key: %w", err)
	}
	f := svidfile.X509{Key: key}
	for _, c := range s.Certificates {
		f.Chain = append(f.Chain, c.Raw)
	}
	if b, ok := bundles.Get(s.ID.TrustDomain()); ok {
		for _, c := range b.X509Authorities() {
			f.Bundle = append(f.Bundle, c.Raw)
		}
	}
	if _, err := svidfile.WriteX509(dir, f); err != nil {
		return fmt.Errorf("writing the X509-SVID %s to %s: %w", s.ID, dir, err)
	}
	return nil
}
