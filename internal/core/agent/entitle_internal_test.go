package agent

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/rbac"
	"github.com/wid-project/wid/internal/core/resource"
)

// heldState is a state holding held workload identities, of which the
// first selecting select uid 1000 and the others uid 2000.
func heldState(tb testing.TB, held, selecting int) *state {
	tb.Helper()
	st, err := buildHeldState(held, selecting)
	if err != nil {
		tb.Fatal(err)
	}
	return st
}

func buildHeldState(held, selecting int) (*state, error) {
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
			return nil, err
		}
		docs[i] = doc
	}
	ca, err := newTestAuthority("ca")
	if err != nil {
		return nil, err
	}
	st, skipped, err := newState(&authv1.AgentState{TrustDomain: "example.org",
		Bundle: &authv1.AgentBundle{X509Authorities: [][]byte{ca}, Sequence: 1}, WorkloadIdentities: docs}, nil)
	if err != nil || len(skipped) != 0 {
		return nil, fmt.Errorf("state of %d identities: %v %v", held, err, skipped)
	}
	return st, nil
}

// TestEntitlementsKeepFewMisses: a process that 10,000 held identities do
// not select is told why by the first few and a count, and its cached
// entitlements keep no more than those few reasons.
func TestEntitlementsKeepFewMisses(t *testing.T) {
	st := heldNowhere(t).st
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
	st := heldNowhere(t).st
	attrs := map[string]string{"workload.unix.uid": "1000"}
	allocs := testing.AllocsPerRun(5, func() { entitle(st, nil, attrs) })
	if allocs > 200 {
		t.Errorf("matching one process against 10,000 identities that rule it out made %.0f allocations, want at most 200", allocs)
	}
}

// randomIdentity is a workload identity whose rules test a few attributes
// of a small pool against values of a small pool, with every operator, so
// that random workloads often match some rules and miss others.
func randomIdentity(r *rand.Rand, name string) *resource.WorkloadIdentity {
	attrs := []string{"workload.unix.uid", "workload.unix.gid", "workload.unix.path", "workload.kubernetes.namespace", "workload.kubernetes.service_account"}
	values := []string{"0", "1000", "2000", "/opt/web", "default", ""}
	pick := func() string { return values[r.IntN(len(values))] }
	some := func() []string {
		var out []string
		for _, v := range values {
			if r.IntN(3) == 0 {
				out = append(out, v)
			}
		}
		if len(out) == 0 {
			out = []string{pick()}
		}
		return out
	}
	var rules []resource.WorkloadRule
	for range 1 + r.IntN(3) {
		var rule resource.WorkloadRule
		for range 1 + r.IntN(3) {
			c := resource.Condition{Attribute: attrs[r.IntN(len(attrs))]}
			switch v := pick(); r.IntN(5) {
			case 0, 1:
				c.Eq = &v
			case 2:
				c.NotEq = &v
			case 3:
				c.In = some()
			default:
				c.NotIn = some()
			}
			rule.Conditions = append(rule.Conditions, c)
		}
		rules = append(rules, rule)
	}
	id := "/svc/" + name
	if r.IntN(2) == 0 {
		id += "/{{ workload.unix.uid }}"
	}
	wi := &resource.WorkloadIdentity{
		Header: resource.Header{Kind: resource.KindWorkloadIdentity, Version: resource.V1, Metadata: resource.Metadata{Name: name}},
		Spec: resource.WorkloadIdentitySpec{SPIFFE: resource.WorkloadSPIFFE{ID: id, Hint: fmt.Sprintf("h%d", r.IntN(20))},
			Rules: resource.WorkloadRules{Allow: rules}},
	}
	if r.IntN(4) == 0 {
		wi.Spec.X509.DNSSANs = []string{"{{ workload.kubernetes.namespace }}.example.org"}
	}
	return wi
}

func randomAttrs(r *rand.Rand) map[string]string {
	attrs := map[string]string{}
	for _, a := range []string{"workload.unix.uid", "workload.unix.gid", "workload.unix.path", "workload.kubernetes.namespace", "workload.kubernetes.service_account", "workload.unix.pid"} {
		if r.IntN(4) != 0 {
			attrs[a] = []string{"0", "1000", "2000", "/opt/web", "default", "", "other"}[r.IntN(7)]
		}
	}
	return attrs
}

// bruteForce is what a workload with attrs gets from identities by
// matching each compiled identity in name order, the way the agent matched
// before it kept an index: the entitlements' keys and hints, the reasons
// of the first misses and the count of misses.
func bruteForce(t *testing.T, identities map[string]*resource.WorkloadIdentity, attrs map[string]string) (got []string, reason string) {
	t.Helper()
	names := slices.Sorted(maps.Keys(identities))
	e := &entitlements{}
	for _, n := range names {
		w, err := rbac.CompileWorkload(identities[n])
		if err != nil {
			t.Fatal(err)
		}
		en, miss := entitleOne(spiffeid.RequireTrustDomainFromString("example.org"), w, false, attrs)
		if miss != "" {
			if e.missed++; len(e.misses) < showMisses {
				e.misses = append(e.misses, miss)
			}
			continue
		}
		got = append(got, en.key+" hint="+en.hint)
	}
	return got, e.reason()
}

func entitledKeys(e *entitlements) []string {
	var out []string
	for _, en := range e.list {
		out = append(out, en.key+" hint="+en.hint)
	}
	return out
}

// TestIndexedMatchingAgreesWithBruteForce: for random identities and
// workloads, what entitle gives through the index (which SVIDs, which
// reasons, how many misses) is what matching every identity gives, on a
// snapshot and on states that deltas built from it, whose index is carried
// over and patched.
func TestIndexedMatchingAgreesWithBruteForce(t *testing.T) {
	ca := testAuthority(t, "ca")
	for seed := uint64(1); seed <= 20; seed++ {
		r := rand.New(rand.NewPCG(seed, 18))
		identities := map[string]*resource.WorkloadIdentity{}
		var docs [][]byte
		add := func(name string) []byte {
			wi := randomIdentity(r, name)
			if err := wi.Validate(); err != nil {
				t.Fatalf("seed %d: a random identity does not validate: %v", seed, err)
			}
			doc, err := resource.MarshalJSON(wi)
			if err != nil {
				t.Fatal(err)
			}
			identities[name] = wi
			return doc
		}
		for i := range 40 + r.IntN(60) {
			docs = append(docs, add(fmt.Sprintf("w%03d", i)))
		}
		st, skipped, err := newState(&authv1.AgentState{TrustDomain: "example.org", Epoch: "e", Revision: 1,
			Bundle: &authv1.AgentBundle{X509Authorities: [][]byte{ca}, Sequence: 1}, WorkloadIdentities: docs}, nil)
		if err != nil || len(skipped) != 0 {
			t.Fatalf("seed %d: %v %v", seed, err, skipped)
		}
		for step := range 4 {
			for range 50 {
				attrs := randomAttrs(r)
				want, wantReason := bruteForce(t, identities, attrs)
				e := entitle(st, nil, attrs)
				if got := entitledKeys(e); !slices.Equal(got, want) {
					t.Fatalf("seed %d step %d, attrs %v: entitled to\n%v\nmatching every identity gives\n%v", seed, step, attrs, got, want)
				}
				if got := e.reason(); got != wantReason {
					t.Fatalf("seed %d step %d, attrs %v: reason %q, matching every identity gives %q", seed, step, attrs, got, wantReason)
				}
			}
			// A delta: some identities change, some go, some come.
			delta := &authv1.AgentState{TrustDomain: "example.org", Epoch: "e", BaseRevision: int64(step + 1), Revision: int64(step + 2), Delta: true}
			for _, n := range slices.Sorted(maps.Keys(identities)) {
				switch r.IntN(8) {
				case 0:
					delta.RemovedWorkloadIdentities = append(delta.RemovedWorkloadIdentities, n)
					delete(identities, n)
				case 1:
					delta.WorkloadIdentities = append(delta.WorkloadIdentities, add(n))
				}
			}
			for i := range r.IntN(10) {
				delta.WorkloadIdentities = append(delta.WorkloadIdentities, add(fmt.Sprintf("n%d-%d", step, i)))
			}
			if st, skipped, err = applyDelta(st, delta); err != nil || len(skipped) != 0 {
				t.Fatalf("seed %d step %d: delta: %v %v", seed, step, err, skipped)
			}
		}
	}
}

// TestHeldIdentitiesCompiledOnlyAsCandidates: of 10,000 held identities,
// matching a process compiles those that select it and the few whose
// reasons it is told, not the thousands that select workloads elsewhere.
func TestHeldIdentitiesCompiledOnlyAsCandidates(t *testing.T) {
	st := heldState(t, 10000, 1000)
	if e := entitle(st, nil, map[string]string{"workload.unix.uid": "1000"}); len(e.list) != 1000 {
		t.Fatalf("entitled to %d, want 1000", len(e.list))
	}
	e := entitle(st, nil, map[string]string{"workload.unix.uid": "3000"})
	if len(e.list) != 0 || e.missed != 10000 {
		t.Fatalf("uid 3000: entitled to %d, %d missed", len(e.list), e.missed)
	}
	compiled := 0
	for _, h := range st.held {
		if h.w.Load() != nil {
			compiled++
		}
	}
	if compiled > 1000+showMisses {
		t.Errorf("%d of 10,000 held identities are compiled, want at most %d", compiled, 1000+showMisses)
	}
}

// heldNowhereState is a state of 10,000 held identities none of which
// selects uid 1000 here, and what building it added to the heap per
// identity. Building one takes tens of seconds under the race detector, so
// the tests that only match against it share one; matching compiles at
// most the few identities whose reasons it names, after the weight was
// taken.
type heldNowhereState struct {
	st  *state
	per float64
}

var heldNowhereOnce = sync.OnceValues(func() (*heldNowhereState, error) {
	heap := func() uint64 {
		// Twice: the pooled deflater goes at the second collection.
		runtime.GC()
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	warm, err := buildHeldState(100, 0) // the pools and the dictionary, warm
	if err != nil {
		return nil, err
	}
	before := heap()
	st, err := buildHeldState(10000, 0)
	if err != nil {
		return nil, err
	}
	per := float64(heap()-before) / 10000
	runtime.KeepAlive(warm)
	return &heldNowhereState{st: st, per: per}, nil
})

// heldNowhere is the shared heldNowhereState.
func heldNowhere(t *testing.T) *heldNowhereState {
	t.Helper()
	h, err := heldNowhereOnce()
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// TestHeldIdentityWeight: an agent holding 10,000 identities that select
// no workload here keeps each in under 200 bytes (about 430 when every
// identity was kept compiled).
func TestHeldIdentityWeight(t *testing.T) {
	per := heldNowhere(t).per
	t.Logf("%.0f bytes per held identity", per)
	if per > 200 {
		t.Errorf("a held identity that selects nothing here weighs %.0f bytes, want at most 200", per)
	}
}
