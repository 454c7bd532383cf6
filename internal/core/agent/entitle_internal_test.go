package agent

import (
	"fmt"
	"strconv"
	"strings"
	"testing"

	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/rbac"
	"github.com/wid-project/wid/internal/core/resource"
)

// heldState is a state holding held workload identities, of which the
// first selecting select uid 1000 and the others uid 2000.
func heldState(tb testing.TB, held, selecting int) *state {
	tb.Helper()
	docs := make([][]byte, held)
	for i := range docs {
		want := "2000"
		if i < selecting {
			want = "1000"
		}
		name := fmt.Sprintf("svc-%05d", i)
		wi := &resource.WorkloadIdentity{
			Header: resource.Header{Kind: resource.KindWorkloadIdentity, Version: resource.V1, Metadata: resource.Metadata{Name: name}},
			Spec: resource.WorkloadIdentitySpec{SPIFFE: resource.WorkloadSPIFFE{ID: "/svc/" + name + "/{{ workload.unix.uid }}", Hint: name},
				Rules: resource.WorkloadRules{Allow: []resource.WorkloadRule{{Conditions: []resource.Condition{{Attribute: "workload.unix.uid", Eq: &want}}}}}},
		}
		doc, err := resource.MarshalJSON(wi)
		if err != nil {
			tb.Fatal(err)
		}
		docs[i] = doc
	}
	st, skipped, err := newState(&authv1.AgentState{TrustDomain: "example.org",
		Bundle: &authv1.AgentBundle{X509Authorities: [][]byte{testAuthority(tb, "ca")}, Sequence: 1}, WorkloadIdentities: docs}, nil)
	if err != nil || len(skipped) != 0 {
		tb.Fatalf("state of %d identities: %v %v", held, err, skipped)
	}
	return st
}

// TestEntitlementsKeepFewMisses: a process that 10,000 held identities do
// not select is told why by the first few and a count, and its cached
// entitlements keep no more than those few reasons.
func TestEntitlementsKeepFewMisses(t *testing.T) {
	st := heldState(t, 10000, 0)
	e := entitle(st, nil, map[string]string{"workload.unix.uid": "1000"})
	if len(e.list) != 0 {
		t.Fatalf("entitled to %v", e.ids())
	}
	if len(e.misses) > 3 {
		t.Errorf("the entitlements keep %d reasons, want at most 3", len(e.misses))
	}
	r := e.reason()
	if !strings.HasPrefix(r, `workload identity "svc-00000" does not match`) || !strings.HasSuffix(r, "and 9997 more") {
		t.Errorf("reason: %q", r)
	}

	// Matches are kept in full, beside the misses.
	e = entitle(heldState(t, 10, 5), nil, map[string]string{"workload.unix.uid": "1000"})
	if len(e.list) != 5 || !strings.HasSuffix(e.reason(), "and 2 more") {
		t.Errorf("5 of 10 selecting: %d entitled, reason %q", len(e.list), e.reason())
	}
}

// BenchmarkEntitleHeld: what matching a new process costs an agent holding
// 1,000 and 10,000 identities of which 1,000 select it (once per process
// and state; then its entitlements are cached), and what the cached
// entitlements of one process weigh.
func BenchmarkEntitleHeld(b *testing.B) {
	attrs := map[string]string{"workload.unix.uid": "1000"}
	for _, held := range []int{1000, 10000} {
		b.Run("held="+strconv.Itoa(held), func(b *testing.B) {
			st := heldState(b, held, 1000)
			b.ReportAllocs()
			b.ResetTimer()
			var e *entitlements
			for i := 0; i < b.N; i++ {
				e = entitle(st, nil, attrs)
			}
			b.StopTimer()
			if len(e.list) != 1000 {
				b.Fatalf("entitled to %d", len(e.list))
			}
			kept := 0
			for _, m := range e.misses {
				kept += len(m)
			}
			b.ReportMetric(float64(kept), "miss-bytes-kept")
		})
	}
}

// TestEntitleSkipsRuledOutCheaply: a process that 10,000 held identities
// do not select, each by an equality condition, is matched without a
// reason formatted for each: a new process on an agent holding 10,000
// costs about what it costs on one holding 1,000.
func TestEntitleSkipsRuledOutCheaply(t *testing.T) {
	st := heldState(t, 10000, 0)
	attrs := map[string]string{"workload.unix.uid": "1000"}
	allocs := testing.AllocsPerRun(5, func() { entitle(st, nil, attrs) })
	if allocs > 200 {
		t.Errorf("matching one process against 10,000 identities that rule it out made %.0f allocations, want at most 200", allocs)
	}
}

// TestRuledOutAgreesWithMatch: ruledOut never rules out an identity that
// Match would select, for rules with and without equality conditions.
func TestRuledOutAgreesWithMatch(t *testing.T) {
	s := func(v string) *string { return &v }
	cases := [][]resource.WorkloadRule{
		nil,
		{{Conditions: []resource.Condition{{Attribute: "workload.unix.uid", Eq: s("1000")}}}},
		{{Conditions: []resource.Condition{{Attribute: "workload.unix.uid", Eq: s("2000")}}}},
		{{Conditions: []resource.Condition{{Attribute: "workload.unix.uid", Eq: s("2000")}}}, {Conditions: []resource.Condition{{Attribute: "workload.unix.gid", Eq: s("7")}}}},
		{{Conditions: []resource.Condition{{Attribute: "workload.unix.uid", Glob: s("1*")}}}},
		{{Conditions: []resource.Condition{{Attribute: "workload.unix.uid", Glob: s("1*")}, {Attribute: "workload.unix.gid", Eq: s("8")}}}},
		{{Conditions: []resource.Condition{{Attribute: "workload.unix.uid", NotEq: s("1000")}}}},
		{{Conditions: []resource.Condition{{Attribute: "absent", Eq: s("")}}}},
	}
	for _, attrs := range []map[string]string{{"workload.unix.uid": "1000", "workload.unix.gid": "7"}, {"workload.unix.uid": "2000"}, {}} {
		for i, rules := range cases {
			wi := &resource.WorkloadIdentity{
				Header: resource.Header{Kind: resource.KindWorkloadIdentity, Version: resource.V1, Metadata: resource.Metadata{Name: "w"}},
				Spec:   resource.WorkloadIdentitySpec{SPIFFE: resource.WorkloadSPIFFE{ID: "/w"}, Rules: resource.WorkloadRules{Allow: rules}},
			}
			w, err := rbac.CompileWorkload(wi)
			if err != nil {
				t.Fatal(err)
			}
			_, miss := w.Match(attrs)
			if ruledOut(w, attrs) && miss == nil {
				t.Errorf("case %d, attrs %v: ruled out an identity that matches", i, attrs)
			}
		}
	}
}
