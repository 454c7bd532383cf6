// Package issuance is the one path by which the auth service issues an
// SVID to a caller whose roles it knows: the request (which SPIFFE ID, SANs,
// TTL, key), the policy check (rbac), the signature and chain (issuer), and
// the one audit event of the outcome, issued or refused. People and bots
// (SignX509SVID, SignJWTSVID) and agents on behalf of their workloads
// (IssueWorkloadSVIDs) differ only in the Rules they pass.
//
// It never writes the audit log and knows no gRPC: callers emit the event
// (one by one, or a batch at once) before they answer, and turn a refusal
// into their status.
package issuance

import (
	"crypto"
	"encoding/base64"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/audit"
	"github.com/wid-project/wid/internal/core/issuer"
	"github.com/wid-project/wid/internal/core/rbac"
	"github.com/wid-project/wid/internal/core/resource"
)

// Checks of a refusal besides rbac's (rbac.Check*).
const (
	// CheckInvalidRequest: the request itself is wrong (no key, no
	// audience, a malformed ID or SAN).
	CheckInvalidRequest = "invalid_request"
	// CheckSigning: the issuer refused or failed to sign.
	CheckSigning = "signing"
	// CheckLocked: a lock holds on the SPIFFE ID.
	CheckLocked = "locked"
)

// Rules are what differs between the RPCs that issue. Each RPC's rules are
// tested as they are; this is where they are told apart.
type Rules struct {
	// NegativeTTL is the reason given for a negative TTL.
	NegativeTTL string
	// CheckSANForm checks each DNS and IP SAN's form before the grant
	// check, so that a malformed one is the caller's error, not a signing
	// failure.
	CheckSANForm bool
	// PublicKeyFirst takes the public key over the CSR when both are sent.
	PublicKeyFirst bool
	// NoKey is the reason given for an X509-SVID request with neither.
	NoKey string
	// AudienceAdvice follows the reason of a refused JWT-SVID audience;
	// AuditAdvice puts it in the audit event's reason too.
	AudienceAdvice string
	AuditAdvice    bool
}

// Request is one SVID request from a caller with Roles.
type Request struct {
	// Type is authv1.SVIDTypeX509, SVIDTypeJWT or SVIDTypeWIT.
	Type  string
	Roles []*resource.Role
	// ID is the SPIFFE ID when the caller resolved it (a workload
	// identity's); otherwise RawID is parsed in the trust domain.
	ID    spiffeid.ID
	RawID string
	// DNSSANs go into an X509-SVID; DNSGranted says they need no grant
	// (a workload identity's, written by an administrator in its spec).
	DNSSANs    []string
	DNSGranted bool
	RawIPSANs  []string
	// TTLSeconds is what the request asked for, 0 for none: then
	// DefaultTTL, capped at the most the roles allow.
	TTLSeconds int64
	DefaultTTL time.Duration
	Audience   []string
	// PublicKey (DER PKIX) or CSR (DER PKCS#10) carries the SVID's key,
	// which the requester made.
	PublicKey, CSR []byte
	// Event is the audit event to complete: actor, host, remote address,
	// attributes and details of the caller's own; its SPIFFEID is the raw
	// one asked for until the ID is known.
	Event audit.Event
}

// Decision is what the policy check gives a request: its SPIFFE ID, SANs
// and TTL, or why not.
type Decision struct {
	ID      spiffeid.ID
	DNSSANs []string
	IPSANs  []net.IP
	TTL     time.Duration
	// Check and Reason are set when the request is refused; Advice is
	// what the caller is told besides.
	Check, Reason, Advice string
	// Lock names the lock that refused the request (CheckLocked), so that
	// a client can word removing it as the next step.
	Lock string
}

// Refused reports whether the request is refused.
func (d *Decision) Refused() bool { return d.Check != "" }

func (d *Decision) refuse(check, reason string) *Decision {
	d.Check, d.Reason = check, reason
	return d
}

// Result is the outcome of one request: the SVID, or the refusal, and the
// audit event of either.
type Result struct {
	Decision
	// CertChain is an X509-SVID's chain, leaf first, DER.
	CertChain [][]byte
	// Token is a JWT-SVID or WIT-SVID.
	Token string
	// Serial is the certificate's serial or the token's jti.
	Serial              string
	IssuedAt, ExpiresAt time.Time
	Event               audit.Event
}

// Service issues SVIDs with an issuer.Issuer.
type Service struct {
	td     spiffeid.TrustDomain
	issuer *issuer.Issuer
	clock  func() time.Time
	// Locked, when set, says why a SPIFFE ID may not be issued now (a lock
	// holds on it) and names that lock, or gives "".
	Locked func(spiffeid.ID) (reason, lock string)
}

// New returns a Service issuing in td with iss. clock defaults to time.Now.
func New(td spiffeid.TrustDomain, iss *issuer.Issuer, clock func() time.Time) *Service {
	if clock == nil {
		clock = time.Now
	}
	return &Service{td: td, issuer: iss, clock: clock}
}

// Decide checks a request's ID, SANs and TTL against its roles. A TTL that
// the request did not ask for is capped at the roles' maximum; one it asked
// for over the maximum is refused.
func (s *Service) Decide(req *Request, rules *Rules) *Decision {
	d := &Decision{ID: req.ID}
	if req.Type == authv1.SVIDTypeX509 {
		d.DNSSANs = req.DNSSANs
	}
	if d.ID.IsZero() {
		id, err := resource.ParseSPIFFEID(s.td, req.RawID)
		if err != nil {
			return d.refuse(CheckInvalidRequest, err.Error())
		}
		d.ID = id
	}
	if s.Locked != nil {
		if reason, lock := s.Locked(d.ID); reason != "" {
			d.Lock = lock
			return d.refuse(CheckLocked, reason)
		}
	}
	if req.TTLSeconds < 0 {
		return d.refuse(CheckInvalidRequest, rules.NegativeTTL)
	}
	d.TTL = time.Duration(req.TTLSeconds) * time.Second
	if d.TTL == 0 {
		d.TTL = req.DefaultTTL
	}
	if rules.CheckSANForm {
		// The form of each name first: a name the roles' patterns happen
		// to cover (*.x covers "a*.x") is still no DNS name, and the
		// issuer's refusal of it must be the caller's error, audited, not ours.
		for _, name := range d.DNSSANs {
			if err := resource.ValidateDNSSAN(name); err != nil {
				return d.refuse(CheckInvalidRequest, err.Error())
			}
		}
	}
	for _, raw := range req.RawIPSANs {
		ip := net.ParseIP(strings.TrimSpace(raw))
		if ip == nil {
			return d.refuse(CheckInvalidRequest, "IP SAN "+raw+" is not an IP address")
		}
		d.IPSANs = append(d.IPSANs, ip)
	}
	sans := d.DNSSANs
	if req.DNSGranted {
		sans = nil
	}
	rd := rbac.CheckSVID(req.Roles, rbac.Request{ID: d.ID, DNSSANs: sans, IPSANs: d.IPSANs, TTL: d.TTL})
	if !rd.Allowed {
		if req.TTLSeconds == 0 && rd.Check == rbac.CheckTTLOverMax {
			// The TTL check comes last, so everything else holds: give the
			// most the roles allow.
			d.TTL = rd.MaxTTL
			return d
		}
		return d.refuse(rd.Check, rd.Reason)
	}
	return d
}

// Issue decides a request and, when it is allowed, signs its SVID. The
// result's Event is complete either way; the caller emits it.
func (s *Service) Issue(req *Request, rules *Rules) *Result {
	// The issuer reads the same clock a moment later: expires_at minus
	// this is at most the SVID's lifetime, never more.
	r := &Result{IssuedAt: s.clock()}
	r.Decision = *s.Decide(req, rules)
	if !r.Refused() {
		s.sign(req, rules, r)
	}
	r.Event = s.event(req, rules, r)
	return r
}

// Refuse is the result of a request that the caller refused before the
// policy check (a workload identity that does not select the workload,
// say), as far as d tells it.
func (s *Service) Refuse(req *Request, rules *Rules, d Decision) *Result {
	r := &Result{IssuedAt: s.clock(), Decision: d}
	r.Event = s.event(req, rules, r)
	return r
}

// sign signs the SVID of an allowed request, or refuses it.
func (s *Service) sign(req *Request, rules *Rules, r *Result) {
	switch req.Type {
	case authv1.SVIDTypeX509:
		pub, err := x509Key(req, rules)
		if err != nil {
			r.refuse(CheckInvalidRequest, err.Error())
			return
		}
		svid, err := s.issuer.SignX509SVID(issuer.X509Params{ID: r.ID, PublicKey: pub, TTL: r.TTL, DNSSANs: r.DNSSANs, IPSANs: r.IPSANs})
		if err != nil {
			r.refuse(CheckSigning, fmt.Sprintf("signing the X509-SVID for %s: %v", r.ID, err))
			return
		}
		for _, cert := range svid.Certificates {
			r.CertChain = append(r.CertChain, cert.Raw)
		}
		r.Serial, r.ExpiresAt = svid.Serial, svid.NotAfter
		// The certificate is backdated a minute for clock skew; its TTL is
		// what it was asked to live from now.
		r.TTL = svid.NotAfter.Sub(svid.NotBefore.Add(time.Minute))
	case authv1.SVIDTypeJWT:
		if problem := audienceProblem(req.Audience); problem != "" {
			r.refuse(CheckInvalidRequest, problem)
			r.Advice = rules.AudienceAdvice
			return
		}
		svid, err := s.issuer.SignJWTSVID(issuer.JWTParams{ID: r.ID, Audience: req.Audience, TTL: r.TTL})
		if err != nil {
			r.refuse(CheckSigning, fmt.Sprintf("signing the JWT-SVID for %s: %v", r.ID, err))
			return
		}
		r.Token, r.Serial, r.ExpiresAt = svid.Token, svid.JTI, svid.ExpiresAt
		r.TTL = svid.ExpiresAt.Sub(svid.IssuedAt)
	case authv1.SVIDTypeWIT:
		if len(req.PublicKey) == 0 {
			r.refuse(CheckInvalidRequest, "a WIT-SVID needs the workload's public key, which the token binds")
			return
		}
		pub, err := issuer.ParsePublicKey(req.PublicKey)
		if err != nil {
			r.refuse(CheckInvalidRequest, err.Error())
			return
		}
		svid, err := s.issuer.SignWITSVID(issuer.WITParams{ID: r.ID, PublicKey: pub, TTL: r.TTL})
		if err != nil {
			r.refuse(CheckSigning, fmt.Sprintf("signing the WIT-SVID for %s: %v", r.ID, err))
			return
		}
		r.Token, r.Serial, r.ExpiresAt = svid.Token, svid.JTI, svid.ExpiresAt
		r.TTL = svid.ExpiresAt.Sub(svid.IssuedAt)
	default:
		r.refuse(CheckInvalidRequest, fmt.Sprintf("SVID type %q is not x509, jwt or wit", req.Type))
	}
}

// x509Key is the key of an X509-SVID request: from its public key or its
// CSR, whose signature proves the requester holds the private key.
func x509Key(req *Request, rules *Rules) (crypto.PublicKey, error) {
	switch {
	case rules.PublicKeyFirst && len(req.PublicKey) > 0:
		return issuer.ParsePublicKey(req.PublicKey)
	case len(req.CSR) > 0:
		return issuer.ParseCSR(req.CSR)
	case len(req.PublicKey) > 0:
		return issuer.ParsePublicKey(req.PublicKey)
	}
	return nil, noKeyError(rules.NoKey)
}

type noKeyError string

func (e noKeyError) Error() string { return string(e) }

// event completes the request's audit event with the result.
func (s *Service) event(req *Request, rules *Rules, r *Result) audit.Event {
	ev := req.Event
	ev.SVIDType = req.Type
	if !r.ID.IsZero() {
		ev.SPIFFEID = r.ID.String()
	}
	ev.DNSSANs, ev.TTLSeconds = r.DNSSANs, int64(r.TTL/time.Second)
	for _, ip := range r.IPSANs {
		ev.IPSANs = append(ev.IPSANs, ip.String())
	}
	details := map[string]string{}
	for k, v := range req.Event.Details {
		details[k] = v
	}
	if r.Refused() {
		ev.Type, ev.Outcome, ev.Reason = audit.TypeSVIDDenied, audit.OutcomeDenied, r.Reason
		if rules.AuditAdvice {
			ev.Reason += r.Advice
		}
		details["check"] = r.Check
	} else {
		ev.Outcome, ev.Serial = audit.OutcomeSuccess, r.Serial
		switch req.Type {
		case authv1.SVIDTypeX509:
			ev.Type = audit.TypeX509SVIDIssued
			details[audit.DetailCertificate] = base64.StdEncoding.EncodeToString(r.CertChain[0])
		case authv1.SVIDTypeJWT:
			ev.Type = audit.TypeJWTSVIDIssued
			details["audience"] = strings.Join(req.Audience, ",")
		case authv1.SVIDTypeWIT:
			ev.Type = audit.TypeWITSVIDIssued
		}
	}
	ev.Details = nil
	if len(details) > 0 {
		ev.Details = details
	}
	return ev
}

// audienceProblem says what is wrong with a JWT-SVID's audience, or "".
func audienceProblem(aud []string) string {
	if len(aud) == 0 {
		return "a JWT-SVID needs at least one audience"
	}
	for i, a := range aud {
		if strings.TrimSpace(a) == "" {
			return fmt.Sprintf("audience %d of the JWT-SVID is empty", i+1)
		}
	}
	return ""
}
