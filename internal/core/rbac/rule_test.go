package rbac

import (
	"testing"

	"github.com/wid-project/wid/internal/core/resource"
)

func ruleRole(name string, allow, deny []resource.Rule) *resource.Role {
	r := &resource.Role{
		Header: resource.Header{Kind: resource.KindRole, Version: resource.V1, Metadata: resource.Metadata{Name: name}},
		Spec:   resource.RoleSpec{Allow: resource.RoleConditions{Rules: allow}, Deny: resource.RoleConditions{Rules: deny}},
	}
	if err := r.Validate(); err != nil {
		panic(err)
	}
	return r
}

func rule(resources, verbs []string) resource.Rule {
	return resource.Rule{Resources: resources, Verbs: verbs}
}

func TestCheckRule(t *testing.T) {
	viewer := ruleRole("viewer", []resource.Rule{
		rule([]string{"audit"}, []string{"list"}),
		rule([]string{"role", "user"}, []string{"read", "list"}),
	}, nil)
	all := ruleRole("all", []resource.Rule{rule([]string{"*"}, []string{"*"})}, nil)
	anyVerbOnBots := ruleRole("bots", []resource.Rule{rule([]string{"bot"}, []string{"*"})}, nil)
	anyKindRead := ruleRole("reader", []resource.Rule{rule([]string{"*"}, []string{"read"})}, nil)
	noDelete := ruleRole("no-delete", nil, []resource.Rule{
		rule([]string{"audit"}, []string{"update"}),
		rule([]string{"*"}, []string{"delete"}),
	})

	tests := []struct {
		name    string
		roles   []*resource.Role
		kind    string
		verb    string
		allowed bool
		check   string
		role    string
		rule    int
		reason  string
	}{
		{name: "no roles", kind: "role", verb: "read", check: CheckNoRoles,
			reason: `no role allows "read" on "role": the caller holds no roles, so give it a role with a rule {resources: [role], verbs: [read]}`},
		{name: "allowed", roles: []*resource.Role{viewer}, kind: "role", verb: "read", allowed: true, role: "viewer", rule: 2,
			reason: `role "viewer" allows "read" on "role" (spec.allow.rules[2])`},
		{name: "not granted", roles: []*resource.Role{viewer}, kind: "role", verb: "delete", check: CheckRuleNotGranted, role: "viewer",
			reason: `role "viewer" allows no "delete" on "role": add a rule {resources: [role], verbs: [delete]}`},
		{name: "other kind", roles: []*resource.Role{viewer}, kind: "bot", verb: "read", check: CheckRuleNotGranted},
		{name: "not granted by several", roles: []*resource.Role{viewer, anyVerbOnBots}, kind: "token", verb: "create", check: CheckRuleNotGranted,
			reason: `roles [viewer bots] allow no "create" on "token": add a rule {resources: [token], verbs: [create]} to one of them`},
		{name: "wildcard both", roles: []*resource.Role{all}, kind: "cert_authority", verb: "update", allowed: true, role: "all", rule: 1},
		{name: "wildcard verb", roles: []*resource.Role{anyVerbOnBots}, kind: "bot", verb: "delete", allowed: true},
		{name: "wildcard verb, other kind", roles: []*resource.Role{anyVerbOnBots}, kind: "user", verb: "delete", check: CheckRuleNotGranted},
		{name: "wildcard resource", roles: []*resource.Role{anyKindRead}, kind: "workload_identity", verb: "read", allowed: true},
		{name: "wildcard resource, other verb", roles: []*resource.Role{anyKindRead}, kind: "workload_identity", verb: "list", check: CheckRuleNotGranted},
		{name: "second role grants", roles: []*resource.Role{viewer, anyVerbOnBots}, kind: "bot", verb: "update", allowed: true, role: "bots", rule: 1},
		{name: "deny beats allow across roles", roles: []*resource.Role{all, noDelete}, kind: "role", verb: "delete", check: CheckDenied, role: "no-delete", rule: 2,
			reason: `role "no-delete" denies "delete" on "role" (spec.deny.rules[2])`},
		{name: "deny first in the list", roles: []*resource.Role{noDelete, all}, kind: "audit", verb: "update", check: CheckDenied, role: "no-delete", rule: 1},
		{name: "deny leaves other verbs", roles: []*resource.Role{all, noDelete}, kind: "role", verb: "create", allowed: true, role: "all"},
		{name: "deny alone grants nothing", roles: []*resource.Role{noDelete}, kind: "role", verb: "read", check: CheckRuleNotGranted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := CheckRule(tt.roles, tt.kind, tt.verb)
			if d.Allowed != tt.allowed || d.Check != tt.check {
				t.Fatalf("CheckRule = allowed %v check %q (%s), want allowed %v check %q", d.Allowed, d.Check, d.Reason, tt.allowed, tt.check)
			}
			if tt.role != "" && d.Role != tt.role {
				t.Errorf("Role = %q, want %q", d.Role, tt.role)
			}
			if tt.rule != 0 && d.Rule != tt.rule {
				t.Errorf("Rule = %d, want %d", d.Rule, tt.rule)
			}
			if tt.reason != "" && d.Reason != tt.reason {
				t.Errorf("Reason = %q\n           want %q", d.Reason, tt.reason)
			}
			if d.Reason == "" {
				t.Error("decision has no Reason")
			}
		})
	}
}
