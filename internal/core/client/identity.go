package client

import (
	"crypto"
	"os"

	"github.com/wid-project/wid/internal/core/identity"
)

// The identity type lives in internal/core/identity, which the auth service
// shares without taking in this package's OS keyring; these names keep the
// clients' spelling.
type Identity = identity.Identity

// NewKey makes a P-256 key for a new identity.
func NewKey() (crypto.Signer, error) { return identity.NewKey() }

// NewCSR makes a DER CSR for key; the auth service uses only its public key.
func NewCSR(key crypto.Signer) ([]byte, error) { return identity.NewCSR(key) }

// NewIdentity assembles an identity from the auth service's answer.
func NewIdentity(key crypto.Signer, chain [][]byte, hostCAs [][]byte) (*Identity, error) {
	return identity.NewIdentity(key, chain, hostCAs)
}

// LoadIdentity reads an identity saved with Identity.Save.
func LoadIdentity(dir string) (*Identity, error) { return identity.LoadIdentity(dir) }

// WriteFileAtomic writes data to path so that readers never see a partial file.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	return identity.WriteFileAtomic(path, data, perm)
}
