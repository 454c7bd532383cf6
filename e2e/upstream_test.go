package e2e

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// testCA is a CA the test makes, standing for an operator's own root.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

type caOpts struct {
	notBefore, notAfter time.Time
	notCA               bool
	noCertSign          bool
	uri                 string
}

func newTestCA(t *testing.T, name string, o caOpts) testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if o.notBefore.IsZero() {
		o.notBefore = time.Now().Add(-time.Hour)
	}
	if o.notAfter.IsZero() {
		o.notAfter = time.Now().Add(10 * 365 * 24 * time.Hour)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name, Organization: []string{"upstream test"}},
		NotBefore: o.notBefore, NotAfter: o.notAfter, BasicConstraintsValid: true, IsCA: !o.notCA,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	if o.noCertSign {
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	}
	if o.uri != "" {
		u, _ := url.Parse(o.uri)
		tmpl.URIs = []*url.URL{u}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return testCA{cert: cert, key: key}
}

func (c testCA) files(t *testing.T, dir, name string) (certFile, keyFile string) {
	t.Helper()
	certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+".key")
	writePEM(t, certFile, "CERTIFICATE", c.cert.Raw)
	writeKey(t, keyFile, c.key)
	return certFile, keyFile
}

func writePEM(t *testing.T, file, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

func writeKey(t *testing.T, file string, key crypto.Signer) {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, file, "PRIVATE KEY", der)
}

// signCSR signs an intermediate from a CSR file as an operator's offline
// root would.
func (c testCA) signCSR(t *testing.T, csrFile, outFile string, td spiffeid.TrustDomain) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(csrFile)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE REQUEST" {
		t.Fatalf("%s holds no CSR:\n%s", csrFile, b)
	}
	csr, err := x509.ParseCertificateRequest(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if err := csr.CheckSignature(); err != nil {
		t.Fatalf("the CSR's signature: %v", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: csr.Subject, URIs: []*url.URL{td.ID().URL()},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(90 * 24 * time.Hour),
		BasicConstraintsValid: true, IsCA: true, MaxPathLenZero: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, csr.PublicKey, c.key)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, outFile, "CERTIFICATE", der)
	cert, _ := x509.ParseCertificate(der)
	return cert
}

// verifyAgainstRoot fetches the agent's X509-SVIDs with go-spiffe and
// verifies each against a bundle of the root alone; it returns the
// intermediate that signed the first.
func verifyAgainstRoot(t *testing.T, a *agent, td spiffeid.TrustDomain, root *x509.Certificate) *x509.Certificate {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	x, err := workloadapi.FetchX509Context(ctx, workloadapi.WithAddr("unix://"+a.workload))
	if err != nil {
		t.Fatalf("FetchX509Context: %v", err)
	}
	rootOnly := x509bundle.FromX509Authorities(td, []*x509.Certificate{root})
	if len(x.SVIDs) == 0 {
		t.Fatal("the agent served no X509-SVID")
	}
	for _, s := range x.SVIDs {
		if len(s.Certificates) < 2 {
			t.Fatalf("the SVID %s has a chain of %d certificate(s); under an upstream CA it must carry the intermediate", s.ID, len(s.Certificates))
		}
		if _, _, err := x509svid.Verify(s.Certificates, rootOnly); err != nil {
			t.Fatalf("x509svid.Verify of %s against the upstream root alone: %v", s.ID, err)
		}
	}
	b, err := x.Bundles.GetX509BundleForTrustDomain(td)
	if err != nil {
		t.Fatal(err)
	}
	if auths := b.X509Authorities(); len(auths) != 1 || !auths[0].Equal(root) {
		t.Fatalf("the Workload API bundle holds %d authorities, want the upstream root alone", len(auths))
	}
	return x.SVIDs[0].Certificates[1]
}

func rotateAll(t *testing.T, a *agent, tr *traffic, phases ...string) {
	t.Helper()
	for _, p := range phases {
		rotateTo(t, a, "spiffe", p)
		tr.settle(10)
	}
}

func spiffeSequence(t *testing.T, a *agent) int64 {
	t.Helper()
	_, seq := caState(t, a, "spiffe")
	return seq
}

func TestUpstreamCAKeyMode(t *testing.T) {
	a := startAgent(t, newDataDir(t))
	td := spiffeid.RequireTrustDomainFromString(a.td)
	dir := t.TempDir()
	root := newTestCA(t, "operator root", caOpts{})
	rootCert, rootKey := root.files(t, dir, "root")

	// Every bad input: one sentence, a non-zero exit, nothing changed.
	seq := spiffeSequence(t, a)
	other := newTestCA(t, "other", caOpts{})
	_, otherKey := other.files(t, dir, "other")
	garbage := filepath.Join(dir, "garbage.pem")
	os.WriteFile(garbage, []byte("not a certificate\n"), 0o600)
	big := filepath.Join(dir, "big.pem")
	os.WriteFile(big, []byte(strings.Repeat("A", 70<<10)), 0o600)
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"not a CA", nil, "is not a CA certificate"},
		{"no keyCertSign", nil, "lacks the keyCertSign key usage"},
		{"key does not match", []string{"--cert", rootCert, "--key", otherKey}, "the key does not match the upstream certificate"},
		{"expired", nil, "expired at"},
		{"not yet valid", nil, "is not valid before"},
		{"expires before SVIDs", nil, "before the SVIDs it would sign"},
		{"other trust domain", nil, `is for trust domain "elsewhere.test"`},
		{"unparseable", []string{"--cert", garbage, "--key", rootKey}, "--cert holds no PEM certificate"},
		{"oversized", []string{"--cert", big, "--key", rootKey}, "is over the limit of 65536 bytes"},
		{"no CSR waits", []string{"--cert", rootCert}, "no CSR waits for a signature"},
	}
	// The cases whose certificate differs from the good root, each with
	// its own key so that only the named defect is wrong.
	withKey := func(name string, o caOpts) []string {
		c := newTestCA(t, name, o)
		cf, kf := c.files(t, dir, strings.ReplaceAll(name, " ", "-"))
		return []string{"--cert", cf, "--key", kf}
	}
	cases[0].args = withKey("not a CA", caOpts{notCA: true})
	cases[1].args = withKey("no keyCertSign", caOpts{noCertSign: true})
	cases[3].args = withKey("expired", caOpts{notBefore: time.Now().Add(-48 * time.Hour), notAfter: time.Now().Add(-time.Hour)})
	cases[4].args = withKey("not yet valid", caOpts{notBefore: time.Now().Add(time.Hour), notAfter: time.Now().Add(10 * 365 * 24 * time.Hour)})
	cases[5].args = withKey("expires soon", caOpts{notAfter: time.Now().Add(2 * time.Hour)})
	cases[6].args = withKey("other td", caOpts{uri: "spiffe://elsewhere.test"})
	for _, c := range cases {
		r := a.widctl(append([]string{"ca", "import", "--type", "spiffe"}, c.args...)...)
		if r.code == 0 || !strings.Contains(r.stderr, c.want) {
			t.Errorf("%s: exit %d, stderr %q; want a refusal saying %q", c.name, r.code, r.stderr, c.want)
		}
		if n := strings.Count(strings.TrimSpace(r.stderr), "\n"); n > 0 {
			t.Errorf("%s: the refusal is %d lines, want one sentence: %q", c.name, n+1, r.stderr)
		}
	}
	if got := spiffeSequence(t, a); got != seq {
		t.Fatalf("the refused imports changed the spiffe CA: sequence %d, was %d", got, seq)
	}
	r := a.widctl("audit", "ls", "--type", "ca.import", "--format", "json").must(t)
	for _, want := range []string{"is not a CA certificate", "lacks the keyCertSign", "the key does not match", "expired at", "is not valid before", "before the SVIDs it would sign", "is for trust domain", "holds no PEM certificate", "no CSR waits"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("the audit log has no refused ca.import saying %q", want)
		}
	}

	// The import, and the rotation it starts, under live mTLS traffic.
	tr := startTraffic(t, a.workload, td)
	defer tr.stop()
	tr.settle(5)
	tr.check("before the import")
	r = a.widctl("ca", "import", "--type", "spiffe", "--cert", rootCert, "--key", rootKey).must(t)
	if !strings.Contains(r.stdout, "joined a rotation in init") || !strings.Contains(r.stdout, "widctl ca rotate --type spiffe --phase update_clients") {
		t.Fatalf("the first import does not say it started a rotation and what to run next:\n%s", r.stdout)
	}
	tr.settle(10)
	rotateAll(t, a, tr, "update_clients", "update_servers", "standby")
	tr.check("import under an upstream root")
	first := verifyAgainstRoot(t, a, td, root.cert)
	if err := first.CheckSignatureFrom(root.cert); err != nil {
		t.Fatalf("the intermediate is not signed by the upstream root: %v", err)
	}
	exported := a.widctl("bundle", "export").must(t).stdout
	if blk, rest := pem.Decode([]byte(exported)); blk == nil || strings.TrimSpace(string(rest)) != "" || string(blk.Bytes) != string(root.cert.Raw) {
		t.Fatalf("widctl bundle export does not hold the upstream root alone:\n%s", exported)
	}

	// A whole rotation under the upstream: a new intermediate, the same root.
	rotateAll(t, a, tr, "init", "update_clients", "update_servers", "standby")
	tr.check("rotation under the upstream")
	second := verifyAgainstRoot(t, a, td, root.cert)
	if second.Equal(first) {
		t.Fatal("the rotation did not make a new intermediate")
	}
	if err := second.CheckSignatureFrom(root.cert); err != nil {
		t.Fatalf("the new intermediate is not signed by the upstream root: %v", err)
	}

	// widctl svid issue writes the chain with the intermediate.
	out := filepath.Join(dir, "svid")
	a.widctl("svid", "issue", "/svc/upstream", "-o", out).must(t)
	chain, err := os.ReadFile(filepath.Join(out, "svid.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(chain), "BEGIN CERTIFICATE"); n != 2 {
		t.Fatalf("widctl svid issue wrote %d certificates, want the leaf and the intermediate", n)
	}
	a.widctl("audit", "verify").must(t)
}

func TestUpstreamCACSRMode(t *testing.T) {
	a := startAgent(t, newDataDir(t))
	td := spiffeid.RequireTrustDomainFromString(a.td)
	dir := t.TempDir()
	root := newTestCA(t, "offline root", caOpts{})
	rootCert, _ := root.files(t, dir, "root")
	csrFile := filepath.Join(dir, "wid.csr")
	a.widctl("ca", "csr", "--type", "spiffe", "-o", csrFile).must(t)

	// A certificate for another key than the CSR's is refused.
	stranger := newTestCA(t, "stranger", caOpts{})
	otherCSR := filepath.Join(dir, "other.csr")
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "x"}}, stranger.key)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, otherCSR, "CERTIFICATE REQUEST", der)
	wrong := filepath.Join(dir, "wrong.pem")
	root.signCSR(t, otherCSR, wrong, td)
	seq := spiffeSequence(t, a)
	r := a.widctl("ca", "import", "--type", "spiffe", "--cert", wrong, "--bundle", rootCert)
	if r.code == 0 || !strings.Contains(r.stderr, "is not for the key of the CSR wid made") {
		t.Fatalf("a signed certificate for another key: exit %d, stderr %q", r.code, r.stderr)
	}
	if spiffeSequence(t, a) != seq {
		t.Fatal("the refused import changed the spiffe CA")
	}

	tr := startTraffic(t, a.workload, td)
	defer tr.stop()
	tr.settle(5)
	signed := filepath.Join(dir, "signed.pem")
	root.signCSR(t, csrFile, signed, td)
	a.widctl("ca", "import", "--type", "spiffe", "--cert", signed, "--bundle", rootCert).must(t)
	tr.settle(10)
	rotateAll(t, a, tr, "update_clients", "update_servers", "standby")
	tr.check("CSR-mode import")
	first := verifyAgainstRoot(t, a, td, root.cert)

	// A rotation cannot sign its intermediate itself: init waits, saying so.
	r = a.widctl("ca", "rotate", "--type", "spiffe", "--phase", "init").must(t)
	if !strings.Contains(r.stderr, "waits for a signature") || !strings.Contains(r.stderr, "widctl ca import --type spiffe --cert signed.pem") || !strings.Contains(r.stderr, "BEGIN CERTIFICATE REQUEST") {
		t.Fatalf("ca rotate --phase init in CSR mode does not say it waits, with the command and the CSR:\n%s", r.stderr)
	}
	if phase, _ := caState(t, a, "spiffe"); phase != "standby" {
		t.Fatalf("the spiffe CA moved to %s without a signature", phase)
	}
	st := a.widctl("ca", "status", "--type", "spiffe").must(t).stdout
	if !strings.Contains(st, "Waiting for") || !strings.Contains(st, "widctl ca import --type spiffe --cert signed.pem") {
		t.Fatalf("ca status does not say what the CA waits for:\n%s", st)
	}
	var csr struct {
		Rotation bool `json:"rotation"`
	}
	r = a.widctl("ca", "csr", "--type", "spiffe", "-o", csrFile, "--format", "json").must(t)
	if err := json.Unmarshal([]byte(r.stdout), &csr); err != nil || !csr.Rotation {
		t.Fatalf("ca csr does not say its key is the rotation's: %v\n%s", err, r.stdout)
	}
	signed2 := filepath.Join(dir, "signed2.pem")
	root.signCSR(t, csrFile, signed2, td)
	r = a.widctl("ca", "import", "--type", "spiffe", "--cert", signed2, "--bundle", rootCert).must(t)
	if phase, _ := caState(t, a, "spiffe"); phase != "init" {
		t.Fatalf("the signed certificate did not let the rotation into init (phase %s):\n%s", phase, r.stdout)
	}
	tr.settle(10)
	rotateAll(t, a, tr, "update_clients", "update_servers", "standby")
	tr.check("CSR-mode rotation")
	second := verifyAgainstRoot(t, a, td, root.cert)
	if second.Equal(first) {
		t.Fatal("the CSR-mode rotation did not put the new intermediate in")
	}
	a.widctl("audit", "verify").must(t)
}
