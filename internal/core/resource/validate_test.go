package resource

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func validRole() *Role {
	return &Role{
		Header: Header{Kind: KindRole, Version: V1, Metadata: Metadata{Name: "dev"}},
		Spec: RoleSpec{
			Allow: RoleConditions{
				SPIFFE:                 []SPIFFEGrant{{Path: "/svc/*", DNSSANs: []string{"*.example.com"}, IPSANs: []string{"10.0.0.0/8", "fd00::1"}}},
				Rules:                  []Rule{{Resources: []string{KindRole, ResourceAudit}, Verbs: []string{VerbRead, VerbList}}},
				WorkloadIdentityLabels: map[string][]string{"env": {"prod", "dev"}},
			},
			Deny:    RoleConditions{SPIFFE: []SPIFFEGrant{{Path: "/svc/admin"}}, Rules: []Rule{{Resources: []string{"*"}, Verbs: []string{VerbDelete}}}},
			Options: RoleOptions{MaxSVIDTTL: Duration(4 * time.Hour), MaxSessionTTL: Duration(12 * time.Hour)},
		},
	}
}

func validWorkloadIdentity() *WorkloadIdentity {
	return &WorkloadIdentity{
		Header: Header{Kind: KindWorkloadIdentity, Version: V1, Metadata: Metadata{Name: "web", Labels: map[string]string{"env": "prod"}}},
		Spec: WorkloadIdentitySpec{
			SPIFFE: WorkloadSPIFFE{ID: "/svc/web/{{ workload.kubernetes.namespace }}", Hint: "web"},
			X509:   WorkloadX509{DNSSANs: []string{"web.internal", "{{ workload.kubernetes.namespace }}.web.internal"}, TTL: Duration(time.Hour)},
			JWT:    WorkloadJWT{TTL: Duration(5 * time.Minute)},
			Rules: WorkloadRules{Allow: []WorkloadRule{{Conditions: []Condition{
				{Attribute: "workload.unix.uid", Eq: new("1000")},
				{Attribute: "workload.unix.path", Glob: new("/usr/bin/*")},
			}}}},
		},
	}
}

func validJoinToken() *JoinToken {
	return &JoinToken{
		Header: Header{Kind: KindJoinToken, Version: V1, Metadata: Metadata{Name: "t1"}},
		Spec: JoinTokenSpec{Bot: "agent-1", Method: JoinMethodToken, Uses: 2, Used: 1,
			Expires:    time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC),
			SecretHash: strings.Repeat("ab", 32)},
	}
}

type validateCase struct {
	name      string
	mutate    func()
	wantField string
	wantErr   string
}

// runValidate checks every case against a fresh valid resource: the
// unchanged resource must pass, and each mutation must fail on the named
// field with the expected words.
func runValidate(t *testing.T, fresh func() Resource, cases func(r Resource) []validateCase) {
	t.Helper()
	if err := fresh().Validate(); err != nil {
		t.Fatalf("valid resource refused: %v", err)
	}
	n := len(cases(fresh()))
	for i := 0; i < n; i++ {
		r := fresh()
		c := cases(r)[i]
		t.Run(c.name, func(t *testing.T) {
			c.mutate()
			err := r.Validate()
			checkErr(t, err, c.wantErr)
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("error %v is not a *FieldError", err)
			}
			if fe.Field != c.wantField {
				t.Errorf("Field = %q, want %q", fe.Field, c.wantField)
			}
			if !strings.HasPrefix(fe.Message, fe.Field) {
				t.Errorf("Message %q does not start with Field %q", fe.Message, fe.Field)
			}
		})
	}
}

func TestRoleValidate(t *testing.T) {
	runValidate(t, func() Resource { return validRole() }, func(res Resource) []validateCase {
		r := res.(*Role)
		a := &r.Spec.Allow
		return []validateCase{
			{"no name", func() { r.Metadata.Name = "" }, "metadata.name", "role: metadata.name: a name is required"},
			{"bad name", func() { r.Metadata.Name = "Dev" }, "metadata.name", `name "Dev" is invalid`},
			{"wrong version", func() { r.Version = "v2" }, "version", `role "dev": version "v2" is not supported: use version: v1`},
			{"no version", func() { r.Version = "" }, "version", "version is missing: add version: v1"},
			{"wrong kind", func() { r.Kind = KindUser }, "kind", `kind is "user" but this is a role: set kind: role`},
			{"empty label key", func() { r.Metadata.Labels = map[string]string{"": "x"} }, "metadata.labels", "a label has an empty name"},
			{"double slash", func() { a.SPIFFE[0].Path = "/svc//x" }, "spec.allow.spiffe[1].path",
				`role "dev": spec.allow.spiffe[1].path "/svc//x" has an empty segment 2 ("//"): remove the extra "/"`},
			{"dot segment", func() { a.SPIFFE[0].Path = "/svc/../x" }, "spec.allow.spiffe[1].path", `has a ".." segment`},
			{"percent", func() { a.SPIFFE[0].Path = "/svc/a%2Fb" }, "spec.allow.spiffe[1].path", "no percent-encoding"},
			{"too long", func() { a.SPIFFE[0].Path = "/" + strings.Repeat("a", 3000) }, "spec.allow.spiffe[1].path", "3001 bytes long"},
			{"partial glob", func() { r.Spec.Deny.SPIFFE[0].Path = "/svc/we*" }, "spec.deny.spiffe[1].path", `partial glob "we*"`},
			{"inner double star", func() { a.SPIFFE[0].Path = "/**/x" }, "spec.allow.spiffe[1].path", "only allowed as the last segment"},
			{"bad dns", func() { a.SPIFFE[0].DNSSANs = []string{"ok.example.com", "bad_name.com"} }, "spec.allow.spiffe[1].dns_sans[2]", `spec.allow.spiffe[1].dns_sans[2] "bad_name.com" has the character '_'`},
			{"wildcard dns", func() { a.SPIFFE[0].DNSSANs = []string{"*"} }, "spec.allow.spiffe[1].dns_sans[1]", "would allow every name"},
			{"host bits", func() { a.SPIFFE[0].IPSANs = []string{"10.0.0.1/8"} }, "spec.allow.spiffe[1].ip_sans[1]", "write 10.0.0.0/8"},
			{"bad cidr", func() { a.SPIFFE[0].IPSANs = []string{"10.0.0.0/99"} }, "spec.allow.spiffe[1].ip_sans[1]", "is not a CIDR"},
			{"not ip", func() { r.Spec.Deny.SPIFFE[0].IPSANs = []string{"host"} }, "spec.deny.spiffe[1].ip_sans[1]", "neither an IP address nor a CIDR"},
			{"no resources", func() { a.Rules[0].Resources = nil }, "spec.allow.rules[1].resources", "is empty"},
			{"unknown resource", func() { a.Rules[0].Resources = []string{"roles"} }, "spec.allow.rules[1].resources[1]", `"roles" is not something rules guard: use one of role, user, bot, token, workload_identity, trust_domain_federation, lock, audit, bundle, cert_authority, svid, or "*"`},
			{"no verbs", func() { r.Spec.Deny.Rules[0].Verbs = nil }, "spec.deny.rules[1].verbs", "is empty"},
			{"unknown verb", func() { a.Rules[0].Verbs = []string{"read", "write"} }, "spec.allow.rules[1].verbs[2]", `"write" is not a verb: use one of create, read, list, update, delete, or "*"`},
			{"empty selector key", func() { a.WorkloadIdentityLabels = map[string][]string{"": {"x"}} }, "spec.allow.workload_identity_labels", "a label has an empty name"},
			{"bad selector key", func() { a.WorkloadIdentityLabels = map[string][]string{"<<": {"x"}} }, "spec.allow.workload_identity_labels", `label name "<<" is invalid`},
			{"bad label key", func() { r.Metadata.Labels = map[string]string{"a b": "x"} }, "metadata.labels", `label name "a b" is invalid`},
			{"selector no values", func() { a.WorkloadIdentityLabels = map[string][]string{"env": {}} }, "spec.allow.workload_identity_labels", `label "env" lists no values`},
			{"star key", func() { a.WorkloadIdentityLabels = map[string][]string{"*": {"prod"}} }, "spec.allow.workload_identity_labels", `may only be used as "*": ["*"]`},
			{"negative ttl", func() { r.Spec.Options.MaxSVIDTTL = Duration(-time.Hour) }, "spec.options.max_svid_ttl", "-1h is negative"},
			{"ttl over max", func() { r.Spec.Options.MaxSVIDTTL = Duration(48 * time.Hour) }, "spec.options.max_svid_ttl", "48h is over the 24h that any SVID may live: set 24h or less"},
			{"negative session", func() { r.Spec.Options.MaxSessionTTL = Duration(-time.Minute) }, "spec.options.max_session_ttl", "is negative"},
		}
	})
}

func TestUserAndBotValidate(t *testing.T) {
	for _, kind := range []string{KindUser, KindBot} {
		fresh := func() Resource {
			h := Header{Kind: kind, Version: V1, Metadata: Metadata{Name: "alice"}}
			if kind == KindUser {
				return &User{Header: h, Spec: UserSpec{Roles: []string{"editor", "dev"}}}
			}
			return &Bot{Header: h, Spec: BotSpec{Roles: []string{"editor", "dev"}}}
		}
		setRoles := func(r Resource, roles []string) {
			switch v := r.(type) {
			case *User:
				v.Spec.Roles = roles
			case *Bot:
				v.Spec.Roles = roles
			}
		}
		t.Run(kind, func(t *testing.T) {
			runValidate(t, fresh, func(r Resource) []validateCase {
				return []validateCase{
					{"empty role", func() { setRoles(r, []string{"dev", ""}) }, "spec.roles[2]", kind + ` "alice": spec.roles[2]: role a name is required`},
					{"bad role", func() { setRoles(r, []string{"Dev"}) }, "spec.roles[1]", `role name "Dev" is invalid`},
					{"repeated role", func() { setRoles(r, []string{"dev", "dev"}) }, "spec.roles[2]", `repeats the role "dev"`},
					{"no name", func() { r.GetMetadata().Name = "" }, "metadata.name", "a name is required"},
				}
			})
		})
	}
}

func TestJoinTokenValidate(t *testing.T) {
	runValidate(t, func() Resource { return validJoinToken() }, func(res Resource) []validateCase {
		tok := res.(*JoinToken)
		s := &tok.Spec
		return []validateCase{
			{"no bot", func() { s.Bot = "" }, "spec.bot", "spec.bot: bot a name is required"},
			{"bad bot", func() { s.Bot = "Agent" }, "spec.bot", `name "Agent" is invalid`},
			{"no method", func() { s.Method = "" }, "spec.method", "is missing: use token, kubernetes or x509pop"},
			{"bad method", func() { s.Method = "magic" }, "spec.method", `"magic" is not a join method: use token, kubernetes or x509pop`},
			{"no uses", func() { s.Uses, s.Used = 0, 0 }, "spec.uses", "0 would let no bot join"},
			{"negative used", func() { s.Used = -1 }, "spec.used", "-1 is negative"},
			{"overused", func() { s.Used = 3 }, "spec.used", "3 is over spec.uses 2"},
			{"no expiry", func() { s.Expires = time.Time{} }, "spec.expires", "is missing"},
			{"bad hash", func() { s.SecretHash = "xyz" }, "spec.secret_hash", "is not a SHA-256"},
			{"upper hash", func() { s.SecretHash = strings.Repeat("AB", 32) }, "spec.secret_hash", "is not a SHA-256"},
		}
	})
}

func TestWorkloadIdentityValidate(t *testing.T) {
	runValidate(t, func() Resource { return validWorkloadIdentity() }, func(res Resource) []validateCase {
		w := res.(*WorkloadIdentity)
		s := &w.Spec
		cond := func() *Condition { return &s.Rules.Allow[0].Conditions[0] }
		return []validateCase{
			{"no id", func() { s.SPIFFE.ID = "" }, "spec.spiffe.id", "is missing"},
			{"full id", func() { s.SPIFFE.ID = "spiffe://example.org/svc" }, "spec.spiffe.id", "is a full SPIFFE ID: write only the path"},
			{"double slash", func() { s.SPIFFE.ID = "/svc//{{ workload.unix.uid }}" }, "spec.spiffe.id", `has an empty segment 2 ("//")`},
			{"dot segment", func() { s.SPIFFE.ID = "/svc/./{{ workload.unix.uid }}" }, "spec.spiffe.id", `has a "." segment`},
			{"percent", func() { s.SPIFFE.ID = "/svc/%{{ workload.unix.uid }}" }, "spec.spiffe.id", "no percent-encoding"},
			{"no leading slash", func() { s.SPIFFE.ID = "{{ workload.unix.uid }}" }, "spec.spiffe.id", `must start with "/"`},
			{"bad attribute", func() { s.SPIFFE.ID = "/svc/{{ unix.uid }}" }, "spec.spiffe.id", `attribute "unix.uid" is not a workload attribute`},
			{"unclosed", func() { s.SPIFFE.ID = "/svc/{{ workload.unix.uid" }, "spec.spiffe.id", "without a closing"},
			{"too long", func() { s.SPIFFE.ID = "/" + strings.Repeat("a", 2100) }, "spec.spiffe.id", "over the limit of 2048 bytes"},
			{"long hint", func() { s.SPIFFE.Hint = strings.Repeat("h", 65) }, "spec.spiffe.hint", "65 characters long, over the limit of 64"},
			{"bad dns", func() { s.X509.DNSSANs = []string{"bad_{{ workload.unix.uid }}.com"} }, "spec.x509.dns_sans[1]", "has the character '_'"},
			{"bad dns template", func() { s.X509.DNSSANs = []string{"{{ workload }}.com"} }, "spec.x509.dns_sans[1]", "is not a workload attribute"},
			{"negative x509 ttl", func() { s.X509.TTL = -1 }, "spec.x509.ttl", "is negative"},
			{"negative jwt ttl", func() { s.JWT.TTL = -1 }, "spec.jwt.ttl", "is negative"},
			{"no rules", func() { s.Rules.Allow = nil }, "spec.rules.allow", "would match every process on every agent"},
			{"no conditions", func() { s.Rules.Allow[0].Conditions = nil }, "spec.rules.allow[1].conditions", "a rule with no conditions matches every process"},
			{"no attribute", func() { cond().Attribute = "" }, "spec.rules.allow[1].conditions[1].attribute", "is missing"},
			{"bad attribute name", func() { cond().Attribute = "unix.uid" }, "spec.rules.allow[1].conditions[1].attribute", "is not a workload attribute"},
			{"no operator", func() { cond().Eq = nil }, "spec.rules.allow[1].conditions[1]", "has no operator: set exactly one of eq, not_eq, in, not_in or glob"},
			{"two operators", func() { cond().Glob = new("1*") }, "spec.rules.allow[1].conditions[1]", "sets eq and glob: set exactly one"},
			{"empty in", func() { cond().Eq, cond().In = nil, []string{} }, "spec.rules.allow[1].conditions[1].in", "is empty, so it matches nothing"},
			{"empty not_in", func() { cond().Eq, cond().NotIn = nil, []string{} }, "spec.rules.allow[1].conditions[1].not_in", "is empty"},
			{"bad glob", func() { s.Rules.Allow[0].Conditions[1].Glob = new("/usr/[bin") }, "spec.rules.allow[1].conditions[2].glob", `"/usr/[bin" is not a valid glob`},
			// path.Match only reports a bad pattern it reaches; the whole
			// pattern must be checked even when its start cannot match.
			{"bad glob tail", func() { s.Rules.Allow[0].Conditions[1].Glob = new("x[") }, "spec.rules.allow[1].conditions[2].glob", "is not a valid glob"},
		}
	})
}
