package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
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
	// MaxLoginFailures wrong attempts in a row lock a user for LockoutWindow.
	MaxLoginFailures = 5
	// LockoutWindow is how long a locked user stays locked.
	LockoutWindow = 15 * time.Minute
)

// credentialKind is the store kind of users' secrets. They are kept apart
// from the user resources so that no resource read or list can return them
// and a resource update cannot drop them.
const credentialKind = "user_credential"

// errLoginFailed is the one answer to a wrong user, password or invite, so
// that a caller cannot learn which users exist.
const errLoginFailed = "login failed: the user name, password, invite or TOTP code is wrong (after 5 failures the user is locked for 15 minutes)"

// credential is a user's login secrets and failure count.
type credential struct {
	// PasswordHash is an argon2id PHC string; "" until the invite is used.
	PasswordHash string `json:"password_hash,omitempty"`
	// InviteHash is the hex sha256 of the invite secret.
	InviteHash    string    `json:"invite_hash,omitempty"`
	InviteExpires time.Time `json:"invite_expires,omitzero"`
	InviteUsed    bool      `json:"invite_used,omitempty"`
	// TOTPSecret is the base32 RFC 6238 secret; "" without a second factor.
	TOTPSecret string `json:"totp_secret,omitempty"`
	// TOTPLastStep is the time step of the last accepted code: a code is
	// good once.
	TOTPLastStep int64     `json:"totp_last_step,omitempty"`
	Failures     int       `json:"failures,omitempty"`
	LockedUntil  time.Time `json:"locked_until,omitzero"`

	revision int64
}

func (s *Server) getCredential(ctx context.Context, user string) (*credential, error) {
	item, err := s.db.Get(ctx, credentialKind, user)
	if err != nil {
		return nil, err
	}
	var c credential
	if err := json.Unmarshal(item.Data, &c); err != nil {
		return nil, fmt.Errorf("decoding the credential of user %q: %w", user, err)
	}
	c.revision = item.Revision
	return &c, nil
}

func credentialOp(t store.OpType, user string, c *credential) (store.Op, error) {
	data, err := json.Marshal(c)
	if err != nil {
		return store.Op{}, err
	}
	o := store.Op{Type: t, Item: store.Item{Kind: credentialKind, Name: user, Data: data}}
	if t == store.OpUpdate {
		o.ExpectRevision = c.revision
	}
	return o, nil
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
	credOp, err := credentialOp(store.OpUpsert, u.Metadata.Name, cred)
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
		cred.TOTPSecret = key.Secret()
	}
	return secret, cred, nil
}

// ResetUser gives an existing user a new invite in place of the password,
// second factor and lockout.
func (s *Server) ResetUser(ctx context.Context, req *authv1.ResetUserRequest) (*authv1.ResetUserResponse, error) {
	if err := s.authorize(ctx, resource.KindUser, verbUpdate); err != nil {
		return nil, err
	}
	if _, err := s.res.user(ctx, req.Name); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, status.Errorf(codes.NotFound, "user %q does not exist: add it with widctl user add %s --roles ROLE", req.Name, req.Name)
		}
		return nil, storeError("user/"+req.Name, err)
	}
	secret, cred, err := s.newInvite(req.Name, time.Duration(req.InviteTtlSeconds)*time.Second, req.Totp)
	if err != nil {
		return nil, err
	}
	o, err := credentialOp(store.OpUpsert, req.Name, cred)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	if _, err := s.db.Apply(ctx, o); err != nil {
		return nil, storeError("user/"+req.Name, err)
	}
	if err := s.resourceEvent(ctx, audit.TypeResourceUpdated, "user/"+req.Name, map[string]string{
		"change": "credentials reset", "invite_expires": cred.InviteExpires.Format(time.RFC3339), "totp": strconv.FormatBool(req.Totp),
	}); err != nil {
		return nil, err
	}
	return &authv1.ResetUserResponse{Invite: secret, InviteExpiresAt: timestamppb.New(cred.InviteExpires)}, nil
}

// unknownFailures counts failed logins of names with no credential, so that
// they lock like real users do and a lockout tells nothing about existence.
// It lives in memory only: there is nothing to protect behind these names.
type unknownFailures struct {
	mu sync.Mutex
	m  map[string]*credential
}

const maxUnknownFailures = 10000

func (u *unknownFailures) get(name string) *credential {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.m == nil {
		u.m = map[string]*credential{}
	}
	c, ok := u.m[name]
	if !ok {
		if len(u.m) >= maxUnknownFailures {
			clear(u.m)
		}
		c = &credential{}
		u.m[name] = c
	}
	cp := *c
	return &cp
}

func (u *unknownFailures) put(name string, c *credential) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.m != nil {
		u.m[name] = c
	}
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

// Login checks a user's password, or invite and new password, and signs a
// user certificate for the CSR's key.
func (s *Server) Login(ctx context.Context, req *authv1.LoginRequest) (*authv1.LoginResponse, error) {
	name := req.User
	if err := resource.ValidateName(name); err != nil {
		return nil, s.loginDenied(ctx, "", "invalid user name", codes.InvalidArgument, "the user name is not valid: "+err.Error())
	}
	if req.Password == "" {
		return nil, s.loginDenied(ctx, name, "no password given", codes.InvalidArgument, "a password is required")
	}
	if len(req.Password) > maxPasswordLength {
		return nil, s.loginDenied(ctx, name, "password too long", codes.InvalidArgument, fmt.Sprintf("the password is too long: use at most %d bytes", maxPasswordLength))
	}
	pub, err := issuer.ParseCSR(req.Csr)
	if err != nil {
		return nil, s.loginDenied(ctx, name, "bad CSR: "+err.Error(), codes.InvalidArgument, err.Error())
	}
	ttl := time.Duration(req.TtlSeconds) * time.Second
	if ttl < 0 {
		return nil, s.loginDenied(ctx, name, "negative TTL", codes.InvalidArgument, "the login TTL must be positive")
	}
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
	} else {
		cred = s.unknown.get(name)
	}

	if now.Before(cred.LockedUntil) {
		checkPassword(dummyHash(), req.Password) // the same time as any other answer
		return nil, s.loginDenied(ctx, name, "user locked until "+cred.LockedUntil.UTC().Format(time.RFC3339), codes.PermissionDenied,
			fmt.Sprintf("login refused: too many failed attempts; try again after %s, or ask an admin to reset the user (widctl user reset %s)", cred.LockedUntil.UTC().Format(time.RFC3339), name))
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
		reason     string // why it failed, for the audit log
		setHash    string // a new password hash, after an invite
		usedInvite bool
		totpUsed   bool
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
		case cred.TOTPSecret != "":
			// Checked only after the password, and failing alike, so that
			// the answer never says the password was right.
			step, ok := checkTOTP(cred.TOTPSecret, req.TotpCode, now)
			switch {
			case req.TotpCode == "":
				reason = "no TOTP code given"
			case !ok:
				reason = "wrong TOTP code"
			case step <= cred.TOTPLastStep:
				reason = "TOTP code already used"
			default:
				cred.TOTPLastStep = step
				totpUsed = true
			}
		}
	}

	if reason != "" {
		cred.Failures++
		reason += fmt.Sprintf(" (failure %d of %d)", cred.Failures, MaxLoginFailures)
		if cred.Failures >= MaxLoginFailures {
			cred.Failures = 0
			cred.LockedUntil = now.Add(LockoutWindow)
			reason += "; locked until " + cred.LockedUntil.UTC().Format(time.RFC3339)
		}
		s.log.Debug("login refused", "user", name, "argon2id", hashed)
		if err := s.putCredential(ctx, name, known, cred); err != nil {
			return nil, err
		}
		return nil, s.loginDenied(ctx, name, reason, codes.Unauthenticated, errLoginFailed)
	}

	roles, err := s.res.roles(ctx, u.Spec.Roles)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "loading the roles of user %q: %v", name, err)
	}
	ttl = sessionTTL(ttl, roles)
	cert, err := s.issuer.SignInternalCert(issuer.InternalParams{CA: ca.TypeUser, PublicKey: pub, TTL: ttl, Kind: KindUser, Name: name})
	if err != nil {
		return nil, status.Errorf(codes.Internal, "issuing the user certificate: %v", err)
	}
	if usedInvite || totpUsed || cred.Failures != 0 || !cred.LockedUntil.IsZero() {
		if usedInvite {
			cred.PasswordHash, cred.InviteUsed = setHash, true
		}
		cred.Failures, cred.LockedUntil = 0, time.Time{}
		if err := s.putCredential(ctx, name, true, cred); err != nil {
			if usedInvite && status.Code(err) == codes.Aborted {
				return nil, s.loginDenied(ctx, name, "invite used concurrently", codes.PermissionDenied, "the invite was already used: ask an admin for a new one")
			}
			return nil, err
		}
	}
	c := callerFrom(ctx)
	details := map[string]string{"method": "password"}
	if usedInvite {
		details["method"] = "invite"
	}
	if totpUsed {
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
	if usedInvite && cred.TOTPSecret != "" {
		resp.TotpUri = totpURI(s.td.Name(), name, cred.TOTPSecret)
	}
	return resp, nil
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

// putCredential stores a known user's credential (compare-and-set) or keeps
// an unknown name's failures in memory.
func (s *Server) putCredential(ctx context.Context, name string, known bool, cred *credential) error {
	if !known {
		s.unknown.put(name, cred)
		return nil
	}
	t := store.OpUpdate
	if cred.revision == 0 {
		t = store.OpCreate
	}
	o, err := credentialOp(t, name, cred)
	if err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	if _, err := s.db.Apply(ctx, o); err != nil {
		if errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrAlreadyExists) {
			return status.Error(codes.Aborted, "another login for this user happened at the same time: try again")
		}
		return storeError("user/"+name, err)
	}
	return nil
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
