package svid

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/cli/cmdutil"
	"github.com/wid-project/wid/internal/cli/iostreams"
	"github.com/wid-project/wid/internal/cli/output"
	"github.com/wid-project/wid/internal/core/ca"
	"github.com/wid-project/wid/internal/core/client"
)

// InspectOptions are the settings of `widctl svid inspect`.
type InspectOptions struct {
	IO      *iostreams.IOStreams
	Client  func(context.Context) (*client.Client, error)
	Printer func() (*output.Printer, error)

	// File is the SVID to read; "-" reads stdin.
	File string
	// Audiences, when set, must include one of the JWT-SVID's audiences.
	Audiences []string
	// Now is the clock for validity; nil means time.Now.
	Now func() time.Time
}

// NewCmdInspect builds `widctl svid inspect`.
func NewCmdInspect(f *cmdutil.Factory, runF func(*InspectOptions) error) *cobra.Command {
	opts := &InspectOptions{IO: f.IOStreams, Client: f.Client, Printer: f.Printer}
	cmd := &cobra.Command{
		Use:   "inspect FILE|- [flags]",
		Short: "Decode an SVID and verify it against the trust bundle",
		Long: `Decode an X509-SVID (PEM certificates, leaf first) or a JWT-SVID (a token)
from FILE, or from stdin with -, and verify it against the trust domain's
bundle, fetched from the auth service.

Shows the SPIFFE ID, the SANs, the serial (or JWT ID), the key that signed it
(sha256 of its public key, and the JWT key ID), the validity and the
remaining lifetime, and whether it verified. X509-SVIDs are verified with
go-spiffe's x509svid.Verify; JWT-SVIDs with jwtsvid.ParseAndValidate against
the JWT keys of the bundle, checking the audience only when --audience is
given. Exits 1 when the SVID does not verify.`,
		Example: `  widctl svid inspect svid.pem
  widctl svid inspect svid.token --audience api
  widctl svid issue /team/alice/cli --type jwt --audience api -o - | widctl svid inspect - --format json`,
		Args: cmdutil.ExactArgs(1, "the SVID file (or - for stdin)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.File = args[0]
			if runF != nil {
				return runF(opts)
			}
			return inspectRun(cmd.Context(), opts)
		},
	}
	cmd.Flags().StringSliceVar(&opts.Audiences, "audience", nil, "require a JWT-SVID to be meant for `AUD` (repeatable, comma-separated; any one suffices)")
	return cmd
}

// Inspection is what inspect prints, in JSON and YAML too.
type Inspection struct {
	SPIFFEID string   `json:"spiffe_id" yaml:"spiffe_id"`
	Type     string   `json:"type" yaml:"type"`
	DNSSANs  []string `json:"dns_sans,omitempty" yaml:"dns_sans,omitempty"`
	IPSANs   []string `json:"ip_sans,omitempty" yaml:"ip_sans,omitempty"`
	Serial   string   `json:"serial,omitempty" yaml:"serial,omitempty"`
	JTI      string   `json:"jti,omitempty" yaml:"jti,omitempty"`
	Audience []string `json:"audience,omitempty" yaml:"audience,omitempty"`
	// IssuerKey is sha256:HEX of the signing key's public key, when the
	// bundle holds it.
	IssuerKey string `json:"issuer_key,omitempty" yaml:"issuer_key,omitempty"`
	// IssuerKeyID is the JWT kid, or the X.509 authority key ID in hex.
	IssuerKeyID string    `json:"issuer_key_id,omitempty" yaml:"issuer_key_id,omitempty"`
	NotBefore   time.Time `json:"not_before,omitzero" yaml:"not_before,omitempty"`
	NotAfter    time.Time `json:"not_after" yaml:"not_after"`
	// Remaining is the lifetime left, "0s" once expired.
	Remaining string `json:"remaining" yaml:"remaining"`
	Verified  bool   `json:"verified" yaml:"verified"`
	// Problem says why the SVID did not verify.
	Problem     string `json:"problem,omitempty" yaml:"problem,omitempty"`
	TrustDomain string `json:"trust_domain" yaml:"trust_domain"`
	// BundleSequence is the sequence of the bundle verified against.
	BundleSequence int64 `json:"bundle_sequence" yaml:"bundle_sequence"`
}

// decoded is an SVID read from a file, before the bundle is known.
type decoded struct {
	certs []*x509.Certificate
	token string
}

// decode reads an X509-SVID or a JWT-SVID, and says which it is not when it
// is neither.
func decode(name string, data []byte) (*decoded, error) {
	data = bytes.TrimSpace(data)
	if bytes.Contains(data, []byte("-----BEGIN")) {
		var d decoded
		rest := data
		for {
			var b *pem.Block
			b, rest = pem.Decode(rest)
			if b == nil {
				break
			}
			if b.Type != "CERTIFICATE" {
				continue
			}
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				return nil, cmdutil.InputErrorf("%s: certificate %d is not a valid X.509 certificate: %v", name, len(d.certs)+1, err)
			}
			d.certs = append(d.certs, c)
		}
		if len(d.certs) == 0 {
			return nil, cmdutil.InputErrorf("%s holds PEM but no CERTIFICATE block: give the X509-SVID (svid.pem), not its key", name)
		}
		return &d, nil
	}
	token := string(data)
	if strings.Count(token, ".") == 2 && !strings.ContainsAny(token, " \n\t") {
		if _, _, err := jwtClaims(token); err != nil {
			return nil, cmdutil.InputErrorf("%s is not a JWT-SVID: %v", name, err)
		}
		return &decoded{token: token}, nil
	}
	return nil, cmdutil.InputErrorf("%s is neither an X509-SVID (PEM certificates) nor a JWT-SVID (a token): give svid.pem or svid.token", name)
}

func (opts *InspectOptions) read() ([]byte, string, error) {
	if opts.File == "-" {
		data, err := io.ReadAll(opts.IO.In)
		if err != nil {
			return nil, "", fmt.Errorf("reading stdin: %w", err)
		}
		return data, "stdin", nil
	}
	data, err := os.ReadFile(opts.File)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, "", cmdutil.InputErrorf("%s does not exist: give the path of svid.pem or svid.token, or - for stdin", opts.File)
	case err != nil:
		return nil, "", cmdutil.InputErrorf("cannot read %s: %v", opts.File, pathErr(err))
	}
	return data, opts.File, nil
}

func inspectRun(ctx context.Context, opts *InspectOptions) error {
	data, name, err := opts.read()
	if err != nil {
		return err
	}
	d, err := decode(name, data)
	if err != nil {
		return err
	}
	p, err := opts.Printer()
	if err != nil {
		return err
	}
	c, err := opts.Client(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	resp, err := c.GetBundle(ctx, &authv1.GetBundleRequest{})
	if err != nil {
		return err
	}
	td, err := spiffeid.TrustDomainFromString(resp.GetTrustDomain())
	if err != nil {
		return fmt.Errorf("the auth service named an invalid trust domain %q: %w", resp.GetTrustDomain(), err)
	}
	bundle, err := spiffebundle.Parse(td, resp.GetJwks())
	if err != nil {
		return fmt.Errorf("reading the trust bundle: %w", err)
	}
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	var in *Inspection
	if d.token != "" {
		in, err = inspectJWT(d.token, bundle, opts.Audiences)
	} else {
		in = inspectX509(d.certs, bundle, now())
	}
	if err != nil {
		return err
	}
	in.TrustDomain = td.Name()
	in.BundleSequence = resp.GetSequence()
	in.Remaining = "0s"
	if left := in.NotAfter.Sub(now()); left > 0 {
		in.Remaining = left.Truncate(time.Second).String()
	}
	if err := p.Print(in, func(w io.Writer) error { return in.text(w, p) }); err != nil {
		return err
	}
	if !in.Verified {
		return cmdutil.SilentError(cmdutil.ExitError)
	}
	return nil
}

func inspectX509(certs []*x509.Certificate, bundle *spiffebundle.Bundle, now time.Time) *Inspection {
	leaf := certs[0]
	in := &Inspection{
		Type: authv1.SVIDTypeX509, DNSSANs: leaf.DNSNames, Serial: ca.FormatSerial(leaf.SerialNumber),
		NotBefore: leaf.NotBefore.UTC(), NotAfter: leaf.NotAfter.UTC(),
	}
	if len(leaf.AuthorityKeyId) > 0 {
		in.IssuerKeyID = hex.EncodeToString(leaf.AuthorityKeyId)
	}
	for _, ip := range leaf.IPAddresses {
		in.IPSANs = append(in.IPSANs, ip.String())
	}
	if id, err := x509svid.IDFromCert(leaf); err == nil {
		in.SPIFFEID = id.String()
	} else {
		in.Problem = strings.TrimPrefix(err.Error(), "x509svid: ")
		return in
	}
	_, chains, err := x509svid.Verify(certs, bundle, x509svid.WithTime(now))
	if err != nil {
		in.Problem = strings.TrimPrefix(err.Error(), "x509svid: ")
		return in
	}
	in.Verified = true
	if len(chains) > 0 && len(chains[0]) > 1 {
		in.IssuerKey = keyFingerprint(chains[0][1].PublicKey)
	}
	return in
}

// jwtAlgorithms are those the JWT-SVID standard allows.
var jwtAlgorithms = []jose.SignatureAlgorithm{jose.RS256, jose.RS384, jose.RS512, jose.ES256, jose.ES384, jose.ES512, jose.PS256, jose.PS384, jose.PS512}

// jwtClaims reads a token's claims and key ID without verifying anything,
// so that an expired or foreign JWT-SVID can still be shown.
func jwtClaims(token string) (*jwt.Claims, string, error) {
	tok, err := jwt.ParseSigned(token, jwtAlgorithms)
	if err != nil {
		return nil, "", errors.New("it is not a signed JWT with an algorithm JWT-SVIDs allow")
	}
	var claims jwt.Claims
	if err := tok.UnsafeClaimsWithoutVerification(&claims); err != nil {
		return nil, "", fmt.Errorf("its claims cannot be read: %v", err)
	}
	if _, err := spiffeid.FromString(claims.Subject); err != nil {
		return nil, "", fmt.Errorf("its subject %q is not a SPIFFE ID", claims.Subject)
	}
	return &claims, tok.Headers[0].KeyID, nil
}

func inspectJWT(token string, bundle *spiffebundle.Bundle, audiences []string) (*Inspection, error) {
	claims, kid, err := jwtClaims(token)
	if err != nil {
		return nil, cmdutil.InputErrorf("not a JWT-SVID: %v", err)
	}
	in := &Inspection{Type: authv1.SVIDTypeJWT, SPIFFEID: claims.Subject, JTI: claims.ID, Audience: claims.Audience, IssuerKeyID: kid}
	if claims.IssuedAt != nil {
		in.NotBefore = claims.IssuedAt.Time().UTC()
	}
	if claims.Expiry != nil {
		in.NotAfter = claims.Expiry.Time().UTC()
	}
	if key, ok := bundle.FindJWTAuthority(kid); ok {
		in.IssuerKey = keyFingerprint(key)
	}
	// go-spiffe decides: signature by a key of the bundle, expiry, and the
	// audience when one is asked for.
	if _, err := jwtsvid.ParseAndValidate(token, bundle, audiences); err != nil {
		in.Problem = strings.TrimPrefix(err.Error(), "jwtsvid: ")
		return in, nil
	}
	in.Verified = true
	return in, nil
}

func (in *Inspection) text(w io.Writer, p *output.Printer) error {
	d := output.NewDetails(w)
	d.Field("SPIFFE ID", in.SPIFFEID)
	d.Field("Type", typeLabel(in.Type))
	d.List("DNS SANs", in.DNSSANs)
	d.List("IP SANs", in.IPSANs)
	d.Field("Serial", in.Serial)
	d.Field("JTI", in.JTI)
	d.Field("Audience", strings.Join(in.Audience, ", "))
	d.Field("Issuer key", in.IssuerKey)
	d.Field("Issuer key ID", in.IssuerKeyID)
	d.Field("Not before", p.Time(in.NotBefore))
	d.Field("Not after", p.Time(in.NotAfter))
	d.Field("Remaining", in.Remaining)
	verdict := fmt.Sprintf("verified against the bundle of %s (sequence %d)", in.TrustDomain, in.BundleSequence)
	if !in.Verified {
		verdict = "NOT verified: " + in.Problem
	}
	d.Field("Status", verdict)
	return d.Flush()
}
