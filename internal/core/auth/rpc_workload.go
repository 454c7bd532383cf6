package auth

import (
	"context"
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
	"github.com/wid-project/wid/internal/core/issuance"
	"github.com/wid-project/wid/internal/core/issuer"
	"github.com/wid-project/wid/internal/core/rbac"
	"github.com/wid-project/wid/internal/core/resource"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// MaxWorkloadSVIDs caps the SVIDs of one IssueWorkloadSVIDs call.
const MaxWorkloadSVIDs = 2000

// Checks of workload SVIDs besides rbac's and issuance's (see
// WorkloadExplanation.check).
const (
	// checkNotSelected: the workload identity does not exist, or none of the
	// bot's roles selects it by workload_identity_labels.
	checkNotSelected = "not_selected"
	// checkRules and checkTemplate come from rbac.Workload.Match.
	checkRules    = "rules"
	checkTemplate = "template"
)

// workloadRules are the issuance rules of IssueWorkloadSVIDs. The agent is
// an authenticated bot that makes its workloads' keys itself; a public key
// is enough (as Teleport's issuance takes), and spares a signature check
// per SVID. A CSR is still taken.
var workloadRules = issuance.Rules{
	NegativeTTL:    "the TTL must be positive, or 0 for the default",
	PublicKeyFirst: true,
	NoKey:          "an X509-SVID needs a public key or a CSR: the workload's key is made by the agent",
	AudienceAdvice: ": the workload names it when it asks",
	AuditAdvice:    true,
}

// defaultTTL is the life of an SVID of type typ when neither the request
// nor its workload identity names one.
func (s *Server) defaultTTL(typ string) time.Duration {
	switch typ {
	case authv1.SVIDTypeJWT:
		return s.defaultJWTTTL()
	case authv1.SVIDTypeWIT:
		return issuer.DefaultWITTTL
	}
	return s.defaultX509TTL()
}

// workloadRequest turns one workload SVID request from a bot with roles for
// a workload with attrs into an issuance request. When it names a workload
// identity, that identity's selection and rules decide first, and give the
// SPIFFE ID, the DNS SANs (which selecting the identity grants, as
// Teleport's workload identities do: an administrator wrote them in its
// spec) and the default TTL; a refusal there is returned as refused.
func (s *Server) workloadRequest(roles []*resource.Role, set *workloadSet, attrs map[string]string, it *authv1.WorkloadSVIDRequest) (req *issuance.Request, hint string, refused *issuance.Decision) {
	req = &issuance.Request{
		Type: it.Type, Roles: roles, RawID: it.SpiffeId, TTLSeconds: it.TtlSeconds, DefaultTTL: s.defaultTTL(it.Type),
		Audience: it.Audience, PublicKey: it.PublicKey, CSR: it.Csr,
	}
	refuse := func(check, reason string) (*issuance.Request, string, *issuance.Decision) {
		return req, "", &issuance.Decision{Check: check, Reason: reason}
	}
	if it.Identity == "" {
		if it.SpiffeId == "" {
			return refuse(issuance.CheckInvalidRequest, "an SVID from the agent's config needs a spiffe_id, and one for a workload identity needs its name")
		}
		req.DNSSANs = it.DnsSans
		return req, "", nil
	}
	req.RawID = ""
	e := set.byName[it.Identity]
	if e == nil {
		return refuse(checkNotSelected, fmt.Sprintf("workload identity %q does not exist", it.Identity))
	}
	if !rbac.SelectsWorkloadIdentity(roles, e.wi.Metadata.Labels) {
		return refuse(checkNotSelected, fmt.Sprintf("workload identity %q (%s) is not selected by the workload_identity_labels of roles %v: add a matching selector to one of them", it.Identity, describeLabels(e.wi.Metadata.Labels), names(roles)))
	}
	if e.err != nil {
		return refuse(checkTemplate, e.err.Error())
	}
	m, miss := e.compiled.Match(attrs)
	if miss != nil {
		return refuse(miss.Check, miss.Reason)
	}
	id, err := spiffeid.FromPath(s.td, m.Path)
	if err != nil {
		return refuse(checkTemplate, fmt.Sprintf("workload identity %q gives the invalid SPIFFE ID path %q: %v", it.Identity, m.Path, err))
	}
	req.ID, req.DNSSANs, req.DNSGranted = id, m.DNSSANs, true
	var identityTTL time.Duration
	switch it.Type {
	case authv1.SVIDTypeX509:
		identityTTL = e.wi.Spec.X509.TTL.D()
	case authv1.SVIDTypeJWT:
		identityTTL = e.wi.Spec.JWT.TTL.D()
	}
	if identityTTL > 0 {
		req.DefaultTTL = identityTTL
	}
	return req, m.Hint, nil
}

// checkWorkloadSVID decides one workload SVID request without signing it:
// the workload identity's selection and rules (when it names one), then the
// same path, SAN and TTL grant check as SignX509SVID. A TTL that the request
// did not ask for (the identity's or the default) is capped at the roles'
// maximum; one it asked for over the maximum is refused.
func (s *Server) checkWorkloadSVID(roles []*resource.Role, set *workloadSet, attrs map[string]string, it *authv1.WorkloadSVIDRequest) *issuance.Decision {
	req, _, refused := s.workloadRequest(roles, set, attrs, it)
	if refused != nil {
		return refused
	}
	return s.issuance.Decide(req, &workloadRules)
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
		case authv1.SVIDTypeX509, authv1.SVIDTypeJWT, authv1.SVIDTypeWIT:
		default:
			return nil, status.Errorf(codes.InvalidArgument, "SVID %d has type %q: use x509, jwt or wit", i+1, it.Type)
		}
	}
	set, err := s.res.workloadIdentities(ctx)
	if err != nil {
		return nil, storeError(resource.KindWorkloadIdentity, err)
	}
	// The host of the caller's own certificate: another agent of the same
	// bot may run elsewhere.
	host := c.Host
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
	req, hint, refused := s.workloadRequest(c.Roles, set, attrs, it)
	req.Event = audit.Event{Actor: c.Actor(s), Host: host, RemoteAddr: c.RemoteAddr, Attributes: attrs}
	if it.Identity != "" {
		req.Event.Details = map[string]string{"identity": it.Identity}
	} else {
		req.Event.SPIFFEID = it.SpiffeId
	}
	var r *issuance.Result
	if refused != nil {
		r = s.issuance.Refuse(req, &workloadRules, *refused)
	} else {
		r = s.issuance.Issue(req, &workloadRules)
	}
	res := &authv1.WorkloadSVIDResult{Hint: hint}
	if !r.ID.IsZero() {
		res.SpiffeId = r.ID.String()
	}
	if r.Refused() {
		res.Error, res.Check = r.Reason+r.Advice, r.Check
		return res, r.Event
	}
	res.CertChain, res.Token, res.Serial = r.CertChain, r.Token, r.Serial
	res.IssuedAt, res.ExpiresAt = timestamppb.New(r.IssuedAt), timestamppb.New(r.ExpiresAt)
	return res, r.Event
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
		g := s.checkWorkloadSVID(roles, set, attrs, &authv1.WorkloadSVIDRequest{Identity: name, Type: authv1.SVIDTypeX509})
		x := &authv1.WorkloadExplanation{Identity: name, Allowed: !g.Refused(), Reason: g.Reason, Check: g.Check}
		if !g.ID.IsZero() {
			x.SpiffeId = g.ID.String()
		}
		if x.Allowed {
			x.Reason = fmt.Sprintf("workload identity %q gives this workload %s", name, x.SpiffeId)
		}
		out = append(out, x)
	}
	for _, c := range set.corrupt {
		out = append(out, &authv1.WorkloadExplanation{Identity: c.name, Check: checkCorrupt,
			Reason: fmt.Sprintf("%v: it is skipped, so it gives no workload anything", c)})
	}
	slices.SortFunc(out, func(a, b *authv1.WorkloadExplanation) int { return strings.Compare(a.Identity, b.Identity) })
	return out, nil
}

// checkCorrupt is the explain check of a stored identity that does not decode.
const checkCorrupt = authv1.ExplainCheckCorrupt

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
		resp.Reason, resp.Check = "the trust domain has no workload identities", authv1.ExplainCheckNoWorkloadIdentities
	case len(given) == 0:
		resp.Reason = fmt.Sprintf("%s %q gives this workload none of the %d workload identities: see each one's reason", kind, name, len(workloads))
	default:
		resp.Reason = fmt.Sprintf("%s %q gives this workload %d of %d workload identities: %s", kind, name, len(given), len(workloads), strings.Join(given, ", "))
	}
	return resp
}
