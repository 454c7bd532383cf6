package auth_test

import (
	"context"
	"encoding/json"
	"slices"
	"testing"
	"time"

	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/agentsync"
	"github.com/wid-project/wid/internal/core/auth/authtest"
	"github.com/wid-project/wid/internal/core/client"
	"github.com/wid-project/wid/internal/core/resource"
)

func ptr(s string) *string { return &s }

// agentRole selects workload identities labelled env in envs, grants paths
// (with dnsSANs on each) and lets its holder read and list workload identities.
func agentRole(t testing.TB, name string, envs []string, dnsSANs []string, maxTTL time.Duration, paths ...string) []byte {
	t.Helper()
	spec := resource.RoleSpec{
		Allow: resource.RoleConditions{
			Rules:                  []resource.Rule{{Resources: []string{resource.KindWorkloadIdentity}, Verbs: []string{"read", "list"}}},
			WorkloadIdentityLabels: map[string][]string{"env": envs},
		},
		Options: resource.RoleOptions{MaxSVIDTTL: resource.Duration(maxTTL)},
	}
	for _, p := range paths {
		spec.Allow.SPIFFE = append(spec.Allow.SPIFFE, resource.SPIFFEGrant{Path: p, DNSSANs: dnsSANs})
	}
	return roleDoc(t, name, spec)
}

// wiDoc is a workload identity labelled env=env with one rule of conds.
func wiDoc(t testing.TB, name, env, id string, dns []string, ttl time.Duration, conds ...resource.Condition) []byte {
	t.Helper()
	wi := &resource.WorkloadIdentity{
		Header: resource.Header{Kind: resource.KindWorkloadIdentity, Version: resource.V1, Metadata: resource.Metadata{Name: name, Labels: map[string]string{"env": env}}},
		Spec: resource.WorkloadIdentitySpec{
			SPIFFE: resource.WorkloadSPIFFE{ID: id, Hint: name},
			X509:   resource.WorkloadX509{DNSSANs: dns, TTL: resource.Duration(ttl)},
			Rules:  resource.WorkloadRules{Allow: []resource.WorkloadRule{{Conditions: conds}}},
		},
	}
	if err := wi.Validate(); err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(wi)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func uidIs(uid string) resource.Condition {
	return resource.Condition{Attribute: "workload.unix.uid", Eq: ptr(uid)}
}

func create(t *testing.T, srv *authtest.Server, docs ...[]byte) {
	t.Helper()
	if _, err := srv.AdminClient(t).CreateResource(context.Background(), &authv1.CreateResourceRequest{Resources: docs}); err != nil {
		t.Fatalf("creating resources: %v", err)
	}
}

// stateStream follows a WatchAgent stream.
type stateStream struct {
	states chan *authv1.AgentState
	errc   chan error
}

func watch(t *testing.T, c *client.Client, host string) *stateStream {
	t.Helper()
	return watchWith(t, c, &authv1.WatchAgentRequest{Host: host})
}

// watchFrom follows a stream that asks for deltas from pos.
func watchFrom(t *testing.T, c *client.Client, host string, pos agentsync.Position) *stateStream {
	t.Helper()
	return watchWith(t, c, agentsync.Request(host, pos))
}

func watchWith(t *testing.T, c *client.Client, req *authv1.WatchAgentRequest) *stateStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := c.WatchAgent(ctx, req)
	if err != nil {
		cancel()
		t.Fatalf("WatchAgent: %v", err)
	}
	s := &stateStream{states: make(chan *authv1.AgentState, 100), errc: make(chan error, 1)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			st, err := stream.Recv()
			if err != nil {
				s.errc <- err
				return
			}
			s.states <- st
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return s
}

// next returns the next state pushed within d.
func (s *stateStream) next(t *testing.T, d time.Duration) *authv1.AgentState {
	t.Helper()
	select {
	case st := <-s.states:
		return st
	case err := <-s.errc:
		t.Fatalf("the stream ended: %v", err)
	case <-time.After(d):
		t.Fatalf("no state pushed within %s", d)
	}
	return nil
}

// none fails if a state is pushed within d.
func (s *stateStream) none(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case st := <-s.states:
		t.Fatalf("a state was pushed (generation %d, identities %v), want none", st.Generation, identityNames(t, st))
	case err := <-s.errc:
		t.Fatalf("the stream ended: %v", err)
	case <-time.After(d):
	}
}

// identityNames are the names of a state's workload identities, in order.
func identityNames(t *testing.T, st *authv1.AgentState) []string {
	t.Helper()
	var out []string
	for _, doc := range st.WorkloadIdentities {
		v, err := resource.Unmarshal(doc)
		if err != nil {
			t.Fatalf("a pushed workload identity does not decode: %v", err)
		}
		if v.GetKind() != resource.KindWorkloadIdentity {
			t.Fatalf("a pushed document is a %s", v.GetKind())
		}
		out = append(out, v.GetMetadata().Name)
	}
	return out
}

func wantNames(t *testing.T, st *authv1.AgentState, want ...string) {
	t.Helper()
	if got := identityNames(t, st); !slices.Equal(got, want) {
		t.Fatalf("state (generation %d) lists %v, want %v", st.Generation, got, want)
	}
}
