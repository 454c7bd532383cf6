package login

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"golang.org/x/crypto/argon2"
)

// Password rules.
const (
	MinPasswordLength = 12
	// MaxPasswordLength bounds the work an anonymous caller can ask for.
	MaxPasswordLength = 1024
)

// argon2Params are argon2id's cost settings (RFC 9106, second recommended
// option). They are stored with every hash so that they can be raised later
// without breaking existing passwords.
type argon2Params struct {
	Memory  uint32 // KiB
	Time    uint32
	Threads uint8
}

var defaultArgon2 = argon2Params{Memory: 64 * 1024, Time: 1, Threads: 4}

// SetArgon2MemoryForTest makes password hashes cheap for the rest of the
// test, so that a test can run many logins at once without taking 64 MiB
// each.
func SetArgon2MemoryForTest(t interface{ Cleanup(func()) }, kib uint32) {
	old := defaultArgon2
	defaultArgon2.Memory = kib
	t.Cleanup(func() { defaultArgon2 = old })
}

const (
	saltLen = 16
	hashLen = 32
)

// HashPassword returns the PHC string of an argon2id hash of password with a
// random salt: $argon2id$v=19$m=65536,t=1,p=4$<salt>$<hash>.
func HashPassword(password string) (string, error) {
	salt := make([]byte, saltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("generating a salt: %w", err)
	}
	p := defaultArgon2
	sum := argon2.IDKey([]byte(password), salt, p.Time, p.Memory, p.Threads, hashLen)
	enc := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, p.Memory, p.Time, p.Threads, enc.EncodeToString(salt), enc.EncodeToString(sum)), nil
}

// CheckPassword reports whether password matches the PHC string encoded.
func CheckPassword(encoded, password string) (bool, error) {
	parts := strings.Split(encoded, "$")
	if len(parts) != 6 || parts[1] != "argon2id" {
		return false, errors.New("stored password hash is not argon2id")
	}
	var version int
	if _, err := fmt.Sscanf(parts[2], "v=%d", &version); err != nil || version != argon2.Version {
		return false, fmt.Errorf("stored password hash has argon2 version %q", parts[2])
	}
	var p argon2Params
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &p.Memory, &p.Time, &p.Threads); err != nil {
		return false, fmt.Errorf("stored password hash parameters %q: %w", parts[3], err)
	}
	if p.Memory == 0 || p.Memory > 1<<22 || p.Time == 0 || p.Time > 16 || p.Threads == 0 {
		return false, fmt.Errorf("stored password hash parameters %q are out of range", parts[3])
	}
	enc := base64.RawStdEncoding
	salt, err := enc.DecodeString(parts[4])
	if err != nil {
		return false, fmt.Errorf("stored password salt: %w", err)
	}
	want, err := enc.DecodeString(parts[5])
	if err != nil || len(want) == 0 {
		return false, errors.New("stored password hash is corrupt")
	}
	got := argon2.IDKey([]byte(password), salt, p.Time, p.Memory, p.Threads, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1, nil
}

// DummyHash is checked against for unknown or locked users and wrong
// invites, so that their answer takes as long as a wrong password for a real
// one. It is a well-formed hash with the default parameters over a fixed
// salt, whose digest is fixed random bytes that no known password hashes to:
// checking it costs one argon2id computation, exactly like a real hash, and
// making it costs nothing (it used to be hashed on first use, which added a
// whole argon2id computation to the first login after every start).
func DummyHash() string {
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$LWuoy5de3C1y42rZYxkZaQ$x4w6hH5pCWXCTK9iMLCTr7qMvbY9g8EonqBip8YYjVI",
		argon2.Version, defaultArgon2.Memory, defaultArgon2.Time, defaultArgon2.Threads)
}

// CheckPasswordPolicy says why a new password is refused, or nil.
func CheckPasswordPolicy(user, password string) error {
	n := utf8.RuneCountInString(password)
	switch {
	case n < MinPasswordLength:
		return fmt.Errorf("the password is too short: use at least %d characters", MinPasswordLength)
	case len(password) > MaxPasswordLength:
		return fmt.Errorf("the password is too long: use at most %d bytes", MaxPasswordLength)
	case user != "" && strings.Contains(strings.ToLower(password), strings.ToLower(user)):
		return errors.New("the password contains the user name: choose one that does not")
	case strings.TrimSpace(password) == "":
		return errors.New("the password is only blanks: choose a real one")
	}
	return nil
}
