package ca_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/wid-project/wid/internal/core/ca"
	"github.com/wid-project/wid/internal/core/ca/catest"
	"github.com/wid-project/wid/internal/core/store"
)

var td = catest.TrustDomain

func fixedClock(t time.Time) func() time.Time { return func() time.Time { return t } }

func newKEK(t *testing.T) (*ca.KEK, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "keys")
	kek, err := ca.LoadOrCreateKEK(dir)
	if err != nil {
		t.Fatal(err)
	}
	return kek, dir
}

func initManager(t *testing.T, st store.Backend, kek *ca.KEK) (*ca.Manager, bool) {
	t.Helper()
	m := ca.NewManager(st, kek, td, nil)
	created, err := m.Init(context.Background())
	if err != nil {
		t.Fatalf("Init: %v", err)
	}
	return m, created
}

func TestParseType(t *testing.T) {
	for _, tt := range []struct {
		in      string
		want    ca.Type
		wantErr bool
	}{
		{"spiffe", ca.TypeSPIFFE, false},
		{"jwt", ca.TypeJWT, false},
		{"wit", ca.TypeWIT, false},
		{"user", ca.TypeUser, false},
		{" Host ", ca.TypeHost, false},
		{"", "", true},
		{"x509", "", true},
	} {
		got, err := ca.ParseType(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseType(%q) = %q, %v; want %q, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
		if err != nil && !strings.Contains(err.Error(), "spiffe, jwt, wit, user, host") {
			t.Errorf("ParseType(%q) error %q does not list the types", tt.in, err)
		}
	}
}

func TestInitCreatesEveryCAOnceAndReloadsTheSameKeys(t *testing.T) {
	st := catest.NewStore()
	kek, keysDir := newKEK(t)
	m1, created := initManager(t, st, kek)
	if !created {
		t.Fatal("first Init: created = false, want true")
	}
	items, err := st.List(context.Background(), ca.StoreKind)
	if err != nil || len(items) != len(ca.Types) {
		t.Fatalf("store holds %d CAs (err %v), want %d", len(items), err, len(ca.Types))
	}

	// A fresh process: the KEK from disk, the CAs from the store.
	kek2, err := ca.LoadOrCreateKEK(keysDir)
	if err != nil {
		t.Fatal(err)
	}
	m2, created := initManager(t, st, kek2)
	if created {
		t.Fatal("second Init: created = true, want false")
	}
	for _, typ := range ca.Types {
		k1, err1 := m1.Signer(typ)
		k2, err2 := m2.Signer(typ)
		if err1 != nil || err2 != nil {
			t.Fatalf("Signer(%s): %v, %v", typ, err1, err2)
		}
		if k1.ID != k2.ID || k1.KID != k2.KID || k1.Fingerprint != k2.Fingerprint {
			t.Errorf("%s: second load has key %s, first %s", typ, k2, k1)
		}
		// The private key survived the round trip through the KEK: a
		// signature by the reloaded key verifies with the original public key.
		digest := sha256.Sum256([]byte("round trip " + typ))
		sig, err := k2.Signer.Sign(rand.Reader, digest[:], crypto.SHA256)
		if err != nil {
			t.Fatalf("%s: Sign: %v", typ, err)
		}
		if !ecdsa.VerifyASN1(k1.PublicKey.(*ecdsa.PublicKey), digest[:], sig) {
			t.Errorf("%s: signature from the reloaded key does not verify with the original public key", typ)
		}
	}
	if m1.HostPin() != m2.HostPin() || !strings.HasPrefix(m1.HostPin(), "sha256:") {
		t.Errorf("host pins differ or malformed: %q vs %q", m1.HostPin(), m2.HostPin())
	}
	j1, _ := m1.BundleJWKS()
	b2, err := m2.Bundle()
	if err != nil {
		t.Fatal(err)
	}
	b1, err := spiffebundle.Parse(td, j1)
	if err != nil {
		t.Fatal(err)
	}
	if !b1.Equal(b2) {
		t.Error("the reloaded Manager's bundle differs from the first one's")
	}
}

func TestInitConcurrentCreatorsAgree(t *testing.T) {
	st := catest.NewStore()
	kek, _ := newKEK(t)
	const n = 4
	managers := make([]*ca.Manager, n)
	created := make([]bool, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		managers[i] = ca.NewManager(st, kek, td, nil)
		wg.Go(func() { created[i], errs[i] = managers[i].Init(context.Background()) })
	}
	wg.Wait()
	creators := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("Init %d: %v", i, errs[i])
		}
		if created[i] {
			creators++
		}
		if managers[i].HostPin() != managers[0].HostPin() {
			t.Errorf("manager %d pins %s, manager 0 pins %s", i, managers[i].HostPin(), managers[0].HostPin())
		}
	}
	if creators != 1 {
		t.Errorf("%d managers say they created the CAs, want 1", creators)
	}
}

func TestInitRefusesInconsistentStore(t *testing.T) {
	st := catest.NewStore()
	kek, _ := newKEK(t)
	m, _ := initManager(t, st, kek)
	_ = m
	if _, err := st.Apply(context.Background(),
		store.Op{Type: store.OpDelete, Item: store.Item{Kind: ca.StoreKind, Name: "wit"}},
		store.Op{Type: store.OpDelete, Item: store.Item{Kind: ca.StoreKind, Name: "host"}},
	); err != nil {
		t.Fatal(err)
	}
	_, err := ca.NewManager(st, kek, td, nil).Init(context.Background())
	if err == nil {
		t.Fatal("Init on a store missing two CAs succeeded")
	}
	for _, w := range []string{"inconsistent", "wit", "host"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not mention %q", err, w)
		}
	}
}

func TestInitRefusesOtherTrustDomainAndOtherKEK(t *testing.T) {
	st := catest.NewStore()
	kek, _ := newKEK(t)
	initManager(t, st, kek)

	other := spiffeid.RequireTrustDomainFromString("other.org")
	_, err := ca.NewManager(st, kek, other, nil).Init(context.Background())
	if err == nil || !strings.Contains(err.Error(), `"example.org", not "other.org"`) {
		t.Errorf("Init with another trust domain: err = %v, want one naming both trust domains", err)
	}

	otherKEK, otherDir := newKEK(t)
	_, err = ca.NewManager(st, otherKEK, td, nil).Init(context.Background())
	if err == nil || !strings.Contains(err.Error(), otherDir) {
		t.Errorf("Init with another KEK: err = %v, want one naming %s", err, otherDir)
	}
}

func TestInitLeavesNothingWhenTheStoreFails(t *testing.T) {
	st := catest.NewStore()
	st.FailApply = errors.New("disk full")
	kek, _ := newKEK(t)
	_, err := ca.NewManager(st, kek, td, nil).Init(context.Background())
	if err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("Init: err = %v, want the store's error", err)
	}
	if items, _ := st.List(context.Background(), ca.StoreKind); len(items) != 0 {
		t.Errorf("store holds %d CAs after a failed Init", len(items))
	}
}

func TestCACertificates(t *testing.T) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	st := catest.NewStore()
	kek, _ := newKEK(t)
	m := ca.NewManager(st, kek, td, fixedClock(now))
	m.CATTL = 48 * time.Hour
	if _, err := m.Init(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, typ := range ca.Types {
		ks, err := m.Signer(typ)
		if err != nil {
			t.Fatal(err)
		}
		if ks.Algorithm != ca.AlgorithmECDSAP256 {
			t.Errorf("%s: algorithm %s", typ, ks.Algorithm)
		}
		if !typ.HasCertificate() {
			if ks.Cert != nil || ks.KID == "" {
				t.Errorf("%s: cert %v, kid %q; want no cert and a kid", typ, ks.Cert != nil, ks.KID)
			}
			if !ks.NotAfter.Equal(now.Add(48 * time.Hour)) {
				t.Errorf("%s: key not after %s, want %s", typ, ks.NotAfter, now.Add(48*time.Hour))
			}
			continue
		}
		c := ks.Cert
		if !c.IsCA || !c.BasicConstraintsValid || c.MaxPathLen != 0 || !c.MaxPathLenZero {
			t.Errorf("%s: IsCA %v, basic constraints %v, max path len %d/%v", typ, c.IsCA, c.BasicConstraintsValid, c.MaxPathLen, c.MaxPathLenZero)
		}
		wantKU := x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature
		if c.KeyUsage != wantKU {
			t.Errorf("%s: key usage %v, want %v", typ, c.KeyUsage, wantKU)
		}
		if len(c.URIs) != 1 || c.URIs[0].String() != "spiffe://example.org" {
			t.Errorf("%s: URI SANs %v, want [spiffe://example.org]", typ, c.URIs)
		}
		if !slices.Equal(c.Subject.Organization, []string{"example.org"}) || c.Subject.CommonName != "wid "+string(typ)+" CA" {
			t.Errorf("%s: subject %s", typ, c.Subject)
		}
		if len(c.SubjectKeyId) == 0 {
			t.Errorf("%s: no subject key id", typ)
		}
		if bits := c.SerialNumber.BitLen(); bits > 128 || bits < 64 || c.SerialNumber.Sign() <= 0 {
			t.Errorf("%s: serial has %d bits (sign %d), want a positive 128-bit random", typ, bits, c.SerialNumber.Sign())
		}
		if !c.NotBefore.Equal(now.Add(-time.Minute)) || !c.NotAfter.Equal(now.Add(48*time.Hour)) {
			t.Errorf("%s: valid %s to %s", typ, c.NotBefore, c.NotAfter)
		}
		if err := c.CheckSignatureFrom(c); err != nil {
			t.Errorf("%s: not self-signed: %v", typ, err)
		}
		wantConstraint := typ == ca.TypeSPIFFE
		if got := slices.Equal(c.PermittedURIDomains, []string{"example.org"}); got != wantConstraint {
			t.Errorf("%s: permitted URI domains %v", typ, c.PermittedURIDomains)
		}
		if wantConstraint && !c.PermittedDNSDomainsCritical {
			t.Errorf("%s: name constraints not critical", typ)
		}
	}
}

// TestSPIFFECANameConstraint checks that the name constraint does its job: a
// leaf naming another trust domain does not verify, even with a valid
// signature.
func TestSPIFFECANameConstraint(t *testing.T) {
	m, _ := catest.NewManager(t, nil)
	ks, err := m.Signer(ca.TypeSPIFFE)
	if err != nil {
		t.Fatal(err)
	}
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafFor := func(uri string) *x509.Certificate {
		u, _ := url.Parse(uri)
		der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
			SerialNumber: big.NewInt(1),
			Subject:      pkix.Name{Organization: []string{"x"}},
			NotBefore:    time.Now().Add(-time.Minute),
			NotAfter:     time.Now().Add(time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
			URIs:         []*url.URL{u},
		}, ks.Cert, leafKey.Public(), ks.Signer)
		if err != nil {
			t.Fatal(err)
		}
		c, _ := x509.ParseCertificate(der)
		return c
	}
	opts := x509.VerifyOptions{Roots: m.CertPool(ca.TypeSPIFFE), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}
	if _, err := leafFor("spiffe://example.org/svc/web").Verify(opts); err != nil {
		t.Errorf("leaf in the trust domain: %v", err)
	}
	_, err = leafFor("spiffe://evil.org/svc/web").Verify(opts)
	var ci x509.CertificateInvalidError
	if !errors.As(err, &ci) || ci.Reason != x509.CANotAuthorizedForThisName {
		t.Errorf("leaf in another trust domain: err = %v, want a name constraint violation", err)
	}
}

func TestBundle(t *testing.T) {
	m, _ := catest.NewManager(t, nil)
	jwks, err := m.BundleJWKS()
	if err != nil {
		t.Fatal(err)
	}
	b, err := spiffebundle.Parse(td, jwks)
	if err != nil {
		t.Fatalf("spiffebundle.Parse: %v", err)
	}
	spiffeKS, _ := m.Signer(ca.TypeSPIFFE)
	jwtKS, _ := m.Signer(ca.TypeJWT)
	if got := b.X509Authorities(); len(got) != 1 || !got[0].Equal(spiffeKS.Cert) {
		t.Errorf("bundle X.509 authorities %d, want the spiffe CA certificate", len(got))
	}
	if got := b.JWTAuthorities(); len(got) != 1 {
		t.Errorf("bundle holds %d JWT authorities, want 1", len(got))
	}
	if pub, ok := b.FindJWTAuthority(jwtKS.KID); !ok || !jwtKS.PublicKey.(*ecdsa.PublicKey).Equal(pub) {
		t.Errorf("bundle has no JWT authority %q holding the jwt CA key", jwtKS.KID)
	}
	if seq, ok := b.SequenceNumber(); !ok || seq != 2 || seq != m.BundleSequence() {
		t.Errorf("bundle sequence %d (set %v), want 2 = spiffe 1 + jwt 1", seq, ok)
	}
	if hint, ok := b.RefreshHint(); !ok || hint != ca.BundleRefreshHint {
		t.Errorf("refresh hint %s (set %v), want %s", hint, ok, ca.BundleRefreshHint)
	}
	var doc struct {
		Keys []struct {
			Use string `json:"use"`
			Kid string `json:"kid"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(jwks, &doc); err != nil {
		t.Fatal(err)
	}
	uses := map[string]int{}
	for _, k := range doc.Keys {
		uses[k.Use]++
	}
	if uses["x509-svid"] != 1 || uses["jwt-svid"] != 1 || len(doc.Keys) != 2 {
		t.Errorf("JWKS key uses %v, want one x509-svid and one jwt-svid", uses)
	}

	block, rest := pem.Decode(m.BundlePEM())
	if block == nil || block.Type != "CERTIFICATE" || !bytes.Equal(block.Bytes, spiffeKS.Cert.Raw) || len(bytes.TrimSpace(rest)) != 0 {
		t.Error("BundlePEM is not exactly the spiffe CA certificate")
	}

	// Bundle returns a copy: changing it must not change the Manager's.
	mine, _ := m.Bundle()
	mine.SetX509Authorities(nil)
	if again, _ := m.Bundle(); len(again.X509Authorities()) != 1 {
		t.Error("changing a returned bundle changed the Manager's")
	}
}

// addKeySet changes a CA the way rotation will: read the document, add a key
// set, bump the sequence, compare-and-set.
func updateDoc(t *testing.T, st store.Backend, typ ca.Type, change func(*ca.Document)) {
	t.Helper()
	ctx := context.Background()
	item, err := st.Get(ctx, ca.StoreKind, string(typ))
	if err != nil {
		t.Fatal(err)
	}
	doc, err := ca.DecodeDocument(item)
	if err != nil {
		t.Fatal(err)
	}
	change(&doc)
	next, err := doc.Item()
	if err != nil {
		t.Fatalf("encoding changed document: %v", err)
	}
	if _, err := st.Apply(ctx, store.Op{Type: store.OpUpdate, Item: next, ExpectRevision: item.Revision}); err != nil {
		t.Fatal(err)
	}
}

func step(t *testing.T, m *ca.Manager, typ ca.Type, to ca.Phase) ca.Step {
	t.Helper()
	st, err := m.Step(context.Background(), ca.StepRequest{Type: typ, To: to})
	if err != nil {
		t.Fatalf("step %s to %s: %v", typ, to, err)
	}
	return st
}

func TestRotationSteps(t *testing.T) {
	m, _ := catest.NewManager(t, nil)
	old, _ := m.Signer(ca.TypeSPIFFE)
	oldJWT, _ := m.Signer(ca.TypeJWT)

	// init: a new key set joins the trust bundle but does not sign yet.
	s := step(t, m, ca.TypeSPIFFE, ca.PhaseInit)
	if s.Old != old.Fingerprint || s.New == "" || s.New == s.Old {
		t.Errorf("init step fingerprints old %s new %s, want old %s and a new one", s.Old, s.New, old.Fingerprint)
	}
	if got, _ := m.Signer(ca.TypeSPIFFE); got.ID != old.ID {
		t.Errorf("in init the signer is %s, want the old key %s", got.ID, old.ID)
	}
	if got := m.Authorities(ca.TypeSPIFFE); len(got) != 2 {
		t.Errorf("in init %d authorities, want 2", len(got))
	}
	if doc, _ := m.Document(ca.TypeSPIFFE); doc.Sequence != 2 || m.BundleSequence() != 3 {
		t.Errorf("sequences: spiffe %d, bundle %d; want 2 and 3", doc.Sequence, m.BundleSequence())
	}
	if doc, _ := m.Document(ca.TypeSPIFFE); doc.Phase != ca.PhaseInit {
		t.Errorf("phase %s, want init", doc.Phase)
	}

	// update_clients: the new key signs, the old one still verifies; the
	// bundle does not change, so neither does its sequence.
	step(t, m, ca.TypeSPIFFE, ca.PhaseUpdateClients)
	signer, _ := m.Signer(ca.TypeSPIFFE)
	if signer.ID == old.ID || signer.Fingerprint != s.New {
		t.Errorf("in update_clients the signer is %s, want the new key", signer.Fingerprint)
	}
	if m.ActiveSignerID(ca.TypeSPIFFE) != hex.EncodeToString(signer.Cert.SubjectKeyId) {
		t.Error("ActiveSignerID is not the new CA's subject key ID")
	}
	for _, cert := range []*x509.Certificate{old.Cert, signer.Cert} {
		if _, err := cert.Verify(x509.VerifyOptions{Roots: m.CertPool(ca.TypeSPIFFE)}); err != nil {
			t.Errorf("CA %s not in the pool during update_clients: %v", cert.Subject, err)
		}
	}
	if m.BundleSequence() != 3 {
		t.Errorf("bundle sequence %d in update_clients, want still 3", m.BundleSequence())
	}
	// Untouched CAs keep their decrypted signer: no reload decrypts twice.
	if j, _ := m.Signer(ca.TypeJWT); j.Signer != oldJWT.Signer {
		t.Error("the jwt signer was decrypted again although its key did not change")
	}
	step(t, m, ca.TypeSPIFFE, ca.PhaseUpdateServers)
	if len(m.Authorities(ca.TypeSPIFFE)) != 2 {
		t.Error("in update_servers the old CA must still verify")
	}

	// back to standby: the old key leaves the bundle and its private key is dropped.
	done := step(t, m, ca.TypeSPIFFE, ca.PhaseStandby)
	b, _ := m.Bundle()
	if b.HasX509Authority(old.Cert) || !b.HasX509Authority(signer.Cert) || len(b.X509Authorities()) != 1 {
		t.Error("after standby the bundle should hold the new CA only")
	}
	if seq, _ := b.SequenceNumber(); seq != 4 {
		t.Errorf("bundle sequence %d, want 4", seq)
	}
	for _, k := range done.Doc.KeySets {
		if k.ID == old.ID && (k.State != ca.KeyRetired || len(k.EncryptedPrivateKey) != 0) {
			t.Errorf("old key set after the rotation: state %s, %d bytes of sealed key; want retired and none", k.State, len(k.EncryptedPrivateKey))
		}
	}
	sums := m.Summaries()
	if len(sums[0].Keys) != 2 || sums[0].Keys[0].State != ca.KeyRetired {
		t.Errorf("summary of spiffe CA: %+v, want the retired key listed too", sums[0])
	}

	// A second rotation keeps the last retired key for the record, no more.
	step(t, m, ca.TypeSPIFFE, ca.PhaseInit)
	step(t, m, ca.TypeSPIFFE, ca.PhaseUpdateClients)
	step(t, m, ca.TypeSPIFFE, ca.PhaseUpdateServers)
	step(t, m, ca.TypeSPIFFE, ca.PhaseStandby)
	if n := len(m.Summaries()[0].Keys); n != 2 {
		t.Errorf("after two rotations the CA lists %d key sets, want 2 (the active one and the last retired)", n)
	}
}

func TestRotationRollback(t *testing.T) {
	m, _ := catest.NewManager(t, nil)
	old, _ := m.Signer(ca.TypeJWT)

	// From init the new keys leave at once: nothing was signed with them.
	step(t, m, ca.TypeJWT, ca.PhaseInit)
	s := step(t, m, ca.TypeJWT, ca.PhaseRollback)
	if doc, _ := m.Document(ca.TypeJWT); s.To != ca.PhaseStandby || doc.Phase != ca.PhaseStandby {
		t.Errorf("rollback from init ended in %s, want standby", doc.Phase)
	}
	if keys := m.JWTKeys(ca.TypeJWT); len(keys) != 1 || keys[old.KID] == nil {
		t.Errorf("after rolling back from init the JWT keys are %v, want only the old kid %s", keys, old.KID)
	}

	// From update_clients the old keys sign again and the new ones stay
	// trusted until standby.
	step(t, m, ca.TypeJWT, ca.PhaseInit)
	step(t, m, ca.TypeJWT, ca.PhaseUpdateClients)
	step(t, m, ca.TypeJWT, ca.PhaseRollback)
	if got, _ := m.Signer(ca.TypeJWT); got.KID != old.KID {
		t.Errorf("in rollback the signer is %s, want the old kid %s", got.KID, old.KID)
	}
	if len(m.JWTKeys(ca.TypeJWT)) != 2 {
		t.Error("in rollback the new key must still verify")
	}
	step(t, m, ca.TypeJWT, ca.PhaseStandby)
	if keys := m.JWTKeys(ca.TypeJWT); len(keys) != 1 || keys[old.KID] == nil {
		t.Errorf("after the rollback the JWT keys are %v, want only the old kid", keys)
	}
}

func TestRotationRefusesInvalidTransitions(t *testing.T) {
	m, _ := catest.NewManager(t, nil)
	ctx := context.Background()
	tests := []struct {
		setup []ca.Phase
		req   ca.StepRequest
		want  string
	}{
		{nil, ca.StepRequest{To: ca.PhaseUpdateServers}, "is in standby and cannot move to update_servers: from standby it may move to init"},
		{nil, ca.StepRequest{To: ca.PhaseRollback}, "cannot move to rollback"},
		{nil, ca.StepRequest{To: ca.PhaseInit, Mode: ca.ModeAuto}, "needs a grace period"},
		{[]ca.Phase{ca.PhaseInit}, ca.StepRequest{To: ca.PhaseUpdateServers}, "from init it may move to update_clients or rollback"},
		{[]ca.Phase{ca.PhaseInit}, ca.StepRequest{To: ca.PhaseUpdateClients, Mode: ca.ModeAuto}, "of a rotation in manual mode: an automatic step cannot move it"},
		{[]ca.Phase{ca.PhaseInit}, ca.StepRequest{From: ca.PhaseStandby, To: ca.PhaseUpdateClients}, "moved meanwhile (it is in init now)"},
		{[]ca.Phase{ca.PhaseInit}, ca.StepRequest{From: ca.PhaseInit, Generation: 1, To: ca.PhaseUpdateClients}, "moved meanwhile"},
	}
	for _, tt := range tests {
		for _, p := range tt.setup {
			step(t, m, ca.TypeWIT, p)
		}
		before, _ := m.Document(ca.TypeWIT)
		tt.req.Type = ca.TypeWIT
		_, err := m.Step(ctx, tt.req)
		if !errors.Is(err, ca.ErrTransition) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v after %v: %v, want a transition error containing %q", tt.req, tt.setup, err, tt.want)
		}
		after, _ := m.Document(ca.TypeWIT)
		if after.Phase != before.Phase || after.Sequence != before.Sequence || len(after.KeySets) != len(before.KeySets) {
			t.Errorf("a refused step changed the CA: %s/%d -> %s/%d", before.Phase, before.Sequence, after.Phase, after.Sequence)
		}
		if after.Phase != ca.PhaseStandby {
			step(t, m, ca.TypeWIT, ca.PhaseRollback)
		}
	}
}

func TestRotationStepIsCompareAndSet(t *testing.T) {
	kek, _ := newKEK(t)
	st := catest.NewStore()
	m, _ := initManager(t, st, kek)
	other, _ := initManager(t, st, kek)
	// Both managers ask for init from standby at once: one wins.
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, mgr := range []*ca.Manager{m, other} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = mgr.Step(context.Background(), ca.StepRequest{Type: ca.TypeSPIFFE, From: ca.PhaseStandby, To: ca.PhaseInit})
		}()
	}
	wg.Wait()
	if (errs[0] == nil) == (errs[1] == nil) {
		t.Fatalf("two processes stepping the same rotation: %v and %v; want exactly one to succeed", errs[0], errs[1])
	}
	_ = m.Reload(context.Background())
	if n := len(m.Authorities(ca.TypeSPIFFE)); n != 2 {
		t.Errorf("after the race the CA holds %d trusted certificates, want 2 (one new key set, not two)", n)
	}
}

func TestReloadKeepsServingWhenTheStoreIsTampered(t *testing.T) {
	m, st := catest.NewManager(t, nil)
	pin := m.HostPin()
	spiffeItem, _ := st.Get(context.Background(), ca.StoreKind, "spiffe")
	spiffeDoc, _ := ca.DecodeDocument(spiffeItem)

	// Move the spiffe CA's sealed key into the host CA: same KEK, but sealed
	// for another CA, so it must not open there.
	updateDoc(t, st, ca.TypeHost, func(d *ca.Document) {
		d.KeySets[0].EncryptedPrivateKey = spiffeDoc.KeySets[0].EncryptedPrivateKey
	})
	err := m.Reload(context.Background())
	if err == nil {
		t.Fatal("Reload accepted a sealed key moved from another CA")
	}
	if !strings.Contains(err.Error(), "host") {
		t.Errorf("error %q does not name the host CA", err)
	}
	if m.HostPin() != pin {
		t.Error("a failed reload changed the host pin")
	}
	if _, err := m.Signer(ca.TypeHost); err != nil {
		t.Errorf("after a failed reload: %v", err)
	}
}

func TestDocumentValidate(t *testing.T) {
	m, st := catest.NewManager(t, nil)
	item, _ := st.Get(context.Background(), ca.StoreKind, "spiffe")
	good, err := ca.DecodeDocument(item)
	if err != nil {
		t.Fatal(err)
	}
	extra, err := m.NewKeySet(ca.TypeSPIFFE, ca.KeyActive)
	if err != nil {
		t.Fatal(err)
	}
	jwtKS, _ := m.NewKeySet(ca.TypeJWT, ca.KeyActive)
	tests := map[string]struct {
		change func(d *ca.Document)
		want   string
	}{
		"two active":      {func(d *ca.Document) { d.KeySets = append(d.KeySets, extra) }, "2 active key sets"},
		"none active":     {func(d *ca.Document) { d.KeySets[0].State = ca.KeyAdditional }, "0 active key sets"},
		"unknown phase":   {func(d *ca.Document) { d.Phase = "resting" }, "unknown phase"},
		"unknown mode":    {func(d *ca.Document) { d.Mode = "sometimes" }, "unknown mode"},
		"zero sequence":   {func(d *ca.Document) { d.Sequence = 0 }, "sequence 0"},
		"no certificate":  {func(d *ca.Document) { d.KeySets[0].Cert = nil }, "no certificate"},
		"wrong algorithm": {func(d *ca.Document) { d.KeySets[0].Algorithm = "RSA-1024" }, "unsupported algorithm"},
		"duplicate id":    {func(d *ca.Document) { e := d.KeySets[0]; e.State = ca.KeyRetired; d.KeySets = append(d.KeySets, e) }, "two key sets with id"},
		"cert of another": {func(d *ca.Document) { d.KeySets[0].Cert = extra.Cert }, "does not hold the key set's public key"},
		"jwt without kid": {func(d *ca.Document) { d.Type = ca.TypeJWT; jwtKS.KID = ""; d.KeySets = []ca.KeySetDocument{jwtKS} }, "no kid"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			d := good
			d.KeySets = slices.Clone(good.KeySets)
			tt.change(&d)
			err := d.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Validate = %v, want an error containing %q", err, tt.want)
			}
			if _, err := d.Marshal(); err == nil {
				t.Error("Marshal accepted an invalid document")
			}
		})
	}
	if err := good.Validate(); err != nil {
		t.Errorf("stored document: %v", err)
	}
}

func TestSummariesAndKeySetPrintingHoldNoPrivateKey(t *testing.T) {
	m, _ := catest.NewManager(t, nil)
	sums := m.Summaries()
	if len(sums) != len(ca.Types) {
		t.Fatalf("%d summaries, want %d", len(sums), len(ca.Types))
	}
	for i, s := range sums {
		ks, _ := m.Signer(s.Type)
		if s.Type != ca.Types[i] || s.Phase != ca.PhaseStandby || s.Mode != ca.ModeManual || s.Sequence != 1 {
			t.Errorf("summary %d: %+v", i, s)
		}
		if len(s.Keys) != 1 || s.Keys[0].ID != ks.ID || s.Keys[0].Fingerprint != ks.Fingerprint || s.Keys[0].State != ca.KeyActive {
			t.Errorf("%s summary keys %+v, want the active key %s", s.Type, s.Keys, ks)
		}
		if s.Type == ca.TypeHost && s.Keys[0].Fingerprint != m.HostPin() {
			t.Errorf("host fingerprint %s, pin %s", s.Keys[0].Fingerprint, m.HostPin())
		}
	}
	sumSPKI := sha256.Sum256(mustSigner(t, m, ca.TypeHost).Cert.RawSubjectPublicKeyInfo)
	if m.HostPin() != "sha256:"+hex.EncodeToString(sumSPKI[:]) {
		t.Errorf("HostPin %s is not the SHA-256 of the host CA SPKI", m.HostPin())
	}

	ks := mustSigner(t, m, ca.TypeSPIFFE)
	raw, err := ks.Signer.(*ecdsa.PrivateKey).Bytes()
	if err != nil {
		t.Fatal(err)
	}
	d := new(big.Int).SetBytes(raw)
	secrets := []string{d.String(), d.Text(16), fmt.Sprintf("%x", d.Bytes())}
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("key", "ks", ks, "value", *ks)
	summaryJSON, _ := json.Marshal(sums)
	outputs := map[string]string{
		"%v":  fmt.Sprintf("%v", ks),
		"%+v": fmt.Sprintf("%+v", *ks),
		"%#v": fmt.Sprintf("%#v", ks),
		//lint:ignore S1025 the test checks what the %s verb prints
		"%s":      fmt.Sprintf("%s", ks),
		"slog":    logged.String(),
		"summary": string(summaryJSON),
	}
	for name, out := range outputs {
		for _, s := range secrets {
			if strings.Contains(out, s) {
				t.Errorf("%s output contains the private key", name)
			}
		}
	}
	if !strings.Contains(outputs["slog"], ks.Fingerprint) {
		t.Errorf("slog output %s lacks the fingerprint; the check above proves nothing", outputs["slog"])
	}
}

func mustSigner(t *testing.T, m *ca.Manager, typ ca.Type) *ca.KeySet {
	t.Helper()
	ks, err := m.Signer(typ)
	if err != nil {
		t.Fatal(err)
	}
	return ks
}

func TestAccessorsBeforeInit(t *testing.T) {
	kek, _ := newKEK(t)
	m := ca.NewManager(catest.NewStore(), kek, td, nil)
	if _, err := m.Signer(ca.TypeSPIFFE); err == nil || !strings.Contains(err.Error(), "Init") {
		t.Errorf("Signer before Init: %v", err)
	}
	if _, err := m.Bundle(); err == nil {
		t.Error("Bundle before Init succeeded")
	}
	if m.CertPool(ca.TypeHost) == nil || m.JWTKeys(ca.TypeJWT) == nil {
		t.Error("CertPool and JWTKeys must never be nil")
	}
	if m.HostPin() != "" || m.BundlePEM() != nil || m.Summaries() != nil {
		t.Error("accessors before Init returned data")
	}
}

func TestConcurrentReadsDuringReload(t *testing.T) {
	m, _ := catest.NewManager(t, nil)
	ctx := context.Background()
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := m.Signer(ca.TypeSPIFFE); err != nil {
					t.Error(err)
					return
				}
				_ = m.CertPool(ca.TypeUser)
				_, _ = m.BundleJWKS()
			}
		})
	}
	for range 20 {
		if err := m.Reload(ctx); err != nil {
			t.Error(err)
		}
	}
	close(stop)
	wg.Wait()
}

// An automatic rotation keeps the old key trusted after it stops signing
// for at least the longest life of what it signed.
func TestAutomaticRotationSchedule(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	m, _ := catest.NewManager(t, fixedClock(now))
	ctx := context.Background()
	for _, tt := range []struct {
		grace, maxTTL, init, half time.Duration
	}{
		{30 * time.Hour, 24 * time.Hour, 6 * time.Hour, 12 * time.Hour},
		{24 * time.Hour, 24 * time.Hour, 0, 12 * time.Hour},
		{90 * time.Hour, 24 * time.Hour, 30 * time.Hour, 30 * time.Hour},
	} {
		s, err := m.Step(ctx, ca.StepRequest{Type: ca.TypeWIT, To: ca.PhaseInit, Mode: ca.ModeAuto, GracePeriod: tt.grace, MaxTTL: tt.maxTTL})
		if err != nil {
			t.Fatal(err)
		}
		if got := s.Doc.NextStepAt(); !got.Equal(now.Add(tt.init)) {
			t.Errorf("grace %s, max TTL %s: init ends at +%s, want +%s", tt.grace, tt.maxTTL, got.Sub(now), tt.init)
		}
		s = step(t, m, ca.TypeWIT, ca.PhaseUpdateClients)
		if got := s.Doc.NextStepAt(); !got.Equal(now.Add(tt.half)) {
			t.Errorf("grace %s, max TTL %s: update_clients ends at +%s, want +%s", tt.grace, tt.maxTTL, got.Sub(now), tt.half)
		}
		step(t, m, ca.TypeWIT, ca.PhaseRollback)
		step(t, m, ca.TypeWIT, ca.PhaseStandby)
	}
}
