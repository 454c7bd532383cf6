package rbac

import (
	"strings"
	"testing"
	"time"

	"github.com/wid-project/wid/internal/core/resource"
)

func TestPatternCovers(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want bool
	}{
		{"/svc/**", "/svc/web", true},
		{"/svc/**", "/svc/*", true},
		{"/svc/**", "/svc/**", true},
		{"/svc/**", "/svc/a/**", true},
		{"/svc/**", "/svc", false},
		{"/svc/**", "/**", false},
		{"/svc/*", "/svc/web", true},
		{"/svc/*", "/svc/*", true},
		{"/svc/*", "/svc/**", false},
		{"/svc/*", "/svc/a/b", false},
		{"/svc/web", "/svc/*", false},
		{"/svc/web", "/svc/web", true},
		{"/svc/web", "/svc/web/x", false},
		{"/**", "/svc/admin", true},
		{"/*/web", "/svc/web", true},
		{"/*/web", "/svc/api", false},
	} {
		if got := PatternCovers(c.a, c.b); got != c.want {
			t.Errorf("PatternCovers(%s, %s) = %v, want %v", c.a, c.b, got, c.want)
		}
	}
}

func TestPatternsOverlap(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want bool
	}{
		{"/svc/admin", "/**", true},
		{"/svc/admin", "/svc/*", true},
		{"/svc/admin", "/svc/web", false},
		{"/svc/**", "/svc", false},
		{"/svc/*/x", "/svc/a/*", true},
		{"/svc/*", "/svc/a/b", false},
		{"/a/**", "/b/**", false},
	} {
		if got := PatternsOverlap(c.a, c.b); got != c.want {
			t.Errorf("PatternsOverlap(%s, %s) = %v, want %v", c.a, c.b, got, c.want)
		}
		if got := PatternsOverlap(c.b, c.a); got != c.want {
			t.Errorf("PatternsOverlap(%s, %s) = %v, want %v", c.b, c.a, got, c.want)
		}
	}
}

func specRole(name string, spec resource.RoleSpec) *resource.Role {
	return &resource.Role{Header: resource.Header{Kind: resource.KindRole, Version: resource.V1, Metadata: resource.Metadata{Name: name}}, Spec: spec}
}

func TestCheckGrantable(t *testing.T) {
	tokens := specRole("tokens", resource.RoleSpec{Allow: resource.RoleConditions{
		Rules: []resource.Rule{{Resources: []string{"token"}, Verbs: []string{"create"}}},
	}})
	web := specRole("web", resource.RoleSpec{Allow: resource.RoleConditions{
		SPIFFE:                 []resource.SPIFFEGrant{{Path: "/svc/web/**", DNSSANs: []string{"*.web.example.com"}, IPSANs: []string{"10.0.0.0/8"}}},
		Rules:                  []resource.Rule{{Resources: []string{"workload_identity"}, Verbs: []string{"read", "list"}}},
		WorkloadIdentityLabels: map[string][]string{"team": {"web", "api"}},
	}, Options: resource.RoleOptions{MaxSVIDTTL: resource.Duration(time.Hour)}})
	webOnly := specRole("web-only", resource.RoleSpec{Allow: resource.RoleConditions{
		SPIFFE:                 []resource.SPIFFEGrant{{Path: "/svc/web/api", DNSSANs: []string{"a.web.example.com"}, IPSANs: []string{"10.1.0.0/16"}}},
		Rules:                  []resource.Rule{{Resources: []string{"workload_identity"}, Verbs: []string{"read"}}},
		WorkloadIdentityLabels: map[string][]string{"team": {"web"}},
	}, Options: resource.RoleOptions{MaxSVIDTTL: resource.Duration(30 * time.Minute)}})
	editor, localAgent := BuiltinRoles()[0], BuiltinRoles()[1]
	denyAdmin := specRole("no-admin", resource.RoleSpec{
		Allow: resource.RoleConditions{SPIFFE: []resource.SPIFFEGrant{{Path: "/**"}}},
		Deny:  resource.RoleConditions{SPIFFE: []resource.SPIFFEGrant{{Path: "/svc/admin"}}},
	})
	all := specRole("all", resource.RoleSpec{Allow: resource.RoleConditions{SPIFFE: []resource.SPIFFEGrant{{Path: "/**"}}}})
	for _, c := range []struct {
		name   string
		caller []*resource.Role
		target []*resource.Role
		want   string // "" when allowed, else part of the reason
	}{
		{"token rights only, local-agent bot", []*resource.Role{tokens}, []*resource.Role{localAgent}, `role "local-agent" grants SPIFFE path /**`},
		{"editor grants anything", []*resource.Role{editor}, []*resource.Role{localAgent, web}, ""},
		{"narrower in every way", []*resource.Role{web}, []*resource.Role{webOnly}, ""},
		{"wider than the caller", []*resource.Role{webOnly}, []*resource.Role{web}, "none of your grants covers"},
		{"longer SVIDs", []*resource.Role{web}, []*resource.Role{specRole("long", resource.RoleSpec{Allow: resource.RoleConditions{SPIFFE: []resource.SPIFFEGrant{{Path: "/svc/web/x"}}}})}, "allow SVIDs for up to"},
		{"a rule the caller lacks", []*resource.Role{webOnly}, []*resource.Role{specRole("lister", resource.RoleSpec{Allow: resource.RoleConditions{Rules: []resource.Rule{{Resources: []string{"workload_identity"}, Verbs: []string{"list"}}}}})}, `allows "list" on "workload_identity"`},
		{"a wider selector", []*resource.Role{webOnly}, []*resource.Role{specRole("sel", resource.RoleSpec{Allow: resource.RoleConditions{WorkloadIdentityLabels: map[string][]string{"team": {"*"}}}})}, "selects workload identities"},
		{"the caller's deny dropped", []*resource.Role{denyAdmin}, []*resource.Role{all}, `denies SPIFFE path /svc/admin`},
		{"the caller's deny kept", []*resource.Role{denyAdmin}, []*resource.Role{denyAdmin}, ""},
		{"no roles at all", []*resource.Role{tokens}, nil, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := CheckGrantable(c.caller, c.target)
			if c.want == "" {
				if !d.Allowed {
					t.Fatalf("refused: %s", d.Reason)
				}
				return
			}
			if d.Allowed || d.Check != CheckEscalation || !strings.Contains(d.Reason, c.want) {
				t.Fatalf("got %+v, want a refusal saying %q", d, c.want)
			}
		})
	}
}
