package auth

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"time"

	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/issuer"
	"github.com/wid-project/wid/internal/core/login"
	"github.com/wid-project/wid/internal/core/resource"
	"github.com/wid-project/wid/internal/core/store"
	"github.com/wid-project/wid/internal/core/x509pop"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// x509PopJoinRefused is the one answer to an x509pop join that does not
// pass for a reason the caller could use to probe (an unknown token name,
// a token of another method, a missing bot); the audit log keeps the real
// reason, which the status's next step points an admin to. Refusals about
// the caller's own certificate and signature say what is wrong with them,
// which tells the caller nothing it does not hold.
func x509PopJoinRefused() string {
	return "the x509pop join was refused: check the join token name and that the certificate is one the token admits"
}

// machineCertProblem says why leaf may not prove a machine's identity, or
// is "": it must be an end-entity certificate, and the key usages it
// declares, if any, must let it sign (digitalSignature) and authenticate a
// client (clientAuth; anyExtendedKeyUsage alone is not enough).
func machineCertProblem(leaf *x509.Certificate) string {
	if leaf.IsCA {
		return "the certificate is a CA certificate: join with the machine's own end-entity certificate"
	}
	if leaf.KeyUsage != 0 && leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		return "the certificate's key usage does not include digitalSignature, which signing the challenge needs"
	}
	if (len(leaf.ExtKeyUsage) > 0 || len(leaf.UnknownExtKeyUsage) > 0) && !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
		return "the certificate's extended key usage does not include clientAuth, which a machine certificate for joining needs"
	}
	return ""
}

// JoinChallenge hands out a challenge for an x509pop join. It keeps no
// state and says nothing about whether the token exists.
func (s *Server) JoinChallenge(ctx context.Context, req *authv1.JoinChallengeRequest) (*authv1.JoinChallengeResponse, error) {
	if err := resource.ValidateName(req.Token); err != nil {
		return nil, refusal(codes.InvalidArgument, "an x509pop challenge is for a named join token", authv1.NextX509PopTokenName)
	}
	// Each challenge may take a slot among the answered ones until it
	// expires: a source gets them at a bounded rate.
	if !s.popChallenges.AllowSource(login.Source(callerFrom(ctx).RemoteAddr)) {
		return nil, status.Error(codes.ResourceExhausted, "too many x509pop challenges from your address: wait a few seconds and join again")
	}
	ch, exp, err := s.popChallenges.Issue(req.Token)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &authv1.JoinChallengeResponse{Challenge: ch, ExpiresAt: timestamppb.New(exp)}, nil
}

// joinX509Pop admits an agent whose certificate chains to an x509pop join
// token's CA bundle, is valid now and is on its allow list, once it has
// signed a fresh challenge with the certificate's key.
func (s *Server) joinX509Pop(ctx context.Context, req *authv1.JoinRequest) (*authv1.JoinResponse, error) {
	name := req.Token
	if err := resource.ValidateName(name); err != nil {
		return nil, s.joinDenied(ctx, req, "", "", "join token name is missing or invalid",
			"the x509pop join needs the name of an x509pop join token", authv1.NextX509PopTokenName)
	}
	if req.ServiceAccountToken != "" {
		return nil, s.joinDenied(ctx, req, "", name, "a service-account token was sent with an x509pop join",
			"a service-account token is only for the kubernetes join method")
	}
	// Before the token is looked up, so that the answer is the same for
	// a token that exists and one that does not.
	if len(req.X509Chain) == 0 {
		return nil, s.joinDeniedWith(ctx, req, "", name, "no certificate was sent", "the x509pop join was refused: no certificate was sent: pass --cert FILE",
			map[string]string{"check": "certificate"})
	}
	refused := x509PopJoinRefused()
	v, err := s.res.get(ctx, resource.KindJoinToken, name)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, s.joinDenied(ctx, req, "", name, "unknown join token", refused, authv1.NextX509PopJoinAudit)
		}
		return nil, storeError("token", err)
	}
	tok := v.(*resource.JoinToken)
	pop := tok.Spec.X509Pop
	if tok.Spec.Method != resource.JoinMethodX509Pop || pop == nil {
		return nil, s.joinDenied(ctx, req, "", name, "join token is for method "+tok.Spec.Method, refused, authv1.NextX509PopJoinAudit)
	}
	bot := tok.Spec.Bot
	now := s.clock()
	if !tok.Spec.Expires.IsZero() && !now.Before(tok.Spec.Expires) {
		return nil, s.joinDenied(ctx, req, bot, name, "join token expired at "+tok.Spec.Expires.Format(time.RFC3339), refused, authv1.NextX509PopJoinAudit)
	}
	if _, err := s.res.bot(ctx, bot); err != nil {
		return nil, s.joinDenied(ctx, req, bot, name, "bot "+bot+" does not exist", refused, authv1.NextX509PopJoinAudit)
	}
	pub, err := issuer.ParseCSR(req.Csr)
	if err != nil {
		return nil, s.joinDenied(ctx, req, bot, name, "bad CSR: "+err.Error(), err.Error())
	}
	deny := func(check, reason string, details map[string]string) error {
		if details == nil {
			details = map[string]string{}
		}
		details["check"] = check
		return s.joinDeniedWith(ctx, req, bot, name, reason, "the x509pop join was refused: "+reason, details)
	}
	chain := make([]*x509.Certificate, len(req.X509Chain))
	for i, der := range req.X509Chain {
		if chain[i], err = x509.ParseCertificate(der); err != nil {
			return nil, deny("certificate", fmt.Sprintf("certificate %d of the chain does not parse", i+1), nil)
		}
	}
	leaf := chain[0]
	// Every refusal from here names the certificate, so that an operator
	// can tell which machine tried.
	details := map[string]string{"fingerprint": x509pop.Fingerprint(leaf), "subject": leaf.Subject.String()}
	roots, err := resource.ParseX509PopBundle(pop.CABundle)
	if err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "join token %s holds an unusable CA bundle: %v", name, err)
	}
	if reason := machineCertProblem(leaf); reason != "" {
		return nil, deny("usage", reason, details)
	}
	opts := x509.VerifyOptions{Roots: x509.NewCertPool(), Intermediates: x509.NewCertPool(), CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	for _, r := range roots {
		opts.Roots.AddCert(r)
	}
	for _, c := range chain[1:] {
		opts.Intermediates.AddCert(c)
	}
	if _, err := leaf.Verify(opts); err != nil {
		var inv x509.CertificateInvalidError
		switch {
		case errors.As(err, &inv) && inv.Reason == x509.Expired && now.After(leaf.NotAfter):
			return nil, deny("expired", "the certificate expired at "+leaf.NotAfter.UTC().Format(time.RFC3339), details)
		case errors.As(err, &inv) && inv.Reason == x509.Expired:
			return nil, deny("expired", "the certificate or its chain is not valid now (valid from "+leaf.NotBefore.UTC().Format(time.RFC3339)+" to "+leaf.NotAfter.UTC().Format(time.RFC3339)+")", details)
		default:
			return nil, deny("chain", "the certificate does not chain to the join token's CA bundle: "+err.Error(), details)
		}
	}
	if len(req.Challenge) == 0 || len(req.ChallengeSignature) == 0 {
		return nil, deny("challenge", "no signed challenge was sent: ask JoinChallenge for one and sign it with the certificate's key", details)
	}
	if err := x509pop.Verify(leaf, x509pop.Message(req.Challenge, req.Csr), req.ChallengeSignature); err != nil {
		return nil, deny("signature", "the challenge signature does not verify with the certificate's public key: the key does not match the certificate, or it signed another challenge", details)
	}
	// Before the challenge is redeemed: a certificate the token does not
	// admit must not take a slot among the answered challenges.
	if !pop.Allows(leaf) {
		return nil, deny("allow", "the certificate ("+leaf.Subject.String()+") is not on the join token's allow list", details)
	}
	if err := s.popChallenges.Redeem(req.Challenge, name); err != nil {
		if errors.Is(err, x509pop.ErrBusy) {
			return nil, status.Error(codes.ResourceExhausted, err.Error())
		}
		return nil, deny("challenge", err.Error(), details)
	}
	// The host is the certificate's, not what the agent says: the audit
	// log and the agent list name the machine its operator's CA vouched for.
	req.Host = x509pop.HostName(leaf)
	details["token"] = name
	details["method"] = resource.JoinMethodX509Pop
	details["serial"] = leaf.SerialNumber.Text(16)
	return s.joined(ctx, req, bot, pub, details)
}
