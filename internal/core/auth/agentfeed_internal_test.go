package auth

import (
	"context"
	"crypto/x509"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/ca"
	"github.com/wid-project/wid/internal/core/resource"
	"github.com/wid-project/wid/internal/core/store"
	"github.com/wid-project/wid/internal/core/store/sqlite"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// feedTest is a change log over a real SQLite store, fed by every write as
// the server feeds it.
type feedTest struct {
	t     *testing.T
	ctx   context.Context
	res   *resources
	feed  *agentFeed
	caSeq atomic.Int64
}

func newFeedTest(t *testing.T) *feedTest {
	t.Helper()
	ctx := context.Background()
	db, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "wid.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	ft := &feedTest{t: t, ctx: ctx}
	ft.caSeq.Store(1)
	ft.res = newResources(db, nil, func(changes ...resourceChange) {
		ft.res.changed(ctx, changes...)
		for _, c := range changes {
			ft.feed.changed(ctx, c.kind, c.name)
		}
	})
	ft.feed = newAgentFeed("example.org", ft.res.log, ft.res, func() (*ca.AgentView, error) {
		seq := ft.caSeq.Load()
		return &ca.AgentView{X509Authorities: []*x509.Certificate{{Raw: []byte{byte(seq)}}}, BundleSequence: uint64(seq),
			CAs: map[ca.Type]ca.CAView{ca.TypeSPIFFE: {Sequence: seq}}}, nil
	}, time.Now)
	return ft
}

func (ft *feedTest) put(v resource.Resource) {
	ft.t.Helper()
	o, err := op(store.OpUpsert, v)
	if err != nil {
		ft.t.Fatal(err)
	}
	if _, err := ft.res.apply(ft.ctx, o); err != nil {
		ft.t.Fatalf("writing %s: %v", resource.Ref(v), err)
	}
}

func (ft *feedTest) rm(kind, name string) {
	ft.t.Helper()
	if _, err := ft.res.apply(ft.ctx, store.Op{Type: store.OpDelete, Item: store.Item{Kind: kind, Name: name}}); err != nil {
		ft.t.Fatalf("removing %s/%s: %v", kind, name, err)
	}
}

func feedRole(name string, read bool, envs ...string) *resource.Role {
	r := &resource.Role{Header: resource.Header{Kind: resource.KindRole, Version: resource.V1, Metadata: resource.Metadata{Name: name}}}
	if read {
		r.Spec.Allow.Rules = []resource.Rule{{Resources: []string{resource.KindWorkloadIdentity}, Verbs: []string{"read", "list"}}}
	}
	r.Spec.Allow.WorkloadIdentityLabels = map[string][]string{"env": envs}
	return r
}

func feedBot(name string, roles ...string) *resource.Bot {
	return &resource.Bot{Header: resource.Header{Kind: resource.KindBot, Version: resource.V1, Metadata: resource.Metadata{Name: name}}, Spec: resource.BotSpec{Roles: roles}}
}

func feedIdentity(name, env string) *resource.WorkloadIdentity {
	return &resource.WorkloadIdentity{
		Header: resource.Header{Kind: resource.KindWorkloadIdentity, Version: resource.V1, Metadata: resource.Metadata{Name: name, Labels: map[string]string{"env": env}}},
		Spec: resource.WorkloadIdentitySpec{SPIFFE: resource.WorkloadSPIFFE{ID: "/svc/" + name},
			Rules: resource.WorkloadRules{Allow: []resource.WorkloadRule{{Conditions: []resource.Condition{{Attribute: "workload.unix.uid", Eq: new(string)}}}}}},
	}
}

// agentView is what an agent holds: identity documents by name, applied
// from snapshots and deltas as the agent applies them.
type agentView struct {
	rev    int64
	docs   map[string]string
	bundle *authv1.AgentBundle
}

func (v *agentView) apply(t *testing.T, st *authv1.AgentState) {
	t.Helper()
	if !st.Delta {
		v.docs = map[string]string{}
	} else if st.BaseRevision != v.rev {
		t.Fatalf("delta from revision %d applied at revision %d", st.BaseRevision, v.rev)
	}
	if st.Revision <= v.rev {
		t.Fatalf("revision went from %d to %d", v.rev, st.Revision)
	}
	for _, n := range st.RemovedWorkloadIdentities {
		delete(v.docs, n)
	}
	for _, d := range st.WorkloadIdentities {
		wi, err := resource.UnmarshalStored(d)
		if err != nil {
			t.Fatal(err)
		}
		v.docs[wi.GetMetadata().Name] = string(d)
	}
	if st.Bundle != nil {
		v.bundle = st.Bundle
	}
	v.rev = st.Revision
}

func (v *agentView) names() []string {
	var out []string
	for n := range v.docs {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// follow brings v up to date with deltas and checks it then holds exactly
// what a fresh snapshot gives; it returns the delta's state (nil: none).
func (ft *feedTest) follow(v *agentView, sel *botSelection) *authv1.AgentState {
	ft.t.Helper()
	st, to, ok, err := ft.feed.delta(ft.ctx, sel, v.rev)
	if err != nil || !ok {
		ft.t.Fatalf("delta from %d: ok %v, %v", v.rev, ok, err)
	}
	if st != nil {
		v.apply(ft.t, st)
	} else if to != v.rev {
		// The agent was told nothing: the next delta must be based on
		// the revision it holds.
		ft.t.Fatalf("an empty delta moved the stream from %d to %d", v.rev, to)
	}
	snap, err := ft.feed.snapshot(ft.ctx, sel)
	if err != nil {
		ft.t.Fatal(err)
	}
	var fresh agentView
	fresh.apply(ft.t, snap)
	if !slices.Equal(fresh.names(), v.names()) {
		ft.t.Fatalf("after deltas the agent holds %v, a snapshot gives %v", v.names(), fresh.names())
	}
	for n, d := range fresh.docs {
		if v.docs[n] != d {
			ft.t.Fatalf("after deltas the agent holds another document of %s than a snapshot", n)
		}
	}
	return st
}

func (ft *feedTest) start(bot string) (*botSelection, *agentView) {
	ft.t.Helper()
	sel, err := ft.feed.acquire(ft.ctx, bot)
	if err != nil {
		ft.t.Fatal(err)
	}
	st, err := ft.feed.snapshot(ft.ctx, sel)
	if err != nil {
		ft.t.Fatal(err)
	}
	v := &agentView{}
	v.apply(ft.t, st)
	return sel, v
}

func wantDelta(t *testing.T, st *authv1.AgentState, upserts []string, removed []string) {
	t.Helper()
	if st == nil {
		t.Fatalf("no delta, want upserts %v and removals %v", upserts, removed)
	}
	var got []string
	for _, d := range st.WorkloadIdentities {
		wi, _ := resource.UnmarshalStored(d)
		got = append(got, wi.GetMetadata().Name)
	}
	slices.Sort(got)
	rm := slices.Sorted(slices.Values(st.RemovedWorkloadIdentities))
	if !slices.Equal(got, upserts) || !slices.Equal(rm, removed) {
		t.Fatalf("delta upserts %v and removes %v, want %v and %v", got, rm, upserts, removed)
	}
}

// TestAgentFeedDeltasFollowWritesInOrder: each write to an identity a bot
// selects (or selected) is one delta with exactly that identity, in
// revision order, and the agent then holds what a snapshot gives; a write
// to an identity it never selects sends it nothing.
func TestAgentFeedDeltasFollowWritesInOrder(t *testing.T) {
	ft := newFeedTest(t)
	ft.put(feedRole("prod", true, "prod"))
	ft.put(feedBot("b", "prod"))
	ft.put(feedIdentity("a", "prod"))
	ft.put(feedIdentity("x", "dev"))
	sel, v := ft.start("b")
	if got := v.names(); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("snapshot holds %v, want [a]", got)
	}
	start := v.rev

	ft.put(feedIdentity("c", "prod"))
	wantDelta(t, ft.follow(v, sel), []string{"c"}, nil)
	a := feedIdentity("a", "prod")
	a.Spec.SPIFFE.Hint = "changed"
	ft.put(a)
	st := ft.follow(v, sel)
	wantDelta(t, st, []string{"a"}, nil)
	if !strings.Contains(v.docs["a"], "changed") {
		t.Fatalf("a's new document did not arrive: %s", v.docs["a"])
	}
	ft.rm(resource.KindWorkloadIdentity, "c")
	wantDelta(t, ft.follow(v, sel), nil, []string{"c"})
	ft.put(feedIdentity("y", "dev"))
	if st := ft.follow(v, sel); st != nil {
		t.Fatalf("a write to an identity the bot never selects sent %v", st)
	}
	// Relabelled out of the selection: removed.
	ft.put(feedIdentity("a", "dev"))
	wantDelta(t, ft.follow(v, sel), nil, []string{"a"})

	// An agent left at the first revision catches up in one delta.
	old := &agentView{rev: start, docs: map[string]string{"a": "old"}}
	st = ft.follow(old, sel)
	if st == nil || len(st.WorkloadIdentities) != 0 || len(old.docs) != 0 {
		t.Fatalf("catching up from revision %d left %v", start, old.names())
	}
}

// TestAgentFeedCompactionFallsBackToSnapshots: the log keeps a bounded
// number of entries per bot; an agent older than what is kept gets a
// snapshot, a recent one still gets deltas.
func TestAgentFeedCompactionFallsBackToSnapshots(t *testing.T) {
	ft := newFeedTest(t)
	ft.feed.maxEntries = 4
	ft.put(feedRole("prod", true, "prod"))
	ft.put(feedBot("b", "prod"))
	sel, v := ft.start("b")
	first := v.rev
	recent := &agentView{}
	for i := range 10 {
		ft.put(feedIdentity("id-"+string(rune('a'+i)), "prod"))
		if i == 8 {
			recent.apply(t, mustSnapshot(t, ft, sel))
		}
	}
	if len(sel.entries) > 4 {
		t.Fatalf("the bot's log holds %d entries, over its bound of 4", len(sel.entries))
	}
	if _, _, ok, err := ft.feed.delta(ft.ctx, sel, first); ok || err != nil {
		t.Fatalf("a delta from revision %d, older than the log, was given (ok %v, %v)", first, ok, err)
	}
	if reason, _ := ft.feed.position(sel, "example.org", ft.feed.epoch, first); !strings.Contains(reason, "older than the change log") {
		t.Fatalf("position of a compacted revision: %q", reason)
	}
	wantDelta(t, ft.follow(recent, sel), []string{"id-j"}, nil)
	_ = v
}

func mustSnapshot(t *testing.T, ft *feedTest, sel *botSelection) *authv1.AgentState {
	t.Helper()
	st, err := ft.feed.snapshot(ft.ctx, sel)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestAgentFeedPositionsThatGetASnapshot: a revision of another epoch,
// trust domain, the future or a negative one gets a snapshot, with a reason.
func TestAgentFeedPositionsThatGetASnapshot(t *testing.T) {
	ft := newFeedTest(t)
	ft.put(feedRole("prod", true, "prod"))
	ft.put(feedBot("b", "prod"))
	sel, v := ft.start("b")
	f := ft.feed
	for _, c := range []struct {
		td, epoch string
		rev       int64
		want      string
	}{
		{"example.org", f.epoch, v.rev, ""},
		{"example.org", "", 0, "holds no state"},
		{"example.org", "0123456789abcdef01234567", v.rev, "another auth process"},
		{"other.org", f.epoch, v.rev, "trust domain other.org"},
		{"example.org", f.epoch, -1, "negative"},
		{"example.org", f.epoch, f.head + 1, "not reached"},
	} {
		reason, _ := f.position(sel, c.td, c.epoch, c.rev)
		if (c.want == "") != (reason == "") || !strings.Contains(reason, c.want) {
			t.Errorf("position %s/%s@%d: %q, want %q", c.td, c.epoch, c.rev, reason, c.want)
		}
	}
	// An agent may send a trust domain or an epoch of any size: what of
	// it reaches the log is bounded.
	huge := strings.Repeat("x", 1<<20)
	if reason, _ := f.position(sel, huge, huge, v.rev); reason == "" || len(reason) > 2*maxPositionLog {
		t.Errorf("a 1 MiB trust domain gave a reason of %d bytes", len(reason))
	}
	if _, _, ok, _ := f.delta(ft.ctx, sel, f.head+1); ok {
		t.Error("a delta from the future was given")
	}
	if newAgentFeed("example.org", ft.res.log, ft.res, f.cas, time.Now).epoch == f.epoch {
		t.Error("two feeds share an epoch")
	}
}

// TestAgentFeedSelectionFollowsRolesAndBots: a bot's selection is computed
// once and shared by its agents; a role change sends the identities that
// joined or left the selection of each bot holding the role, and no other
// bot anything; a bot's role list change does the same; losing the right
// to read, or the bot, ends its agents' streams.
func TestAgentFeedSelectionFollowsRolesAndBots(t *testing.T) {
	ft := newFeedTest(t)
	ft.put(feedRole("r1", true, "prod"))
	ft.put(feedRole("r2", true, "dev"))
	ft.put(feedBot("b1", "r1"))
	ft.put(feedBot("b2", "r2"))
	for _, n := range []string{"p1", "p2"} {
		ft.put(feedIdentity(n, "prod"))
	}
	for _, n := range []string{"d1", "d2"} {
		ft.put(feedIdentity(n, "dev"))
	}
	s1, v1 := ft.start("b1")
	s2, v2 := ft.start("b2")
	again, err := ft.feed.acquire(ft.ctx, "b1")
	if err != nil || again != s1 {
		t.Fatalf("a second agent of b1 got another selection (%v)", err)
	}
	ft.feed.release(again)

	// r1 now selects dev too: b1 gets d1 and d2, b2 nothing.
	ft.put(feedRole("r1", true, "prod", "dev"))
	wantDelta(t, ft.follow(v1, s1), []string{"d1", "d2"}, nil)
	if st := ft.follow(v2, s2); st != nil {
		t.Fatalf("a change to r1 sent b2 %v", st)
	}
	// r1 back to prod only: a role change that removes identities.
	ft.put(feedRole("r1", true, "prod"))
	wantDelta(t, ft.follow(v1, s1), nil, []string{"d1", "d2"})
	// b1 now holds r2 instead: prod out, dev in.
	ft.put(feedBot("b1", "r2"))
	wantDelta(t, ft.follow(v1, s1), []string{"d1", "d2"}, []string{"p1", "p2"})
	// An identity write reaches b1 through its new role, and b2 too.
	ft.put(feedIdentity("d3", "dev"))
	wantDelta(t, ft.follow(v1, s1), []string{"d3"}, nil)
	wantDelta(t, ft.follow(v2, s2), []string{"d3"}, nil)
	// r1 changing no longer concerns b1.
	ft.put(feedRole("r1", true, "prod", "dev"))
	if st := ft.follow(v1, s1); st != nil {
		t.Fatalf("a change to a role b1 no longer holds sent %v", st)
	}

	// r2 loses the right to read workload identities: both streams end.
	ft.put(feedRole("r2", false, "dev"))
	for _, sel := range []*botSelection{s1, s2} {
		if _, _, _, err := ft.feed.delta(ft.ctx, sel, v1.rev); status.Code(err) != codes.PermissionDenied {
			t.Fatalf("after its role lost read: %v, want PermissionDenied", err)
		}
	}
	if _, err := ft.feed.acquire(ft.ctx, "b1"); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("a new stream of a bot that may not read: %v", err)
	}
	ft.put(feedRole("r2", true, "dev"))
	s1, _ = ft.start("b1")
	ft.rm(resource.KindBot, "b1")
	if _, _, _, err := ft.feed.delta(ft.ctx, s1, v1.rev); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("after the bot was removed: %v, want Unauthenticated", err)
	}
}

// TestAgentFeedCAChanges: a CA change reaches every bot's agents with the
// new bundle; a reload that changed nothing sends nothing.
func TestAgentFeedCAChanges(t *testing.T) {
	ft := newFeedTest(t)
	ft.put(feedRole("r1", true, "prod"))
	ft.put(feedBot("b1", "r1"))
	sel, v := ft.start("b1")
	ft.feed.changed(ft.ctx, feedKindCA, "")
	if st := ft.follow(v, sel); st != nil {
		t.Fatalf("a CA reload that changed nothing sent %v", st)
	}
	ft.caSeq.Store(2)
	ft.feed.changed(ft.ctx, feedKindCA, "")
	st := ft.follow(v, sel)
	if st == nil || st.Bundle == nil || st.Bundle.Sequence != 2 || st.Cas["spiffe"].GetSequence() != 2 {
		t.Fatalf("after a CA change the delta is %v", st)
	}
	if len(st.WorkloadIdentities)+len(st.RemovedWorkloadIdentities) != 0 {
		t.Fatalf("a CA change sent identities: %v", st)
	}
}

// TestBatchWriteRefreshesIdentitiesOnce: a write of many workload
// identities refreshes the cached set once, not once per identity (which
// made creating 10,000 identities in batches of 1,000 quadratic), and the
// set then holds exactly what the store does.
func TestBatchWriteRefreshesIdentitiesOnce(t *testing.T) {
	ft := newFeedTest(t)
	ft.put(feedIdentity("first", "prod"))
	if _, err := ft.res.workloadIdentities(ft.ctx); err != nil {
		t.Fatal(err)
	}
	before := ft.res.refreshes
	var ops []store.Op
	for i := range 50 {
		o, err := op(store.OpCreate, feedIdentity(fmt.Sprintf("id-%02d", i), "prod"))
		if err != nil {
			t.Fatal(err)
		}
		ops = append(ops, o)
	}
	ops = append(ops, store.Op{Type: store.OpDelete, Item: store.Item{Kind: resource.KindWorkloadIdentity, Name: "first"}})
	if _, err := ft.res.apply(ft.ctx, ops...); err != nil {
		t.Fatal(err)
	}
	if n := ft.res.refreshes - before; n != 1 {
		t.Fatalf("a write of 51 identities refreshed the set %d times, want once", n)
	}
	set, err := ft.res.workloadIdentities(ft.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(set.list) != 50 || set.byName["first"] != nil || set.list[0].wi.Metadata.Name != "id-00" || set.list[49].wi.Metadata.Name != "id-49" {
		t.Fatalf("after the batch the set holds %d identities (first %v)", len(set.list), set.byName["first"] != nil)
	}
	// The same changes seen again (as the store's change log shows this
	// replica its own writes) change nothing and copy nothing.
	before = ft.res.refreshes
	if got := ft.res.changed(ft.ctx, resourceChange{resource.KindWorkloadIdentity, "id-07"}, resourceChange{resource.KindWorkloadIdentity, "first"}); len(got) != 0 {
		t.Fatalf("changes seen again report %v as changed", got)
	}
	if ft.res.refreshes != before {
		t.Fatal("changes seen again copied the set")
	}
}
