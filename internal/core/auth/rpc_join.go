package auth

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"math/big"
	"strconv"
	"time"

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
	// DefaultTokenTTL is how long a join token lives unless told otherwise.
	DefaultTokenTTL = time.Hour
	// MaxTokenTTL caps join token lifetimes: a join token is a bearer secret.
	MaxTokenTTL = 7 * 24 * time.Hour
	// BotCertTTL is the lifetime of a bot's certificate; agents renew at half.
	BotCertTTL = time.Hour
)

// newJoinToken makes a secret and its resource. Only the hash is stored; the
// name is a prefix of the hash, so the secret finds its resource directly.
func (s *Server) newJoinToken(bot string, ttl time.Duration, uses int, method string) (string, *resource.JoinToken, error) {
	if ttl == 0 {
		ttl = DefaultTokenTTL
	}
	if ttl < 0 || ttl > MaxTokenTTL {
		return "", nil, status.Errorf(codes.InvalidArgument, "token TTL %s is out of range: use up to %s", resource.FormatDuration(ttl), resource.FormatDuration(MaxTokenTTL))
	}
	if uses == 0 {
		uses = 1
	}
	if uses < 0 {
		return "", nil, status.Error(codes.InvalidArgument, "token uses must be at least 1")
	}
	switch method {
	case "":
		method = resource.JoinMethodToken
	case resource.JoinMethodKubernetes:
		return "", nil, refusal(codes.InvalidArgument, "a kubernetes join token has no secret", authv1.NextKubernetesTokenResource)
	case resource.JoinMethodX509Pop:
		return "", nil, refusal(codes.InvalidArgument, "an x509pop join token has no secret", authv1.NextX509PopTokenResource)
	}
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", nil, status.Errorf(codes.Internal, "generating a token: %v", err)
	}
	secret := hex.EncodeToString(raw[:])
	name, hash := tokenName(secret)
	t := &resource.JoinToken{
		Header: resource.Header{Kind: resource.KindJoinToken, Version: resource.V1, Metadata: resource.Metadata{Name: name}},
		Spec: resource.JoinTokenSpec{
			Bot: bot, Method: method, Uses: uses, Expires: s.clock().Add(ttl).UTC().Truncate(time.Second), SecretHash: hash,
		},
	}
	if err := t.Validate(); err != nil {
		return "", nil, status.Error(codes.InvalidArgument, err.Error())
	}
	return secret, t, nil
}

func tokenName(secret string) (name, hash string) {
	sum := sha256.Sum256([]byte(secret))
	hash = hex.EncodeToString(sum[:])
	return hash[:16], hash
}

func (s *Server) CreateBot(ctx context.Context, req *authv1.CreateBotRequest) (*authv1.CreateBotResponse, error) {
	if err := s.authorize(ctx, resource.KindBot, verbCreate); err != nil {
		return nil, err
	}
	if err := s.authorize(ctx, resource.KindJoinToken, verbCreate); err != nil {
		return nil, err
	}
	bot := &resource.Bot{
		Header: resource.Header{Kind: resource.KindBot, Version: resource.V1, Metadata: resource.Metadata{Name: req.Name, Labels: req.Labels}},
		Spec:   resource.BotSpec{Roles: req.Roles},
	}
	if err := bot.Validate(); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if err := s.res.checkRolesExist(ctx, bot, nil); err != nil {
		return nil, precondition(err)
	}
	if err := s.checkResourceGrantable(ctx, bot, nil, nil); err != nil {
		return nil, err
	}
	secret, tok, err := s.newJoinToken(req.Name, time.Duration(req.TokenTtlSeconds)*time.Second, 1, resource.JoinMethodToken)
	if err != nil {
		return nil, err
	}
	botOp, err := op(store.OpCreate, bot)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	tokOp, err := op(store.OpCreate, tok)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	revs, err := s.res.apply(ctx, botOp, tokOp)
	if err != nil {
		return nil, storeError(resource.Ref(bot), err)
	}
	bot.Metadata.Revision, tok.Metadata.Revision = revs[0], revs[1]
	if err := s.resourceEvent(ctx, audit.TypeResourceCreated, resource.Ref(bot), nil); err != nil {
		return nil, err
	}
	if err := s.resourceEvent(ctx, audit.TypeResourceCreated, resource.Ref(tok), map[string]string{"bot": bot.Metadata.Name}); err != nil {
		return nil, err
	}
	botDoc, _ := encode(bot)
	tokDoc, _ := encode(tok)
	return &authv1.CreateBotResponse{Bot: botDoc, Token: secret, JoinToken: tokDoc}, nil
}

func (s *Server) CreateJoinToken(ctx context.Context, req *authv1.CreateJoinTokenRequest) (*authv1.CreateJoinTokenResponse, error) {
	if err := s.authorize(ctx, resource.KindJoinToken, verbCreate); err != nil {
		return nil, err
	}
	if _, err := s.res.bot(ctx, req.Bot); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, refusal(codes.NotFound, fmt.Sprintf("bot %q does not exist", req.Bot), authv1.NextCreateBot, authv1.ErrorMetaKind, resource.KindBot, authv1.ErrorMetaName, req.Bot)
		}
		return nil, storeError("bot/"+req.Bot, err)
	}
	secret, tok, err := s.newJoinToken(req.Bot, time.Duration(req.TtlSeconds)*time.Second, int(req.Uses), req.Method)
	if err != nil {
		return nil, err
	}
	// A join token is the bot's SVIDs: only who could hold its roles may make one.
	if err := s.checkResourceGrantable(ctx, tok, nil, nil); err != nil {
		return nil, err
	}
	o, err := op(store.OpCreate, tok)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	revs, err := s.res.apply(ctx, o)
	if err != nil {
		return nil, storeError(resource.Ref(tok), err)
	}
	tok.Metadata.Revision = revs[0]
	if err := s.resourceEvent(ctx, audit.TypeResourceCreated, resource.Ref(tok), map[string]string{"bot": req.Bot}); err != nil {
		return nil, err
	}
	doc, _ := encode(tok)
	return &authv1.CreateJoinTokenResponse{Token: secret, JoinToken: doc}, nil
}

// errJoinDenied answers every join failure alike, so a caller cannot probe
// which tokens exist; the audit log keeps the real reason.
// next, when given, is the next step (an authv1.Next* constant, then
// metadata keys and values) for the client to word after userMsg.
func (s *Server) joinDenied(ctx context.Context, req *authv1.JoinRequest, bot, token, reason, userMsg string, next ...string) error {
	return s.joinDeniedWith(ctx, req, bot, token, reason, userMsg, nil, next...)
}

// joinDeniedWith is joinDenied with more details for the audit event.
func (s *Server) joinDeniedWith(ctx context.Context, req *authv1.JoinRequest, bot, token, reason, userMsg string, more map[string]string, next ...string) error {
	c := callerFrom(ctx)
	actor := "anonymous"
	if bot != "" {
		actor = "bot:" + bot
	}
	details := map[string]string{}
	if token != "" {
		details["token"] = token
	}
	if req.JoinMethod != "" {
		details["method"] = req.JoinMethod
	}
	maps.Copy(details, more)
	s.recordDenial(ctx, audit.Event{
		Type: audit.TypeJoinDenied, Actor: actor, Host: req.Host, RemoteAddr: c.RemoteAddr, Reason: reason, Details: details,
	})
	if len(next) > 0 {
		return refusal(codes.PermissionDenied, userMsg, next[0], next[1:]...)
	}
	return status.Error(codes.PermissionDenied, userMsg)
}

// maxTokenUseRetries bounds how often a join counts its use again after
// losing a race to other uses of the same token.
const maxTokenUseRetries = 20

func (s *Server) Join(ctx context.Context, req *authv1.JoinRequest) (*authv1.JoinResponse, error) {
	switch req.JoinMethod {
	case "", resource.JoinMethodToken:
	case resource.JoinMethodKubernetes:
		return s.joinKubernetes(ctx, req)
	case resource.JoinMethodX509Pop:
		return s.joinX509Pop(ctx, req)
	default:
		return nil, s.joinDenied(ctx, req, "", "", "unknown join method "+strconv.Quote(req.JoinMethod),
			fmt.Sprintf("join method %q is unknown: use %s, %s or %s", req.JoinMethod, resource.JoinMethodToken, resource.JoinMethodKubernetes, resource.JoinMethodX509Pop))
	}
	if len(req.X509Chain) > 0 || len(req.Challenge) > 0 || len(req.ChallengeSignature) > 0 {
		return nil, s.joinDenied(ctx, req, "", "", "a certificate or challenge was sent with a token join",
			"a certificate and challenge are only for the x509pop join method: pass --join-method x509pop")
	}
	if req.ServiceAccountToken != "" {
		return nil, s.joinDenied(ctx, req, "", "", "a service-account token was sent with a token join",
			"a service-account token is only for the kubernetes join method: pass --join-method kubernetes")
	}
	if req.Token == "" {
		return nil, s.joinDenied(ctx, req, "", "", "no join token given", "a join token is required", authv1.NextGetToken)
	}
	name, hash := tokenName(req.Token)
	v, err := s.res.get(ctx, resource.KindJoinToken, name)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, s.joinDenied(ctx, req, "", "", "unknown join token", "the join token is not valid", authv1.NextNewToken)
		}
		return nil, storeError("token", err)
	}
	tok := v.(*resource.JoinToken)
	if subtle.ConstantTimeCompare([]byte(tok.Spec.SecretHash), []byte(hash)) != 1 {
		return nil, s.joinDenied(ctx, req, "", name, "join token hash mismatch", "the join token is not valid", authv1.NextNewToken)
	}
	now := s.clock()
	if !now.Before(tok.Spec.Expires) {
		return nil, s.joinDenied(ctx, req, tok.Spec.Bot, name,
			"join token expired at "+tok.Spec.Expires.Format(time.RFC3339),
			"the join token expired at "+tok.Spec.Expires.Format(time.RFC3339), authv1.NextNewToken, authv1.ErrorMetaName, tok.Spec.Bot)
	}
	if tok.Spec.Used >= tok.Spec.Uses {
		return nil, s.joinDenied(ctx, req, tok.Spec.Bot, name,
			fmt.Sprintf("join token already used %d of %d times", tok.Spec.Used, tok.Spec.Uses),
			"the join token was already used", authv1.NextNewToken, authv1.ErrorMetaName, tok.Spec.Bot)
	}
	if tok.Spec.Method != resource.JoinMethodToken {
		return nil, s.joinDenied(ctx, req, tok.Spec.Bot, name, "join method "+tok.Spec.Method+" is not a token join",
			"this token is for the "+tok.Spec.Method+" join method, not a plain token join")
	}
	if _, err := s.res.bot(ctx, tok.Spec.Bot); err != nil {
		return nil, s.joinDenied(ctx, req, tok.Spec.Bot, name, "bot "+tok.Spec.Bot+" does not exist", "the join token's bot no longer exists: ask an admin")
	}
	if err := s.refuseLockedJoin(ctx, req, tok.Spec.Bot, name); err != nil {
		return nil, err
	}
	pub, err := issuer.ParseCSR(req.Csr)
	if err != nil {
		return nil, s.joinDenied(ctx, req, tok.Spec.Bot, name, "bad CSR: "+err.Error(), err.Error())
	}
	// Count the use with compare-and-set: two joins racing on a single-use
	// token, on this replica or on two, must not both succeed. A join that
	// lost the race to another use of a token with uses left counts again
	// on the token as it is now.
	var used resource.JoinToken
	for attempt := 1; ; attempt++ {
		used = *tok
		used.Spec.Used++
		o, err := op(store.OpUpdate, &used)
		if err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
		_, err = s.res.apply(ctx, o)
		if err == nil {
			break
		}
		if !errors.Is(err, store.ErrConflict) && !errors.Is(err, store.ErrNotFound) {
			return nil, storeError("token/"+name, err)
		}
		if errors.Is(err, store.ErrConflict) && attempt < maxTokenUseRetries {
			v, gerr := s.res.get(ctx, resource.KindJoinToken, name)
			if gerr == nil {
				now := v.(*resource.JoinToken)
				if now.Spec.SecretHash == tok.Spec.SecretHash && now.Spec.Bot == tok.Spec.Bot && now.Spec.Method == tok.Spec.Method &&
					now.Spec.Used < now.Spec.Uses && s.clock().Before(now.Spec.Expires) {
					tok = now
					continue
				}
			}
		}
		return nil, s.joinDenied(ctx, req, tok.Spec.Bot, name, "join token used concurrently", "the join token was already used: ask an admin for a new one")
	}
	return s.joined(ctx, req, tok.Spec.Bot, pub, map[string]string{"token": name, "method": tok.Spec.Method, "uses_left": strconv.Itoa(tok.Spec.Uses - used.Spec.Used)})
}

// joined issues the bot certificate of a join that passed every check,
// audits it, and answers.
func (s *Server) joined(ctx context.Context, req *authv1.JoinRequest, bot string, pub crypto.PublicKey, details map[string]string) (*authv1.JoinResponse, error) {
	if err := s.refuseLockedJoin(ctx, req, bot, details["token"]); err != nil {
		return nil, err
	}
	gen, err := s.res.generation(ctx, KindBot, bot)
	if err != nil {
		return nil, storeError("bot/"+bot, err)
	}
	// The certificate carries the host the join attested (the x509pop
	// certificate's, the kubernetes node, or the one named with a secret
	// token), which host locks hold the bot's calls to.
	cert, err := s.issuer.SignInternalCert(issuer.InternalParams{CA: ca.TypeHost, PublicKey: pub, TTL: BotCertTTL, Kind: KindBot, Name: bot, Generation: gen, Host: agentHost(req.Host)})
	if err != nil {
		return nil, status.Errorf(codes.Internal, "issuing the bot certificate: %v", err)
	}
	c := callerFrom(ctx)
	if _, err := s.audit.Emit(ctx, audit.Event{
		Type: audit.TypeJoin, Actor: "bot:" + bot, Host: req.Host, RemoteAddr: c.RemoteAddr, Outcome: audit.OutcomeSuccess,
		Serial: serialHex(cert.SerialNumber.Bytes()), TTLSeconds: int64(BotCertTTL / time.Second),
		Details: details,
	}); err != nil {
		return nil, status.Errorf(codes.Unavailable, "the join could not be audited: %v", err)
	}
	resp := &authv1.JoinResponse{
		Bot: bot, CertChain: [][]byte{cert.Raw}, ExpiresAt: timestamppb.New(cert.NotAfter), TrustDomain: s.td.Name(),
	}
	for _, hc := range s.cas.Authorities(ca.TypeHost) {
		resp.HostCa = append(resp.HostCa, hc.Raw)
	}
	return resp, nil
}

func (s *Server) RenewBotCert(ctx context.Context, req *authv1.RenewBotCertRequest) (*authv1.RenewBotCertResponse, error) {
	c := callerFrom(ctx)
	if c.Kind != KindBot {
		return nil, status.Error(codes.PermissionDenied, "only a joined bot can renew a bot certificate")
	}
	pub, err := issuer.ParseCSR(req.Csr)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	// The host goes on with the renewal, as the generation does.
	cert, err := s.issuer.SignInternalCert(issuer.InternalParams{CA: ca.TypeHost, PublicKey: pub, TTL: BotCertTTL, Kind: KindBot, Name: c.Name, Generation: c.Generation, Host: c.Host})
	if err != nil {
		return nil, status.Errorf(codes.Internal, "issuing the bot certificate: %v", err)
	}
	if _, err := s.audit.Emit(ctx, audit.Event{
		Type: audit.TypeBotCertRenewed, Actor: c.Actor(s), RemoteAddr: c.RemoteAddr, Outcome: audit.OutcomeSuccess,
		Serial: serialHex(cert.SerialNumber.Bytes()), TTLSeconds: int64(BotCertTTL / time.Second),
	}); err != nil {
		return nil, status.Errorf(codes.Unavailable, "the renewal could not be audited: %v", err)
	}
	return &authv1.RenewBotCertResponse{CertChain: [][]byte{cert.Raw}, ExpiresAt: timestamppb.New(cert.NotAfter)}, nil
}

// RenewUserCert re-issues a logged-in user's certificate from the user CA's
// current key, for a new key and with the same expiry: it moves a login to
// a rotated CA, and never lengthens it.
func (s *Server) RenewUserCert(ctx context.Context, req *authv1.RenewUserCertRequest) (*authv1.RenewUserCertResponse, error) {
	c := callerFrom(ctx)
	if c.Kind != KindUser {
		return nil, status.Error(codes.PermissionDenied, "only a logged-in user can renew a user certificate")
	}
	pub, err := issuer.ParseCSR(req.Csr)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	ttl := time.Until(c.CertNotAfter).Truncate(time.Second)
	if ttl < time.Minute {
		return nil, refusal(codes.FailedPrecondition, "your login expires within a minute", authv1.NextLoginRenew)
	}
	cert, err := s.issuer.SignInternalCert(issuer.InternalParams{CA: ca.TypeUser, PublicKey: pub, TTL: ttl, Kind: KindUser, Name: c.Name, Generation: c.Generation})
	if err != nil {
		return nil, status.Errorf(codes.Internal, "issuing the user certificate: %v", err)
	}
	if _, err := s.audit.Emit(ctx, audit.Event{
		Type: audit.TypeUserCertRenewed, Actor: c.Actor(s), RemoteAddr: c.RemoteAddr, Outcome: audit.OutcomeSuccess,
		Serial: serialHex(cert.SerialNumber.Bytes()), TTLSeconds: int64(ttl / time.Second),
	}); err != nil {
		return nil, status.Errorf(codes.Unavailable, "the renewal could not be audited: %v", err)
	}
	return &authv1.RenewUserCertResponse{CertChain: [][]byte{cert.Raw}, ExpiresAt: timestamppb.New(cert.NotAfter)}, nil
}

func serialHex(b []byte) string { return ca.FormatSerial(new(big.Int).SetBytes(b)) }

func derOf(certs []*x509.Certificate) [][]byte {
	out := make([][]byte, len(certs))
	for i, c := range certs {
		out[i] = c.Raw
	}
	return out
}
