package auth

import (
	"context"
	"crypto"
	"encoding/base64"
	"fmt"
	"github.com/wid-project/wid/internal/core/ca"
	"net"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/audit"
	"github.com/wid-project/wid/internal/core/issuer"
	"github.com/wid-project/wid/internal/core/rbac"
	"github.com/wid-project/wid/internal/core/resource"
	"github.com/wid-project/wid/internal/core/store"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func (s *Server) Ping(ctx context.Context, _ *authv1.PingRequest) (*authv1.PingResponse, error) {
	c := callerFrom(ctx)
	return &authv1.PingResponse{
		TrustDomain: s.td.Name(), IdentityKind: c.Kind, IdentityName: c.Name, Roles: c.roleNames(),
		ServerVersion: s.cfg.Version, CaPin: s.cas.HostPin(), AuthAddr: s.info.Addr,
		HostAuthorities: derOf(s.cas.Authorities(ca.TypeHost)), UserSignerId: s.cas.ActiveSignerID(ca.TypeUser),
	}, nil
}

// svidRequest is a checked issuance request.
type svidRequest struct {
	id      spiffeid.ID
	ttl     time.Duration
	dns     []string
	ips     []net.IP
	attrs   map[string]string
	svidTyp string
}

// svidEvent is the audit event of an issuance or its denial.
func (s *Server) svidEvent(ctx context.Context, typ string, r svidRequest, rawID string) audit.Event {
	c := callerFrom(ctx)
	ev := audit.Event{
		Type: typ, Actor: c.Actor(s), Host: s.host, RemoteAddr: c.RemoteAddr, SVIDType: r.svidTyp,
		TTLSeconds: int64(r.ttl / time.Second), DNSSANs: r.dns, Attributes: r.attrs, SPIFFEID: rawID,
	}
	if !r.id.IsZero() {
		ev.SPIFFEID = r.id.String()
	}
	for _, ip := range r.ips {
		ev.IPSANs = append(ev.IPSANs, ip.String())
	}
	return ev
}

// checkSVID parses and authorizes an issuance; a refusal is audited and
// returned as a status naming what is missing.
func (s *Server) checkSVID(ctx context.Context, r *svidRequest, rawID string, rawIPs []string, ttlSeconds int64, defaultTTL time.Duration) error {
	c := callerFrom(ctx)
	deny := func(code codes.Code, reason, check string) error {
		ev := s.svidEvent(ctx, audit.TypeSVIDDenied, *r, rawID)
		ev.Reason = reason
		ev.Details = map[string]string{"check": check}
		s.recordDenial(ctx, ev)
		return status.Error(code, reason)
	}
	if c.Kind == "" {
		return status.Error(codes.Unauthenticated, "issuing an SVID needs a login: run widctl login, or join the agent first")
	}
	id, err := resource.ParseSPIFFEID(s.td, rawID)
	if err != nil {
		return deny(codes.InvalidArgument, err.Error(), "invalid_request")
	}
	r.id = id
	if ttlSeconds < 0 {
		return deny(codes.InvalidArgument, "the TTL must be positive", "invalid_request")
	}
	r.ttl = time.Duration(ttlSeconds) * time.Second
	if r.ttl == 0 {
		r.ttl = defaultTTL
	}
	// The form of each name first: a name the roles' patterns happen to
	// cover (*.x covers "a*.x") is still no DNS name, and the issuer's
	// refusal of it must be the caller's error, audited, not ours.
	for _, name := range r.dns {
		if err := resource.ValidateDNSSAN(name); err != nil {
			return deny(codes.InvalidArgument, err.Error(), "invalid_request")
		}
	}
	for _, raw := range rawIPs {
		ip := net.ParseIP(strings.TrimSpace(raw))
		if ip == nil {
			return deny(codes.InvalidArgument, "IP SAN "+raw+" is not an IP address", "invalid_request")
		}
		r.ips = append(r.ips, ip)
	}
	d := rbac.CheckSVID(c.Roles, rbac.Request{ID: id, DNSSANs: r.dns, IPSANs: r.ips, TTL: r.ttl})
	if !d.Allowed {
		if r.ttl == defaultTTL && ttlSeconds == 0 && d.Check == rbac.CheckTTLOverMax {
			// The caller asked for no TTL in particular: give the most the roles allow.
			r.ttl = d.MaxTTL
			return nil
		}
		return deny(codes.PermissionDenied, d.Reason, d.Check)
	}
	return nil
}

func (s *Server) SignX509SVID(ctx context.Context, req *authv1.SignX509SVIDRequest) (*authv1.SignX509SVIDResponse, error) {
	r := svidRequest{dns: req.DnsSans, attrs: req.Attributes, svidTyp: "x509"}
	if err := s.checkSVID(ctx, &r, req.SpiffeId, req.IpSans, req.TtlSeconds, issuer.DefaultX509TTL); err != nil {
		return nil, err
	}
	var (
		pub crypto.PublicKey
		err error
	)
	switch {
	case len(req.Csr) > 0:
		pub, err = issuer.ParseCSR(req.Csr)
	case len(req.PublicKey) > 0:
		pub, err = issuer.ParsePublicKey(req.PublicKey)
	default:
		err = errNoKey
	}
	if err != nil {
		ev := s.svidEvent(ctx, audit.TypeSVIDDenied, r, req.SpiffeId)
		ev.Reason = err.Error()
		s.recordDenial(ctx, ev)
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	svid, err := s.issuer.SignX509SVID(issuer.X509Params{ID: r.id, PublicKey: pub, TTL: r.ttl, DNSSANs: r.dns, IPSANs: r.ips})
	if err != nil {
		return nil, status.Errorf(codes.Internal, "signing the X509-SVID for %s: %v", r.id, err)
	}
	ev := s.svidEvent(ctx, audit.TypeX509SVIDIssued, r, req.SpiffeId)
	ev.Outcome = audit.OutcomeSuccess
	ev.Serial = svid.Serial
	ev.TTLSeconds = int64(svid.NotAfter.Sub(svid.NotBefore.Add(time.Minute)) / time.Second)
	ev.Details = map[string]string{audit.DetailCertificate: base64.StdEncoding.EncodeToString(svid.Certificates[0].Raw)}
	// Answer only once the issuance is durable in the audit log.
	if _, err := s.audit.Emit(ctx, ev); err != nil {
		return nil, notAudited("not issued", err)
	}
	resp := &authv1.SignX509SVIDResponse{SpiffeId: r.id.String(), Serial: svid.Serial, ExpiresAt: timestamppb.New(svid.NotAfter)}
	for _, c := range svid.Certificates {
		resp.CertChain = append(resp.CertChain, c.Raw)
	}
	return resp, nil
}

type noKeyError struct{}

func (noKeyError) Error() string {
	return "a CSR or a public key is required: the SVID's key is generated by the requester"
}

var errNoKey error = noKeyError{}

func (s *Server) SignJWTSVID(ctx context.Context, req *authv1.SignJWTSVIDRequest) (*authv1.SignJWTSVIDResponse, error) {
	r := svidRequest{attrs: req.Attributes, svidTyp: "jwt"}
	if err := s.checkSVID(ctx, &r, req.SpiffeId, nil, req.TtlSeconds, issuer.DefaultJWTTTL); err != nil {
		return nil, err
	}
	if problem := audienceProblem(req.Audience); problem != "" {
		ev := s.svidEvent(ctx, audit.TypeSVIDDenied, r, req.SpiffeId)
		ev.Reason = problem
		ev.Details = map[string]string{"check": "invalid_request"}
		s.recordDenial(ctx, ev)
		return nil, status.Error(codes.InvalidArgument, problem+": pass --audience with the name of the service that will check it")
	}
	svid, err := s.issuer.SignJWTSVID(issuer.JWTParams{ID: r.id, Audience: req.Audience, TTL: r.ttl})
	if err != nil {
		return nil, status.Errorf(codes.Internal, "signing the JWT-SVID for %s: %v", r.id, err)
	}
	ev := s.svidEvent(ctx, audit.TypeJWTSVIDIssued, r, req.SpiffeId)
	ev.Outcome = audit.OutcomeSuccess
	ev.Serial = svid.JTI
	ev.Details = map[string]string{"audience": strings.Join(req.Audience, ",")}
	if _, err := s.audit.Emit(ctx, ev); err != nil {
		return nil, notAudited("not issued", err)
	}
	return &authv1.SignJWTSVIDResponse{SpiffeId: r.id.String(), Token: svid.Token, Jti: svid.JTI, ExpiresAt: timestamppb.New(svid.ExpiresAt)}, nil
}

func (s *Server) GetBundle(ctx context.Context, _ *authv1.GetBundleRequest) (*authv1.GetBundleResponse, error) {
	if callerFrom(ctx).Kind == "" {
		return nil, status.Error(codes.Unauthenticated, "reading the bundle needs a login: run widctl login, or join the agent first")
	}
	b, err := s.cas.Bundle()
	if err != nil {
		return nil, status.Errorf(codes.Internal, "building the bundle: %v", err)
	}
	jwks, err := b.Marshal()
	if err != nil {
		return nil, status.Errorf(codes.Internal, "encoding the bundle: %v", err)
	}
	seq, _ := b.SequenceNumber()
	return &authv1.GetBundleResponse{TrustDomain: s.td.Name(), X509Pem: s.cas.BundlePEM(), Jwks: jwks, Sequence: int64(seq)}, nil
}

func (s *Server) Explain(ctx context.Context, req *authv1.ExplainRequest) (*authv1.ExplainResponse, error) {
	var roleNames []string
	kind := strings.ToLower(req.PrincipalKind)
	if err := s.authorize(ctx, resource.KindRole, verbRead); err != nil {
		return nil, err
	}
	switch kind {
	case "user":
		if err := s.authorize(ctx, resource.KindUser, verbRead); err != nil {
			return nil, err
		}
		u, err := s.res.user(ctx, req.PrincipalName)
		if err != nil {
			return nil, storeError("user/"+req.PrincipalName, err)
		}
		roleNames = u.Spec.Roles
	case "bot":
		if err := s.authorize(ctx, resource.KindBot, verbRead); err != nil {
			return nil, err
		}
		b, err := s.res.bot(ctx, req.PrincipalName)
		if err != nil {
			return nil, storeError("bot/"+req.PrincipalName, err)
		}
		roleNames = b.Spec.Roles
	case "role":
		if _, err := s.res.role(ctx, req.PrincipalName); err != nil {
			return nil, storeError("role/"+req.PrincipalName, err)
		}
		roleNames = []string{req.PrincipalName}
	default:
		return nil, status.Errorf(codes.InvalidArgument, "explain needs a user, bot or role, not %q", req.PrincipalKind)
	}
	roles, err := s.res.roles(ctx, roleNames)
	if err != nil && err != store.ErrNotFound {
		return nil, storeError("roles", err)
	}
	if len(req.WorkloadAttributes) > 0 {
		if kind == "user" {
			return nil, status.Error(codes.InvalidArgument, "workload attributes ask what an agent would issue, and users run no agents: explain for a bot or a role")
		}
		if err := s.authorize(ctx, resource.KindWorkloadIdentity, verbList); err != nil {
			return nil, err
		}
		workloads, err := s.explainWorkloads(ctx, roles, req.WorkloadAttributes)
		if err != nil {
			return nil, err
		}
		if req.SpiffeId == "" {
			return workloadsExplanation(kind, req.PrincipalName, roleNames, workloads), nil
		}
		resp, err := s.explainSVID(req, roles, roleNames)
		if err != nil {
			return nil, err
		}
		resp.Workloads = workloads
		return resp, nil
	}
	return s.explainSVID(req, roles, roleNames)
}

// explainSVID explains an issuance of req.SpiffeId to roles.
func (s *Server) explainSVID(req *authv1.ExplainRequest, roles []*resource.Role, roleNames []string) (*authv1.ExplainResponse, error) {
	id, err := resource.ParseSPIFFEID(s.td, req.SpiffeId)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	var ips []net.IP
	for _, raw := range req.IpSans {
		ip := net.ParseIP(raw)
		if ip == nil {
			return nil, status.Errorf(codes.InvalidArgument, "IP SAN %s is not an IP address", raw)
		}
		ips = append(ips, ip)
	}
	ttl := time.Duration(req.TtlSeconds) * time.Second
	if ttl == 0 {
		ttl = issuer.DefaultX509TTL
	}
	d := rbac.CheckSVID(roles, rbac.Request{ID: id, DNSSANs: req.DnsSans, IPSANs: ips, TTL: ttl})
	reason := d.Reason
	if d.Allowed && reason == "" {
		reason = id.String() + " is granted"
	}
	return &authv1.ExplainResponse{
		Allowed: d.Allowed, Reason: reason, Check: d.Check, Role: d.Role, Rule: int32(d.Rule),
		Roles: roleNames, SpiffeId: id.String(), TtlSeconds: int64(ttl / time.Second),
	}, nil
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
