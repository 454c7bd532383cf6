package e2e

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"testing"
	"time"

	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/bench/fleet/sim"
	"github.com/wid-project/wid/internal/core/client"
	"github.com/wid-project/wid/internal/core/resource"
	"github.com/wid-project/wid/internal/testkit"
)

// fleet is 50 simulated agents of two bots following one auth service.
type fleet struct {
	t      *testing.T
	auth   *agent
	admin  *client.Client
	agents []*sim.Agent
	botOf  []int
	conns  []*client.Client
}

// converge waits until every agent holds exactly what a fresh snapshot of
// its bot gives now (identities, documents and bundle).
func (f *fleet) converge(step string) {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	want := map[int]map[string]uint64{}
	var seq int64
	for i, b := range f.botOf {
		if want[b] != nil {
			continue
		}
		// After a restart the connection may still be waiting to redial.
		var (
			snap map[string]uint64
			s    int64
			err  error
		)
		// Until ctx ends; err says why if it does.
		testkit.Within(30*time.Second, func() bool {
			snap, s, err = sim.Snapshot(ctx, f.conns[i], fmt.Sprintf("check-%d", b))
			return err == nil || ctx.Err() != nil
		})
		if err != nil {
			f.t.Fatalf("%s: a fresh snapshot of bot %d: %v", step, b, err)
		}
		want[b], seq = snap, s
	}
	deadline := time.Now().Add(20 * time.Second)
	for i, a := range f.agents {
		var got map[string]uint64
		var s int64
		if !testkit.Within(time.Until(deadline), func() bool {
			got = a.Holds()
			s, _ = a.Bundle()
			return maps.Equal(got, want[f.botOf[i]]) && s == seq
		}) {
			f.t.Fatalf("%s: agent %s holds %d identities and bundle %d; a fresh snapshot gives %d and bundle %d (same set: %v)",
				step, a.Host, len(got), s, len(want[f.botOf[i]]), seq, maps.Equal(got, want[f.botOf[i]]))
		}
	}
}

func (f *fleet) put(docs ...resource.Resource) {
	f.t.Helper()
	var raw [][]byte
	for _, d := range docs {
		b, err := resource.MarshalJSON(d)
		if err != nil {
			f.t.Fatal(err)
		}
		raw = append(raw, b)
	}
	if _, err := f.admin.CreateResource(context.Background(), &authv1.CreateResourceRequest{Resources: raw, Force: true}); err != nil {
		f.t.Fatalf("writing: %v", err)
	}
}

func fleetRole(name string, rules bool, labels map[string][]string) *resource.Role {
	r := &resource.Role{Header: resource.Header{Kind: resource.KindRole, Version: resource.V1, Metadata: resource.Metadata{Name: name}}}
	if rules {
		r.Spec.Allow.Rules = []resource.Rule{{Resources: []string{resource.KindWorkloadIdentity}, Verbs: []string{"read", "list"}}}
	}
	r.Spec.Allow.WorkloadIdentityLabels = labels
	return r
}

func fleetBot(name string, roles ...string) *resource.Bot {
	return &resource.Bot{Header: resource.Header{Kind: resource.KindBot, Version: resource.V1, Metadata: resource.Metadata{Name: name}}, Spec: resource.BotSpec{Roles: roles}}
}

func fleetIdentity(name string, labels map[string]string) *resource.WorkloadIdentity {
	uid := "1000"
	return &resource.WorkloadIdentity{
		Header: resource.Header{Kind: resource.KindWorkloadIdentity, Version: resource.V1, Metadata: resource.Metadata{Name: name, Labels: labels}},
		Spec: resource.WorkloadIdentitySpec{SPIFFE: resource.WorkloadSPIFFE{ID: "/svc/" + name},
			Rules: resource.WorkloadRules{Allow: []resource.WorkloadRule{{Conditions: []resource.Condition{{Attribute: "workload.unix.uid", Eq: &uid}}}}}},
	}
}

// TestFleetConvergesIncrementally: 50 simulated agents of two bots, each
// with its own connection and bot certificate, follow the auth service
// through creates, deletes and updates, role and bot changes (adding and
// removing identities), a CA rotation step and an auth service restart;
// after each, every agent holds exactly what a fresh snapshot gives. Up to
// the restart they got one snapshot each and deltas after it.
func TestFleetConvergesIncrementally(t *testing.T) {
	dir := newDataDir(t)
	a := startAgent(t, dir, "--roles", "auth")
	f := &fleet{t: t, auth: a, admin: a.admin()}
	f.put(fleetRole("reader", true, nil), fleetRole("shared", false, map[string][]string{"shared": {"yes"}}),
		fleetRole("team-0", false, map[string][]string{"team": {"0"}}), fleetRole("team-1", false, map[string][]string{"team": {"1"}}))
	f.put(fleetBot("bot-0", "reader", "shared", "team-0"), fleetBot("bot-1", "reader", "team-1"))
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	tokens := map[int]string{}
	for b := range 2 {
		tok, err := f.admin.CreateJoinToken(ctx, &authv1.CreateJoinTokenRequest{Bot: fmt.Sprintf("bot-%d", b), Uses: 25, TtlSeconds: 600})
		if err != nil {
			t.Fatal(err)
		}
		tokens[b] = tok.Token
	}
	for i := range 50 {
		host := fmt.Sprintf("host-%02d", i)
		id, err := sim.Join(ctx, a.addr, a.pin, tokens[i%2], host)
		if err != nil {
			t.Fatal(err)
		}
		c, err := client.Dial(client.Config{Auth: a.addr, Identity: id})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		ag := sim.NewAgent(c, host)
		f.agents, f.botOf, f.conns = append(f.agents, ag), append(f.botOf, i%2), append(f.conns, c)
		wg.Go(func() { ag.Run(ctx) })
	}
	f.converge("join")

	var docs []resource.Resource
	for i := range 30 {
		docs = append(docs, fleetIdentity(fmt.Sprintf("t%d-%02d", i%2, i), map[string]string{"team": fmt.Sprint(i % 2)}))
	}
	for i := range 5 {
		docs = append(docs, fleetIdentity(fmt.Sprintf("shared-%d", i), map[string]string{"shared": "yes"}))
	}
	f.put(docs...)
	f.converge("creates")

	for _, n := range []string{"t0-00", "t1-01", "shared-0"} {
		if _, err := f.admin.DeleteResource(ctx, &authv1.DeleteResourceRequest{Kind: resource.KindWorkloadIdentity, Name: n}); err != nil {
			t.Fatal(err)
		}
	}
	// An update, and one that moves an identity from team 0 to team 1.
	f.put(fleetIdentity("t0-02", map[string]string{"team": "0", "v": "2"}), fleetIdentity("t0-04", map[string]string{"team": "1"}))
	f.converge("deletes and updates")

	// team-0 selects team 1 too, then not again: bot-0's agents gain and
	// lose identities; bot-1 gets shared ones through a new role.
	f.put(fleetRole("team-0", false, map[string][]string{"team": {"0", "1"}}))
	f.converge("a role adds identities")
	f.put(fleetRole("team-0", false, map[string][]string{"team": {"0"}}))
	f.converge("a role removes identities")
	f.put(fleetBot("bot-1", "reader", "team-1", "shared"))
	f.converge("a bot's roles change")

	for i, ag := range f.agents {
		if snaps, resyncs := ag.Counts(); snaps != 1 || resyncs != 0 {
			t.Fatalf("agent %d got %d snapshots and doubted %d deltas before the restart, want one snapshot then deltas", i, snaps, resyncs)
		}
	}

	if _, err := f.admin.RotateCA(ctx, &authv1.RotateCARequest{Type: "spiffe", Phase: "init", Mode: "manual"}); err != nil {
		t.Fatal(err)
	}
	f.converge("a rotation")

	// The auth service restarts on the same address: agents come back
	// with a revision of the old process and get one snapshot each.
	a.stop()
	a = startAgent(t, dir, "--roles", "auth", "--auth-listen", a.addr)
	f.auth, f.admin = a, a.admin()
	f.put(fleetIdentity("after-restart", map[string]string{"shared": "yes"}))
	f.converge("an auth restart")
	if _, err := f.admin.RotateCA(ctx, &authv1.RotateCARequest{Type: "spiffe", Phase: "rollback", Mode: "manual"}); err != nil {
		t.Fatal(err)
	}
	f.converge("a rollback after the restart")
	for i, ag := range f.agents {
		if snaps, _ := ag.Counts(); snaps != 2 {
			t.Errorf("agent %d got %d snapshots, want 2: one at the join, one after the restart", i, snaps)
		}
	}
}
