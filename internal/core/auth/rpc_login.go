package auth

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/pquerna/otp/totp"
	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/audit"
	"github.com/wid-project/wid/internal/core/ca"
	"github.com/wid-project/wid/internal/core/issuer"
	"github.com/wid-project/wid/internal/core/login"
	"github.com/wid-project/wid/internal/core/resource"
	"github.com/wid-project/wid/internal/core/store"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// addUserStatus fills in the lock status of v if it is a user. Only the
// counts are decoded: the TOTP secret stays sealed.
func (s *Server) addUserStatus(ctx context.Context, v resource.Resource) error {
	u, ok := v.(*resource.User)
	if !ok {
		return nil
	}
	u.Status = nil
	item, err := s.db.Get(ctx, login.CredentialKind, u.Metadata.Name)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return storeError("user/"+u.Metadata.Name, err)
	}
	var c login.Credential
	if err := json.Unmarshal(item.Data, &c); err != nil {
		// A damaged credential refuses logins on its own; the user
		// document is still worth showing.
		s.log.Warn("reading a user's lock status", "user", u.Metadata.Name, "error", err)
		return nil
	}
	u.Status = c.Status(s.clock())
	return nil
}

func (s *Server) getCredential(ctx context.Context, user string) (*login.Credential, error) {
	item, err := s.db.Get(ctx, login.CredentialKind, user)
	if err != nil {
		return nil, err
	}
	return login.Decode(user, item, s.kek)
}

// credentialOp is the store write of c, its TOTP secret sealed.
func (s *Server) credentialOp(t store.OpType, user string, c *login.Credential) (store.Op, error) {
	return login.Op(t, user, c, s.kek)
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
		return nil, precondition(err)
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
func (s *Server) newInvite(user string, ttl time.Duration, withTOTP bool) (string, *login.Credential, error) {
	if ttl == 0 {
		ttl = login.DefaultInviteTTL
	}
	if ttl < 0 || ttl > login.MaxInviteTTL {
		return "", nil, status.Errorf(codes.InvalidArgument, "invite TTL %s is out of range: use up to %s", resource.FormatDuration(ttl), resource.FormatDuration(login.MaxInviteTTL))
	}
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", nil, status.Errorf(codes.Internal, "generating an invite: %v", err)
	}
	secret := hex.EncodeToString(raw[:])
	cred := &login.Credential{InviteHash: login.InviteHash(secret), InviteExpires: s.clock().Add(ttl).UTC().Truncate(time.Second)}
	if withTOTP {
		key, err := totp.Generate(totp.GenerateOpts{Issuer: "wid " + s.td.Name(), AccountName: user})
		if err != nil {
			return "", nil, status.Errorf(codes.Internal, "generating a TOTP secret: %v", err)
		}
		cred.TOTP = key.Secret()
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
			return nil, refusal(codes.NotFound, fmt.Sprintf("user %q does not exist", req.Name), authv1.NextCreateUser, authv1.ErrorMetaKind, resource.KindUser, authv1.ErrorMetaName, req.Name)
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
	// The user's current certificates are revoked in the same
	// transaction: a login from before the reset is refused saying so.
	revoked, err := s.principalRevocations(ctx, KindUser, req.Name)
	if err != nil {
		return nil, storeError("the certificates of user/"+req.Name, err)
	}
	rops, err := revoked.ops(s.clock(), "", causeReset)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	if _, err := s.res.apply(ctx, append([]store.Op{o, g}, rops...)...); err != nil {
		return nil, storeError("user/"+req.Name, err)
	}
	if err := s.resourceEvent(ctx, audit.TypeResourceUpdated, "user/"+req.Name, map[string]string{
		"change": "credentials reset", "invite_expires": cred.InviteExpires.Format(time.RFC3339), "totp": strconv.FormatBool(req.Totp),
	}); err != nil {
		return nil, err
	}
	if err := s.auditRevocations(ctx, revoked, "the reset of user "+req.Name); err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	return &authv1.ResetUserResponse{Invite: secret, InviteExpiresAt: timestamppb.New(cred.InviteExpires)}, nil
}

// loginDenied audits a refused login with its reason and answers msg.
//
// next, when given, is the next step (an authv1.Next* constant, then
// metadata keys and values) for the client to word after msg.
func (s *Server) loginDenied(ctx context.Context, user, reason string, code codes.Code, msg string, next ...string) error {
	c := callerFrom(ctx)
	actor := user
	if actor == "" {
		actor = "anonymous"
	}
	s.recordDenial(ctx, audit.Event{Type: audit.TypeLoginDenied, Actor: actor, RemoteAddr: c.RemoteAddr, Reason: reason})
	if len(next) > 0 {
		return refusal(code, msg, next[0], next[1:]...)
	}
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
		"login refused: too many failed attempts; try again after "+at, authv1.NextResetUser, authv1.ErrorMetaName, name)
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
	if len(req.Password) > login.MaxPasswordLength {
		return nil, "password too long", status.Error(codes.InvalidArgument, fmt.Sprintf("the password is too long: use at most %d bytes", login.MaxPasswordLength))
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
	source := login.Source(callerFrom(ctx).RemoteAddr)
	release, err := s.admitLogin(ctx, name, source)
	if err != nil {
		return nil, err
	}
	defer release()
	now := s.clock()

	u, uerr := s.res.user(ctx, name)
	var cred *login.Credential
	known := uerr == nil
	if known {
		cred, err = s.getCredential(ctx, name)
		switch {
		case errors.Is(err, store.ErrNotFound):
			// A user made with widctl create has no password yet.
			cred = &login.Credential{}
		case err != nil:
			return nil, storeError("user/"+name, err)
		}
	} else if !errors.Is(uerr, store.ErrNotFound) {
		return nil, storeError("user/"+name, uerr)
	} else if cred, _, err = login.UnknownFailures(ctx, s.db, name); err != nil {
		return nil, storeError("user/"+name, err)
	}

	if until, everyone := cred.Locked(source, now); !until.IsZero() {
		login.CheckPassword(login.DummyHash(), req.Password) // the same time as any other answer
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
		argon(func() { login.CheckPassword(login.DummyHash(), req.Password) })
		reason = "unknown user"
	case req.Invite != "":
		if cred.InviteHash == "" || subtle.ConstantTimeCompare([]byte(cred.InviteHash), []byte(login.InviteHash(req.Invite))) != 1 {
			argon(func() { login.CheckPassword(login.DummyHash(), req.Password) })
			reason = "wrong invite"
			break
		}
		// Only the invite's holder gets past here: the answers may be
		// specific, and the one argon2id computation is the new password's
		// hash (checking a dummy hash first, as this did, doubled the cost
		// of a first login and hid nothing from the invite's holder).
		if cred.InviteUsed {
			return nil, s.loginDenied(ctx, name, "invite already used", codes.PermissionDenied,
				"the invite was already used", authv1.NextInviteUsed, authv1.ErrorMetaName, name)
		}
		if !now.Before(cred.InviteExpires) {
			exp := cred.InviteExpires.UTC().Format(time.RFC3339)
			return nil, s.loginDenied(ctx, name, "invite expired at "+exp, codes.PermissionDenied,
				"the invite expired at "+exp, authv1.NextNewInvite, authv1.ErrorMetaName, name)
		}
		if err := login.CheckPasswordPolicy(name, req.Password); err != nil {
			return nil, s.loginDenied(ctx, name, "new password refused: "+err.Error(), codes.InvalidArgument, err.Error())
		}
		argon(func() { setHash, err = login.HashPassword(req.Password) })
		if err != nil {
			return nil, status.Errorf(codes.Internal, "hashing the password: %v", err)
		}
		usedInvite = true
	case cred.PasswordHash == "":
		argon(func() { login.CheckPassword(login.DummyHash(), req.Password) })
		reason = "no password set (invite not used yet)"
	default:
		var ok bool
		argon(func() { ok, err = login.CheckPassword(cred.PasswordHash, req.Password) })
		switch {
		case err != nil:
			s.log.Error("checking a password", "user", name, "error", err)
			reason = "stored password hash unusable: " + err.Error()
		case !ok:
			reason = "wrong password"
		case cred.TOTP != "":
			// Checked only after the password, and failing alike, so that
			// the answer never says the password was right.
			step, ok := login.CheckTOTP(cred.TOTP, req.TotpCode, now)
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

	// Only once the password (and TOTP) passed: a lock's refusal says
	// who is locked, which a guesser must not learn.
	if err := s.refuseLocked(ctx, &caller{Kind: KindUser, Name: name, RemoteAddr: callerFrom(ctx).RemoteAddr}, "/wid.auth.v1.AuthService/Login"); err != nil {
		return nil, err
	}
	roles, err := s.res.roles(ctx, u.Spec.Roles)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "loading the roles of user %q: %v", name, err)
	}
	ttl = login.SessionTTL(ttl, roles)
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
	if usedInvite && cred.TOTP != "" {
		resp.TotpUri = login.TOTPURI(s.td.Name(), name, cred.TOTP)
	}
	return resp, nil
}

// maxCredentialRetries bounds the compare-and-set retries of one login's
// credential write. Writes for one user are serialized in this process, so
// only other replicas' writes can make it retry, and each retry means one
// of theirs counted: a burst of guesses spread over replicas retries about
// as often as it has guesses on the others.
const maxCredentialRetries = 100

// loginFailed counts a wrong attempt atomically (every parallel attempt
// counts, as if they had come one after another), audits it, and answers
// the one answer of every failed login. An attempt that finds the user
// locked by attempts that finished first is answered and audited as locked,
// not counted: exactly what it would have met had it come after them.
func (s *Server) loginFailed(ctx context.Context, name string, known bool, source, reason string) error {
	defer s.credLocks.Lock(name)()
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
			cred     *login.Credential
			unknown  *login.UnknownEntry
			err      error
		)
		if known {
			cred, err = s.getCredential(ctx, name)
			if errors.Is(err, store.ErrNotFound) {
				cred, err = &login.Credential{}, nil
			}
		} else {
			cred, unknown, err = login.UnknownFailures(ctx, s.db, name)
		}
		if err != nil {
			return storeError("user/"+name, err)
		}
		if until, everyone = cred.Locked(source, now); until.IsZero() {
			what = cred.Fail(source, now)
			var o store.Op
			if known {
				t := store.OpUpdate
				if cred.Revision == 0 {
					t = store.OpCreate
				}
				o, err = s.credentialOp(t, name, cred)
			} else {
				o, err = unknown.Op(cred, now)
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
		return s.loginDenied(ctx, name, reason+" ("+what+")", codes.Unauthenticated, login.FailedMessage)
	}
	// Only a store that keeps changing under us gets here.
	return s.loginDenied(ctx, name, reason+" (not counted: the credential kept changing)", codes.Unavailable, "the auth service is busy: try again")
}

// loginSucceeded records a successful login: the new password of an
// invite, the TOTP step used, and no more failures. An invite or TOTP code
// used by a concurrent login is refused here, so each is good once.
func (s *Server) loginSucceeded(ctx context.Context, name, source string, read *login.Credential, setHash string, usedInvite bool, totpStep int64) error {
	if !usedInvite && totpStep == 0 && read.Failures == 0 && read.LockedUntil.IsZero() && len(read.Sources) == 0 {
		return nil
	}
	defer s.credLocks.Lock(name)()
	for range maxCredentialRetries {
		cred, err := s.getCredential(ctx, name)
		switch {
		case errors.Is(err, store.ErrNotFound):
			cred = &login.Credential{}
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
		if until, everyone := cred.Locked(source, s.clock()); !until.IsZero() && !usedInvite {
			return s.lockedDenied(ctx, name, source, until, everyone, " (reached while this attempt was checked: right password)")
		}
		if usedInvite {
			cred.PasswordHash, cred.InviteUsed = setHash, true
		}
		if totpStep != 0 {
			cred.TOTPLastStep = totpStep
		}
		cred.Succeeded()
		t := store.OpUpdate
		if cred.Revision == 0 {
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

// admitLogin admits an attempt or answers ResourceExhausted with a retry
// hint, audited like every refused login.
func (s *Server) admitLogin(ctx context.Context, user, source string) (func(), error) {
	release, why := s.logins.Admit(source, user)
	if why == "" {
		return release, nil
	}
	c := callerFrom(ctx)
	s.recordDenial(ctx, audit.Event{Type: audit.TypeLoginDenied, Actor: user, RemoteAddr: c.RemoteAddr, Reason: why + " (not checked)"})
	st := status.New(codes.ResourceExhausted, "login refused: "+why+": try again in a few seconds")
	if d, err := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(login.RetryAfter)}); err == nil {
		st = d
	}
	return nil, st.Err()
}
