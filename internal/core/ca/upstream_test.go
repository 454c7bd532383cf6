package ca_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/wid-project/wid/internal/core/ca"
	"github.com/wid-project/wid/internal/core/ca/catest"
	"github.com/wid-project/wid/internal/core/issuer"
	"github.com/wid-project/wid/internal/core/store"
)

type upstreamCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

type upOpts struct {
	parent              *upstreamCA
	notBefore, notAfter time.Time
	notCA, noCertSign   bool
	pathLenZero         bool
	uri                 string
}

func newUpstream(t testing.TB, cn string, o upOpts) upstreamCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if o.notBefore.IsZero() {
		o.notBefore = time.Now().Add(-time.Hour)
	}
	if o.notAfter.IsZero() {
		o.notAfter = time.Now().Add(5 * 365 * 24 * time.Hour)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: o.notBefore, NotAfter: o.notAfter, BasicConstraintsValid: true, IsCA: !o.notCA,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	if o.noCertSign {
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	}
	tmpl.MaxPathLenZero = o.pathLenZero
	if o.uri != "" {
		u, _ := url.Parse(o.uri)
		tmpl.URIs = []*url.URL{u}
	}
	parent, signer := tmpl, crypto.Signer(key)
	if o.parent != nil {
		parent, signer = o.parent.cert, o.parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), signer)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return upstreamCA{cert: cert, key: key}
}

func (u upstreamCA) sign(t *testing.T, csrDER []byte, notAfter time.Time) *x509.Certificate {
	t.Helper()
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: csr.Subject, URIs: csr.URIs,
		NotBefore: time.Now().Add(-time.Minute), NotAfter: notAfter, BasicConstraintsValid: true, IsCA: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, u.cert, csr.PublicKey, u.key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c
}

func upstreamManager(t *testing.T) (*ca.Manager, *catest.Store, *ca.KEK) {
	t.Helper()
	st := catest.NewStore()
	kek, _ := newKEK(t)
	m, _ := initManager(t, st, kek)
	return m, st, kek
}

func spiffeRevision(t *testing.T, st store.Backend) int64 {
	t.Helper()
	it, err := st.Get(context.Background(), ca.StoreKind, "spiffe")
	if err != nil {
		t.Fatal(err)
	}
	return it.Revision
}

// svidVerifiesAgainst signs an X509-SVID with the active spiffe key and
// verifies it with go-spiffe against a bundle of root alone.
func svidVerifiesAgainst(t *testing.T, m *ca.Manager, root *x509.Certificate) []*x509.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	id := spiffeid.RequireFromPath(td, "/svc/web")
	svid, err := issuer.New(m, nil).SignX509SVID(issuer.X509Params{ID: id, PublicKey: key.Public(), TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := x509svid.Verify(svid.Certificates, x509bundle.FromX509Authorities(td, []*x509.Certificate{root})); err != nil {
		t.Fatalf("the SVID does not verify against the upstream root alone: %v", err)
	}
	return svid.Certificates
}

func stepTo(t *testing.T, m *ca.Manager, phases ...ca.Phase) {
	t.Helper()
	for _, p := range phases {
		if _, err := m.Step(context.Background(), ca.StepRequest{Type: ca.TypeSPIFFE, To: p}); err != nil {
			t.Fatalf("step to %s: %v", p, err)
		}
	}
}

func bundleIsRootAlone(t *testing.T, m *ca.Manager, root *x509.Certificate) {
	t.Helper()
	b, err := m.Bundle()
	if err != nil {
		t.Fatal(err)
	}
	if auths := b.X509Authorities(); len(auths) != 1 || !auths[0].Equal(root) {
		t.Fatalf("the bundle holds %d X.509 authorities, want the upstream root alone", len(auths))
	}
}

func TestImportUpstreamKeyModeAndRotation(t *testing.T) {
	ctx := context.Background()
	m, st, kek := upstreamManager(t)
	root := newUpstream(t, "root", upOpts{})
	res, err := m.ImportUpstream(ctx, ca.ImportRequest{Certs: []*x509.Certificate{root.cert}, Key: root.key, MinValidity: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	// The first import changes the trust anchors: it starts a rotation in
	// which the old self-signed key still signs.
	if !res.StartedRotation || res.Doc.Phase != ca.PhaseInit || res.Mode != ca.UpstreamKey {
		t.Fatalf("first import: started %v, phase %s, mode %s", res.StartedRotation, res.Doc.Phase, res.Mode)
	}
	if err := res.Intermediate.CheckSignatureFrom(root.cert); err != nil {
		t.Fatalf("the intermediate is not signed by the root: %v", err)
	}
	if b, _ := m.Bundle(); len(b.X509Authorities()) != 2 {
		t.Fatalf("in init the bundle holds %d authorities, want the old CA and the root", len(b.X509Authorities()))
	}
	stepTo(t, m, ca.PhaseUpdateClients, ca.PhaseUpdateServers, ca.PhaseStandby)
	bundleIsRootAlone(t, m, root.cert)
	first := svidVerifiesAgainst(t, m, root.cert)
	if len(first) != 2 || !first[1].Equal(res.Intermediate) {
		t.Fatalf("the SVID chain has %d certificates, want the leaf and the intermediate", len(first))
	}

	// A rotation under the upstream: a new intermediate, the same bundle.
	seq := m.BundleSequence()
	stepTo(t, m, ca.PhaseInit)
	bundleIsRootAlone(t, m, root.cert)
	if m.BundleSequence() <= seq {
		t.Error("init did not bump the bundle sequence")
	}
	stepTo(t, m, ca.PhaseUpdateClients)
	second := svidVerifiesAgainst(t, m, root.cert)
	if second[1].Equal(first[1]) {
		t.Fatal("the rotation signs with the same intermediate")
	}
	if err := second[1].CheckSignatureFrom(root.cert); err != nil {
		t.Fatalf("the rotation's intermediate is not signed by the root: %v", err)
	}
	stepTo(t, m, ca.PhaseUpdateServers, ca.PhaseStandby)

	// A restarted auth service opens the sealed upstream key from the store.
	m2 := ca.NewManager(st, kek, td, nil)
	if _, err := m2.Init(ctx); err != nil {
		t.Fatal(err)
	}
	stepTo(t, m2, ca.PhaseInit, ca.PhaseUpdateClients)
	svidVerifiesAgainst(t, m2, root.cert)
	// The stored document never holds the upstream key in the clear.
	it, _ := st.Get(ctx, ca.StoreKind, "spiffe")
	pkcs8, _ := x509.MarshalPKCS8PrivateKey(root.key)
	if strings.Contains(string(it.Data), string(pkcs8)) || strings.Contains(string(it.Data), "PRIVATE KEY") {
		t.Fatal("the store holds the upstream key in the clear")
	}
}

func TestImportUpstreamIntermediateWithBundle(t *testing.T) {
	ctx := context.Background()
	m, _, _ := upstreamManager(t)
	root := newUpstream(t, "root", upOpts{})
	issuing := newUpstream(t, "issuing", upOpts{parent: &root, notAfter: time.Now().Add(72 * time.Hour)})
	// Without its root the intermediate is refused, naming --bundle.
	_, err := m.ImportUpstream(ctx, ca.ImportRequest{Certs: []*x509.Certificate{issuing.cert}, Key: issuing.key})
	if !errors.Is(err, ca.ErrUpstream) || !strings.Contains(err.Error(), "--bundle") {
		t.Fatalf("an intermediate without its root: %v", err)
	}
	res, err := m.ImportUpstream(ctx, ca.ImportRequest{Certs: []*x509.Certificate{issuing.cert}, Key: issuing.key, Bundle: []*x509.Certificate{root.cert}, MinValidity: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	// The upstream ends in 72h, before the CA TTL: the intermediate ends with it.
	if res.CappedAt.IsZero() || !res.Intermediate.NotAfter.Equal(issuing.cert.NotAfter) {
		t.Fatalf("the intermediate ends %s (capped %s), want at the upstream's end %s", res.Intermediate.NotAfter, res.CappedAt, issuing.cert.NotAfter)
	}
	stepTo(t, m, ca.PhaseUpdateClients)
	chain := svidVerifiesAgainst(t, m, root.cert)
	if len(chain) != 3 || !chain[2].Equal(issuing.cert) {
		t.Fatalf("the SVID chain has %d certificates, want leaf, wid's intermediate and the upstream intermediate", len(chain))
	}
}

func TestImportUpstreamRefusals(t *testing.T) {
	ctx := context.Background()
	root := newUpstream(t, "root", upOpts{})
	other := newUpstream(t, "other", upOpts{})
	cases := []struct {
		name string
		up   upstreamCA
		key  crypto.Signer
		want string
	}{
		{"not a CA", newUpstream(t, "leaf", upOpts{notCA: true}), nil, "is not a CA certificate: its basic constraints say CA false"},
		{"no keyCertSign", newUpstream(t, "nosign", upOpts{noCertSign: true}), nil, "lacks the keyCertSign key usage"},
		{"key mismatch", root, other.key, "the key does not match the upstream certificate"},
		{"expired", newUpstream(t, "old", upOpts{notBefore: time.Now().Add(-48 * time.Hour), notAfter: time.Now().Add(-time.Hour)}), nil, "expired at"},
		{"not yet valid", newUpstream(t, "future", upOpts{notBefore: time.Now().Add(time.Hour)}), nil, "is not valid before"},
		{"expires before the SVIDs", newUpstream(t, "short", upOpts{notAfter: time.Now().Add(2 * time.Hour)}), nil, "before the SVIDs it would sign"},
		{"other trust domain", newUpstream(t, "foreign", upOpts{uri: "spiffe://elsewhere.test"}), nil, `is for trust domain "elsewhere.test"`},
		{"path length 0", newUpstream(t, "pathlen0", upOpts{pathLenZero: true}), nil, "leaves no room for wid's intermediate"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m, st, _ := upstreamManager(t)
			rev := spiffeRevision(t, st)
			key := c.key
			if key == nil {
				key = c.up.key
			}
			_, err := m.ImportUpstream(ctx, ca.ImportRequest{Certs: []*x509.Certificate{c.up.cert}, Key: key, MinValidity: 24 * time.Hour})
			if !errors.Is(err, ca.ErrUpstream) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want a refusal saying %q", err, c.want)
			}
			if spiffeRevision(t, st) != rev {
				t.Fatal("the refused import changed the store")
			}
		})
	}
}

func TestParseUpstreamPEM(t *testing.T) {
	for _, c := range []struct {
		name string
		in   string
		want string
	}{
		{"empty", "", "holds no PEM certificate"},
		{"garbage", "hello", "holds no PEM certificate"},
		{"key block", string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1}})), `of type "PRIVATE KEY" where only CERTIFICATE`},
		{"bad der", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1, 2}})), "does not parse"},
		{"too big", strings.Repeat("x", ca.MaxUpstreamPEM+1), "more than the 65536"},
	} {
		if _, err := ca.ParseCertificatesPEM("--cert", []byte(c.in)); !errors.Is(err, ca.ErrUpstream) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}
	if _, err := ca.ParsePrivateKeyPEM("--key", []byte("-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n")); err == nil || !strings.Contains(err.Error(), "not an unencrypted PRIVATE KEY") {
		t.Errorf("an encrypted key: %v", err)
	}
}

func TestUpstreamCSRMode(t *testing.T) {
	ctx := context.Background()
	m, st, _ := upstreamManager(t)
	root := newUpstream(t, "offline root", upOpts{})

	// A signed certificate with no CSR waiting is refused.
	if _, err := m.ImportUpstream(ctx, ca.ImportRequest{Certs: []*x509.Certificate{root.cert}}); !errors.Is(err, ca.ErrUpstream) || !strings.Contains(err.Error(), "no CSR waits") {
		t.Fatalf("import without a CSR: %v", err)
	}
	csr, err := m.RequestCSR(ctx, nil)
	if err != nil || !csr.New {
		t.Fatalf("RequestCSR: %+v %v", csr, err)
	}
	again, err := m.RequestCSR(ctx, nil)
	if err != nil || again.New || again.Fingerprint != csr.Fingerprint {
		t.Fatalf("a second RequestCSR made another key: %+v %v", again, err)
	}
	// A certificate for another key is refused and changes nothing.
	stranger, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	otherCSR, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, stranger)
	rev := spiffeRevision(t, st)
	wrong := root.sign(t, otherCSR, time.Now().Add(30*24*time.Hour))
	if _, err := m.ImportUpstream(ctx, ca.ImportRequest{Certs: []*x509.Certificate{wrong}, Bundle: []*x509.Certificate{root.cert}}); !errors.Is(err, ca.ErrUpstream) || !strings.Contains(err.Error(), "is not for the key of the CSR") {
		t.Fatalf("a certificate for another key: %v", err)
	}
	if spiffeRevision(t, st) != rev {
		t.Fatal("the refused import changed the store")
	}
	signed := root.sign(t, csr.CSR, time.Now().Add(30*24*time.Hour))
	res, err := m.ImportUpstream(ctx, ca.ImportRequest{Certs: []*x509.Certificate{signed}, Bundle: []*x509.Certificate{root.cert}, MinValidity: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if res.Mode != ca.UpstreamCSR || !res.StartedRotation {
		t.Fatalf("CSR import: mode %s, started %v", res.Mode, res.StartedRotation)
	}
	stepTo(t, m, ca.PhaseUpdateClients, ca.PhaseUpdateServers, ca.PhaseStandby)
	bundleIsRootAlone(t, m, root.cert)
	svidVerifiesAgainst(t, m, root.cert)

	// The key is offline: a rotation cannot start by itself.
	_, err = m.Step(ctx, ca.StepRequest{Type: ca.TypeSPIFFE, To: ca.PhaseInit})
	if !errors.Is(err, ca.ErrTransition) || !strings.Contains(err.Error(), "waits for a signature") {
		t.Fatalf("init in CSR mode: %v", err)
	}
	// A rotation's CSR, once signed, starts the rotation in init.
	rot, err := m.RequestCSR(ctx, &ca.PendingRotation{Mode: ca.ModeManual})
	if err != nil || !rot.Rotation {
		t.Fatalf("RequestCSR for a rotation: %+v %v", rot, err)
	}
	res, err = m.ImportUpstream(ctx, ca.ImportRequest{Certs: []*x509.Certificate{root.sign(t, rot.CSR, time.Now().Add(30*24*time.Hour)), root.cert}, MinValidity: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if !res.StartedRotation || res.Doc.Phase != ca.PhaseInit {
		t.Fatalf("the rotation's signed certificate: started %v, phase %s", res.StartedRotation, res.Doc.Phase)
	}
	bundleIsRootAlone(t, m, root.cert)
	stepTo(t, m, ca.PhaseUpdateClients)
	chain := svidVerifiesAgainst(t, m, root.cert)
	if !chain[1].Equal(res.Intermediate) {
		t.Fatal("after update_clients the rotation's intermediate does not sign")
	}

	// Same root, no rotation asked for: a new signed intermediate signs at once.
	stepTo(t, m, ca.PhaseUpdateServers, ca.PhaseStandby)
	next, _ := m.RequestCSR(ctx, nil)
	res, err = m.ImportUpstream(ctx, ca.ImportRequest{Certs: []*x509.Certificate{root.sign(t, next.CSR, time.Now().Add(30*24*time.Hour))}, Bundle: []*x509.Certificate{root.cert}, MinValidity: time.Hour})
	if err != nil || res.StartedRotation {
		t.Fatalf("a same-root import: started %v, %v", res.StartedRotation, err)
	}
	if chain := svidVerifiesAgainst(t, m, root.cert); !chain[1].Equal(res.Intermediate) {
		t.Fatal("the same-root intermediate does not sign at once")
	}
}

func TestImportUpstreamRefusedMidRotation(t *testing.T) {
	ctx := context.Background()
	m, st, _ := upstreamManager(t)
	stepTo(t, m, ca.PhaseInit)
	rev := spiffeRevision(t, st)
	root := newUpstream(t, "root", upOpts{})
	_, err := m.ImportUpstream(ctx, ca.ImportRequest{Certs: []*x509.Certificate{root.cert}, Key: root.key})
	if !errors.Is(err, ca.ErrTransition) || !strings.Contains(err.Error(), "finish it") {
		t.Fatalf("import in init: %v", err)
	}
	if spiffeRevision(t, st) != rev {
		t.Fatal("the refused import changed the store")
	}
}

// FuzzParseUpstreamPEM: whatever an --cert, --bundle or --key file holds,
// the parsers answer with certificates, a key, or a refusal wrapping
// ErrUpstream, never a panic.
func FuzzParseUpstreamPEM(f *testing.F) {
	root := newUpstream(f, "seed", upOpts{})
	f.Add(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: root.cert.Raw}))
	f.Add([]byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"))
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, b []byte) {
		certs, err := ca.ParseCertificatesPEM("--cert", b)
		if err != nil && !errors.Is(err, ca.ErrUpstream) {
			t.Fatalf("a certificate refusal that does not wrap ErrUpstream: %v", err)
		}
		if err == nil && len(certs) == 0 {
			t.Fatal("no error and no certificate")
		}
		key, err := ca.ParsePrivateKeyPEM("--key", b)
		if err != nil && !errors.Is(err, ca.ErrUpstream) {
			t.Fatalf("a key refusal that does not wrap ErrUpstream: %v", err)
		}
		if err == nil && key == nil {
			t.Fatal("no error and no key")
		}
	})
}
