// Package loginstore keeps a person's login on their machine: the profile,
// the certificates, and the key in the OS keyring or a 0600 file.
package loginstore

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/zalando/go-keyring"

	"github.com/wid-project/wid/internal/core/client"
	"github.com/wid-project/wid/internal/core/identity"
	"go.yaml.in/yaml/v3"
)

// KeyringService is the OS keyring service under which login keys are kept;
// the account is "<auth>/<user>".
const KeyringService = "wid"

// Keyring is the part of an OS keyring a login needs. go-keyring's package
// functions implement it (see OSKeyring); tests pass a map.
type Keyring interface {
	Set(service, account, secret string) error
	Get(service, account string) (string, error)
	Delete(service, account string) error
}

// ErrKeyNotFound is what a Keyring returns for a missing entry.
var ErrKeyNotFound = keyring.ErrNotFound

type osKeyring struct{}

func (osKeyring) Set(s, a, v string) error        { return keyring.Set(s, a, v) }
func (osKeyring) Get(s, a string) (string, error) { return keyring.Get(s, a) }
func (osKeyring) Delete(s, a string) error        { return keyring.Delete(s, a) }

// OSKeyring is the system's keyring: the Secret Service on Linux, the
// Keychain on macOS, the Credential Manager on Windows.
var OSKeyring Keyring = osKeyring{}

// Where a login's key is kept.
const (
	KeyInKeyring = "keyring"
	KeyInFile    = "file"
)

// Profile is the saved login: where, who, which CA, until when. It holds no
// secret; the key is in the keyring or in a 0600 file.
type Profile struct {
	Auth        string    `yaml:"auth"`
	User        string    `yaml:"user"`
	CAPin       string    `yaml:"ca_pin"`
	TrustDomain string    `yaml:"trust_domain,omitempty"`
	Roles       []string  `yaml:"roles,omitempty"`
	Expires     time.Time `yaml:"expires"`
	// TOTP says the user has a second factor, so login asks for a code.
	TOTP bool `yaml:"totp,omitempty"`
	// KeyStore is KeyInKeyring or KeyInFile.
	KeyStore string `yaml:"key_store"`
	// KeyringProblem says why Save put the key in a file.
	KeyringProblem error `yaml:"-"`
}

// LoginStore keeps logins under Dir (~/.config/widctl): profile.yaml, the
// certificates in certs/<auth>/ and, without a keyring, the key in keys/<auth>/.
type LoginStore struct {
	Dir     string
	Keyring Keyring
}

// ErrNoLogin means there is no saved login.
var ErrNoLogin = errors.New("not logged in")

// LoginError is a saved login that cannot be used. Msg says what is wrong
// with it; Fix names what mends it, for the user interface to word in its
// own commands.
type LoginError struct {
	Msg string
	Fix LoginFix
}

func (e *LoginError) Error() string { return e.Msg }

// LoginFix is what mends a LoginError.
type LoginFix int

const (
	// FixLogin: log in again.
	FixLogin LoginFix = iota + 1
	// FixRemoveProfile: remove the profile file, then log in.
	FixRemoveProfile
	// FixLogoutLogin: log out (which removes the key, the certificate
	// and the profile), then log in.
	FixLogoutLogin
)

func (s *LoginStore) profilePath() string { return filepath.Join(s.Dir, "profile.yaml") }

// safe turns host:port into one path segment.
func safe(auth string) string { return strings.NewReplacer("/", "_", "\\", "_").Replace(auth) }

// KeyFile is where a login's key goes without a keyring.
func (s *LoginStore) KeyFile(auth, user string) string {
	return filepath.Join(s.Dir, "keys", safe(auth), user+".key")
}

func (s *LoginStore) certFile(auth, user string) string {
	return filepath.Join(s.Dir, "certs", safe(auth), user+".crt")
}

func (s *LoginStore) hostCAFile(auth, user string) string {
	return filepath.Join(s.Dir, "certs", safe(auth), user+".host-ca.crt")
}

func account(auth, user string) string { return auth + "/" + user }

// Profile reads the saved login; ErrNoLogin when there is none.
func (s *LoginStore) Profile() (*Profile, error) {
	data, err := os.ReadFile(s.profilePath())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNoLogin
	}
	if err != nil {
		return nil, fmt.Errorf("reading the login profile: %w", err)
	}
	var p Profile
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	dec.KnownFields(true)
	if err := dec.Decode(&p); err != nil || p.Auth == "" || p.User == "" || p.CAPin == "" {
		return nil, &LoginError{Msg: "the login profile " + s.profilePath() + " is corrupt", Fix: FixRemoveProfile}
	}
	if _, err := client.ParsePin(p.CAPin); err != nil {
		return nil, &LoginError{Msg: "the login profile " + s.profilePath() + " is corrupt", Fix: FixRemoveProfile}
	}
	return &p, nil
}

// Save stores a login: the key in the keyring or, failing that, a 0600
// file (p.KeyringProblem then says why); then the certificate and the profile.
func (s *LoginStore) Save(p *Profile, id *identity.Identity) error {
	auth, user := p.Auth, p.User
	keyDER, err := x509.MarshalPKCS8PrivateKey(id.Key)
	if err != nil {
		return fmt.Errorf("encoding the login key: %w", err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	p.Expires, p.KeyStore, p.KeyringProblem = id.Expires().UTC(), KeyInKeyring, nil
	var keyringErr error
	if s.Keyring == nil {
		keyringErr = errors.New("no keyring configured")
	} else {
		keyringErr = s.Keyring.Set(KeyringService, account(auth, user), string(keyPEM))
	}
	if keyringErr != nil {
		p.KeyStore = KeyInFile
		if err := writePrivate(s.KeyFile(auth, user), keyPEM); err != nil {
			return err
		}
	} else {
		// A key left in a file by an earlier login without a keyring must go.
		os.Remove(s.KeyFile(auth, user))
	}
	var certs, cas []byte
	for _, der := range id.Chain {
		certs = append(certs, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	for _, c := range id.HostCAs {
		cas = append(cas, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	if err := writePrivate(s.hostCAFile(auth, user), cas); err != nil {
		return err
	}
	if err := writePrivate(s.certFile(auth, user), certs); err != nil {
		return err
	}
	data, err := yaml.Marshal(p)
	if err != nil {
		return fmt.Errorf("encoding the login profile: %w", err)
	}
	if err := writePrivate(s.profilePath(), data); err != nil {
		return err
	}
	p.KeyringProblem = keyringErr
	return nil
}

// writePrivate writes a file 0600 in a 0700 directory, atomically.
func writePrivate(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("securing %s: %w", dir, err)
	}
	return identity.WriteFileAtomic(path, data, 0o600)
}

// Identity loads the login's key and certificate.
func (s *LoginStore) Identity(p *Profile) (*identity.Identity, error) {
	var keyPEM []byte
	switch p.KeyStore {
	case KeyInKeyring:
		if s.Keyring == nil {
			return nil, &LoginError{Msg: "the login key is in the OS keyring, which is not available now", Fix: FixLogin}
		}
		v, err := s.Keyring.Get(KeyringService, account(p.Auth, p.User))
		if err != nil {
			return nil, fmt.Errorf("reading the login key from the OS keyring: %w", err)
		}
		keyPEM = []byte(v)
	case KeyInFile:
		b, err := os.ReadFile(s.KeyFile(p.Auth, p.User))
		if err != nil {
			return nil, fmt.Errorf("reading the login key: %w", err)
		}
		keyPEM = b
	default:
		return nil, &LoginError{Msg: "the login profile " + s.profilePath() + " is corrupt", Fix: FixRemoveProfile}
	}
	certPEM, err := os.ReadFile(s.certFile(p.Auth, p.User))
	if err != nil {
		return nil, fmt.Errorf("reading the login certificate: %w", err)
	}
	caPEM, err := os.ReadFile(s.hostCAFile(p.Auth, p.User))
	if err != nil {
		return nil, fmt.Errorf("reading the auth service's CA: %w", err)
	}
	keys := identity.PEMBlocks(keyPEM, "PRIVATE KEY")
	if len(keys) != 1 {
		return nil, &LoginError{Msg: "the login key of " + p.User + " is corrupt", Fix: FixLogoutLogin}
	}
	k, err := x509.ParsePKCS8PrivateKey(keys[0])
	signer, ok := k.(crypto.Signer)
	if err != nil || !ok {
		return nil, &LoginError{Msg: "the login key of " + p.User + " is corrupt", Fix: FixLogoutLogin}
	}
	id, err := identity.NewIdentity(signer, identity.PEMBlocks(certPEM, "CERTIFICATE"), identity.PEMBlocks(caPEM, "CERTIFICATE"))
	if err != nil {
		return nil, &LoginError{Msg: fmt.Sprintf("the login certificate of %s is corrupt (%v)", p.User, err), Fix: FixLogoutLogin}
	}
	if pub, ok := id.Leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(signer.Public()) {
		return nil, &LoginError{Msg: "the login certificate of " + p.User + " is not for the saved key", Fix: FixLogoutLogin}
	}
	return id, nil
}

// Remove deletes the login's key (keyring and file), certificate and
// profile, and says where the key was found.
func (s *LoginStore) Remove(p *Profile) (removed []string, err error) {
	if s.Keyring != nil {
		switch err := s.Keyring.Delete(KeyringService, account(p.Auth, p.User)); {
		case err == nil:
			removed = append(removed, "the key in the OS keyring")
		case errors.Is(err, ErrKeyNotFound):
		case p.KeyStore == KeyInKeyring:
			return removed, fmt.Errorf("removing the login key from the OS keyring: %w", err)
		}
	}
	for _, f := range []struct{ path, what string }{
		{s.KeyFile(p.Auth, p.User), "the key file"},
		{s.certFile(p.Auth, p.User), "the certificate"},
		{s.hostCAFile(p.Auth, p.User), ""},
		{s.profilePath(), "the profile"},
	} {
		switch err := os.Remove(f.path); {
		case err == nil:
			if f.what != "" {
				removed = append(removed, f.what)
			}
		case errors.Is(err, fs.ErrNotExist):
		default:
			return removed, fmt.Errorf("removing %s: %w", f.path, err)
		}
	}
	// Empty directories would still name the auth service; other logins'
	// files keep theirs (os.Remove refuses a non-empty directory).
	for _, d := range []string{filepath.Dir(s.KeyFile(p.Auth, p.User)), filepath.Dir(s.certFile(p.Auth, p.User))} {
		os.Remove(d)
		os.Remove(filepath.Dir(d))
	}
	return removed, nil
}
