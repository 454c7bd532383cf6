package issuer_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/wid-project/wid/internal/core/ca"
	"github.com/wid-project/wid/internal/core/ca/catest"
	"github.com/wid-project/wid/internal/core/issuer"
)

var td = catest.TrustDomain

func newIssuer(t testing.TB) (*issuer.Issuer, *ca.Manager) {
	t.Helper()
	m, _ := catest.NewManager(t, nil)
	return issuer.New(m, nil), m
}

func ecKey(t testing.TB, curve elliptic.Curve) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(curve, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func rsaKey(t testing.TB, bits int) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestSignX509SVIDVerifiesWithGoSPIFFE(t *testing.T) {
	iss, m := newIssuer(t)
	id := spiffeid.RequireFromPath(td, "/svc/web")
	key := ecKey(t, elliptic.P256())
	before := time.Now()
	svid, err := iss.SignX509SVID(issuer.X509Params{
		ID:        id,
		PublicKey: key.Public(),
		DNSSANs:   []string{"web.internal", "*.web.internal"},
		IPSANs:    []net.IP{net.ParseIP("10.0.0.7")},
	})
	if err != nil {
		t.Fatalf("SignX509SVID: %v", err)
	}

	// Verify against the bundle as a workload would get it: JWKS, parsed by go-spiffe.
	jwks, err := m.BundleJWKS()
	if err != nil {
		t.Fatal(err)
	}
	bundle, err := spiffebundle.Parse(td, jwks)
	if err != nil {
		t.Fatal(err)
	}
	gotID, chains, err := x509svid.Verify(svid.Certificates, bundle)
	if err != nil {
		t.Fatalf("x509svid.Verify: %v", err)
	}
	if gotID != id || len(chains) != 1 {
		t.Errorf("verified ID %s with %d chains, want %s with 1", gotID, len(chains), id)
	}

	leaf := svid.Certificates[0]
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != id.String() {
		t.Errorf("URI SANs %v, want exactly [%s]", leaf.URIs, id)
	}
	if !leaf.BasicConstraintsValid || leaf.IsCA {
		t.Errorf("basic constraints valid %v, IsCA %v; want true, false", leaf.BasicConstraintsValid, leaf.IsCA)
	}
	if leaf.KeyUsage != x509.KeyUsageDigitalSignature {
		t.Errorf("key usage %v, want digitalSignature only", leaf.KeyUsage)
	}
	if !slices.Equal(leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}) {
		t.Errorf("EKU %v, want serverAuth, clientAuth", leaf.ExtKeyUsage)
	}
	if !slices.Equal(leaf.DNSNames, []string{"web.internal", "*.web.internal"}) || len(leaf.IPAddresses) != 1 || !leaf.IPAddresses[0].Equal(net.ParseIP("10.0.0.7")) {
		t.Errorf("SANs DNS %v IP %v", leaf.DNSNames, leaf.IPAddresses)
	}
	if leaf.Subject.CommonName != "web.internal" || !slices.Equal(leaf.Subject.Organization, []string{"example.org"}) {
		t.Errorf("subject %s", leaf.Subject)
	}
	spiffeCA, _ := m.Signer(ca.TypeSPIFFE)
	if len(leaf.SubjectKeyId) == 0 || string(leaf.AuthorityKeyId) != string(spiffeCA.Cert.SubjectKeyId) {
		t.Errorf("SKID %x, AKID %x; want a SKID and the CA's SKID %x", leaf.SubjectKeyId, leaf.AuthorityKeyId, spiffeCA.Cert.SubjectKeyId)
	}
	if bits := leaf.SerialNumber.BitLen(); bits > 128 || bits < 96 || leaf.SerialNumber.Sign() <= 0 {
		t.Errorf("serial has %d bits (sign %d), want a positive 128-bit random", bits, leaf.SerialNumber.Sign())
	}
	if svid.Serial != fmt.Sprintf("%032x", leaf.SerialNumber) || len(svid.Serial) != 32 || strings.ToLower(svid.Serial) != svid.Serial {
		t.Errorf("Serial %q does not match the certificate serial %x", svid.Serial, leaf.SerialNumber)
	}
	if d := leaf.NotAfter.Sub(leaf.NotBefore); d != issuer.DefaultX509TTL+time.Minute {
		t.Errorf("validity %s, want the default TTL plus the 1m backdate", d)
	}
	if leaf.NotBefore.After(before.Add(-time.Minute+time.Second)) || leaf.NotBefore.Before(before.Add(-time.Minute-2*time.Second)) {
		t.Errorf("NotBefore %s, want about a minute before %s", leaf.NotBefore, before)
	}
	if !svid.NotBefore.Equal(leaf.NotBefore) || !svid.NotAfter.Equal(leaf.NotAfter) {
		t.Errorf("returned validity %s..%s differs from the certificate's %s..%s", svid.NotBefore, svid.NotAfter, leaf.NotBefore, leaf.NotAfter)
	}
}

func TestSignX509SVIDKeyTypes(t *testing.T) {
	iss, m := newIssuer(t)
	_, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	bundle, _ := m.Bundle()
	for _, tt := range []struct {
		name   string
		pub    crypto.PublicKey
		wantKU x509.KeyUsage
	}{
		{"P-256", ecKey(t, elliptic.P256()).Public(), x509.KeyUsageDigitalSignature},
		{"P-384", ecKey(t, elliptic.P384()).Public(), x509.KeyUsageDigitalSignature},
		{"RSA-2048", rsaKey(t, 2048).Public(), x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment},
		{"Ed25519", edPriv.Public(), x509.KeyUsageDigitalSignature},
	} {
		t.Run(tt.name, func(t *testing.T) {
			svid, err := iss.SignX509SVID(issuer.X509Params{ID: spiffeid.RequireFromPath(td, "/k"), PublicKey: tt.pub})
			if err != nil {
				t.Fatal(err)
			}
			if got := svid.Certificates[0].KeyUsage; got != tt.wantKU {
				t.Errorf("key usage %v, want %v", got, tt.wantKU)
			}
			if _, _, err := x509svid.Verify(svid.Certificates, bundle); err != nil {
				t.Errorf("x509svid.Verify: %v", err)
			}
		})
	}
}

func TestSignX509SVIDNotAfterCappedByCA(t *testing.T) {
	start := time.Date(2031, 5, 6, 7, 8, 9, 0, time.UTC)
	kek, err := ca.LoadOrCreateKEK(filepath.Join(t.TempDir(), "keys"))
	if err != nil {
		t.Fatal(err)
	}
	m := ca.NewManager(catest.NewStore(), kek, td, func() time.Time { return start })
	m.CATTL = 2 * time.Hour
	if _, err := m.Init(context.Background()); err != nil {
		t.Fatal(err)
	}
	caCert, _ := m.Signer(ca.TypeSPIFFE)

	now := start.Add(90 * time.Minute)
	iss := issuer.New(m, func() time.Time { return now })
	svid, err := iss.SignX509SVID(issuer.X509Params{ID: spiffeid.RequireFromPath(td, "/w"), PublicKey: ecKey(t, elliptic.P256()).Public(), TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if !svid.NotAfter.Equal(caCert.Cert.NotAfter) {
		t.Errorf("NotAfter %s, want the CA's %s", svid.NotAfter, caCert.Cert.NotAfter)
	}
	jwt, err := iss.SignJWTSVID(issuer.JWTParams{ID: spiffeid.RequireFromPath(td, "/w"), Audience: []string{"a"}, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	jwtKey, _ := m.Signer(ca.TypeJWT)
	if jwt.ExpiresAt.After(jwtKey.NotAfter) {
		t.Errorf("JWT expires %s, after its key %s", jwt.ExpiresAt, jwtKey.NotAfter)
	}

	// Short TTLs are kept as asked.
	svid, err = iss.SignX509SVID(issuer.X509Params{ID: spiffeid.RequireFromPath(td, "/w"), PublicKey: ecKey(t, elliptic.P256()).Public(), TTL: 10 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if !svid.NotAfter.Equal(now.Add(10 * time.Minute)) {
		t.Errorf("NotAfter %s, want %s", svid.NotAfter, now.Add(10*time.Minute))
	}

	// Past the CA's end, nothing is signed.
	late := issuer.New(m, func() time.Time { return start.Add(3 * time.Hour) })
	if _, err := late.SignX509SVID(issuer.X509Params{ID: spiffeid.RequireFromPath(td, "/w"), PublicKey: ecKey(t, elliptic.P256()).Public()}); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Errorf("signing with an expired CA: err = %v", err)
	}
}

func TestSignX509SVIDRejects(t *testing.T) {
	iss, _ := newIssuer(t)
	pub := ecKey(t, elliptic.P256()).Public()
	good := issuer.X509Params{ID: spiffeid.RequireFromPath(td, "/svc/web"), PublicKey: pub}
	tests := map[string]struct {
		change func(p *issuer.X509Params)
		want   string
	}{
		"other trust domain": {func(p *issuer.X509Params) {
			p.ID = spiffeid.RequireFromString("spiffe://other.org/svc/web")
		}, "not in trust domain example.org"},
		"trust domain ID":   {func(p *issuer.X509Params) { p.ID = td.ID() }, "names the trust domain itself"},
		"no ID":             {func(p *issuer.X509Params) { p.ID = spiffeid.ID{} }, "no SPIFFE ID"},
		"reserved path":     {func(p *issuer.X509Params) { p.ID = spiffeid.RequireFromPath(td, "/_wid/user/admin") }, "/_wid"},
		"negative TTL":      {func(p *issuer.X509Params) { p.TTL = -time.Second }, "negative"},
		"TTL over max":      {func(p *issuer.X509Params) { p.TTL = 25 * time.Hour }, "over the 24h0m0s maximum"},
		"bad DNS SAN":       {func(p *issuer.X509Params) { p.DNSSANs = []string{"web..internal"} }, "not a valid DNS name"},
		"empty DNS SAN":     {func(p *issuer.X509Params) { p.DNSSANs = []string{""} }, "empty"},
		"nil IP SAN":        {func(p *issuer.X509Params) { p.IPSANs = []net.IP{nil} }, "IP SAN"},
		"no key":            {func(p *issuer.X509Params) { p.PublicKey = nil }, "no public key"},
		"weak RSA key":      {func(p *issuer.X509Params) { p.PublicKey = rsaKey(t, 1024).Public() }, "RSA keys must be at least 2048 bits, got 1024"},
		"unsupported curve": {func(p *issuer.X509Params) { p.PublicKey = ecKey(t, elliptic.P224()).Public() }, "P-224"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			p := good
			tt.change(&p)
			svid, err := iss.SignX509SVID(p)
			if err == nil {
				t.Fatalf("signed %v, want an error containing %q", svid.Certificates[0].URIs, tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
		})
	}
	if _, err := iss.SignX509SVID(good); err != nil {
		t.Errorf("the unchanged request fails: %v", err)
	}
}

func TestSignJWTSVIDValidatesWithGoSPIFFE(t *testing.T) {
	iss, m := newIssuer(t)
	id := spiffeid.RequireFromPath(td, "/svc/web")
	svid, err := iss.SignJWTSVID(issuer.JWTParams{ID: id, Audience: []string{"billing"}})
	if err != nil {
		t.Fatalf("SignJWTSVID: %v", err)
	}
	jwks, err := m.BundleJWKS()
	if err != nil {
		t.Fatal(err)
	}
	bundle, err := spiffebundle.Parse(td, jwks)
	if err != nil {
		t.Fatalf("spiffebundle.Parse: %v", err)
	}
	got, err := jwtsvid.ParseAndValidate(svid.Token, bundle, []string{"billing"})
	if err != nil {
		t.Fatalf("jwtsvid.ParseAndValidate: %v", err)
	}
	if got.ID != id || !slices.Equal(got.Audience, []string{"billing"}) || !got.Expiry.Equal(svid.ExpiresAt) {
		t.Errorf("validated %s for %v until %s", got.ID, got.Audience, got.Expiry)
	}
	if _, err := jwtsvid.ParseAndValidate(svid.Token, bundle, []string{"other"}); err == nil {
		t.Error("token validated for an audience it was not issued to")
	}

	parts := strings.Split(svid.Token, ".")
	var header map[string]any
	var claims map[string]json.RawMessage
	decodeSegment(t, parts[0], &header)
	decodeSegment(t, parts[1], &claims)
	jwtKey, _ := m.Signer(ca.TypeJWT)
	if header["alg"] != "ES256" || header["typ"] != "JWT" || header["kid"] != jwtKey.KID || svid.KID != jwtKey.KID {
		t.Errorf("header %v, KID %q; want ES256, JWT, kid %q", header, svid.KID, jwtKey.KID)
	}
	if string(claims["aud"]) != `["billing"]` {
		t.Errorf("aud claim %s, want an array even for one audience", claims["aud"])
	}
	for _, c := range []string{"sub", "exp", "iat", "jti"} {
		if _, ok := claims[c]; !ok {
			t.Errorf("claim %s missing", c)
		}
	}
	var jti string
	_ = json.Unmarshal(claims["jti"], &jti)
	if b, err := hex.DecodeString(jti); err != nil || len(b) != 16 || jti != svid.JTI {
		t.Errorf("jti %q (returned %q), want 128 random bits in hex", jti, svid.JTI)
	}
	if d := svid.ExpiresAt.Sub(svid.IssuedAt); d != issuer.DefaultJWTTTL {
		t.Errorf("lifetime %s, want default %s", d, issuer.DefaultJWTTTL)
	}
	other, _ := iss.SignJWTSVID(issuer.JWTParams{ID: id, Audience: []string{"billing"}})
	if other.JTI == svid.JTI {
		t.Error("two tokens share a jti")
	}
}

func decodeSegment(t *testing.T, seg string, v any) {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatal(err)
	}
}

func TestSignJWTSVIDRejects(t *testing.T) {
	iss, _ := newIssuer(t)
	for name, tt := range map[string]struct {
		p    issuer.JWTParams
		want string
	}{
		"no audience":        {issuer.JWTParams{ID: spiffeid.RequireFromPath(td, "/a")}, "at least one audience"},
		"empty audience":     {issuer.JWTParams{ID: spiffeid.RequireFromPath(td, "/a"), Audience: []string{""}}, "cannot be empty"},
		"other trust domain": {issuer.JWTParams{ID: spiffeid.RequireFromString("spiffe://other.org/a"), Audience: []string{"x"}}, "not in trust domain"},
		"TTL over max":       {issuer.JWTParams{ID: spiffeid.RequireFromPath(td, "/a"), Audience: []string{"x"}, TTL: 48 * time.Hour}, "maximum"},
	} {
		if _, err := iss.SignJWTSVID(tt.p); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err = %v, want one containing %q", name, err, tt.want)
		}
	}
}

func csrFor(t testing.TB, key crypto.Signer) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "ignored"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestParseCSR(t *testing.T) {
	ec := ecKey(t, elliptic.P256())
	good := csrFor(t, ec)
	badSig := slices.Clone(good)
	badSig[len(badSig)-3] ^= 0xff // inside the signature, at the end of the DER
	_, edPriv, _ := ed25519.GenerateKey(rand.Reader)

	for name, tt := range map[string]struct {
		der  []byte
		want string // "" for success
	}{
		"P-256":        {good, ""},
		"P-384":        {csrFor(t, ecKey(t, elliptic.P384())), ""},
		"RSA-2048":     {csrFor(t, rsaKey(t, 2048)), ""},
		"Ed25519":      {csrFor(t, edPriv), ""},
		"bad sig":      {badSig, "the CSR's signature does not verify"},
		"RSA-1024":     {csrFor(t, rsaKey(t, 1024)), "RSA keys must be at least 2048 bits, got 1024"},
		"P-224":        {csrFor(t, ecKey(t, elliptic.P224())), "P-224"},
		"garbage":      {[]byte("not a csr"), "not a valid PKCS#10 request"},
		"PEM not DER":  {[]byte("-----BEGIN CERTIFICATE REQUEST-----\nMII=\n-----END CERTIFICATE REQUEST-----\n"), "PEM"},
		"empty":        {nil, "not a valid PKCS#10 request"},
		"certificate?": {csrFor(t, ec)[:20], "not a valid PKCS#10 request"},
	} {
		t.Run(name, func(t *testing.T) {
			pub, err := issuer.ParseCSR(tt.der)
			if tt.want == "" {
				if err != nil || pub == nil {
					t.Fatalf("ParseCSR = %v, %v", pub, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ParseCSR err = %v, want one containing %q", err, tt.want)
			}
		})
	}
	pub, _ := issuer.ParseCSR(good)
	if !ec.PublicKey.Equal(pub) {
		t.Error("ParseCSR returned a key other than the CSR's")
	}
}

func TestParsePublicKey(t *testing.T) {
	for name, tt := range map[string]struct {
		pub  crypto.PublicKey
		want string
	}{
		"P-256":    {ecKey(t, elliptic.P256()).Public(), ""},
		"RSA-1024": {rsaKey(t, 1024).Public(), "RSA keys must be at least 2048 bits, got 1024"},
		"P-521":    {ecKey(t, elliptic.P521()).Public(), "P-521"},
	} {
		der, err := x509.MarshalPKIXPublicKey(tt.pub)
		if err != nil {
			t.Fatal(err)
		}
		_, err = issuer.ParsePublicKey(der)
		if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("%s: err = %v, want %q", name, err, tt.want)
		}
	}
	if _, err := issuer.ParsePublicKey([]byte{1, 2, 3}); err == nil {
		t.Error("ParsePublicKey accepted garbage")
	}
}

func TestInternalCerts(t *testing.T) {
	iss, m := newIssuer(t)
	userKey := ecKey(t, elliptic.P256())
	userCert, err := iss.SignInternalCert(issuer.InternalParams{CA: ca.TypeUser, PublicKey: userKey.Public(), TTL: 8 * time.Hour, Kind: issuer.KindUser, Name: "alice"})
	if err != nil {
		t.Fatalf("user cert: %v", err)
	}
	if _, err := userCert.Verify(x509.VerifyOptions{Roots: m.CertPool(ca.TypeUser), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("user cert does not verify as a client against the user CA: %v", err)
	}
	if _, err := userCert.Verify(x509.VerifyOptions{Roots: m.CertPool(ca.TypeUser), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err == nil {
		t.Error("user cert verifies as a server certificate")
	}
	if _, err := userCert.Verify(x509.VerifyOptions{Roots: m.CertPool(ca.TypeHost), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err == nil {
		t.Error("user cert verifies against the host CA")
	}
	if userCert.Subject.CommonName != "alice" || !slices.Equal(userCert.Subject.OrganizationalUnit, []string{"user"}) || userCert.IsCA {
		t.Errorf("user cert subject %s, IsCA %v", userCert.Subject, userCert.IsCA)
	}
	if kind, name, err := issuer.IdentityFromCert(userCert); err != nil || kind != "user" || name != "alice" {
		t.Errorf("IdentityFromCert(user) = %q, %q, %v", kind, name, err)
	}

	botCert, err := iss.SignInternalCert(issuer.InternalParams{CA: ca.TypeHost, PublicKey: ecKey(t, elliptic.P256()).Public(), Kind: issuer.KindBot, Name: "agent-1"})
	if err != nil {
		t.Fatalf("bot cert: %v", err)
	}
	if kind, name, err := issuer.IdentityFromCert(botCert); err != nil || kind != "bot" || name != "agent-1" {
		t.Errorf("IdentityFromCert(bot) = %q, %q, %v", kind, name, err)
	}
	if d := botCert.NotAfter.Sub(botCert.NotBefore); d != issuer.DefaultInternalTTL+time.Minute {
		t.Errorf("bot cert lives %s, want the default", d)
	}

	serverCert, err := iss.SignInternalCert(issuer.InternalParams{CA: ca.TypeHost, PublicKey: ecKey(t, elliptic.P256()).Public(), Kind: issuer.KindServer, Name: "auth", DNSNames: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
	if err != nil {
		t.Fatalf("server cert: %v", err)
	}
	for _, host := range []string{"localhost", "127.0.0.1"} {
		if _, err := serverCert.Verify(x509.VerifyOptions{DNSName: host, Roots: m.CertPool(ca.TypeHost)}); err != nil {
			t.Errorf("server cert for %s: %v", host, err)
		}
	}
	if _, err := serverCert.Verify(x509.VerifyOptions{Roots: m.CertPool(ca.TypeHost), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err == nil {
		t.Error("server cert verifies as a client certificate")
	}

	for name, tt := range map[string]struct {
		p    issuer.InternalParams
		want string
	}{
		"user from host CA":   {issuer.InternalParams{CA: ca.TypeHost, Kind: issuer.KindUser, Name: "bob"}, `cannot come from the "host" CA`},
		"server from user CA": {issuer.InternalParams{CA: ca.TypeUser, Kind: issuer.KindServer, Name: "s", DNSNames: []string{"s"}}, `cannot come from the "user" CA`},
		"SVID from spiffe CA": {issuer.InternalParams{CA: ca.TypeSPIFFE, Kind: issuer.KindBot, Name: "b"}, "cannot come from"},
		"unknown kind":        {issuer.InternalParams{CA: ca.TypeUser, Kind: "admin", Name: "a"}, "unknown certificate kind"},
		"name with slash":     {issuer.InternalParams{CA: ca.TypeUser, Kind: issuer.KindUser, Name: "a/b"}, "invalid user name"},
		"no name":             {issuer.InternalParams{CA: ca.TypeUser, Kind: issuer.KindUser}, "needs a name"},
		"client with DNS":     {issuer.InternalParams{CA: ca.TypeUser, Kind: issuer.KindUser, Name: "a", DNSNames: []string{"x"}}, "cannot hold DNS names"},
		"server without SANs": {issuer.InternalParams{CA: ca.TypeHost, Kind: issuer.KindServer, Name: "s"}, "at least one DNS name or IP"},
	} {
		tt.p.PublicKey = userKey.Public()
		if _, err := iss.SignInternalCert(tt.p); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err = %v, want one containing %q", name, err, tt.want)
		}
	}

	svid, err := iss.SignX509SVID(issuer.X509Params{ID: spiffeid.RequireFromPath(td, "/svc/web"), PublicKey: userKey.Public()})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := issuer.IdentityFromCert(svid.Certificates[0]); err == nil {
		t.Error("IdentityFromCert accepted an X509-SVID as a wid identity")
	}
	forged := *userCert
	forged.Subject.CommonName = "root"
	if _, _, err := issuer.IdentityFromCert(&forged); err == nil {
		t.Error("IdentityFromCert accepted a subject that differs from the URI SAN")
	}
}

func BenchmarkSignX509SVID(b *testing.B) {
	iss, _ := newIssuer(b)
	pub := ecKey(b, elliptic.P256()).Public()
	p := issuer.X509Params{ID: spiffeid.RequireFromPath(td, "/svc/web"), PublicKey: pub}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := iss.SignX509SVID(p); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseCSR(b *testing.B) {
	der := csrFor(b, ecKey(b, elliptic.P256()))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := issuer.ParseCSR(der); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSignJWTSVID(b *testing.B) {
	iss, _ := newIssuer(b)
	p := issuer.JWTParams{ID: spiffeid.RequireFromPath(td, "/svc/web"), Audience: []string{"billing"}}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := iss.SignJWTSVID(p); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCAKeyParts measures the raw ECDSA P-256 operations inside
// SignX509SVID: one signature with the CA key, plus one verification that
// crypto/x509.CreateCertificate always runs on its own signature. What
// SignX509SVID costs beyond their sum is certificate encoding and parsing.
func BenchmarkCAKeyParts(b *testing.B) {
	_, m := newIssuer(b)
	ks, err := m.Signer(ca.TypeSPIFFE)
	if err != nil {
		b.Fatal(err)
	}
	priv := ks.Signer.(*ecdsa.PrivateKey)
	digest := sha256.Sum256([]byte("tbs certificate"))
	sig, err := ecdsa.SignASN1(rand.Reader, priv, digest[:])
	if err != nil {
		b.Fatal(err)
	}
	b.Run("sign", func(b *testing.B) {
		for b.Loop() {
			if _, err := ecdsa.SignASN1(rand.Reader, priv, digest[:]); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("verify", func(b *testing.B) {
		for b.Loop() {
			if !ecdsa.VerifyASN1(&priv.PublicKey, digest[:], sig) {
				b.Fatal("signature does not verify")
			}
		}
	})
}
