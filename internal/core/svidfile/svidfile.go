// Package svidfile keeps SVIDs on disk for software that cannot speak the
// Workload API: an X509-SVID as svid.pem (the chain, leaf first), svid.key
// (the PKCS#8 private key) and bundle.pem (the trust domain's X.509
// authorities), and a JWT-SVID as one token file. Every writer of SVID files
// (widctl svid issue, widagent api fetch --write, the agent's outputs) goes
// through it, so they share one order, one set of modes and one check.
//
// Files are 0600 and a directory it creates is 0700: a key is a secret, and
// a certificate or bundle tells a reader which identities live on the host.
// It never logs and never puts key material in an error.
package svidfile

import (
	"bytes"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/wid-project/wid/internal/core/client"
)

// Names of an X509-SVID's files in its directory.
const (
	CertFile   = "svid.pem"
	KeyFile    = "svid.key"
	BundleFile = "bundle.pem"
)

// Modes of what this package writes.
const (
	FileMode os.FileMode = 0o600
	DirMode  os.FileMode = 0o700
)

// X509 is an X509-SVID and the bundle it verifies against, as DER.
type X509 struct {
	// Chain is the leaf certificate, then any intermediates.
	Chain [][]byte
	// Key is the leaf's private key in PKCS#8.
	Key []byte
	// Bundle holds the trust domain's X.509 authorities.
	Bundle [][]byte
}

// Verify checks s as a relying party would: the key is the leaf's, the leaf
// is an X509-SVID, and the chain verifies against the bundle. It returns the
// parsed SVID.
func (s X509) Verify() (*x509svid.SVID, error) {
	svid, err := x509svid.ParseRaw(bytes.Join(s.Chain, nil), s.Key)
	if err != nil {
		return nil, fmt.Errorf("the certificate and key do not make an X509-SVID: %w", err)
	}
	bundle, err := x509bundle.ParseRaw(svid.ID.TrustDomain(), bytes.Join(s.Bundle, nil))
	if err != nil {
		return nil, fmt.Errorf("reading the bundle of %s: %w", svid.ID.TrustDomain(), err)
	}
	return svid, verify(svid, bundle)
}

func verify(svid *x509svid.SVID, bundle *x509bundle.Bundle) error {
	if _, _, err := x509svid.Verify(svid.Certificates, bundle); err != nil {
		return fmt.Errorf("the X509-SVID %s does not verify against its bundle: %w", svid.ID, err)
	}
	return nil
}

// WriteX509 verifies s (see Verify) and writes it into dir, creating dir
// 0700 when it is missing. Each file is replaced atomically (a temp file
// renamed over it), so a reader never sees a partial file, and in this
// order: the key, then the bundle, then the certificate. A reader that
// loads svid.pem, or reloads when it changes, therefore always finds its
// key and the authorities it chains to already in place; during a renewal
// it may for a moment find the new key beside the old certificate, and
// loads again once the new certificate lands.
func WriteX509(dir string, s X509) (*x509svid.SVID, error) {
	svid, err := s.Verify()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, DirMode); err != nil {
		return nil, fmt.Errorf("creating %s: %w", dir, err)
	}
	for _, f := range []struct {
		name, typ string
		ders      [][]byte
	}{
		{KeyFile, "PRIVATE KEY", [][]byte{s.Key}},
		{BundleFile, "CERTIFICATE", s.Bundle},
		{CertFile, "CERTIFICATE", s.Chain},
	} {
		if err := client.WriteFileAtomic(filepath.Join(dir, f.name), encodePEM(f.typ, f.ders), FileMode); err != nil {
			return nil, err
		}
	}
	return svid, nil
}

// ReadX509 reads the X509-SVID in dir and verifies it against the
// bundle.pem beside it, as a relying party would.
func ReadX509(dir string) (*x509svid.SVID, error) {
	svid, err := x509svid.Load(filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile))
	if err != nil {
		return nil, fmt.Errorf("reading the X509-SVID in %s: %w", dir, err)
	}
	bundle, err := x509bundle.Load(svid.ID.TrustDomain(), filepath.Join(dir, BundleFile))
	if err != nil {
		return nil, fmt.Errorf("reading the bundle in %s: %w", dir, err)
	}
	if err := verify(svid, bundle); err != nil {
		return nil, err
	}
	return svid, nil
}

// WriteJWT writes a JWT-SVID's token, followed by a newline, to path,
// atomically and 0600: whoever reads a bearer token holds the SVID.
func WriteJWT(path, token string) error {
	if token == "" {
		return errors.New("writing an empty JWT-SVID: the token is missing")
	}
	return client.WriteFileAtomic(path, []byte(token+"\n"), FileMode)
}

func encodePEM(typ string, ders [][]byte) []byte {
	var b bytes.Buffer
	for _, der := range ders {
		_ = pem.Encode(&b, &pem.Block{Type: typ, Bytes: der})
	}
	return b.Bytes()
}
