package cli_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wid-project/wid/internal/cli/cmdutil"
)

// An x509pop join token is made once under its name; making it again is
// refused with advice that works, since token create has no --force.
func TestX509PopJoinTokenNameTaken(t *testing.T) {
	w := start(t)
	w.OK("role", "create", "hosts", "--spiffe-path", "/hosts/**")
	w.OK("bot", "create", "host-agent", "--roles", "hosts")
	bundle := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(bundle, selfSignedCA(t), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"token", "create", "--method", "x509pop", "--name", "hosts", "--bot", "host-agent", "--ca-bundle", bundle}
	if text := w.OK(args...); !strings.Contains(text, "x509pop join token hosts for bot host-agent") {
		t.Fatalf("token create --method x509pop printed:\n%s", text)
	}
	code, out, errOut := w.Run(args...)
	want := "error: token/hosts already exists: remove it first with widctl rm token/hosts, or replace it with widctl create -f FILE --force\n"
	if code != cmdutil.ExitBadInput || out != "" || errOut != want {
		t.Errorf("second token create: exit %d, stdout %q, stderr %q; want %q", code, out, errOut, want)
	}
}

func selfSignedCA(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "hosts CA"},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
