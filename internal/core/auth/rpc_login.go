package auth

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"
	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/audit"
	"github.com/wid-project/wid/internal/core/ca"
	"github.com/wid-project/wid/internal/core/issuer"
	"github.com/wid-project/wid/internal/core/resource"
	"github.com/wid-project/wid/internal/core/store"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

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

// credentialKind is the store kind of users' secrets. They are kept apart
// from the user resources so that no resource read or list can return them
// and a resource update cannot drop them.
const credentialKind = "user_credential"

// errLoginFailed is the one answer to a wrong user, password or invite, so
// that a caller cannot learn which users exist.
const errLoginFailed = "login failed: the user name, password, invite or TOTP code is wrong (after 5 failures from one address the user is locked for it for 15 minutes)"

// credential is a user's login secrets and failure counts.
type credential struct {
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
	Sources map[string]*sourceFailures `json:"sources,omitempty"`

	// totp is the opened TOTP secret, in memory only.
	totp     string
	revision int64
}

// sourceFailures are one source's wrong attempts in a row at one user.
type sourceFailures struct {
	Failures    int       `json:"failures,omitempty"`
	LockedUntil time.Time `json:"locked_until,omitzero"`
	Last        time.Time `json:"last"`
}

// maxCredentialSources bounds the sources a credential follows; the one
// seen least recently goes first (a locked one only once every other is).
const maxCredentialSources = 64

// lockedUntil says until when source may not log in as this user, and
// whether the lock is the user's for everyone.
func (c *credential) lockedUntil(source string, now time.Time) (time.Time, bool) {
	if now.Before(c.LockedUntil) {
		return c.LockedUntil, true
	}
	if sf := c.Sources[source]; sf != nil && now.Before(sf.LockedUntil) {
		return sf.LockedUntil, false
	}
	return time.Time{}, false
}

// fail counts one wrong attempt from source and says what it led to, for
// the audit log.
func (c *credential) fail(source string, now time.Time) string {
	if c.Sources == nil {
		c.Sources = map[string]*sourceFailures{}
	}
	sf := c.Sources[source]
	if sf == nil {
		if len(c.Sources) >= maxCredentialSources {
			c.forgetOldestSource(now)
		}
		sf = &sourceFailures{}
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

func (c *credential) forgetOldestSource(now time.Time) {
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

// status is what anyone who may read the user may know of its locks:
// until when it is locked for everyone, and how many sources are locked
// out of it, never which. Nil when nothing is locked.
func (c *credential) status(now time.Time) *resource.UserStatus {
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

// addUserStatus fills in the lock status of v if it is a user. Only the
// counts are decoded: the TOTP secret stays sealed.
func (s *Server) addUserStatus(ctx context.Context, v resource.Resource) error {
	u, ok := v.(*resource.User)
	if !ok {
		return nil
	}
	u.Status = nil
	item, err := s.db.Get(ctx, credentialKind, u.Metadata.Name)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return storeError("user/"+u.Metadata.Name, err)
	}
	var c credential
	if err := json.Unmarshal(item.Data, &c); err != nil {
		// A damaged credential refuses logins on its own; the user
		// document is still worth showing.
		s.log.Warn("reading a user's lock status", "user", u.Metadata.Name, "error", err)
		return nil
	}
	u.Status = c.status(s.clock())
	return nil
}

// succeeded clears every failure count and lock.
func (c *credential) succeeded() {
	c.Failures, c.LockedUntil, c.Sources = 0, time.Time{}, nil
}

// totpAD binds a sealed TOTP secret to its user, so that sealed secrets
// cannot be swapped between users in the database.
func totpAD(user string) []byte { return []byte("wid totp secret\x00" + user) }

func (s *Server) getCredential(ctx context.Context, user string) (*credential, error) {
	item, err := s.db.Get(ctx, credentialKind, user)
	if err != nil {
		return nil, err
	}
	return s.decodeCredential(user, item)
}

func (s *Server) decodeCredential(user string, item store.Item) (*credential, error) {
	var c credential
	if err := json.Unmarshal(item.Data, &c); err != nil {
		return nil, fmt.Errorf("decoding the credential of user %q: %w", user, err)
	}
	switch {
	case len(c.TOTPSealed) > 0:
		plain, err := s.kek.Open(c.TOTPSealed, totpAD(user))
		if err != nil {
			return nil, fmt.Errorf("opening the TOTP secret of user %q: %w", user, err)
		}
		c.totp = string(plain)
	case c.TOTPPlain != "":
		c.totp = c.TOTPPlain
	}
	c.revision = item.Revision
	return &c, nil
}

// credentialOp is the store write of c, its TOTP secret sealed.
func (s *Server) credentialOp(t store.OpType, user string, c *credential) (store.Op, error) {
	out := *c
	out.TOTPPlain, out.TOTPSealed = "", nil
	if c.totp != "" {
		sealed, err := s.kek.Seal([]byte(c.totp), totpAD(user))
		if err != nil {
			return store.Op{}, fmt.Errorf("sealing the TOTP secret of user %q: %w", user, err)
		}
		out.TOTPSealed = sealed
	}
	data, err := json.Marshal(&out)
	if err != nil {
		return store.Op{}, err
	}
	o := store.Op{Type: t, Item: store.Item{Kind: credentialKind, Name: user, Data: data}}
	if t == store.OpUpdate {
		o.ExpectRevision = c.revision
	}
	return o, nil
}

// sealTOTPSecrets seals the TOTP secrets that earlier versions stored in
// the clear. A credential changed meanwhile is left for its next write,
// which seals it too.
func (s *Server) sealTOTPSecrets(ctx context.Context) error {
	items, err := s.db.List(ctx, credentialKind)
	if err != nil {
		return fmt.Errorf("reading user credentials: %w", err)
	}
	sealed := 0
	for _, item := range items {
		c, err := s.decodeCredential(item.Name, item)
		if err != nil {
			return err
		}
		if c.TOTPPlain == "" {
			continue
		}
		o, err := s.credentialOp(store.OpUpdate, item.Name, c)
		if err != nil {
			return err
		}
		if _, err := s.db.Apply(ctx, o); err != nil && !errors.Is(err, store.ErrConflict) && !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("sealing the TOTP secret of user %q: %w", item.Name, err)
		}
		sealed++
	}
	if sealed > 0 {
		s.log.Info("sealed TOTP secrets stored in the clear by an earlier version", "users", sealed)
	}
	return nil
}

func inviteHash(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// CreateUser adds a user and a one-time invite that sets its password.
func (s *Server) CreateUser(ctx context.Context, req *authv1.CreateUserRequest) (*authv1.CreateUserResponse, error) {
	if err := s.authorize(ctx, resource.KindUser, verbCreate); err != nil {
		return nil, err
	}
	u := &resource.User{
		Header: resource.Header{Kind: resource.KindUser, Version: resource.V1, Metadata: resource.Metadata{Name: req.Name, Labels: req.Labels}},
		Spec:   resource.UserSpec{Roles: req.Roles},
	}
	if err := u.Validate(); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if err := s.res.checkRolesExist(ctx, u, nil); err != nil {
		return nil, status.Error(codes.FailedPrecondition, err.Error())
	}
	if err := s.checkResourceGrantable(ctx, u, nil, nil); err != nil {
		return nil, err
	}
	secret, cred, err := s.newInvite(u.Metadata.Name, time.Duration(req.InviteTtlSeconds)*time.Second, req.Totp)
	if err != nil {
		return nil, err
	}
	expires := cred.InviteExpires
	userOp, err := op(store.OpCreate, u)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	// Upsert: a credential left by a user removed before this change must not
	// outlive its user.
	credOp, err := s.credentialOp(store.OpUpsert, u.Metadata.Name, cred)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	revs, err := s.res.apply(ctx, userOp, credOp)
	if err != nil {
		return nil, storeError(resource.Ref(u), err)
	}
	u.Metadata.Revision = revs[0]
	if err := s.resourceEvent(ctx, audit.TypeResourceCreated, resource.Ref(u), map[string]string{"invite_expires": expires.Format(time.RFC3339), "totp": strconv.FormatBool(req.Totp)}); err != nil {
		return nil, err
	}
	doc, _ := encode(u)
	return &authv1.CreateUserResponse{User: doc, Invite: secret, InviteExpiresAt: timestamppb.New(expires)}, nil
}

// newInvite makes a fresh credential: an invite secret (stored as its
// hash), no password, no failures, and a TOTP secret if asked.
func (s *Server) newInvite(user string, ttl time.Duration, withTOTP bool) (string, *credential, error) {
	if ttl == 0 {
		ttl = DefaultInviteTTL
	}
	if ttl < 0 || ttl > MaxInviteTTL {
		return "", nil, status.Errorf(codes.InvalidArgument, "invite TTL %s is out of range: use up to %s", resource.FormatDuration(ttl), resource.FormatDuration(MaxInviteTTL))
	}
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", nil, status.Errorf(codes.Internal, "generating an invite: %v", err)
	}
	secret := hex.EncodeToString(raw[:])
	cred := &credential{InviteHash: inviteHash(secret), InviteExpires: s.clock().Add(ttl).UTC().Truncate(time.Second)}
	if withTOTP {
		key, err := totp.Generate(totp.GenerateOpts{Issuer: "wid " + s.td.Name(), AccountName: user})
		if err != nil {
			return "", nil, status.Errorf(codes.Internal, "generating a TOTP secret: %v", err)
		}
		cred.totp = key.Secret()
	}
	return secret, cred, nil
}

// ResetUser gives an existing user a new invite in place of the password,
// second factor and lockout.
func (s *Server) ResetUser(ctx context.Context, req *authv1.ResetUserRequest) (*authv1.ResetUserResponse, error) {
	if err := s.authorize(ctx, resource.KindUser, verbUpdate); err != nil {
		return nil, err
	}
	u, err := s.res.user(ctx, req.Name)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, status.Errorf(codes.NotFound, "user %q does not exist: add it with widctl user add %s --roles ROLE", req.Name, req.Name)
		}
		return nil, storeError("user/"+req.Name, err)
	}
	// Whoever sets a user's password becomes that user.
	roles, err := s.rolesNamed(ctx, u.Spec.Roles, nil)
	if err != nil {
		return nil, err
	}
	if err := s.checkGrantable(ctx, "reset user "+req.Name, resource.Ref(u), roles); err != nil {
		return nil, err
	}
	secret, cred, err := s.newInvite(req.Name, time.Duration(req.InviteTtlSeconds)*time.Second, req.Totp)
	if err != nil {
		return nil, err
	}
	o, err := s.credentialOp(store.OpUpsert, req.Name, cred)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	// A new generation ends every certificate issued before the reset.
	g, err := generationOp(KindUser, req.Name)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	if _, err := s.res.apply(ctx, o, g); err != nil {
		return nil, storeError("user/"+req.Name, err)
	}
	if err := s.resourceEvent(ctx, audit.TypeResourceUpdated, "user/"+req.Name, map[string]string{
		"change": "credentials reset", "invite_expires": cred.InviteExpires.Format(time.RFC3339), "totp": strconv.FormatBool(req.Totp),
	}); err != nil {
		return nil, err
	}
	return &authv1.ResetUserResponse{Invite: secret, InviteExpiresAt: timestamppb.New(cred.InviteExpires)}, nil
}

// unknownLoginKind is the store kind of the failed-login counts of names
// that are not users, so that they lock like real users do and a lockout
// tells nothing about existence. They are in the store, not in one
// process, so that guesses spread over replicas count as on one. Anyone
// may make the store count a name, so the counts are kept in a fixed
// number of buckets (by a hash of the name) of a few names each, the least
// recently failed unlocked name giving way to a new one; and the replica
// holding the periodic-work lease forgets idle ones (see
// forgetIdleUnknownLogins).
const unknownLoginKind = "login_failures"

const (
	unknownBuckets   = 4096
	unknownPerBucket = 8
)

// unknownForget is how long an unknown name's counts are kept after its
// last failure once no lock of it is running.
const unknownForget = 24 * time.Hour

// unknownBucket is one stored bucket of unknown names' counts.
type unknownBucket struct {
	Names map[string]*credential `json:"names"`
}

// unknownEntry is the bucket of one unknown name as read, for its
// compare-and-set write.
type unknownEntry struct {
	name, key string
	bucket    unknownBucket
	revision  int64
}

func unknownBucketKey(name string) string {
	h := fnv.New32a()
	h.Write([]byte(name))
	return strconv.FormatUint(uint64(h.Sum32()%unknownBuckets), 10)
}

// getUnknownFailures reads the failure counts of a name that is not a user.
func (s *Server) getUnknownFailures(ctx context.Context, name string) (*credential, *unknownEntry, error) {
	e := &unknownEntry{name: name, key: unknownBucketKey(name)}
	item, err := s.db.Get(ctx, unknownLoginKind, e.key)
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		return nil, nil, err
	default:
		// An unreadable bucket starts over: it only counted guesses.
		_ = json.Unmarshal(item.Data, &e.bucket)
		e.revision = item.Revision
	}
	c := &credential{}
	if old := e.bucket.Names[name]; old != nil {
		*c = *old
	}
	return c, e, nil
}

// op is the compare-and-set write of the bucket with name's counts c.
func (e *unknownEntry) op(c *credential, now time.Time) (store.Op, error) {
	if e.bucket.Names == nil {
		e.bucket.Names = map[string]*credential{}
	}
	e.bucket.Names[e.name] = &credential{Failures: c.Failures, LockedUntil: c.LockedUntil, Sources: c.Sources}
	for len(e.bucket.Names) > unknownPerBucket {
		delete(e.bucket.Names, oldestUnknown(e.bucket.Names, e.name, now))
	}
	data, err := json.Marshal(&e.bucket)
	if err != nil {
		return store.Op{}, err
	}
	o := store.Op{Type: store.OpCreate, Item: store.Item{Kind: unknownLoginKind, Name: e.key, Data: data}}
	if e.revision != 0 {
		o.Type, o.ExpectRevision = store.OpUpdate, e.revision
	}
	return o, nil
}

// oldestUnknown is the name in names, other than keep, that failed least
// recently, an unlocked one before any locked one.
func oldestUnknown(names map[string]*credential, keep string, now time.Time) string {
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

// forgetIdleUnknownLogins drops the counts of unknown names that are not
// locked and saw no failure for unknownForget, and buckets left empty.
func (s *Server) forgetIdleUnknownLogins(ctx context.Context) {
	items, err := s.db.List(ctx, unknownLoginKind)
	if err != nil {
		s.log.Warn("listing failed logins of unknown names", "error", err)
		return
	}
	now := s.clock()
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
		o := store.Op{Type: store.OpDelete, Item: store.Item{Kind: unknownLoginKind, Name: it.Name}, ExpectRevision: it.Revision}
		if kept > 0 {
			data, err := json.Marshal(&b)
			if err != nil {
				continue
			}
			o.Type, o.Item.Data = store.OpUpdate, data
		}
		_, err := s.db.Apply(ctx, o)
		if err != nil && !errors.Is(err, store.ErrConflict) && !errors.Is(err, store.ErrNotFound) {
			s.log.Warn("forgetting failed logins of unknown names", "error", err)
			return
		}
	}
}

// idleUnknown says whether c is unlocked everywhere and its last failure
// older than unknownForget.
func idleUnknown(c *credential, now time.Time) bool {
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

// loginDenied audits a refused login with its reason and answers msg.
func (s *Server) loginDenied(ctx context.Context, user, reason string, code codes.Code, msg string) error {
	c := callerFrom(ctx)
	actor := user
	if actor == "" {
		actor = "anonymous"
	}
	s.recordDenial(ctx, audit.Event{Type: audit.TypeLoginDenied, Actor: actor, RemoteAddr: c.RemoteAddr, Reason: reason})
	return status.Error(code, msg)
}

// lockedDenied is the answer to an attempt while the user is locked, for
// its source or for everyone: the same for known and unknown names.
func (s *Server) lockedDenied(ctx context.Context, name, source string, until time.Time, everyone bool, note string) error {
	at := until.UTC().Format(time.RFC3339)
	reason := "user locked for " + source + " until " + at
	if everyone {
		reason = "user locked for everyone until " + at
	}
	return s.loginDenied(ctx, name, reason+note, codes.PermissionDenied,
		fmt.Sprintf("login refused: too many failed attempts; try again after %s, or ask an admin to reset the user (widctl user reset %s)", at, name))
}

// validateLogin checks a login request's fields before anything is looked
// up or hashed. It returns the user's public key, or the reason for the
// audit log and the caller's error.
func validateLogin(req *authv1.LoginRequest) (crypto.PublicKey, string, error) {
	if err := resource.ValidateName(req.User); err != nil {
		return nil, "invalid user name", status.Error(codes.InvalidArgument, "the user name is not valid: "+err.Error())
	}
	if req.Password == "" {
		return nil, "no password given", status.Error(codes.InvalidArgument, "a password is required")
	}
	if len(req.Password) > maxPasswordLength {
		return nil, "password too long", status.Error(codes.InvalidArgument, fmt.Sprintf("the password is too long: use at most %d bytes", maxPasswordLength))
	}
	if req.TtlSeconds < 0 {
		return nil, "negative TTL", status.Error(codes.InvalidArgument, "the login TTL must be positive")
	}
	pub, err := issuer.ParseCSR(req.Csr)
	if err != nil {
		return nil, "bad CSR: " + err.Error(), status.Error(codes.InvalidArgument, err.Error())
	}
	return pub, "", nil
}

// Login checks a user's password, or invite and new password, and signs a
// user certificate for the CSR's key.
func (s *Server) Login(ctx context.Context, req *authv1.LoginRequest) (*authv1.LoginResponse, error) {
	name := req.User
	pub, reason, err := validateLogin(req)
	if err != nil {
		actor := name
		if reason == "invalid user name" {
			actor = ""
		}
		st, _ := status.FromError(err)
		return nil, s.loginDenied(ctx, actor, reason, st.Code(), st.Message())
	}
	ttl := time.Duration(req.TtlSeconds) * time.Second
	source := loginSource(callerFrom(ctx).RemoteAddr)
	release, err := s.admitLogin(ctx, name, source)
	if err != nil {
		return nil, err
	}
	defer release()
	now := s.clock()

	u, uerr := s.res.user(ctx, name)
	var cred *credential
	known := uerr == nil
	if known {
		cred, err = s.getCredential(ctx, name)
		switch {
		case errors.Is(err, store.ErrNotFound):
			// A user made with widctl create has no password yet.
			cred = &credential{}
		case err != nil:
			return nil, storeError("user/"+name, err)
		}
	} else if !errors.Is(uerr, store.ErrNotFound) {
		return nil, storeError("user/"+name, uerr)
	} else if cred, _, err = s.getUnknownFailures(ctx, name); err != nil {
		return nil, storeError("user/"+name, err)
	}

	if until, everyone := cred.lockedUntil(source, now); !until.IsZero() {
		checkPassword(dummyHash(), req.Password) // the same time as any other answer
		return nil, s.lockedDenied(ctx, name, source, until, everyone, "")
	}

	// Every answer below a valid request pays exactly one argon2id
	// computation, right or wrong, known user or not: hashed counts its time
	// for the debug log (the login figures separate it from the rest).
	var hashed time.Duration
	argon := func(f func()) {
		start := time.Now()
		f()
		hashed += time.Since(start)
	}
	var (
		setHash    string // a new password hash, after an invite
		usedInvite bool
		totpStep   int64 // the accepted TOTP code's step, 0 without one
	)
	switch {
	case !known:
		argon(func() { checkPassword(dummyHash(), req.Password) })
		reason = "unknown user"
	case req.Invite != "":
		if cred.InviteHash == "" || subtle.ConstantTimeCompare([]byte(cred.InviteHash), []byte(inviteHash(req.Invite))) != 1 {
			argon(func() { checkPassword(dummyHash(), req.Password) })
			reason = "wrong invite"
			break
		}
		// Only the invite's holder gets past here: the answers may be
		// specific, and the one argon2id computation is the new password's
		// hash (checking a dummy hash first, as this did, doubled the cost
		// of a first login and hid nothing from the invite's holder).
		if cred.InviteUsed {
			return nil, s.loginDenied(ctx, name, "invite already used", codes.PermissionDenied,
				"the invite was already used: log in with your password (without --invite), or ask an admin for a new invite (widctl user reset "+name+")")
		}
		if !now.Before(cred.InviteExpires) {
			exp := cred.InviteExpires.UTC().Format(time.RFC3339)
			return nil, s.loginDenied(ctx, name, "invite expired at "+exp, codes.PermissionDenied,
				fmt.Sprintf("the invite expired at %s: ask an admin for a new one (widctl user reset %s)", exp, name))
		}
		if err := CheckPasswordPolicy(name, req.Password); err != nil {
			return nil, s.loginDenied(ctx, name, "new password refused: "+err.Error(), codes.InvalidArgument, err.Error())
		}
		argon(func() { setHash, err = hashPassword(req.Password) })
		if err != nil {
			return nil, status.Errorf(codes.Internal, "hashing the password: %v", err)
		}
		usedInvite = true
	case cred.PasswordHash == "":
		argon(func() { checkPassword(dummyHash(), req.Password) })
		reason = "no password set (invite not used yet)"
	default:
		var ok bool
		argon(func() { ok, err = checkPassword(cred.PasswordHash, req.Password) })
		switch {
		case err != nil:
			s.log.Error("checking a password", "user", name, "error", err)
			reason = "stored password hash unusable: " + err.Error()
		case !ok:
			reason = "wrong password"
		case cred.totp != "":
			// Checked only after the password, and failing alike, so that
			// the answer never says the password was right.
			step, ok := checkTOTP(cred.totp, req.TotpCode, now)
			switch {
			case req.TotpCode == "":
				reason = "no TOTP code given"
			case !ok:
				reason = "wrong TOTP code"
			case step <= cred.TOTPLastStep:
				reason = "TOTP code already used"
			default:
				totpStep = step
			}
		}
	}

	if reason != "" {
		s.log.Debug("login refused", "user", name, "argon2id", hashed)
		return nil, s.loginFailed(ctx, name, known, source, reason)
	}

	roles, err := s.res.roles(ctx, u.Spec.Roles)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "loading the roles of user %q: %v", name, err)
	}
	ttl = sessionTTL(ttl, roles)
	if err := s.loginSucceeded(ctx, name, source, cred, setHash, usedInvite, totpStep); err != nil {
		return nil, err
	}
	gen, err := s.res.generation(ctx, KindUser, name)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "loading the generation of user %q: %v", name, err)
	}
	cert, err := s.issuer.SignInternalCert(issuer.InternalParams{CA: ca.TypeUser, PublicKey: pub, TTL: ttl, Kind: KindUser, Name: name, Generation: gen})
	if err != nil {
		return nil, status.Errorf(codes.Internal, "issuing the user certificate: %v", err)
	}
	c := callerFrom(ctx)
	details := map[string]string{"method": "password"}
	if usedInvite {
		details["method"] = "invite"
	}
	if totpStep != 0 {
		details["method"] = "password+totp"
	}
	if _, err := s.audit.Emit(ctx, audit.Event{
		Type: audit.TypeLogin, Actor: name, Host: s.host, RemoteAddr: c.RemoteAddr, Outcome: audit.OutcomeSuccess,
		Serial: serialHex(cert.SerialNumber.Bytes()), TTLSeconds: int64(cert.NotAfter.Sub(now) / time.Second), Details: details,
	}); err != nil {
		return nil, status.Errorf(codes.Unavailable, "the login could not be audited: %v", err)
	}
	s.log.Debug("login", "user", name, "method", details["method"], "argon2id", hashed)
	resp := &authv1.LoginResponse{
		User: name, CertChain: [][]byte{cert.Raw}, ExpiresAt: timestamppb.New(cert.NotAfter), TrustDomain: s.td.Name(), Roles: u.Spec.Roles,
	}
	for _, hc := range s.cas.Authorities(ca.TypeHost) {
		resp.HostCa = append(resp.HostCa, hc.Raw)
	}
	if usedInvite && cred.totp != "" {
		resp.TotpUri = totpURI(s.td.Name(), name, cred.totp)
	}
	return resp, nil
}

// maxCredentialRetries bounds the compare-and-set retries of one login's
// credential write. Writes for one user are serialized in this process, so
// only other replicas' writes can make it retry, and each retry means one
// of theirs counted: a burst of guesses spread over replicas retries about
// as often as it has guesses on the others.
const maxCredentialRetries = 100

// credentialLocks serializes credential writes per user within this
// process (striped by name), so that parallel attempts each count instead
// of losing compare-and-set races.
type credentialLocks [64]sync.Mutex

func (l *credentialLocks) lock(name string) func() {
	h := fnv.New32a()
	h.Write([]byte(name))
	m := &l[h.Sum32()%uint32(len(l))]
	m.Lock()
	return m.Unlock
}

// loginFailed counts a wrong attempt atomically (every parallel attempt
// counts, as if they had come one after another), audits it, and answers
// the one answer of every failed login. An attempt that finds the user
// locked by attempts that finished first is answered and audited as locked,
// not counted: exactly what it would have met had it come after them.
func (s *Server) loginFailed(ctx context.Context, name string, known bool, source, reason string) error {
	defer s.credLocks.lock(name)()
	return s.countFailure(ctx, name, known, source, reason)
}

// countFailure is loginFailed with the user's credential lock held.
func (s *Server) countFailure(ctx context.Context, name string, known bool, source, reason string) error {
	for range maxCredentialRetries {
		now := s.clock()
		var (
			until    time.Time
			everyone bool
			what     string
			cred     *credential
			unknown  *unknownEntry
			err      error
		)
		if known {
			cred, err = s.getCredential(ctx, name)
			if errors.Is(err, store.ErrNotFound) {
				cred, err = &credential{}, nil
			}
		} else {
			cred, unknown, err = s.getUnknownFailures(ctx, name)
		}
		if err != nil {
			return storeError("user/"+name, err)
		}
		if until, everyone = cred.lockedUntil(source, now); until.IsZero() {
			what = cred.fail(source, now)
			var o store.Op
			if known {
				t := store.OpUpdate
				if cred.revision == 0 {
					t = store.OpCreate
				}
				o, err = s.credentialOp(t, name, cred)
			} else {
				o, err = unknown.op(cred, now)
			}
			if err != nil {
				return status.Error(codes.Internal, err.Error())
			}
			if _, err := s.db.Apply(ctx, o); err != nil {
				if errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrAlreadyExists) || errors.Is(err, store.ErrNotFound) {
					continue
				}
				return storeError("user/"+name, err)
			}
		}
		if !until.IsZero() {
			return s.lockedDenied(ctx, name, source, until, everyone, " (reached while this attempt was checked: "+reason+")")
		}
		return s.loginDenied(ctx, name, reason+" ("+what+")", codes.Unauthenticated, errLoginFailed)
	}
	// Only a store that keeps changing under us gets here.
	return s.loginDenied(ctx, name, reason+" (not counted: the credential kept changing)", codes.Unavailable, "the auth service is busy: try again")
}

// loginSucceeded records a successful login: the new password of an
// invite, the TOTP step used, and no more failures. An invite or TOTP code
// used by a concurrent login is refused here, so each is good once.
func (s *Server) loginSucceeded(ctx context.Context, name, source string, read *credential, setHash string, usedInvite bool, totpStep int64) error {
	if !usedInvite && totpStep == 0 && read.Failures == 0 && read.LockedUntil.IsZero() && len(read.Sources) == 0 {
		return nil
	}
	defer s.credLocks.lock(name)()
	for range maxCredentialRetries {
		cred, err := s.getCredential(ctx, name)
		switch {
		case errors.Is(err, store.ErrNotFound):
			cred = &credential{}
		case err != nil:
			return storeError("user/"+name, err)
		}
		switch {
		case usedInvite && (cred.InviteUsed || cred.InviteHash != read.InviteHash):
			return s.loginDenied(ctx, name, "invite used concurrently", codes.PermissionDenied, "the invite was already used: ask an admin for a new one")
		case !usedInvite && cred.PasswordHash != read.PasswordHash:
			return s.countFailure(ctx, name, true, source, "password changed during the login")
		case totpStep != 0 && totpStep <= cred.TOTPLastStep:
			return s.countFailure(ctx, name, true, source, "TOTP code already used")
		}
		if until, everyone := cred.lockedUntil(source, s.clock()); !until.IsZero() && !usedInvite {
			return s.lockedDenied(ctx, name, source, until, everyone, " (reached while this attempt was checked: right password)")
		}
		if usedInvite {
			cred.PasswordHash, cred.InviteUsed = setHash, true
		}
		if totpStep != 0 {
			cred.TOTPLastStep = totpStep
		}
		cred.succeeded()
		t := store.OpUpdate
		if cred.revision == 0 {
			t = store.OpCreate
		}
		o, err := s.credentialOp(t, name, cred)
		if err != nil {
			return status.Error(codes.Internal, err.Error())
		}
		if _, err := s.db.Apply(ctx, o); err != nil {
			if errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrAlreadyExists) {
				continue
			}
			return storeError("user/"+name, err)
		}
		return nil
	}
	return status.Error(codes.Unavailable, "the auth service is busy: try again")
}

// TOTP settings: RFC 6238's defaults, which every authenticator app reads.
const (
	totpPeriod = 30
	totpSkew   = 1
)

// checkTOTP reports whether code is valid at now (one period either side)
// and the time step it belongs to.
func checkTOTP(secret, code string, now time.Time) (int64, bool) {
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

func totpURI(td, user, secret string) string {
	v := url.Values{}
	v.Set("secret", secret)
	v.Set("issuer", "wid "+td)
	v.Set("algorithm", "SHA1")
	v.Set("digits", "6")
	v.Set("period", strconv.Itoa(totpPeriod))
	return "otpauth://totp/" + url.PathEscape("wid "+td+":"+user) + "?" + v.Encode()
}

// sessionTTL is the wanted TTL (or the default), capped by the smallest
// max_session_ttl among the roles, or by MaxSessionTTL when none sets one.
func sessionTTL(want time.Duration, roles []*resource.Role) time.Duration {
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
