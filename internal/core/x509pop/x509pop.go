// Package x509pop is the x509pop join method's proof of possession: the
// auth service hands out short-lived, single-use challenges, and an agent
// signs one, bound to the CSR it joins with, with the key of a certificate
// from the operator's CA. It never sees or keeps the agent's private key
// beyond the signing call.
package x509pop

import (
	"container/heap"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// messagePrefix separates what an agent signs from anything else its key
// may sign.
const messagePrefix = "wid x509pop v1\x00"

// Message is what the agent signs: the challenge and the SHA-256 of the CSR
// it joins with, so that a signature seen by someone else yields nothing:
// it admits only that CSR's key, which only the agent holds.
func Message(challenge, csr []byte) []byte {
	sum := sha256.Sum256(csr)
	m := make([]byte, 0, len(messagePrefix)+len(challenge)+len(sum))
	m = append(m, messagePrefix...)
	m = append(m, challenge...)
	return append(m, sum[:]...)
}

// Sign signs msg with key as Verify expects for its type: ECDSA and RSA
// (PKCS #1 v1.5) over SHA-256, Ed25519 over msg itself.
func Sign(key crypto.Signer, msg []byte) ([]byte, error) {
	switch key.Public().(type) {
	case ed25519.PublicKey:
		return key.Sign(rand.Reader, msg, crypto.Hash(0))
	case *ecdsa.PublicKey, *rsa.PublicKey:
		sum := sha256.Sum256(msg)
		return key.Sign(rand.Reader, sum[:], crypto.SHA256)
	default:
		return nil, fmt.Errorf("a %T key cannot sign an x509pop challenge: use ECDSA, RSA or Ed25519", key.Public())
	}
}

// Verify checks sig over msg with cert's public key.
func Verify(cert *x509.Certificate, msg, sig []byte) error {
	var alg x509.SignatureAlgorithm
	switch cert.PublicKey.(type) {
	case ed25519.PublicKey:
		alg = x509.PureEd25519
	case *ecdsa.PublicKey:
		alg = x509.ECDSAWithSHA256
	case *rsa.PublicKey:
		alg = x509.SHA256WithRSA
	default:
		return fmt.Errorf("the certificate's %T key is not ECDSA, RSA or Ed25519", cert.PublicKey)
	}
	return cert.CheckSignature(alg, msg, sig)
}

// Fingerprint is the hex SHA-256 of a certificate's DER.
func Fingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return hex.EncodeToString(sum[:])
}

// HostName is the host an x509pop agent is known by: derived from its
// certificate, so the auth service and the agent agree on it and no agent
// can claim another's.
func HostName(cert *x509.Certificate) string {
	return "x509pop/" + Fingerprint(cert)
}

// Challenge layout: 16 random bytes, 8 bytes of expiry (Unix seconds), 16
// bytes of HMAC over both and the token name.
const (
	nonceLen     = 16
	macLen       = 16
	ChallengeLen = nonceLen + 8 + macLen
)

// DefaultChallengeTTL is how long a challenge may be answered.
const DefaultChallengeTTL = time.Minute

// DefaultMaxOutstanding bounds the challenges remembered as answered: a
// flood of joins is refused rather than growing memory.
const DefaultMaxOutstanding = 100000

// A source (an address, see login.Source) gets challengeSourceRate
// challenges a second with bursts of challengeSourceBurst: an agent asks
// one per join, and each challenge can fill one slot of the answered ones
// until it expires. maxSources bounds the sources followed; past it the
// table starts over.
const (
	challengeSourceRate  = rate.Limit(5)
	challengeSourceBurst = 20
	maxSources           = 10000
)

// Errors of Challenges.Redeem.
var (
	ErrChallengeInvalid = errors.New("the challenge was not issued by this auth service, or for another token: ask for a new one")
	ErrChallengeExpired = errors.New("the challenge has expired: ask for a new one")
	ErrChallengeUsed    = errors.New("the challenge was already answered: each is good for one join")
	ErrBusy             = errors.New("too many x509pop joins at once: try again shortly")
)

// Challenges issues and redeems challenges. Issuing keeps no state (the
// challenge carries its expiry under a MAC); redeeming remembers each
// answered challenge until it expires, so it is good for one join. The
// key lives in this process only: a challenge is redeemed at the replica
// that issued it (the agent asks both over one connection).
type Challenges struct {
	key   [32]byte
	ttl   time.Duration
	max   int
	clock func() time.Time

	mu   sync.Mutex
	used map[[nonceLen]byte]time.Time
	// expiries orders used by expiry, so that pruning looks only at what
	// expired instead of at every entry.
	expiries expiryHeap

	sourcesMu sync.Mutex
	sources   map[string]*rate.Limiter
}

type usedChallenge struct {
	nonce [nonceLen]byte
	exp   time.Time
}

// expiryHeap is a min-heap of answered challenges by expiry.
type expiryHeap []usedChallenge

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].exp.Before(h[j].exp) }
func (h expiryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *expiryHeap) Push(x any)        { *h = append(*h, x.(usedChallenge)) }
func (h *expiryHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// AllowSource reports whether source may have another challenge now, by
// its rate.
func (c *Challenges) AllowSource(source string) bool {
	c.sourcesMu.Lock()
	defer c.sourcesMu.Unlock()
	if c.sources == nil || len(c.sources) >= maxSources {
		c.sources = map[string]*rate.Limiter{}
	}
	lim, ok := c.sources[source]
	if !ok {
		lim = rate.NewLimiter(challengeSourceRate, challengeSourceBurst)
		c.sources[source] = lim
	}
	return lim.AllowN(c.clock(), 1)
}

// NewChallenges returns Challenges with a fresh random key. clock defaults
// to time.Now.
func NewChallenges(clock func() time.Time) *Challenges {
	if clock == nil {
		clock = time.Now
	}
	c := &Challenges{ttl: DefaultChallengeTTL, max: DefaultMaxOutstanding, clock: clock, used: map[[nonceLen]byte]time.Time{}}
	if _, err := rand.Read(c.key[:]); err != nil {
		panic("x509pop: no randomness: " + err.Error())
	}
	return c
}

// Issue returns a challenge for token and when it expires.
func (c *Challenges) Issue(token string) ([]byte, time.Time, error) {
	ch := make([]byte, ChallengeLen)
	if _, err := rand.Read(ch[:nonceLen]); err != nil {
		return nil, time.Time{}, fmt.Errorf("making a challenge: %w", err)
	}
	exp := c.clock().Add(c.ttl).Truncate(time.Second)
	binary.BigEndian.PutUint64(ch[nonceLen:], uint64(exp.Unix()))
	copy(ch[nonceLen+8:], c.mac(ch[:nonceLen+8], token))
	return ch, exp, nil
}

func (c *Challenges) mac(b []byte, token string) []byte {
	h := hmac.New(sha256.New, c.key[:])
	h.Write(b)
	h.Write([]byte{0})
	h.Write([]byte(token))
	return h.Sum(nil)[:macLen]
}

// Redeem checks that ch was issued for token, is unexpired and unanswered,
// and marks it answered. Call it only once the signature over it verified,
// so that a wrong signature does not burn the agent's challenge.
func (c *Challenges) Redeem(ch []byte, token string) error {
	if len(ch) != ChallengeLen || !hmac.Equal(ch[nonceLen+8:], c.mac(ch[:nonceLen+8], token)) {
		return ErrChallengeInvalid
	}
	now := c.clock()
	exp := time.Unix(int64(binary.BigEndian.Uint64(ch[nonceLen:])), 0)
	if !now.Before(exp) {
		return ErrChallengeExpired
	}
	var n [nonceLen]byte
	copy(n[:], ch)
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.used[n]; ok {
		return ErrChallengeUsed
	}
	for len(c.expiries) > 0 && !now.Before(c.expiries[0].exp) {
		delete(c.used, heap.Pop(&c.expiries).(usedChallenge).nonce)
	}
	if len(c.used) >= c.max {
		return ErrBusy
	}
	c.used[n] = exp
	heap.Push(&c.expiries, usedChallenge{nonce: n, exp: exp})
	return nil
}
