package ca

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// KEKFileName is the file, inside the keys directory, that holds the key
// encryption key.
const KEKFileName = "ca.key"

const kekSize = 32 // AES-256

// KEK is the key encryption key that seals CA private keys at rest. The
// store only ever sees sealed keys, so a copy of the database alone does not
// give away the trust domain.
type KEK struct {
	aead cipher.AEAD
	// path is kept for error messages only.
	path string
}

// LoadOrCreateKEK reads the KEK from dir/ca.key, creating dir (0700) and a
// fresh random key (0600) on first use. A key file that anyone but its owner
// could read is refused rather than used: the CA keys are only as private as
// this file.
func LoadOrCreateKEK(dir string) (*KEK, error) {
	return loadKEK(dir, true)
}

// LoadKEK reads the KEK from dir/ca.key, with the same checks as
// LoadOrCreateKEK, but never creates one: a data dir whose key is gone
// needs its backup, not a new key. A missing key matches fs.ErrNotExist.
func LoadKEK(dir string) (*KEK, error) {
	return loadKEK(dir, false)
}

func loadKEK(dir string, create bool) (*KEK, error) {
	if create {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("creating keys directory %s: %w", dir, err)
		}
	}
	info, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("keys directory %s is missing: %w", dir, err)
	}
	if err != nil {
		return nil, fmt.Errorf("checking keys directory %s: %w", dir, err)
	}
	if !info.IsDir() {
		return nil, fmt.Errorf("keys directory %s is not a directory", dir)
	}
	if perm := info.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("keys directory %s has mode %#o, open to other users: run chmod 700 %s", dir, perm, dir)
	}

	path := filepath.Join(dir, KEKFileName)
	key, err := readKEKFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		if !create {
			return nil, fmt.Errorf("key encryption key %s is missing: %w", path, err)
		}
		key, err = createKEKFile(dir, path)
	}
	if err != nil {
		return nil, err
	}
	defer clear(key)
	return newKEK(key, path)
}

func newKEK(key []byte, path string) (*KEK, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("setting up the key encryption key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("setting up the key encryption key: %w", err)
	}
	return &KEK{aead: aead, path: path}, nil
}

func readKEKFile(path string) ([]byte, error) {
	// Open first and check the opened file, so that what is checked is what
	// is read.
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		return nil, fmt.Errorf("opening key encryption key %s: %w", path, err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("checking key encryption key %s: %w", path, err)
	}
	if !info.Mode().IsRegular() {
		return nil, fmt.Errorf("key encryption key %s is not a regular file", path)
	}
	if perm := info.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("key encryption key %s has mode %#o, readable by other users: run chmod 600 %s", path, perm, path)
	}
	// Read one byte more than needed so a longer file is caught.
	buf := make([]byte, kekSize+1)
	n, err := io.ReadFull(f, buf)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		clear(buf)
		return nil, fmt.Errorf("reading key encryption key %s: %w", path, err)
	}
	if n != kekSize {
		clear(buf)
		return nil, fmt.Errorf("key encryption key %s is not %d bytes long: restore it from a backup", path, kekSize)
	}
	return buf[:kekSize], nil
}

// createKEKFile writes a new key to a temporary file and links it into place,
// so that a crash never leaves a half-written key, and two processes starting
// at once agree on one key (the loser of the link race reads the winner's).
func createKEKFile(dir, path string) ([]byte, error) {
	key := make([]byte, kekSize)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("generating key encryption key: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".ca.key-*")
	if err != nil {
		clear(key)
		return nil, fmt.Errorf("creating key encryption key in %s: %w", dir, err)
	}
	tmpPath := tmp.Name()
	defer os.Remove(tmpPath)
	// CreateTemp already uses 0600; say so explicitly since it matters.
	err = tmp.Chmod(0o600)
	if err == nil {
		_, err = tmp.Write(key)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		clear(key)
		return nil, fmt.Errorf("writing key encryption key %s: %w", tmpPath, err)
	}
	if err := os.Link(tmpPath, path); err != nil {
		clear(key)
		if errors.Is(err, fs.ErrExist) {
			return readKEKFile(path)
		}
		return nil, fmt.Errorf("writing key encryption key %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil {
		// Make the new name durable; a failure here is not worth refusing to
		// start over, since the key file itself is synced.
		_ = d.Sync()
		d.Close()
	}
	return key, nil
}

// Seal encrypts plaintext with AES-256-GCM. additionalData is authenticated
// but not stored: Open must be given the same bytes, which binds a sealed key
// to the CA and key set it was made for.
func (k *KEK) Seal(plaintext, additionalData []byte) ([]byte, error) {
	nonce := make([]byte, k.aead.NonceSize(), k.aead.NonceSize()+len(plaintext)+k.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("generating nonce: %w", err)
	}
	return k.aead.Seal(nonce, nonce, plaintext, additionalData), nil
}

// Open decrypts what Seal produced with the same additionalData.
func (k *KEK) Open(ciphertext, additionalData []byte) ([]byte, error) {
	ns := k.aead.NonceSize()
	if len(ciphertext) < ns+k.aead.Overhead() {
		return nil, errors.New("sealed key is truncated")
	}
	plain, err := k.aead.Open(nil, ciphertext[:ns], ciphertext[ns:], additionalData)
	if err != nil {
		return nil, wrongKEKError{path: k.path}
	}
	return plain, nil
}

// ErrWrongKEK matches the error of a sealed key that does not open with
// the key encryption key given.
var ErrWrongKEK = errors.New("sealed with another key encryption key")

type wrongKEKError struct{ path string }

func (e wrongKEKError) Error() string {
	return fmt.Sprintf("sealed key does not open with %s: the store was made with another key encryption key, or was altered", e.path)
}

func (e wrongKEKError) Is(target error) bool { return target == ErrWrongKEK }

// LoadKEKFile reads the KEK from path, a copy of the ca.key that another
// replica of the auth service wrote, with the same checks as LoadKEK. It
// never creates one: a replica must share the key, not make its own.
func LoadKEKFile(path string) (*KEK, error) {
	key, err := readKEKFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("the key encryption key file %s does not exist: copy there the keys/%s of the replica that created the trust domain", path, KEKFileName)
	}
	if err != nil {
		return nil, err
	}
	defer clear(key)
	return newKEK(key, path)
}

// SameAs reports whether k and other are the same key.
func (k *KEK) SameAs(other *KEK) bool {
	probe := []byte("wid key encryption key probe")
	sealed, err := k.Seal(probe, nil)
	if err != nil {
		return false
	}
	_, err = other.Open(sealed, nil)
	return err == nil
}
