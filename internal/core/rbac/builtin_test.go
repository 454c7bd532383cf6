package rbac

import (
	"net"
	"testing"

	"github.com/wid-project/wid/internal/core/resource"
)

func TestBuiltinRoles(t *testing.T) {
	roles := BuiltinRoles()
	byName := map[string]*resource.Role{}
	for _, r := range roles {
		if err := r.Validate(); err != nil {
			t.Errorf("built-in role %s is invalid: %v", r.Metadata.Name, err)
		}
		// A built-in role must survive `widctl get role/NAME -o yaml | widctl create -f -`.
		y, err := resource.MarshalYAML(r)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := resource.Decode(y); err != nil {
			t.Errorf("built-in role %s does not decode from its own YAML: %v\n%s", r.Metadata.Name, err, y)
		}
		byName[r.Metadata.Name] = r
	}
	editor, agent := byName[RoleEditor], byName[RoleLocalAgent]
	if editor == nil || agent == nil || len(roles) != 2 {
		t.Fatalf("BuiltinRoles() = %v, want editor and local-agent", roles)
	}

	editorOnly := []*resource.Role{editor}
	for _, kind := range resource.RuleResources {
		for _, verb := range resource.Verbs {
			if d := CheckRule(editorOnly, kind, verb); !d.Allowed {
				t.Errorf("editor may not %s %s: %s", verb, kind, d.Reason)
			}
		}
	}
	if d := CheckSVID(editorOnly, Request{ID: id("/any/deep/path")}); !d.Allowed {
		t.Errorf("editor may not issue /any/deep/path: %s", d.Reason)
	}
	// "/**" grants paths, not SANs.
	if d := CheckSVID(editorOnly, Request{ID: id("/svc"), DNSSANs: []string{"evil.com"}}); d.Check != CheckDNSSANNotGranted {
		t.Errorf("editor got DNS SAN evil.com: %+v", d)
	}
	if d := CheckSVID(editorOnly, Request{ID: id("/svc"), IPSANs: []net.IP{net.ParseIP("10.0.0.1")}}); d.Check != CheckIPSANNotGranted {
		t.Errorf("editor got an IP SAN: %+v", d)
	}

	agentOnly := []*resource.Role{agent}
	for _, labels := range []map[string]string{nil, {"env": "prod"}, {"app": "db", "team": "x"}} {
		if !SelectsWorkloadIdentity(agentOnly, labels) {
			t.Errorf("local-agent does not select a workload identity labelled %v", labels)
		}
	}
	if SelectsWorkloadIdentity(editorOnly, nil) {
		t.Error("editor selects workload identities; only agents' roles should")
	}
	for _, ok := range [][2]string{{"workload_identity", "read"}, {"workload_identity", "list"}, {"role", "list"}, {"bundle", "read"}} {
		if d := CheckRule(agentOnly, ok[0], ok[1]); !d.Allowed {
			t.Errorf("local-agent may not %s %s: %s", ok[1], ok[0], d.Reason)
		}
	}
	for _, no := range [][2]string{{"workload_identity", "delete"}, {"role", "create"}, {"user", "read"}, {"cert_authority", "update"}} {
		if d := CheckRule(agentOnly, no[0], no[1]); d.Allowed {
			t.Errorf("local-agent may %s %s", no[1], no[0])
		}
	}
	if d := CheckSVID(agentOnly, Request{ID: id("/uid/1000")}); !d.Allowed {
		t.Errorf("local-agent may not issue /uid/1000: %s", d.Reason)
	}

	// Each call builds new roles, so a caller's change stays its own.
	roles[0].Spec.Allow.SPIFFE[0].Path = "/changed"
	if BuiltinRoles()[0].Spec.Allow.SPIFFE[0].Path != "/**" {
		t.Error("changing a returned built-in role changed the next call's result")
	}
}
