package e2e

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/wid-project/wid/internal/testkit"
)

// TestAWSRolesAnywhereRequirements: the files the agent writes for
// aws_signing_helper (svid.pem, svid.key, bundle.pem) hold an end-entity
// certificate and a trust anchor that meet what AWS's IAM Roles Anywhere
// user guide asks of them (trust model, signature validation):
// X.509 version 3; the trust anchor a CA (basic constraints CA true, key
// usage certificate sign and CRL sign), the end-entity certificate not a CA and with
// key usage digital signature; RSA or EC keys (P-256/P-384, RSA of at
// least 2048 bits); signatures with SHA-256 or stronger (no MD5 or SHA-1);
// valid now; and serials that are positive and at most 20 octets
// (RFC 5280, which AWS's X.509 validation follows). The key file is PKCS
// #8, which aws_signing_helper reads, and matches the certificate.
func TestAWSRolesAnywhereRequirements(t *testing.T) {
	t.Parallel()
	dir := newDataDir(t)
	out := filepath.Join(dir, "out", "aws")
	cfg := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("outputs:\n  - type: x509\n    path: /svc/aws\n    dir: %s\n", out)), 0o600); err != nil {
		t.Fatal(err)
	}
	startAgent(t, dir, "--config", cfg)
	testkit.EventuallyEvery(t, 15*time.Second, 20*time.Millisecond, func() bool {
		_, err := os.Stat(filepath.Join(out, "svid.pem"))
		return err == nil
	}, "the output was never written")
	certs := readCerts(t, filepath.Join(out, "svid.pem"))
	anchors := readCerts(t, filepath.Join(out, "bundle.pem"))
	leaf := certs[0]
	now := time.Now()

	checkCommon := func(what string, c *x509.Certificate) {
		t.Helper()
		if c.Version != 3 {
			t.Errorf("%s is X.509 version %d, AWS needs version 3", what, c.Version)
		}
		switch c.SignatureAlgorithm {
		case x509.SHA256WithRSA, x509.SHA384WithRSA, x509.SHA512WithRSA,
			x509.ECDSAWithSHA256, x509.ECDSAWithSHA384, x509.ECDSAWithSHA512,
			x509.SHA256WithRSAPSS, x509.SHA384WithRSAPSS, x509.SHA512WithRSAPSS:
		default:
			t.Errorf("%s is signed with %s, AWS needs SHA-256 or stronger", what, c.SignatureAlgorithm)
		}
		switch k := c.PublicKey.(type) {
		case *ecdsa.PublicKey:
			if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
				t.Errorf("%s has an EC key on %s, AWS takes P-256 or P-384", what, k.Curve.Params().Name)
			}
		case *rsa.PublicKey:
			if k.N.BitLen() < 2048 {
				t.Errorf("%s has an RSA key of %d bits, AWS needs at least 2048", what, k.N.BitLen())
			}
		default:
			t.Errorf("%s has a %T key, AWS takes RSA or EC", what, c.PublicKey)
		}
		if now.Before(c.NotBefore) || now.After(c.NotAfter) {
			t.Errorf("%s is not valid now (%s to %s)", what, c.NotBefore, c.NotAfter)
		}
		if c.SerialNumber.Sign() <= 0 || len(c.SerialNumber.Bytes()) > 20 {
			t.Errorf("%s has serial %x: RFC 5280 needs a positive number of at most 20 octets", what, c.SerialNumber)
		}
	}
	for i, a := range anchors {
		what := fmt.Sprintf("trust anchor %d (%s)", i+1, a.Subject)
		checkCommon(what, a)
		if !a.BasicConstraintsValid || !a.IsCA {
			t.Errorf("%s is not a CA: AWS needs basic constraints CA:true", what)
		}
		if a.KeyUsage&x509.KeyUsageCertSign == 0 || a.KeyUsage&x509.KeyUsageCRLSign == 0 {
			t.Errorf("%s has key usage %b: AWS needs certificate sign and CRL sign of a CA", what, a.KeyUsage)
		}
	}
	checkCommon("the X509-SVID", leaf)
	if !leaf.BasicConstraintsValid || leaf.IsCA {
		t.Error("the X509-SVID does not say CA:false in its basic constraints, as AWS needs of an end-entity certificate")
	}
	if leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		t.Error("the X509-SVID lacks key usage digital signature")
	}
	if !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
		t.Error("the X509-SVID lacks extended key usage clientAuth")
	}

	// The chain verifies against the bundle alone, as AWS verifies it
	// against the trust anchor made from bundle.pem.
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	for _, a := range anchors {
		roots.AddCert(a)
	}
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("svid.pem does not verify against bundle.pem: %v", err)
	}

	keyPEM, err := os.ReadFile(filepath.Join(out, "svid.key"))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(keyPEM)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		t.Fatal("svid.key is not a PEM PKCS #8 PRIVATE KEY")
	}
	key, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		t.Fatalf("svid.key: %v", err)
	}
	pub, _ := x509.MarshalPKIXPublicKey(key.(crypto.Signer).Public())
	if string(pub) != string(leaf.RawSubjectPublicKeyInfo) {
		t.Error("svid.key is not the key of svid.pem")
	}
}

func readCerts(t *testing.T, path string) []*x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var certs []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		t.Fatalf("%s holds no certificate", path)
	}
	return certs
}
