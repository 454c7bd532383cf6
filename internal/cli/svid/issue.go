package svid

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/cli/cmdutil"
	"github.com/wid-project/wid/internal/cli/iostreams"
	"github.com/wid-project/wid/internal/cli/output"
	"github.com/wid-project/wid/internal/core/client"
	"github.com/wid-project/wid/internal/core/resource"
	"github.com/wid-project/wid/internal/core/svidfile"
)

// Key types of --key-type.
const (
	KeyP256    = "p256"
	KeyRSA2048 = "rsa2048"
	KeyEd25519 = "ed25519"
)

// OutputStdout is the --output that prints a JWT-SVID's token.
const OutputStdout = "-"

// IssueOptions are the settings of `widctl svid issue`.
type IssueOptions struct {
	IO      *iostreams.IOStreams
	Client  func(context.Context) (*client.Client, error)
	Printer func() (*output.Printer, error)

	// Path is the SPIFFE ID path or full ID asked for.
	Path      string
	TTL       resource.Duration
	DNSSANs   []string
	IPSANs    []string
	Type      string
	Audiences []string
	// Output is the directory to write to, or "-" for a token on stdout.
	Output    string
	Overwrite bool
	KeyType   string
}

// NewCmdIssue builds `widctl svid issue`.
func NewCmdIssue(f *cmdutil.Factory, runF func(*IssueOptions) error) *cobra.Command {
	opts := &IssueOptions{IO: f.IOStreams, Client: f.Client, Printer: f.Printer}
	cmd := &cobra.Command{
		Use:   "issue PATH [flags]",
		Short: "Issue yourself a short-lived X509-SVID or JWT-SVID",
		Long: `Issue an SVID for PATH, a SPIFFE ID path (/team/alice/laptop) or a full
SPIFFE ID in the trust domain. The auth service checks your roles: the path
grant, the SANs, the TTL and the deny rules. A refusal names what is missing.

X509 (the default): the private key is generated here (--key-type p256, the
default; rsa2048; or ed25519, which the X509-SVID standard allows) and only a
certificate request leaves the machine. Three files are written to --output,
each atomically: svid.pem (the certificate, then any intermediates),
svid.key (the PKCS#8 private key, mode 0600) and bundle.pem (the trust
domain's X.509 authorities). The directory is created with mode 0700 when it
does not exist. If any of the files exists, nothing is written unless
--overwrite is given.

JWT (--type jwt): the trust domain's JWT key signs the token, so there is no
local key and --key-type does not apply. --audience is required. The token
is written to svid.token (mode 0600) in --output, or printed alone on stdout
with --output -.`,
		Example: `  # An X509-SVID for an hour, in ./laptop
  widctl svid issue /team/alice/laptop --ttl 1h --dns-san laptop.alice.dev.example --output laptop

  # A JWT-SVID for the audience "api", straight into a header
  curl -H "Authorization: Bearer $(widctl svid issue /team/alice/cli --type jwt --audience api --output -)" https://api.example.com

  # For scripts
  widctl svid issue spiffe://example.org/ci/job --ttl 10m --overwrite --format json`,
		Args: cmdutil.ExactArgs(1, "the SPIFFE ID path"),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Path = args[0]
			if err := opts.check(cmd); err != nil {
				return err
			}
			if runF != nil {
				return runF(opts)
			}
			return issueRun(cmd.Context(), opts)
		},
	}
	fl := cmd.Flags()
	fl.SortFlags = false
	fl.StringVar(&opts.Type, "type", authv1.SVIDTypeX509, "the SVID `TYPE`: x509 or jwt")
	cmdutil.DurationVar(fl, &opts.TTL, "ttl", "how long the SVID lives, as a `DURATION` such as 15m or 1h (default: the issuer's default, capped by your roles)")
	fl.StringSliceVar(&opts.DNSSANs, "dns-san", nil, "add the DNS SAN `NAME` to the X509-SVID (repeatable, comma-separated)")
	fl.StringSliceVar(&opts.IPSANs, "ip-san", nil, "add the `IP` SAN to the X509-SVID (repeatable, comma-separated)")
	fl.StringSliceVar(&opts.Audiences, "audience", nil, "the JWT-SVID's audience `AUD` (repeatable, comma-separated; required with --type jwt)")
	fl.StringVarP(&opts.Output, "output", "o", ".", "write the files into `DIR` (created 0700 if missing); - prints a JWT-SVID's token on stdout")
	fl.BoolVar(&opts.Overwrite, "overwrite", false, "replace svid.pem, svid.key, bundle.pem or svid.token if they exist")
	fl.StringVar(&opts.KeyType, "key-type", KeyP256, "the X509-SVID's key `TYPE`: p256, rsa2048 or ed25519")
	_ = cmd.RegisterFlagCompletionFunc("type", cobra.FixedCompletions([]string{authv1.SVIDTypeX509, authv1.SVIDTypeJWT}, cobra.ShellCompDirectiveNoFileComp))
	_ = cmd.RegisterFlagCompletionFunc("key-type", cobra.FixedCompletions([]string{KeyP256, KeyRSA2048, KeyEd25519}, cobra.ShellCompDirectiveNoFileComp))
	_ = cmd.MarkFlagDirname("output")
	return cmd
}

// check refuses what is wrong in the request as typed, before a key is made
// or anything is sent.
func (opts *IssueOptions) check(cmd *cobra.Command) error {
	opts.Type = strings.ToLower(strings.TrimSpace(opts.Type))
	opts.KeyType = strings.ToLower(strings.TrimSpace(opts.KeyType))
	if err := cmdutil.CheckSPIFFEID(opts.Path); err != nil {
		return err
	}
	if ttl := opts.TTL.D(); ttl > resource.MaxSVIDTTL {
		limit := resource.FormatDuration(resource.MaxSVIDTTL)
		return cmdutil.InputErrorf("--ttl %s is over the %s that any SVID may live: set %s or less", opts.TTL, limit, limit)
	}
	if ttl := opts.TTL.D(); ttl > 0 && ttl%time.Second != 0 {
		// The request carries whole seconds, as SVID validity does.
		return cmdutil.InputErrorf("--ttl %s is not a whole number of seconds: write it like 90s, 15m or 1h", opts.TTL)
	}
	switch opts.Type {
	case authv1.SVIDTypeX509:
		if len(opts.Audiences) > 0 {
			return cmdutil.InputErrorf("--audience is for JWT-SVIDs: add --type jwt, or leave --audience out")
		}
		if opts.Output == OutputStdout {
			return cmdutil.InputErrorf("--output - prints a JWT-SVID's token; an X509-SVID is three files: give a directory")
		}
	case authv1.SVIDTypeJWT:
		if len(opts.Audiences) == 0 {
			return cmdutil.InputErrorf("a JWT-SVID needs an audience: pass --audience, for example --audience api")
		}
		for _, flag := range []string{"dns-san", "ip-san", "key-type"} {
			if cmd.Flags().Changed(flag) {
				return cmdutil.InputErrorf("--%s is for X509-SVIDs: a JWT-SVID has no SANs and no local key", flag)
			}
		}
	default:
		return cmdutil.InputErrorf("unknown SVID type %q: use x509 or jwt", opts.Type)
	}
	switch opts.KeyType {
	case KeyP256, KeyRSA2048, KeyEd25519:
	default:
		return cmdutil.InputErrorf("unknown key type %q: use p256, rsa2048 or ed25519", opts.KeyType)
	}
	for _, d := range opts.DNSSANs {
		if err := resource.ValidateDNSSAN(d); err != nil {
			return cmdutil.InputErrorf("--dns-san: %v", err)
		}
	}
	for _, ip := range opts.IPSANs {
		if _, err := netip.ParseAddr(ip); err != nil {
			return cmdutil.InputErrorf("--ip-san %q is not an IP address: give one address such as 10.1.2.3 or fd00::1", ip)
		}
	}
	for _, a := range opts.Audiences {
		if strings.TrimSpace(a) == "" {
			return cmdutil.InputErrorf("--audience is empty: give a name such as api")
		}
	}
	if opts.Output == "" {
		return cmdutil.InputErrorf("--output is empty: give a directory, or - for a JWT-SVID's token")
	}
	return nil
}

// files are the paths issue writes: certificate, key and bundle, or token.
func (opts *IssueOptions) files() []string {
	if opts.Type == authv1.SVIDTypeJWT {
		return []string{filepath.Join(opts.Output, FileToken)}
	}
	return []string{filepath.Join(opts.Output, FileCert), filepath.Join(opts.Output, FileKey), filepath.Join(opts.Output, FileBundle)}
}

// joinAnd lists names as people do: "a", "a and b", "a, b and c".
func joinAnd(names []string) string {
	if len(names) < 2 {
		return strings.Join(names, "")
	}
	return strings.Join(names[:len(names)-1], ", ") + " and " + names[len(names)-1]
}

// prepareOutput makes sure every file can be written before anything is
// asked of the auth service: the directory exists (made 0700) and takes new
// files, and no file would be replaced without --overwrite. It returns a
// cleanup that removes a directory it made, for when issuance fails.
func (opts *IssueOptions) prepareOutput() (cleanup func(), err error) {
	cleanup = func() {}
	if opts.Output == OutputStdout {
		return cleanup, nil
	}
	dir := opts.Output
	st, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return cleanup, cmdutil.InputErrorf("cannot create the output directory %s: %v: choose another --output", dir, pathErr(err))
		}
		cleanup = func() { os.Remove(dir) }
	case err != nil:
		return cleanup, cmdutil.InputErrorf("cannot use the output directory %s: %v: choose another --output", dir, pathErr(err))
	case !st.IsDir():
		return cleanup, cmdutil.InputErrorf("--output %s is not a directory: give a directory to write the files into", dir)
	}
	var existing []string
	for _, p := range opts.files() {
		if _, err := os.Lstat(p); err == nil {
			existing = append(existing, filepath.Base(p))
		}
	}
	if len(existing) > 0 && !opts.Overwrite {
		cleanup()
		verb := "exists"
		if len(existing) > 1 {
			verb = "exist"
		}
		return func() {}, cmdutil.InputErrorf("%s already %s in %s: pass --overwrite to replace, or choose another --output; nothing was written", joinAnd(existing), verb, dir)
	}
	// Root passes permission bits, so ask the file system itself.
	probe, err := os.CreateTemp(dir, ".widctl-probe-*")
	if err != nil {
		cleanup()
		return func() {}, cmdutil.InputErrorf("cannot write to the output directory %s: %v: choose another --output", dir, pathErr(err))
	}
	probe.Close()
	os.Remove(probe.Name())
	return cleanup, nil
}

// pathErr drops the path an *fs.PathError repeats, since the sentence names it.
func pathErr(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// IssueResult is what issue prints, in JSON and YAML too.
type IssueResult struct {
	SPIFFEID  string    `json:"spiffe_id" yaml:"spiffe_id"`
	Type      string    `json:"type" yaml:"type"`
	Serial    string    `json:"serial,omitempty" yaml:"serial,omitempty"`
	JTI       string    `json:"jti,omitempty" yaml:"jti,omitempty"`
	Audience  []string  `json:"audience,omitempty" yaml:"audience,omitempty"`
	DNSSANs   []string  `json:"dns_sans,omitempty" yaml:"dns_sans,omitempty"`
	IPSANs    []string  `json:"ip_sans,omitempty" yaml:"ip_sans,omitempty"`
	KeyType   string    `json:"key_type,omitempty" yaml:"key_type,omitempty"`
	ExpiresAt time.Time `json:"expires_at" yaml:"expires_at"`
	Files     []string  `json:"files" yaml:"files"`
	// Token is set only with --output -, where the token is the answer.
	Token string `json:"token,omitempty" yaml:"token,omitempty"`
}

func issueRun(ctx context.Context, opts *IssueOptions) error {
	p, err := opts.Printer()
	if err != nil {
		return err
	}
	cleanup, err := opts.prepareOutput()
	if err != nil {
		return err
	}
	var res *IssueResult
	if opts.Type == authv1.SVIDTypeJWT {
		res, err = issueJWT(ctx, opts)
	} else {
		res, err = issueX509(ctx, opts)
	}
	if err != nil {
		cleanup()
		return err
	}
	if opts.Output == OutputStdout && p.Format == output.Text {
		// The token alone, so that $(widctl svid issue ...) is the token.
		_, err := fmt.Fprintln(opts.IO.Out, res.Token)
		return err
	}
	return p.Print(res, func(w io.Writer) error { return res.text(w, p) })
}

func (r *IssueResult) text(w io.Writer, p *output.Printer) error {
	d := output.NewDetails(w)
	d.Field("SPIFFE ID", r.SPIFFEID)
	d.Field("Type", typeLabel(r.Type))
	d.Field("Serial", r.Serial)
	d.Field("JTI", r.JTI)
	d.Field("Audience", strings.Join(r.Audience, ", "))
	d.List("DNS SANs", r.DNSSANs)
	d.List("IP SANs", r.IPSANs)
	d.Field("Key", r.KeyType)
	d.Field("Expires", p.Time(r.ExpiresAt))
	d.List("Files", r.Files)
	return d.Flush()
}

// newKey makes the SVID's private key; it never leaves this process but
// for svid.key.
func newKey(keyType string) (crypto.Signer, error) {
	switch keyType {
	case KeyRSA2048:
		return rsa.GenerateKey(rand.Reader, 2048)
	case KeyEd25519:
		_, k, err := ed25519.GenerateKey(rand.Reader)
		return k, err
	}
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

func issueX509(ctx context.Context, opts *IssueOptions) (*IssueResult, error) {
	key, err := newKey(opts.KeyType)
	if err != nil {
		return nil, fmt.Errorf("generating the %s key: %w", opts.KeyType, err)
	}
	csr, err := client.NewCSR(key)
	if err != nil {
		return nil, fmt.Errorf("making the certificate request: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encoding the private key: %w", err)
	}
	c, err := opts.Client(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	resp, err := c.SignX509SVID(ctx, &authv1.SignX509SVIDRequest{
		SpiffeId:   opts.Path,
		Csr:        csr,
		TtlSeconds: int64(opts.TTL.D() / time.Second),
		DnsSans:    opts.DNSSANs,
		IpSans:     opts.IPSANs,
	})
	if err != nil {
		return nil, err
	}
	b, err := c.GetBundle(ctx, &authv1.GetBundleRequest{})
	if err != nil {
		return nil, err
	}
	td, err := spiffeid.TrustDomainFromString(b.GetTrustDomain())
	if err != nil {
		return nil, fmt.Errorf("the auth service named an invalid trust domain %q: %w", b.GetTrustDomain(), err)
	}
	bundle, err := x509bundle.Parse(td, b.GetX509Pem())
	if err != nil {
		return nil, fmt.Errorf("reading the trust bundle: %w", err)
	}
	var authorities [][]byte
	for _, c := range bundle.X509Authorities() {
		authorities = append(authorities, c.Raw)
	}
	// svidfile checks what is about to be written the way a relying party
	// will: a certificate that does not match the key or the bundle is useless.
	svid, err := svidfile.WriteX509(opts.Output, svidfile.X509{Chain: resp.GetCertChain(), Key: keyDER, Bundle: authorities})
	if err != nil {
		return nil, fmt.Errorf("the X509-SVID from the auth service: %w", err)
	}
	files := opts.files()
	res := &IssueResult{
		SPIFFEID: svid.ID.String(), Type: authv1.SVIDTypeX509, Serial: resp.GetSerial(),
		DNSSANs: svid.Certificates[0].DNSNames, KeyType: opts.KeyType,
		ExpiresAt: svid.Certificates[0].NotAfter.UTC(),
		Files:     files,
	}
	for _, ip := range svid.Certificates[0].IPAddresses {
		res.IPSANs = append(res.IPSANs, ip.String())
	}
	return res, nil
}

func issueJWT(ctx context.Context, opts *IssueOptions) (*IssueResult, error) {
	c, err := opts.Client(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	resp, err := c.SignJWTSVID(ctx, &authv1.SignJWTSVIDRequest{
		SpiffeId:   opts.Path,
		Audience:   opts.Audiences,
		TtlSeconds: int64(opts.TTL.D() / time.Second),
	})
	if err != nil {
		return nil, err
	}
	res := &IssueResult{
		SPIFFEID: resp.GetSpiffeId(), Type: authv1.SVIDTypeJWT, JTI: resp.GetJti(), Audience: opts.Audiences,
		ExpiresAt: resp.GetExpiresAt().AsTime().UTC(), Files: []string{},
	}
	if opts.Output == OutputStdout {
		res.Token = resp.GetToken()
		return res, nil
	}
	path := opts.files()[0]
	if err := svidfile.WriteJWT(path, resp.GetToken()); err != nil {
		return nil, err
	}
	res.Files = []string{path}
	return res, nil
}
