package issuance

import (
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/audit"
	"github.com/wid-project/wid/internal/core/rbac"
	"github.com/wid-project/wid/internal/core/resource"
)

// TestDecide: the policy check both kinds of caller share, with each one's
// rules. A TTL the request did not ask for is capped at the roles' maximum;
// one it asked for over the maximum is refused; DNS SANs a workload
// identity grants need no role grant.
func TestDecide(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	s := New(td, nil, nil)
	roles := []*resource.Role{{Spec: resource.RoleSpec{
		Allow:   resource.RoleConditions{SPIFFE: []resource.SPIFFEGrant{{Path: "/svc/**", DNSSANs: []string{"web.example.org"}}}},
		Options: resource.RoleOptions{MaxSVIDTTL: resource.Duration(30 * time.Minute)},
	}}}
	person := Rules{NegativeTTL: "the TTL must be positive", CheckSANForm: true}
	workload := Rules{NegativeTTL: "the TTL must be positive, or 0 for the default"}
	for _, tt := range []struct {
		name   string
		rules  Rules
		req    Request
		check  string
		reason string
		ttl    time.Duration
	}{
		{"default TTL capped", person, Request{RawID: "/svc/web", DefaultTTL: time.Hour}, "", "", 30 * time.Minute},
		{"asked TTL over the maximum", person, Request{RawID: "/svc/web", TTLSeconds: 3600, DefaultTTL: time.Hour}, rbac.CheckTTLOverMax, "", 0},
		{"asked TTL within", person, Request{RawID: "/svc/web", TTLSeconds: 60, DefaultTTL: time.Hour}, "", "", time.Minute},
		{"negative TTL, person", person, Request{RawID: "/svc/web", TTLSeconds: -1}, CheckInvalidRequest, "the TTL must be positive", 0},
		{"negative TTL, workload", workload, Request{RawID: "/svc/web", TTLSeconds: -1}, CheckInvalidRequest, "the TTL must be positive, or 0 for the default", 0},
		{"path not granted", person, Request{RawID: "/db/main", DefaultTTL: time.Minute}, rbac.CheckPathNotGranted, "", 0},
		{"bad IP SAN", person, Request{RawID: "/svc/web", RawIPSANs: []string{"ten"}, DefaultTTL: time.Minute}, CheckInvalidRequest, "IP SAN ten is not an IP address", 0},
		{"DNS SAN not granted", person, Request{RawID: "/svc/web", DNSSANs: []string{"api.example.org"}, DefaultTTL: time.Minute}, rbac.CheckDNSSANNotGranted, "", 0},
		{"DNS SAN malformed", person, Request{RawID: "/svc/web", DNSSANs: []string{"a*.example.org"}, DefaultTTL: time.Minute}, CheckInvalidRequest, "", 0},
		{"DNS SAN of a workload identity", workload, Request{ID: spiffeid.RequireFromPath(td, "/svc/web"), DNSSANs: []string{"api.example.org"}, DNSGranted: true, DefaultTTL: time.Minute}, "", "", time.Minute},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tt.req.Type, tt.req.Roles = authv1.SVIDTypeX509, roles
			d := s.Decide(&tt.req, &tt.rules)
			if d.Check != tt.check || (tt.reason != "" && d.Reason != tt.reason) {
				t.Fatalf("check %q reason %q, want check %q reason %q", d.Check, d.Reason, tt.check, tt.reason)
			}
			if tt.check == "" && d.TTL != tt.ttl {
				t.Errorf("TTL %s, want %s", d.TTL, tt.ttl)
			}
		})
	}
}

// TestRefusalEvent: a refusal is one denied audit event that carries the
// check, the caller's details, the advice only where the rules say, and the
// raw ID when none was parsed.
func TestRefusalEvent(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	s := New(td, nil, nil)
	req := &Request{Type: authv1.SVIDTypeJWT, RawID: "not an id", Event: audit.Event{Actor: "bot:edge", SPIFFEID: "not an id", Details: map[string]string{"identity": "web"}}}
	r := s.Refuse(req, &Rules{AudienceAdvice: ": say who", AuditAdvice: true}, Decision{Check: CheckInvalidRequest, Reason: "no audience", Advice: ": say who"})
	ev := r.Event
	if ev.Type != audit.TypeSVIDDenied || ev.Outcome != audit.OutcomeDenied || ev.Reason != "no audience: say who" ||
		ev.Details["check"] != CheckInvalidRequest || ev.Details["identity"] != "web" || ev.SPIFFEID != "not an id" || ev.SVIDType != authv1.SVIDTypeJWT {
		t.Fatalf("refusal event %+v", ev)
	}
	if _, ok := req.Event.Details["check"]; ok {
		t.Error("the refusal wrote into the caller's details")
	}
	r = s.Refuse(req, &Rules{}, Decision{Check: CheckInvalidRequest, Reason: "no audience", Advice: ": say who"})
	if r.Event.Reason != "no audience" {
		t.Errorf("advice audited against the rules: %q", r.Event.Reason)
	}
}
