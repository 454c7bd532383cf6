package auth

import (
	"context"
	"crypto"
	"encoding/base64"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/audit"
	"github.com/wid-project/wid/internal/core/issuer"
	"github.com/wid-project/wid/internal/core/rbac"
	"github.com/wid-project/wid/internal/core/resource"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// MaxWorkloadSVIDs caps the SVIDs of one IssueWorkloadSVIDs call.
const MaxWorkloadSVIDs = 2000

// SVID types of workload requests.
const (
	svidX509 = "x509"
	svidJWT  = "jwt"
	svidWIT  = "wit"
)

// Checks of workload SVIDs besides rbac's (see WorkloadExplanation.check).
const (
	// checkNotSelected: the workload identity does not exist, or none of the
	// bot's roles selects it by workload_identity_labels.
	checkNotSelected = "not_selected"
	// checkRules and checkTemplate come from rbac.Workload.Match.
	checkRules    = "rules"
	checkTemplate = "template"
	// checkInvalidRequest: the item itself is wrong (no key, no audience...).
	checkInvalidRequest = "invalid_request"
	// checkSigning: the issuer refused or failed to sign.
	checkSigning = "signing"
)

// workloadGrant is what one workload SVID request may be issued, or why not.
type workloadGrant struct {
	id   spiffeid.ID
	dns  []string
	hint string
	ttl  time.Duration
	// check and reason are set when the request is refused.
	check, reason string
}

func (g *workloadGrant) refuse(check, reason string) *workloadGrant {
	g.check, g.reason = check, reason
	return g
}

// defaultTTL is the life of an SVID of type typ when neither the request
// nor its workload identity names one.
func defaultTTL(typ string) time.Duration {
	switch typ {
	case svidJWT:
		return issuer.DefaultJWTTTL
	case svidWIT:
		return issuer.DefaultWITTTL
	}
	return issuer.DefaultX509TTL
}

// checkWorkloadSVID decides one workload SVID request from a bot with roles
// for a workload with attrs: the workload identity's selection and rules
// (when it names one), then the same path, SAN and TTL grant check as
// SignX509SVID. A TTL that the request did not ask for (the identity's or
// the default) is capped at the roles' maximum; one it asked for over the
// maximum is refused.
func (s *Server) checkWorkloadSVID(roles []*resource.Role, set *workloadSet, attrs map[string]string, it *authv1.WorkloadSVIDRequest) *workloadGrant {
	g := &workloadGrant{}
	var identityTTL time.Duration
	if it.Identity != "" {
		e := set.byName[it.Identity]
		if e == nil {
			return g.refuse(checkNotSelected, fmt.Sprintf("workload identity %q does not exist: list them with widctl get workload_identity", it.Identity))
		}
		if !rbac.SelectsWorkloadIdentity(roles, e.wi.Metadata.Labels) {
			return g.refuse(checkNotSelected, fmt.Sprintf("workload identity %q (%s) is not selected by the workload_identity_labels of roles %v: add a matching selector to one of them", it.Identity, describeLabels(e.wi.Metadata.Labels), names(roles)))
		}
		if e.err != nil {
			return g.refuse(checkTemplate, e.err.Error())
		}
		m, miss := e.compiled.Match(attrs)
		if miss != nil {
			return g.refuse(miss.Check, miss.Reason)
		}
		id, err := spiffeid.FromPath(s.td, m.Path)
		if err != nil {
			return g.refuse(checkTemplate, fmt.Sprintf("workload identity %q gives the invalid SPIFFE ID path %q: %v", it.Identity, m.Path, err))
		}
		g.id, g.hint = id, m.Hint
		if it.Type == svidX509 {
			g.dns = m.DNSSANs
		}
		switch it.Type {
		case svidX509:
			identityTTL = e.wi.Spec.X509.TTL.D()
		case svidJWT:
			identityTTL = e.wi.Spec.JWT.TTL.D()
		}
	} else {
		if it.SpiffeId == "" {
			return g.refuse(checkInvalidRequest, "an SVID from the agent's config needs a spiffe_id, and one for a workload identity needs its name")
		}
		id, err := resource.ParseSPIFFEID(s.td, it.SpiffeId)
		if err != nil {
			return g.refuse(checkInvalidRequest, err.Error())
		}
		g.id = id
		if it.Type == svidX509 {
			g.dns = it.DnsSans
		}
	}
	if it.TtlSeconds < 0 {
		return g.refuse(checkInvalidRequest, "the TTL must be positive, or 0 for the default")
	}
	asked := it.TtlSeconds > 0
	switch {
	case asked:
		g.ttl = time.Duration(it.TtlSeconds) * time.Second
	case identityTTL > 0:
		g.ttl = identityTTL
	default:
		g.ttl = defaultTTL(it.Type)
	}
	// A workload identity's DNS SANs were written by an administrator in
	// its spec: selecting the identity grants them, as Teleport's workload
	// identities do. Only SANs an agent's own config asks for need a grant.
	sans := g.dns
	if it.Identity != "" {
		sans = nil
	}
	d := rbac.CheckSVID(roles, rbac.Request{ID: g.id, DNSSANs: sans, TTL: g.ttl})
	if !d.Allowed {
		if !asked && d.Check == rbac.CheckTTLOverMax {
			// The TTL check comes last, so everything else holds.
			g.ttl = d.MaxTTL
			return g
		}
		return g.refuse(d.Check, d.Reason)
	}
	return g
}

func names(roles []*resource.Role) []string {
	out := make([]string, len(roles))
	for i, r := range roles {
		out[i] = r.Metadata.Name
	}
	return out
}

func (s *Server) IssueWorkloadSVIDs(ctx context.Context, req *authv1.IssueWorkloadSVIDsRequest) (*authv1.IssueWorkloadSVIDsResponse, error) {
	c := callerFrom(ctx)
	if err := requireBot(c, "issue workload SVIDs"); err != nil {
		return nil, err
	}
	n := len(req.Svids)
	switch {
	case n == 0:
		return nil, status.Error(codes.InvalidArgument, "the request asks for no SVIDs: list at least one")
	case n > MaxWorkloadSVIDs:
		return nil, status.Errorf(codes.InvalidArgument, "the request asks for %d SVIDs, over the limit of %d per call: split it", n, MaxWorkloadSVIDs)
	}
	for i, it := range req.Svids {
		switch it.Type {
		case svidX509, svidJWT, svidWIT:
		default:
			return nil, status.Errorf(codes.InvalidArgument, "SVID %d has type %q: use x509, jwt or wit", i+1, it.Type)
		}
	}
	set, err := s.res.workloadIdentities(ctx)
	if err != nil {
		return nil, storeError(resource.KindWorkloadIdentity, err)
	}
	host := s.agentHostOf(c.Name)
	results := make([]*authv1.WorkloadSVIDResult, n)
	events := make([]audit.Event, n)
	// Signing is CPU-bound: spread the items over every CPU.
	var (
		next atomic.Int64
		wg   sync.WaitGroup
	)
	for range min(runtime.GOMAXPROCS(0), n) {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				results[i], events[i] = s.issueWorkloadSVID(c, host, set, req.Attributes, req.Svids[i])
			}
		})
	}
	wg.Wait()
	// One call, so that the batch lands in as few audit commits as it can;
	// nothing is answered before it is durable.
	if _, err := s.audit.EmitAll(ctx, events); err != nil {
		return nil, status.Errorf(codes.Unavailable, "the SVIDs were not issued because they could not be audited: %v", err)
	}
	return &authv1.IssueWorkloadSVIDsResponse{Results: results}, nil
}

// issueWorkloadSVID checks and signs one item, and returns its answer and
// its audit event (issued or denied).
func (s *Server) issueWorkloadSVID(c *caller, host string, set *workloadSet, attrs map[string]string, it *authv1.WorkloadSVIDRequest) (*authv1.WorkloadSVIDResult, audit.Event) {
	ev := audit.Event{
		Type: audit.TypeSVIDDenied, Actor: c.Actor(s), Host: host, RemoteAddr: c.RemoteAddr,
		SVIDType: it.Type, Attributes: attrs, Outcome: audit.OutcomeDenied, Details: map[string]string{},
	}
	if it.Identity != "" {
		ev.Details["identity"] = it.Identity
	} else {
		ev.SPIFFEID = it.SpiffeId
	}
	res := &authv1.WorkloadSVIDResult{}
	// The issuer reads the same clock a moment later: expires_at minus this
	// is at most the SVID's lifetime, never more.
	issuedAt := s.clock()
	refuse := func(check, reason string) (*authv1.WorkloadSVIDResult, audit.Event) {
		ev.Reason, ev.Details["check"] = reason, check
		res.Error, res.Check = reason, check
		return res, ev
	}
	g := s.checkWorkloadSVID(c.Roles, set, attrs, it)
	if !g.id.IsZero() {
		ev.SPIFFEID, res.SpiffeId = g.id.String(), g.id.String()
	}
	ev.DNSSANs, ev.TTLSeconds = g.dns, int64(g.ttl/time.Second)
	res.Hint = g.hint
	if g.check != "" {
		return refuse(g.check, g.reason)
	}

	switch it.Type {
	case svidX509:
		// The agent is an authenticated bot that makes its workloads' keys
		// itself; a public key is enough (as Teleport's issuance takes), and
		// spares a signature check per SVID. A CSR is still taken.
		var (
			pub crypto.PublicKey
			err error
		)
		switch {
		case len(it.PublicKey) > 0:
			pub, err = issuer.ParsePublicKey(it.PublicKey)
		case len(it.Csr) > 0:
			pub, err = issuer.ParseCSR(it.Csr)
		default:
			return refuse(checkInvalidRequest, "an X509-SVID needs a public key or a CSR: the workload's key is made by the agent")
		}
		if err != nil {
			return refuse(checkInvalidRequest, err.Error())
		}
		svid, err := s.issuer.SignX509SVID(issuer.X509Params{ID: g.id, PublicKey: pub, TTL: g.ttl, DNSSANs: g.dns})
		if err != nil {
			return refuse(checkSigning, fmt.Sprintf("signing the X509-SVID for %s: %v", g.id, err))
		}
		for _, cert := range svid.Certificates {
			res.CertChain = append(res.CertChain, cert.Raw)
		}
		res.Serial, res.ExpiresAt = svid.Serial, timestamppb.New(svid.NotAfter)
		ev.Type, ev.Serial = audit.TypeX509SVIDIssued, svid.Serial
		ev.Details[audit.DetailCertificate] = base64.StdEncoding.EncodeToString(svid.Certificates[0].Raw)
		ev.TTLSeconds = int64(svid.NotAfter.Sub(svid.NotBefore.Add(time.Minute)) / time.Second)
	case svidJWT:
		if problem := audienceProblem(it.Audience); problem != "" {
			return refuse(checkInvalidRequest, problem+": the workload names it when it asks")
		}
		svid, err := s.issuer.SignJWTSVID(issuer.JWTParams{ID: g.id, Audience: it.Audience, TTL: g.ttl})
		if err != nil {
			return refuse(checkSigning, fmt.Sprintf("signing the JWT-SVID for %s: %v", g.id, err))
		}
		res.Token, res.Serial, res.ExpiresAt = svid.Token, svid.JTI, timestamppb.New(svid.ExpiresAt)
		ev.Type, ev.Serial = audit.TypeJWTSVIDIssued, svid.JTI
		ev.TTLSeconds = int64(svid.ExpiresAt.Sub(svid.IssuedAt) / time.Second)
		ev.Details["audience"] = strings.Join(it.Audience, ",")
	case svidWIT:
		if len(it.PublicKey) == 0 {
			return refuse(checkInvalidRequest, "a WIT-SVID needs the workload's public key, which the token binds")
		}
		pub, err := issuer.ParsePublicKey(it.PublicKey)
		if err != nil {
			return refuse(checkInvalidRequest, err.Error())
		}
		svid, err := s.issuer.SignWITSVID(issuer.WITParams{ID: g.id, PublicKey: pub, TTL: g.ttl})
		if err != nil {
			return refuse(checkSigning, fmt.Sprintf("signing the WIT-SVID for %s: %v", g.id, err))
		}
		res.Token, res.Serial, res.ExpiresAt = svid.Token, svid.JTI, timestamppb.New(svid.ExpiresAt)
		ev.Type, ev.Serial = audit.TypeWITSVIDIssued, svid.JTI
		ev.TTLSeconds = int64(svid.ExpiresAt.Sub(svid.IssuedAt) / time.Second)
	}
	res.IssuedAt = timestamppb.New(issuedAt)
	ev.Outcome = audit.OutcomeSuccess
	delete(ev.Details, "check")
	if len(ev.Details) == 0 {
		ev.Details = nil
	}
	return res, ev
}

// explainWorkloads says, for every workload identity sorted by name,
// whether roles would give a workload with attrs an X509-SVID for it, and
// why not: the checks IssueWorkloadSVIDs makes, without a key.
func (s *Server) explainWorkloads(ctx context.Context, roles []*resource.Role, attrs map[string]string) ([]*authv1.WorkloadExplanation, error) {
	set, err := s.res.workloadIdentities(ctx)
	if err != nil {
		return nil, storeError(resource.KindWorkloadIdentity, err)
	}
	out := make([]*authv1.WorkloadExplanation, 0, len(set.list))
	for _, e := range set.list {
		name := e.wi.Metadata.Name
		g := s.checkWorkloadSVID(roles, set, attrs, &authv1.WorkloadSVIDRequest{Identity: name, Type: svidX509})
		x := &authv1.WorkloadExplanation{Identity: name, Allowed: g.check == "", Reason: g.reason, Check: g.check}
		if !g.id.IsZero() {
			x.SpiffeId = g.id.String()
		}
		if x.Allowed {
			x.Reason = fmt.Sprintf("workload identity %q gives this workload %s", name, x.SpiffeId)
		}
		out = append(out, x)
	}
	for _, c := range set.corrupt {
		out = append(out, &authv1.WorkloadExplanation{Identity: c.name, Check: checkCorrupt,
			Reason: fmt.Sprintf("%v: it is skipped, so it gives no workload anything; %s", c, c.advice())})
	}
	slices.SortFunc(out, func(a, b *authv1.WorkloadExplanation) int { return strings.Compare(a.Identity, b.Identity) })
	return out, nil
}

// checkCorrupt is the explain check of a stored identity that does not decode.
const checkCorrupt = "corrupt"

// workloadsExplanation sums up explainWorkloads for an explain request that
// names no SPIFFE ID.
func workloadsExplanation(kind, name string, roleNames []string, workloads []*authv1.WorkloadExplanation) *authv1.ExplainResponse {
	var given []string
	for _, w := range workloads {
		if w.Allowed {
			given = append(given, w.Identity)
		}
	}
	resp := &authv1.ExplainResponse{Allowed: len(given) > 0, Roles: roleNames, Workloads: workloads}
	switch {
	case len(workloads) == 0:
		resp.Reason = "the trust domain has no workload identities: create one with widctl create -f"
	case len(given) == 0:
		resp.Reason = fmt.Sprintf("%s %q gives this workload none of the %d workload identities: see each one's reason", kind, name, len(workloads))
	default:
		resp.Reason = fmt.Sprintf("%s %q gives this workload %d of %d workload identities: %s", kind, name, len(given), len(workloads), strings.Join(given, ", "))
	}
	return resp
}
