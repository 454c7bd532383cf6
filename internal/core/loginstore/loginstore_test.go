package loginstore_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/wid-project/wid/internal/core/client"
	"github.com/wid-project/wid/internal/core/loginstore"
)

// testIdentity is a self-signed certificate for a fresh key: enough for the
// login store, which checks only that the certificate is the key's.
func testIdentity(t *testing.T) *client.Identity {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "alice"}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	id, err := client.NewIdentity(key, [][]byte{der}, [][]byte{der})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

type noKeyring struct{}

var errNoKeyring = errors.New("no Secret Service")

func (noKeyring) Set(string, string, string) error   { return errNoKeyring }
func (noKeyring) Get(string, string) (string, error) { return "", errNoKeyring }
func (noKeyring) Delete(string, string) error        { return errNoKeyring }

// roundTrip saves a login, loads it back and removes it, and checks that
// nothing is left in the store's directory or the keyring.
func roundTrip(t *testing.T, kr loginstore.Keyring, wantStore string) {
	t.Helper()
	dir := t.TempDir()
	s := &loginstore.LoginStore{Dir: dir, Keyring: kr}
	id := testIdentity(t)
	p := &loginstore.Profile{Auth: "auth.example.org:3025", User: "alice", CAPin: client.Pin(id.Leaf)}
	if err := s.Save(p, id); err != nil {
		t.Fatal(err)
	}
	if p.KeyStore != wantStore {
		t.Fatalf("key went to the %s (%v), want the %s", p.KeyStore, p.KeyringProblem, wantStore)
	}
	keyFile := s.KeyFile(p.Auth, p.User)
	_, err := os.Stat(keyFile)
	if (wantStore == loginstore.KeyInFile) != (err == nil) {
		t.Fatalf("key file %s: %v (key store %s)", keyFile, err, wantStore)
	}
	if wantStore == loginstore.KeyInKeyring {
		if v, err := kr.Get(loginstore.KeyringService, p.Auth+"/"+p.User); err != nil || v == "" {
			t.Fatalf("keyring entry wid %s/%s: %q %v", p.Auth, p.User, v, err)
		}
	}
	loaded, err := s.Profile()
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.Identity(loaded)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Leaf.Equal(id.Leaf) || !got.Key.Public().(*ecdsa.PublicKey).Equal(id.Key.Public()) {
		t.Fatal("the loaded identity is not the saved one")
	}
	if _, err := s.Remove(loaded); err != nil {
		t.Fatal(err)
	}
	var left []string
	filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err == nil && path != dir {
			left = append(left, path)
		}
		return nil
	})
	if len(left) != 0 {
		t.Errorf("remove left %v", left)
	}
	if wantStore == loginstore.KeyInKeyring {
		if _, err := kr.Get(loginstore.KeyringService, p.Auth+"/"+p.User); !errors.Is(err, loginstore.ErrKeyNotFound) {
			t.Errorf("the keyring still answers for the key: %v", err)
		}
	}
}

func TestLoginStoreWithoutKeyring(t *testing.T) {
	roundTrip(t, noKeyring{}, loginstore.KeyInFile)
}

// TestLoginStoreSecretService runs against the real OS keyring. On Linux
// that is a Secret Service: scripts/keyring-test.sh starts gnome-keyring in
// a dbus-run-session and sets WID_KEYRING_TEST=1.
func TestLoginStoreSecretService(t *testing.T) {
	if os.Getenv("WID_KEYRING_TEST") == "" {
		t.Skip("set WID_KEYRING_TEST=1 with a Secret Service running (scripts/keyring-test.sh does)")
	}
	roundTrip(t, loginstore.OSKeyring, loginstore.KeyInKeyring)
}

func TestCorruptProfile(t *testing.T) {
	dir := t.TempDir()
	for _, body := range []string{"auth: [\n", "auth: a:1\nuser: alice\n", "auth: a:1\nuser: alice\nca_pin: sha256:zz\n", "surprise: 1\n"} {
		if err := os.WriteFile(filepath.Join(dir, "profile.yaml"), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := (&loginstore.LoginStore{Dir: dir}).Profile()
		if err == nil || errors.Is(err, loginstore.ErrNoLogin) {
			t.Errorf("profile %q: %v, want corrupt", body, err)
		}
	}
}
