package rbac

import (
	"strings"
	"testing"

	"github.com/wid-project/wid/internal/core/resource"
)

func workload(t *testing.T, id string, dns []string, rules ...resource.WorkloadRule) *Workload {
	t.Helper()
	wi := &resource.WorkloadIdentity{
		Header: resource.Header{Kind: resource.KindWorkloadIdentity, Version: resource.V1, Metadata: resource.Metadata{Name: "web"}},
		Spec: resource.WorkloadIdentitySpec{
			SPIFFE: resource.WorkloadSPIFFE{ID: id, Hint: "web"},
			X509:   resource.WorkloadX509{DNSSANs: dns},
			Rules:  resource.WorkloadRules{Allow: rules},
		},
	}
	if err := wi.Validate(); err != nil {
		t.Fatal(err)
	}
	w, err := CompileWorkload(wi)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func wrule(conds ...resource.Condition) resource.WorkloadRule {
	return resource.WorkloadRule{Conditions: conds}
}

func TestWorkloadMatch(t *testing.T) {
	uid1000 := resource.Condition{Attribute: "workload.unix.uid", Eq: new("1000")}
	notRoot := resource.Condition{Attribute: "workload.unix.uid", NotEq: new("0")}
	inStaff := resource.Condition{Attribute: "workload.unix.group", In: []string{"staff", "dev"}}
	notInBad := resource.Condition{Attribute: "workload.unix.user", NotIn: []string{"nobody"}}
	binGlob := resource.Condition{Attribute: "workload.unix.path", Glob: new("/usr/bin/*")}

	tests := []struct {
		name      string
		w         *Workload
		attrs     map[string]string
		wantPath  string
		wantDNS   []string
		wantCheck string
		wantWhy   []string
	}{
		{"eq holds", workload(t, "/uid/{{ workload.unix.uid }}", nil, wrule(uid1000)),
			map[string]string{"workload.unix.uid": "1000"}, "/uid/1000", nil, "", nil},
		{"eq fails names value and wanted", workload(t, "/uid/{{ workload.unix.uid }}", nil, wrule(uid1000)),
			map[string]string{"workload.unix.uid": "1001"}, "", nil, "rules", []string{`workload.unix.uid is "1001", not "1000"`}},
		{"all conditions of a rule must hold", workload(t, "/svc/web", nil, wrule(uid1000, binGlob)),
			map[string]string{"workload.unix.uid": "1000", "workload.unix.path": "/opt/web"}, "", nil, "rules", []string{`does not match "/usr/bin/*"`}},
		{"any rule matches", workload(t, "/svc/web", nil, wrule(uid1000), wrule(inStaff)),
			map[string]string{"workload.unix.uid": "1", "workload.unix.group": "dev"}, "/svc/web", nil, "", nil},
		{"each failing rule is named", workload(t, "/svc/web", nil, wrule(uid1000), wrule(inStaff)),
			map[string]string{"workload.unix.uid": "1", "workload.unix.group": "ops"}, "", nil, "rules", []string{"rule 1:", "rule 2:", `not one of ["staff", "dev"]`}},
		{"missing attribute fails not_eq", workload(t, "/svc/web", nil, wrule(notRoot)),
			map[string]string{}, "", nil, "rules", []string{"workload.unix.uid is not set"}},
		{"not_eq excludes", workload(t, "/svc/web", nil, wrule(notRoot)),
			map[string]string{"workload.unix.uid": "0"}, "", nil, "rules", []string{"excluded"}},
		{"not_in excludes", workload(t, "/svc/web", nil, wrule(notInBad)),
			map[string]string{"workload.unix.user": "nobody"}, "", nil, "rules", []string{"excluded"}},
		{"glob matches", workload(t, "/svc/web", nil, wrule(binGlob)),
			map[string]string{"workload.unix.path": "/usr/bin/web"}, "/svc/web", nil, "", nil},
		{"template attribute missing gives no SVID", workload(t, "/ns/{{ workload.kubernetes.namespace }}", nil, wrule(uid1000)),
			map[string]string{"workload.unix.uid": "1000"}, "", nil, "template", []string{"workload.kubernetes.namespace is not set"}},
		{"template value with slash is refused", workload(t, "/user/{{ workload.unix.user }}", nil, wrule(uid1000)),
			map[string]string{"workload.unix.uid": "1000", "workload.unix.user": "a/b"}, "", nil, "template", []string{`contains "/"`}},
		{"dns sans filled in", workload(t, "/svc/web", []string{"{{ workload.unix.user }}.web.internal"}, wrule(uid1000)),
			map[string]string{"workload.unix.uid": "1000", "workload.unix.user": "alice"}, "/svc/web", []string{"alice.web.internal"}, "", nil},
		{"dns san that cannot be filled in", workload(t, "/svc/web", []string{"{{ workload.unix.user }}.web.internal"}, wrule(uid1000)),
			map[string]string{"workload.unix.uid": "1000", "workload.unix.user": "bad_name!"}, "", nil, "template", []string{"DNS SAN"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, miss := tt.w.Match(tt.attrs)
			if tt.wantCheck == "" {
				if miss != nil {
					t.Fatalf("no match: %v", miss)
				}
				if m.Path != tt.wantPath || strings.Join(m.DNSSANs, ",") != strings.Join(tt.wantDNS, ",") || m.Hint != "web" {
					t.Fatalf("match = %+v, want path %s dns %v", m, tt.wantPath, tt.wantDNS)
				}
				return
			}
			if miss == nil {
				t.Fatalf("matched %+v, want a %s mismatch", m, tt.wantCheck)
			}
			if miss.Check != tt.wantCheck || miss.Identity != "web" {
				t.Errorf("mismatch = %+v, want check %s", miss, tt.wantCheck)
			}
			for _, w := range tt.wantWhy {
				if !strings.Contains(miss.Reason, w) {
					t.Errorf("reason %q does not say %q", miss.Reason, w)
				}
			}
		})
	}
}

func BenchmarkWorkloadMatch1000(b *testing.B) {
	var ws []*Workload
	t := &testing.T{}
	for range 1000 {
		ws = append(ws, workload(t, "/uid/{{ workload.unix.uid }}", nil,
			wrule(resource.Condition{Attribute: "workload.unix.uid", Eq: new("1000")}, resource.Condition{Attribute: "workload.unix.path", Glob: new("/usr/*")})))
	}
	attrs := map[string]string{"workload.unix.uid": "1000", "workload.unix.path": "/usr/web", "workload.unix.gid": "1000"}
	for b.Loop() {
		for _, w := range ws {
			if _, miss := w.Match(attrs); miss != nil {
				b.Fatal(miss)
			}
		}
	}
}
