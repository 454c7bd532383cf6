package auth_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"

	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/auth/authtest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// testRoot makes a self-signed CA (isCA false makes a leaf) as PEM.
func testRoot(t *testing.T, isCA bool) (certPEM, keyPEM []byte, cert *x509.Certificate, key *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "test root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(365 * 24 * time.Hour),
		BasicConstraintsValid: true, IsCA: isCA, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ = x509.ParseCertificate(der)
	pkcs8, _ := x509.MarshalPKCS8PrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}), cert, key
}

func spiffeCA(t *testing.T, admin authv1.AuthServiceClient) *authv1.CAInfo {
	t.Helper()
	resp, err := admin.ListCAs(context.Background(), &authv1.ListCAsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range resp.Cas {
		if c.Type == "spiffe" {
			return c
		}
	}
	t.Fatal("no spiffe CA")
	return nil
}

func TestImportCARefusalsAreAuditedAndChangeNothing(t *testing.T) {
	srv := authtest.Start(t)
	ctx := context.Background()
	admin := srv.AdminClient(t)
	before := spiffeCA(t, admin)
	rootPEM, rootKey, _, _ := testRoot(t, true)
	leafPEM, leafKey, _, _ := testRoot(t, false)
	_, otherKey, _, _ := testRoot(t, true)
	for name, tt := range map[string]struct {
		req   *authv1.ImportCARequest
		code  codes.Code
		words string
	}{
		"jwt CA":    {&authv1.ImportCARequest{Type: "jwt", CertPem: rootPEM, KeyPem: rootKey}, codes.InvalidArgument, "only the spiffe CA can have an upstream CA"},
		"not PEM":   {&authv1.ImportCARequest{Type: "spiffe", CertPem: []byte("nope"), KeyPem: rootKey}, codes.InvalidArgument, "--cert holds no PEM certificate"},
		"not a CA":  {&authv1.ImportCARequest{Type: "spiffe", CertPem: leafPEM, KeyPem: leafKey}, codes.InvalidArgument, "is not a CA certificate"},
		"wrong key": {&authv1.ImportCARequest{Type: "spiffe", CertPem: rootPEM, KeyPem: otherKey}, codes.InvalidArgument, "the key does not match the upstream certificate"},
		"bad key":   {&authv1.ImportCARequest{Type: "spiffe", CertPem: rootPEM, KeyPem: []byte("x")}, codes.InvalidArgument, "--key holds no PEM private key"},
		"no CSR":    {&authv1.ImportCARequest{Type: "spiffe", CertPem: rootPEM}, codes.InvalidArgument, "no CSR waits for a signature"},
		"too large": {&authv1.ImportCARequest{Type: "spiffe", CertPem: []byte(strings.Repeat("A", 65<<10)), KeyPem: rootKey}, codes.InvalidArgument, "over the limit of 65536 bytes"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := admin.ImportCA(ctx, tt.req)
			if status.Code(err) != tt.code || !strings.Contains(status.Convert(err).Message(), tt.words) {
				t.Fatalf("got %v, want %s saying %q", err, tt.code, tt.words)
			}
		})
	}
	after := spiffeCA(t, admin)
	if after.Sequence != before.Sequence || after.Upstream != "" || len(after.Keys) != len(before.Keys) {
		t.Fatalf("refused imports changed the spiffe CA: %v", after)
	}
	var reasons []string
	for _, ev := range auditTypes(t, srv, "ca.import") {
		if ev.Outcome != "denied" {
			t.Errorf("a ca.import event with outcome %s after only refusals", ev.Outcome)
		}
		if strings.Contains(ev.String(), "PRIVATE KEY") {
			t.Error("a refusal's audit event holds the key")
		}
		reasons = append(reasons, ev.Reason)
	}
	for _, want := range []string{"only the spiffe CA", "holds no PEM certificate", "is not a CA certificate", "the key does not match", "holds no PEM private key", "no CSR waits"} {
		if !strings.Contains(strings.Join(reasons, "\n"), want) {
			t.Errorf("no audited refusal says %q; reasons: %q", want, reasons)
		}
	}
}

func TestImportCAThenCSRRotationWaitsForASignature(t *testing.T) {
	srv := authtest.Start(t)
	ctx := context.Background()
	admin := srv.AdminClient(t)
	rootPEM, _, root, rootKey := testRoot(t, true)

	csrResp, err := admin.CreateCACSR(ctx, &authv1.CreateCACSRRequest{Type: "spiffe"})
	if err != nil {
		t.Fatal(err)
	}
	sign := func(csrPEM []byte) []byte {
		t.Helper()
		blk, _ := pem.Decode(csrPEM)
		csr, err := x509.ParseCertificateRequest(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: csr.Subject, URIs: csr.URIs,
			NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(30 * 24 * time.Hour),
			BasicConstraintsValid: true, IsCA: true, KeyUsage: x509.KeyUsageCertSign,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, root, csr.PublicKey, rootKey)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	}
	imp, err := admin.ImportCA(ctx, &authv1.ImportCARequest{Type: "spiffe", CertPem: sign(csrResp.CsrPem), BundlePem: rootPEM})
	if err != nil {
		t.Fatal(err)
	}
	if imp.Mode != "csr" || !imp.StartedRotation || imp.Ca.Upstream != "csr" || len(imp.Roots) != 1 {
		t.Fatalf("CSR import: %v", imp)
	}
	for _, p := range []string{"update_clients", "update_servers", "standby"} {
		if _, err := admin.RotateCA(ctx, &authv1.RotateCARequest{Type: "spiffe", Phase: p, Force: true}); err != nil {
			t.Fatal(err)
		}
	}
	// init cannot sign the next intermediate: it waits, and says for what.
	rot, err := admin.RotateCA(ctx, &authv1.RotateCARequest{Type: "spiffe", Phase: "init"})
	if err != nil {
		t.Fatal(err)
	}
	if len(rot.Steps) != 0 || len(rot.Waiting) != 1 || !strings.Contains(string(rot.Waiting[0].CsrPem), "CERTIFICATE REQUEST") {
		t.Fatalf("init in CSR mode: %v", rot)
	}
	ca := spiffeCA(t, admin)
	if ca.Phase != "standby" || !strings.Contains(ca.Waiting, "widctl ca import --type spiffe --cert signed.pem") {
		t.Fatalf("the spiffe CA is in %s waiting for %q", ca.Phase, ca.Waiting)
	}
	if _, err := admin.ImportCA(ctx, &authv1.ImportCARequest{Type: "spiffe", CertPem: sign(rot.Waiting[0].CsrPem), BundlePem: rootPEM}); err != nil {
		t.Fatal(err)
	}
	if ca := spiffeCA(t, admin); ca.Phase != "init" || ca.Waiting != "" {
		t.Fatalf("after the signature the spiffe CA is in %s waiting for %q", ca.Phase, ca.Waiting)
	}
	if n := len(auditTypes(t, srv, "ca.csr")); n != 2 {
		t.Errorf("%d ca.csr events, want 2 (the first CSR and the rotation's)", n)
	}
	var ok int
	for _, ev := range auditTypes(t, srv, "ca.import") {
		if ev.Outcome == "success" {
			ok++
		}
	}
	if ok != 2 {
		t.Errorf("%d successful ca.import events, want 2", ok)
	}
}
