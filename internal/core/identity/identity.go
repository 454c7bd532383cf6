// Package identity is a client certificate for the auth service (a bot's, a
// user's or the co-located agent's): its key, chain and the host CAs that
// verify the auth service, and how it is kept on disk. Both sides use it:
// the auth service makes the local agent's, clients present theirs. It
// never touches the OS keyring; logins keep their keys through
// internal/core/client.
package identity

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Identity is a client certificate for the auth service (a bot's or a user's),
// with the host CAs that verify the auth service.
type Identity struct {
	// Chain is the certificate chain, leaf first, DER.
	Chain   [][]byte
	Leaf    *x509.Certificate
	Key     crypto.Signer
	HostCAs []*x509.Certificate
}

// TLSCertificate returns the identity for a tls.Config.
func (id *Identity) TLSCertificate() tls.Certificate {
	return tls.Certificate{Certificate: id.Chain, PrivateKey: id.Key, Leaf: id.Leaf}
}

// Expires is the leaf's NotAfter.
func (id *Identity) Expires() time.Time { return id.Leaf.NotAfter }

// NewKey makes a P-256 key for a new identity.
func NewKey() (crypto.Signer, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

// NewCSR makes a DER CSR for key; the auth service uses only its public key.
func NewCSR(key crypto.Signer) ([]byte, error) {
	return x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
}

// NewIdentity assembles an identity from the auth service's answer.
func NewIdentity(key crypto.Signer, chain [][]byte, hostCAs [][]byte) (*Identity, error) {
	if len(chain) == 0 {
		return nil, errors.New("the auth service returned no certificate")
	}
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		return nil, fmt.Errorf("parsing the issued certificate: %w", err)
	}
	id := &Identity{Chain: chain, Leaf: leaf, Key: key}
	for _, der := range hostCAs {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("parsing the host CA: %w", err)
		}
		id.HostCAs = append(id.HostCAs, c)
	}
	return id, nil
}

// Files of an identity directory.
const (
	certFile   = "identity.crt"
	keyFile    = "identity.key"
	hostCAFile = "host-ca.crt"
)

// Save writes the identity into dir (0700): key 0600, each file replaced atomically.
func (id *Identity) Save(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating identity dir: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("securing identity dir: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(id.Key)
	if err != nil {
		return fmt.Errorf("encoding identity key: %w", err)
	}
	var certs, cas []byte
	for _, der := range id.Chain {
		certs = append(certs, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	for _, c := range id.HostCAs {
		cas = append(cas, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	// Key first: a certificate on disk without its key would be useless.
	if err := WriteFileAtomic(filepath.Join(dir, keyFile), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return err
	}
	if err := WriteFileAtomic(filepath.Join(dir, hostCAFile), cas, 0o644); err != nil {
		return err
	}
	return WriteFileAtomic(filepath.Join(dir, certFile), certs, 0o644)
}

// LoadIdentity reads an identity saved with Save. os.ErrNotExist (wrapped) when absent.
func LoadIdentity(dir string) (*Identity, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, certFile))
	if err != nil {
		return nil, fmt.Errorf("reading identity: %w", err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, keyFile))
	if err != nil {
		return nil, fmt.Errorf("reading identity key: %w", err)
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, hostCAFile))
	if err != nil {
		return nil, fmt.Errorf("reading host CA: %w", err)
	}
	chain := PEMBlocks(certPEM, "CERTIFICATE")
	cas := PEMBlocks(caPEM, "CERTIFICATE")
	keys := PEMBlocks(keyPEM, "PRIVATE KEY")
	if len(keys) != 1 {
		return nil, fmt.Errorf("identity key in %s is corrupt: remove the directory and join again", dir)
	}
	k, err := x509.ParsePKCS8PrivateKey(keys[0])
	if err != nil {
		return nil, fmt.Errorf("identity key in %s is corrupt: remove the directory and join again", dir)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("identity key in %s is not a signing key", dir)
	}
	id, err := NewIdentity(signer, chain, cas)
	if err != nil {
		return nil, fmt.Errorf("identity in %s: %w", dir, err)
	}
	// Save writes the key before the certificate: a crash between the two
	// leaves a certificate for the previous key.
	if pub, ok := id.Leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(signer.Public()) {
		return nil, fmt.Errorf("identity in %s: the certificate is not for the saved key (interrupted renewal): remove the directory and join again", dir)
	}
	return id, nil
}

// PEMBlocks returns the bytes of data's PEM blocks of type typ, in order.
func PEMBlocks(data []byte, typ string) [][]byte {
	var out [][]byte
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return out
		}
		if b.Type == typ {
			out = append(out, b.Bytes)
		}
	}
}

// WriteFileAtomic writes data to a temp file in the same directory, syncs it
// and renames it over path, so that readers never see a partial file.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after a successful rename
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
