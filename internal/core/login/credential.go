// Package login holds users' credentials and the rules of logging in with
// them: argon2id password hashes and the password policy, invites, TOTP
// second factors sealed at rest, per-source and per-user lockouts (for
// unknown names too, so that a lockout tells nothing about who exists), the
// admission of attempts, and a session's TTL. The auth service's Login,
// CreateUser and ResetUser RPCs call it. It never logs or returns a secret.
package login

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"

	"github.com/wid-project/wid/internal/core/resource"
	"github.com/wid-project/wid/internal/core/store"
)

// Sealer seals secrets at rest (the auth service's key encryption key).
type Sealer interface {
	Seal(plaintext, additionalData []byte) ([]byte, error)
	Open(ciphertext, additionalData []byte) ([]byte, error)
}

const (
	// DefaultInviteTTL is how long a user's invite lives unless told otherwise.
	DefaultInviteTTL = time.Hour
	// MaxInviteTTL caps invites: an invite is a bearer secret.
	MaxInviteTTL = 7 * 24 * time.Hour
	// DefaultSessionTTL is a user certificate's life unless the user asks for less.
	DefaultSessionTTL = 8 * time.Hour
	// MaxSessionTTL caps a login when no role says otherwise.
	MaxSessionTTL = 24 * time.Hour
	// MaxLoginFailures wrong attempts in a row from one source lock that
	// source out of the user for LockoutWindow.
	MaxLoginFailures = 5
	// MaxUserLoginFailures wrong attempts in a row from all sources together
	// lock the user for everyone for LockoutWindow. It is ten times
	// MaxLoginFailures so that one source (which the per-source lockout
	// stops at MaxLoginFailures) cannot lock a user out for everyone else.
	MaxUserLoginFailures = 10 * MaxLoginFailures
	// LockoutWindow is how long a locked user, or user and source, stays locked.
	LockoutWindow = 15 * time.Minute
)

// CredentialKind is the store kind of users' secrets. They are kept apart
// from the user resources so that no resource read or list can return them
// and a resource update cannot drop them.
const CredentialKind = "user_credential"

// FailedMessage is the one answer to a wrong user, password or invite, so
// that a caller cannot learn which users exist.
const FailedMessage = "login failed: the user name, password, invite or TOTP code is wrong (after 5 failures from one address the user is locked for it for 15 minutes)"

// Credential is a user's login secrets and failure counts.
type Credential struct {
	// PasswordHash is an argon2id PHC string; "" until the invite is used.
	PasswordHash string `json:"password_hash,omitempty"`
	// InviteHash is the hex sha256 of the invite secret.
	InviteHash    string    `json:"invite_hash,omitempty"`
	InviteExpires time.Time `json:"invite_expires,omitzero"`
	InviteUsed    bool      `json:"invite_used,omitempty"`
	// TOTPSealed is the base32 RFC 6238 secret sealed with the key
	// encryption key, like CA keys: a copy of the database alone does not
	// give away anyone's second factor. Empty without a second factor.
	TOTPSealed []byte `json:"totp_sealed,omitempty"`
	// TOTPPlain is where earlier versions kept the secret in the clear. It
	// is read, and sealed at the next write and at start; never written.
	TOTPPlain string `json:"totp_secret,omitempty"`
	// TOTPLastStep is the time step of the last accepted code: a code is
	// good once.
	TOTPLastStep int64 `json:"totp_last_step,omitempty"`
	// Failures counts wrong attempts in a row from all sources; LockedUntil
	// is when a lock for everyone ends.
	Failures    int       `json:"failures,omitempty"`
	LockedUntil time.Time `json:"locked_until,omitzero"`
	// Sources counts wrong attempts per source (see loginSource).
	Sources map[string]*SourceFailures `json:"sources,omitempty"`

	// TOTP is the opened TOTP secret, in memory only.
	TOTP string `json:"-"`
	// Revision is the store revision read, for a compare-and-set write.
	Revision int64 `json:"-"`
}

// SourceFailures are one source's wrong attempts in a row at one user.
type SourceFailures struct {
	Failures    int       `json:"failures,omitempty"`
	LockedUntil time.Time `json:"locked_until,omitzero"`
	Last        time.Time `json:"last"`
}

// maxCredentialSources bounds the sources a credential follows; the one
// seen least recently goes first (a locked one only once every other is).
const maxCredentialSources = 64

// Locked says until when source may not log in as this user, and
// whether the lock is the user's for everyone.
func (c *Credential) Locked(source string, now time.Time) (time.Time, bool) {
	if now.Before(c.LockedUntil) {
		return c.LockedUntil, true
	}
	if sf := c.Sources[source]; sf != nil && now.Before(sf.LockedUntil) {
		return sf.LockedUntil, false
	}
	return time.Time{}, false
}

// Fail counts one wrong attempt from source and says what it led to, for
// the audit log.
func (c *Credential) Fail(source string, now time.Time) string {
	if c.Sources == nil {
		c.Sources = map[string]*SourceFailures{}
	}
	sf := c.Sources[source]
	if sf == nil {
		if len(c.Sources) >= maxCredentialSources {
			c.forgetOldestSource(now)
		}
		sf = &SourceFailures{}
		c.Sources[source] = sf
	}
	sf.Failures++
	sf.Last = now
	c.Failures++
	what := fmt.Sprintf("failure %d of %d from %s, %d of %d in all", sf.Failures, MaxLoginFailures, source, c.Failures, MaxUserLoginFailures)
	if sf.Failures >= MaxLoginFailures {
		sf.Failures = 0
		sf.LockedUntil = now.Add(LockoutWindow)
		what += "; locked for " + source + " until " + sf.LockedUntil.UTC().Format(time.RFC3339)
	}
	if c.Failures >= MaxUserLoginFailures {
		c.Failures = 0
		c.LockedUntil = now.Add(LockoutWindow)
		what += "; locked for everyone until " + c.LockedUntil.UTC().Format(time.RFC3339)
	}
	return what
}

func (c *Credential) forgetOldestSource(now time.Time) {
	oldest := ""
	var oldestAt time.Time
	oldestLocked := true
	for src, sf := range c.Sources {
		locked := now.Before(sf.LockedUntil)
		if oldest == "" || (oldestLocked && !locked) || (locked == oldestLocked && sf.Last.Before(oldestAt)) {
			oldest, oldestAt, oldestLocked = src, sf.Last, locked
		}
	}
	delete(c.Sources, oldest)
}

// Status is what anyone who may read the user may know of its locks:
// until when it is locked for everyone, and how many sources are locked
// out of it, never which. Nil when nothing is locked.
func (c *Credential) Status(now time.Time) *resource.UserStatus {
	st := &resource.UserStatus{}
	if now.Before(c.LockedUntil) {
		st.LockedUntil = c.LockedUntil.UTC()
	}
	for _, sf := range c.Sources {
		if now.Before(sf.LockedUntil) {
			st.LockedSources++
		}
	}
	if st.LockedUntil.IsZero() && st.LockedSources == 0 {
		return nil
	}
	return st
}

// Succeeded clears every failure count and lock.
func (c *Credential) Succeeded() {
	c.Failures, c.LockedUntil, c.Sources = 0, time.Time{}, nil
}

// totpAD binds a sealed TOTP secret to its user, so that sealed secrets
// cannot be swapped between users in the database.
func totpAD(user string) []byte { return []byte("wid totp secret\x00" + user) }

// Decode reads a stored credential and opens its TOTP secret with kek.
func Decode(user string, item store.Item, kek Sealer) (*Credential, error) {
	var c Credential
	if err := json.Unmarshal(item.Data, &c); err != nil {
		return nil, fmt.Errorf("decoding the credential of user %q: %w", user, err)
	}
	switch {
	case len(c.TOTPSealed) > 0:
		plain, err := kek.Open(c.TOTPSealed, totpAD(user))
		if err != nil {
			return nil, fmt.Errorf("opening the TOTP secret of user %q: %w", user, err)
		}
		c.TOTP = string(plain)
	case c.TOTPPlain != "":
		c.TOTP = c.TOTPPlain
	}
	c.Revision = item.Revision
	return &c, nil
}

// Op is the store write of c, its TOTP secret sealed with kek.
func Op(t store.OpType, user string, c *Credential, kek Sealer) (store.Op, error) {
	out := *c
	out.TOTPPlain, out.TOTPSealed = "", nil
	if c.TOTP != "" {
		sealed, err := kek.Seal([]byte(c.TOTP), totpAD(user))
		if err != nil {
			return store.Op{}, fmt.Errorf("sealing the TOTP secret of user %q: %w", user, err)
		}
		out.TOTPSealed = sealed
	}
	data, err := json.Marshal(&out)
	if err != nil {
		return store.Op{}, err
	}
	o := store.Op{Type: t, Item: store.Item{Kind: CredentialKind, Name: user, Data: data}}
	if t == store.OpUpdate {
		o.ExpectRevision = c.Revision
	}
	return o, nil
}

// SealTOTPSecrets seals the TOTP secrets that earlier versions stored in
// the clear. A credential changed meanwhile is left for its next write,
// which seals it too.
func SealTOTPSecrets(ctx context.Context, db store.Backend, kek Sealer, log *slog.Logger) error {
	items, err := db.List(ctx, CredentialKind)
	if err != nil {
		return fmt.Errorf("reading user credentials: %w", err)
	}
	sealed := 0
	for _, item := range items {
		c, err := Decode(item.Name, item, kek)
		if err != nil {
			return err
		}
		if c.TOTPPlain == "" {
			continue
		}
		o, err := Op(store.OpUpdate, item.Name, c, kek)
		if err != nil {
			return err
		}
		if _, err := db.Apply(ctx, o); err != nil && !errors.Is(err, store.ErrConflict) && !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("sealing the TOTP secret of user %q: %w", item.Name, err)
		}
		sealed++
	}
	if sealed > 0 {
		log.Info("sealed TOTP secrets stored in the clear by an earlier version", "users", sealed)
	}
	return nil
}

// InviteHash is what is stored of an invite secret: its hex sha256.
func InviteHash(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// UnknownKind is the store kind of the failed-login counts of names
// that are not users, so that they lock like real users do and a lockout
// tells nothing about existence. They are in the store, not in one
// process, so that guesses spread over replicas count as on one. Anyone
// may make the store count a name, so the counts are kept in a fixed
// number of buckets (by a hash of the name) of a few names each, the least
// recently failed unlocked name giving way to a new one; and the replica
// holding the periodic-work lease forgets idle ones (see
// ForgetIdleUnknown).
const UnknownKind = "login_failures"

const (
	unknownBuckets   = 4096
	UnknownPerBucket = 8
)

// unknownForget is how long an unknown name's counts are kept after its
// last failure once no lock of it is running.
const unknownForget = 24 * time.Hour

// unknownBucket is one stored bucket of unknown names' counts.
type unknownBucket struct {
	Names map[string]*Credential `json:"names"`
}

// UnknownEntry is the bucket of one unknown name as read, for its
// compare-and-set write.
type UnknownEntry struct {
	name, key string
	bucket    unknownBucket
	revision  int64
}

// Stored says whether the bucket as read counts the name's failures.
func (e *UnknownEntry) Stored() bool {
	_, ok := e.bucket.Names[e.name]
	return ok
}

// UnknownBucketKey names the stored bucket that counts name's failures.
func UnknownBucketKey(name string) string {
	h := fnv.New32a()
	h.Write([]byte(name))
	return strconv.FormatUint(uint64(h.Sum32()%unknownBuckets), 10)
}

// UnknownFailures reads the failure counts of a name that is not a user.
func UnknownFailures(ctx context.Context, db store.Backend, name string) (*Credential, *UnknownEntry, error) {
	e := &UnknownEntry{name: name, key: UnknownBucketKey(name)}
	item, err := db.Get(ctx, UnknownKind, e.key)
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		return nil, nil, err
	default:
		// An unreadable bucket starts over: it only counted guesses.
		_ = json.Unmarshal(item.Data, &e.bucket)
		e.revision = item.Revision
	}
	c := &Credential{}
	if old := e.bucket.Names[name]; old != nil {
		*c = *old
	}
	return c, e, nil
}

// Op is the compare-and-set write of the bucket with name's counts c.
func (e *UnknownEntry) Op(c *Credential, now time.Time) (store.Op, error) {
	if e.bucket.Names == nil {
		e.bucket.Names = map[string]*Credential{}
	}
	e.bucket.Names[e.name] = &Credential{Failures: c.Failures, LockedUntil: c.LockedUntil, Sources: c.Sources}
	for len(e.bucket.Names) > UnknownPerBucket {
		delete(e.bucket.Names, oldestUnknown(e.bucket.Names, e.name, now))
	}
	data, err := json.Marshal(&e.bucket)
	if err != nil {
		return store.Op{}, err
	}
	o := store.Op{Type: store.OpCreate, Item: store.Item{Kind: UnknownKind, Name: e.key, Data: data}}
	if e.revision != 0 {
		o.Type, o.ExpectRevision = store.OpUpdate, e.revision
	}
	return o, nil
}

// oldestUnknown is the name in names, other than keep, that failed least
// recently, an unlocked one before any locked one.
func oldestUnknown(names map[string]*Credential, keep string, now time.Time) string {
	oldest := ""
	var oldestAt time.Time
	oldestLocked := true
	for name, c := range names {
		if name == keep {
			continue
		}
		locked, last := now.Before(c.LockedUntil), time.Time{}
		for _, sf := range c.Sources {
			locked = locked || now.Before(sf.LockedUntil)
			if sf.Last.After(last) {
				last = sf.Last
			}
		}
		if oldest == "" || (oldestLocked && !locked) || (locked == oldestLocked && last.Before(oldestAt)) {
			oldest, oldestAt, oldestLocked = name, last, locked
		}
	}
	return oldest
}

// ForgetIdleUnknown drops the counts of unknown names that are not
// locked and saw no failure for unknownForget, and buckets left empty.
func ForgetIdleUnknown(ctx context.Context, db store.Backend, now time.Time, log *slog.Logger) {
	items, err := db.List(ctx, UnknownKind)
	if err != nil {
		log.Warn("listing failed logins of unknown names", "error", err)
		return
	}
	for _, it := range items {
		var b unknownBucket
		_ = json.Unmarshal(it.Data, &b)
		before, kept := len(b.Names), 0
		for name, c := range b.Names {
			if idleUnknown(c, now) {
				delete(b.Names, name)
			} else {
				kept++
			}
		}
		if kept == before && kept > 0 {
			continue
		}
		// The revision read: counts that moved meanwhile are kept.
		o := store.Op{Type: store.OpDelete, Item: store.Item{Kind: UnknownKind, Name: it.Name}, ExpectRevision: it.Revision}
		if kept > 0 {
			data, err := json.Marshal(&b)
			if err != nil {
				continue
			}
			o.Type, o.Item.Data = store.OpUpdate, data
		}
		_, err := db.Apply(ctx, o)
		if err != nil && !errors.Is(err, store.ErrConflict) && !errors.Is(err, store.ErrNotFound) {
			log.Warn("forgetting failed logins of unknown names", "error", err)
			return
		}
	}
}

// idleUnknown says whether c is unlocked everywhere and its last failure
// older than unknownForget.
func idleUnknown(c *Credential, now time.Time) bool {
	if now.Before(c.LockedUntil) {
		return false
	}
	for _, sf := range c.Sources {
		if now.Before(sf.LockedUntil) || now.Sub(sf.Last) < unknownForget {
			return false
		}
	}
	return true
}

// Locks serializes credential writes per user within this
// process (striped by name), so that parallel attempts each count instead
// of losing compare-and-set races.
type Locks [64]sync.Mutex

// Lock takes name's lock and returns its release.
func (l *Locks) Lock(name string) func() {
	h := fnv.New32a()
	h.Write([]byte(name))
	m := &l[h.Sum32()%uint32(len(l))]
	m.Lock()
	return m.Unlock
}

// TOTP settings: RFC 6238's defaults, which every authenticator app reads.
const (
	totpPeriod = 30
	totpSkew   = 1
)

// CheckTOTP reports whether code is valid at now (one period either side)
// and the time step it belongs to.
func CheckTOTP(secret, code string, now time.Time) (int64, bool) {
	if len(code) != 6 {
		return 0, false
	}
	for d := -totpSkew; d <= totpSkew; d++ {
		at := now.Add(time.Duration(d*totpPeriod) * time.Second)
		want, err := totp.GenerateCodeCustom(secret, at, totp.ValidateOpts{Period: totpPeriod, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1})
		if err == nil && subtle.ConstantTimeCompare([]byte(want), []byte(code)) == 1 {
			return at.Unix() / totpPeriod, true
		}
	}
	return 0, false
}

// TOTPURI is the otpauth URI that an authenticator app reads the secret from.
func TOTPURI(td, user, secret string) string {
	v := url.Values{}
	v.Set("secret", secret)
	v.Set("issuer", "wid "+td)
	v.Set("algorithm", "SHA1")
	v.Set("digits", "6")
	v.Set("period", strconv.Itoa(totpPeriod))
	return "otpauth://totp/" + url.PathEscape("wid "+td+":"+user) + "?" + v.Encode()
}

// SessionTTL is the wanted TTL (or the default), capped by the smallest
// max_session_ttl among the roles, or by MaxSessionTTL when none sets one.
func SessionTTL(want time.Duration, roles []*resource.Role) time.Duration {
	limit := time.Duration(0)
	for _, r := range roles {
		if m := time.Duration(r.Spec.Options.MaxSessionTTL); m > 0 && (limit == 0 || m < limit) {
			limit = m
		}
	}
	if limit == 0 {
		limit = MaxSessionTTL
	}
	if want == 0 {
		want = DefaultSessionTTL
	}
	return min(want, limit)
}
