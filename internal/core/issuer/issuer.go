// Package issuer mints X509-SVIDs, JWT-SVIDs, WIT-SVIDs and wid's own internal
// certificates with the keys of a ca.Manager. It checks what a certificate
// or token must be by the SPIFFE standards (one URI SAN, trust domain, key
// types, TTL bounds) but not who may have it: callers authorise first. It
// never logs, and never puts key material into errors.
package issuer

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/wid-project/wid/internal/core/ca"
)

const (
	// DefaultX509TTL is an X509-SVID's life when the request names none.
	DefaultX509TTL = time.Hour
	// DefaultJWTTTL is a JWT-SVID's life when the request names none.
	DefaultJWTTTL = 5 * time.Minute
	// DefaultInternalTTL is an internal certificate's life when the request
	// names none.
	DefaultInternalTTL = time.Hour
	// MaxSVIDTTL caps every SVID, whatever the roles allow.
	MaxSVIDTTL = 24 * time.Hour
)

// backdate covers clock skew between the auth service and verifiers.
const backdate = time.Minute

// ReservedPath is the SPIFFE ID path under which wid names its own users,
// bots and servers. No SVID is issued below it, so a workload identity can
// never look like one of wid's own.
const ReservedPath = "/_wid"

// Issuer signs with the active keys of a ca.Manager. It is safe for
// concurrent use and holds no state of its own.
type Issuer struct {
	cas   *ca.Manager
	clock func() time.Time
	// jwtIssuer is the iss of JWT-SVIDs; "" leaves iss out.
	jwtIssuer string
}

// SetJWTIssuer makes iss part of every JWT-SVID signed from now on, for
// relying parties that find the keys by OIDC discovery. Call it before
// the issuer is used.
func (i *Issuer) SetJWTIssuer(iss string) { i.jwtIssuer = iss }

// New returns an Issuer signing with m's keys. clock defaults to time.Now.
func New(m *ca.Manager, clock func() time.Time) *Issuer {
	if clock == nil {
		clock = time.Now
	}
	return &Issuer{cas: m, clock: clock}
}

// checkSVIDID checks that id may be the subject of an SVID from this trust
// domain.
func (i *Issuer) checkSVIDID(id spiffeid.ID) error {
	td := i.cas.TrustDomain()
	switch {
	case id.IsZero():
		return errors.New("no SPIFFE ID given")
	case id.TrustDomain() != td:
		return fmt.Errorf("SPIFFE ID %s is not in trust domain %s", id, td.Name())
	case id.Path() == "":
		return fmt.Errorf("SPIFFE ID %s names the trust domain itself: an SVID needs a path such as /svc/web", id)
	case id.Path() == ReservedPath || strings.HasPrefix(id.Path(), ReservedPath+"/"):
		return fmt.Errorf("SPIFFE ID %s is under %s, which wid keeps for its own users, bots and servers", id, ReservedPath)
	}
	return nil
}

// svidTTL applies the default and the hard maximum to a requested TTL.
func svidTTL(ttl, def time.Duration) (time.Duration, error) {
	switch {
	case ttl < 0:
		return 0, fmt.Errorf("TTL %s is negative", ttl)
	case ttl == 0:
		return def, nil
	case ttl > MaxSVIDTTL:
		return 0, fmt.Errorf("TTL %s is over the %s maximum", ttl, MaxSVIDTTL)
	}
	return ttl, nil
}

// validity returns the NotBefore and NotAfter of a certificate or token
// signed by ks: backdated for clock skew, and never outside the key set's own
// validity, because a verifier rejects a chain as soon as any certificate in
// it expired.
func validity(now time.Time, ttl time.Duration, ks *ca.KeySet) (notBefore, notAfter time.Time, err error) {
	if !now.Before(ks.NotAfter) {
		return time.Time{}, time.Time{}, fmt.Errorf("the %s CA expired at %s: rotate it", ks.Type, ks.NotAfter.Format(time.RFC3339))
	}
	notBefore = now.Add(-backdate)
	if notBefore.Before(ks.NotBefore) {
		notBefore = ks.NotBefore
	}
	notAfter = now.Add(ttl)
	if notAfter.After(ks.NotAfter) {
		notAfter = ks.NotAfter
	}
	// Certificates and JWTs carry whole seconds; truncating here keeps the
	// values we return equal to those in what we sign.
	return notBefore.UTC().Truncate(time.Second), notAfter.UTC().Truncate(time.Second), nil
}

func keyUsage(pub crypto.PublicKey) x509.KeyUsage {
	// Key encipherment only makes sense for RSA key transport; ECDSA and
	// Ed25519 keys only sign.
	if _, ok := pub.(*rsa.PublicKey); ok {
		return x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment
	}
	return x509.KeyUsageDigitalSignature
}

func randomHex128() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generating random id: %w", err)
	}
	return hex.EncodeToString(b), nil
}

func serialHex(n *big.Int) string { return ca.FormatSerial(n) }
