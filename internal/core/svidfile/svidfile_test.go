package svidfile

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// newSVID makes a CA and an X509-SVID for id signed by it.
func newSVID(t *testing.T, id string) X509 {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	spiffeID := spiffeid.RequireFromString(id)
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		NotBefore:    now.Add(-time.Minute), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leaf := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		NotBefore:    now.Add(-time.Minute), NotAfter: now.Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, BasicConstraintsValid: true,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	leaf.URIs = append(leaf.URIs, spiffeID.URL())
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, caCert, key.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return X509{Chain: [][]byte{leafDER}, Key: keyDER, Bundle: [][]byte{caDER}}
}

// What WriteX509 writes, ReadX509 reads back as the same verified SVID;
// every file is 0600 and the directory it made 0700.
func TestWriteReadX509(t *testing.T) {
	s := newSVID(t, "spiffe://example.org/svc/web")
	dir := filepath.Join(t.TempDir(), "out", "svid")
	written, err := WriteX509(dir, s)
	if err != nil {
		t.Fatal(err)
	}
	if written.ID.String() != "spiffe://example.org/svc/web" {
		t.Errorf("written ID %s", written.ID)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("dir: %v, mode %v, want 0700", err, fi.Mode().Perm())
	}
	for _, name := range []string{CertFile, KeyFile, BundleFile} {
		if fi, err := os.Stat(filepath.Join(dir, name)); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v, mode %v, want 0600", name, err, fi.Mode().Perm())
		}
	}
	read, err := ReadX509(dir)
	if err != nil {
		t.Fatal(err)
	}
	if read.ID != written.ID || !read.Certificates[0].Equal(written.Certificates[0]) {
		t.Errorf("read %s, wrote %s", read.ID, written.ID)
	}
}

// An SVID that does not verify is refused before anything is written: a
// key of another certificate, a bundle of another CA.
func TestWriteX509RefusesWhatDoesNotVerify(t *testing.T) {
	a, b := newSVID(t, "spiffe://example.org/a"), newSVID(t, "spiffe://example.org/b")
	for _, tt := range []struct {
		name string
		s    X509
		want string
	}{
		{"another key", X509{Chain: a.Chain, Key: b.Key, Bundle: a.Bundle}, "do not make an X509-SVID"},
		{"another bundle", X509{Chain: a.Chain, Key: a.Key, Bundle: b.Bundle}, "does not verify against its bundle"},
		{"no bundle", X509{Chain: a.Chain, Key: a.Key}, "does not verify against its bundle"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "out")
			if _, err := WriteX509(dir, tt.s); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("%v, want an error saying %q", err, tt.want)
			}
			if _, err := os.Stat(dir); !os.IsNotExist(err) {
				t.Errorf("the directory was made: %v", err)
			}
		})
	}
}

// The key goes first and the certificate last: when a write stops half way
// (here bundle.pem cannot be replaced), the key is there and no certificate
// is, so no reader finds a certificate without its key.
func TestWriteX509Order(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, BundleFile), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, BundleFile, "x"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := WriteX509(dir, newSVID(t, "spiffe://example.org/a")); err == nil {
		t.Fatal("writing over a bundle.pem that is a directory succeeded")
	}
	if _, err := os.Stat(filepath.Join(dir, KeyFile)); err != nil {
		t.Errorf("the key was not written first: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, CertFile)); !os.IsNotExist(err) {
		t.Errorf("the certificate was written before the bundle: %v", err)
	}
}

// ReadX509 refuses files that do not make a verified SVID, naming the file.
func TestReadX509Refusals(t *testing.T) {
	s := newSVID(t, "spiffe://example.org/a")
	other := newSVID(t, "spiffe://example.org/b")
	dir := t.TempDir()
	if _, err := WriteX509(dir, s); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, BundleFile), encodePEM("CERTIFICATE", other.Bundle), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadX509(dir); err == nil || !strings.Contains(err.Error(), "does not verify against its bundle") {
		t.Errorf("a foreign bundle: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, KeyFile), []byte("not pem\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadX509(dir); err == nil || !strings.Contains(err.Error(), "reading the X509-SVID in "+dir) {
		t.Errorf("a key file without a key: %v", err)
	}
	if _, err := ReadX509(t.TempDir()); err == nil || !strings.Contains(err.Error(), "reading the X509-SVID in ") {
		t.Errorf("an empty directory: %v", err)
	}
}

func TestWriteJWT(t *testing.T) {
	path := filepath.Join(t.TempDir(), "jwt.token")
	if err := WriteJWT(path, "a.b.c"); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	fi, _ := os.Stat(path)
	if err != nil || string(b) != "a.b.c\n" || fi.Mode().Perm() != 0o600 {
		t.Fatalf("%q, %v, mode %v", b, err, fi.Mode().Perm())
	}
	if err := WriteJWT(path, ""); err == nil {
		t.Error("an empty token was written")
	}
}
