package auth

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/audit"
	"github.com/wid-project/wid/internal/core/ca"
	"github.com/wid-project/wid/internal/core/rbac"
	"github.com/wid-project/wid/internal/core/resource"
	"github.com/wid-project/wid/internal/core/store"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// agentPushInterval is the least time between two states pushed on one
// stream: a burst of changes (a batch create, a rotation step) becomes one
// push of the final state instead of one per change. A change after a quiet
// spell is pushed at once; one right behind another waits out the rest of
// the interval, so keep it short: it is the delay an admin creating
// identities one after another sees.
const agentPushInterval = 10 * time.Millisecond

// AgentHeartbeat is how often a quiet WatchAgent stream carries a
// heartbeat; agents treat a stream silent for a few of these as dead.
const AgentHeartbeat = 2 * time.Second

// maxHostLength bounds the host name an agent gives, which goes into every
// audit event of its calls.
const maxHostLength = 253

// stateNotifier tells agent streams that what they serve from may have
// changed. It says nothing of what changed: each stream rebuilds its state
// and pushes it only if it differs from the last one sent, so callers may
// notify liberally.
type stateNotifier struct {
	mu sync.Mutex
	ch chan struct{}
}

func newStateNotifier() *stateNotifier { return &stateNotifier{ch: make(chan struct{})} }

// wait returns a channel closed at the next change. Take it before reading
// the state, so that a change made while reading is not missed.
func (n *stateNotifier) wait() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.ch
}

// changed wakes every waiter. It never blocks.
func (n *stateNotifier) changed() {
	n.mu.Lock()
	defer n.mu.Unlock()
	close(n.ch)
	n.ch = make(chan struct{})
}

// StateChanged tells every agent stream to look again at what it serves:
// call it after changing anything agents are served from outside the
// resource API (the resource API and CA reloads already do).
func (s *Server) StateChanged() { s.changes.changed() }

// agentHost cleans the host an agent names.
func agentHost(h string) string {
	h = strings.TrimSpace(h)
	if len(h) > maxHostLength {
		h = h[:maxHostLength]
	}
	return h
}

// rememberAgentHost records where bot's agent runs; "" keeps what is known.
func (s *Server) rememberAgentHost(bot, host string) {
	if host != "" {
		s.agentHosts.Store(bot, host)
	}
}

// agentHostOf is the host bot's agent last named, or "".
func (s *Server) agentHostOf(bot string) string {
	if h, ok := s.agentHosts.Load(bot); ok {
		return h.(string)
	}
	return ""
}

// requireBot refuses callers that are not bots, for the agent RPCs.
func requireBot(c *caller, what string) error {
	switch c.Kind {
	case KindBot:
		return nil
	case "":
		return status.Error(codes.Unauthenticated, what+" needs a bot identity: join the agent first")
	}
	return status.Errorf(codes.PermissionDenied, "only an agent's bot may %s, and you are the %s %q: join an agent with widctl bot add and widagent join instead", what, c.Kind, c.Name)
}

// requireAgent refuses callers that are not an agent's bot allowed to read
// the workload identities it serves.
func (s *Server) requireAgent(ctx context.Context, c *caller, what string) error {
	if err := requireBot(c, what); err != nil {
		return err
	}
	for _, verb := range []string{verbRead, verbList} {
		if err := s.authorize(ctx, resource.KindWorkloadIdentity, verb); err != nil {
			return err
		}
	}
	return nil
}

func (s *Server) WatchAgent(req *authv1.WatchAgentRequest, stream authv1.AuthService_WatchAgentServer) error {
	ctx := stream.Context()
	c := callerFrom(ctx)
	if err := s.requireAgent(ctx, c, "watch agent state"); err != nil {
		return err
	}
	host := agentHost(req.Host)
	s.rememberAgentHost(c.Name, host)
	defer s.agents.connect(ctx, c.Name, host)()

	var (
		last     *authv1.AgentState
		lastPush time.Time
	)
	for {
		changed := s.changes.wait()
		st, err := s.agentState(ctx, c.Name)
		if err != nil {
			s.log.Warn("an agent's state could not be built; its stream ends and it retries", "bot", c.Name, "host", host, "error", status.Convert(err).Message())
			return err
		}
		if last == nil {
			// Audited once the connection is real, so that an agent
			// retrying against a state that cannot be built does not
			// write an event per retry.
			if _, err := s.audit.Emit(ctx, audit.Event{
				Type: audit.TypeAgentConnect, Actor: c.Actor(s), Host: host, RemoteAddr: c.RemoteAddr, Outcome: audit.OutcomeSuccess,
			}); err != nil {
				return status.Errorf(codes.Unavailable, "the agent's connection could not be audited: %v", err)
			}
		}
		if last == nil || !sameAgentState(last, st) {
			st.Generation = s.generation.Add(1)
			if err := sendAgentState(stream, st); err != nil {
				return err
			}
			last, lastPush = st, time.Now()
		}
	idle:
		for {
			t := time.NewTimer(AgentHeartbeat)
			select {
			case <-changed:
				t.Stop()
				break idle
			case <-t.C:
				if err := stream.Send(&authv1.AgentState{Heartbeat: true}); err != nil {
					return err
				}
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-s.stopping:
				t.Stop()
				return status.Error(codes.Unavailable, "the auth service is stopping: reconnect")
			}
		}
		// Coalesce a burst: the state is read after the wait, so the push
		// that follows carries everything up to then.
		if wait := agentPushInterval - time.Since(lastPush); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-s.stopping:
				t.Stop()
				return status.Error(codes.Unavailable, "the auth service is stopping: reconnect")
			}
		}
	}
}

// agentState builds what bot's agent serves from. The bot and its roles are
// read again each time: a role change changes which identities it gets, and
// a bot that was removed or lost the right to read workload identities ends
// its stream.
func (s *Server) agentState(ctx context.Context, bot string) (*authv1.AgentState, error) {
	b, err := s.res.bot(ctx, bot)
	if errors.Is(err, store.ErrNotFound) {
		return nil, status.Errorf(codes.Unauthenticated, "bot %q no longer exists: create it again and join with a new token", bot)
	}
	if err != nil {
		return nil, storeError("bot/"+bot, err)
	}
	roles, err := s.res.roles(ctx, b.Spec.Roles)
	if err != nil {
		return nil, storeError("roles", err)
	}
	for _, verb := range []string{verbRead, verbList} {
		if d := rbac.CheckRule(roles, resource.KindWorkloadIdentity, verb); !d.Allowed {
			return nil, status.Error(codes.PermissionDenied, d.Reason)
		}
	}
	set, err := s.res.workloadIdentities(ctx)
	if err != nil {
		return nil, storeError(resource.KindWorkloadIdentity, err)
	}
	view, err := s.cas.AgentView()
	if err != nil {
		return nil, status.Errorf(codes.Internal, "reading the CAs: %v", err)
	}
	st := &authv1.AgentState{TrustDomain: s.td.Name(), Bundle: agentBundle(view), Cas: map[string]*authv1.AgentCA{}}
	for t, c := range view.CAs {
		st.Cas[string(t)] = &authv1.AgentCA{Sequence: c.Sequence, ActiveSignerId: c.ActiveSignerID, Phase: string(c.Phase), Generation: c.Generation}
	}
	for _, c := range view.HostAuthorities {
		st.HostAuthorities = append(st.HostAuthorities, c.Raw)
	}
	for _, e := range set.list {
		if rbac.SelectsWorkloadIdentity(roles, e.wi.Metadata.Labels) {
			st.WorkloadIdentities = append(st.WorkloadIdentities, e.doc)
		}
	}
	// A corrupt identity's labels are unknown, so every agent hears of it:
	// each says so in its log and metrics while serving the rest.
	for _, c := range set.corrupt {
		st.CorruptWorkloadIdentities = append(st.CorruptWorkloadIdentities, &authv1.CorruptResource{Kind: c.kind, Name: c.name, Error: c.err.Error()})
	}
	return st, nil
}

// agentChunkBytes bounds the workload identities of one message of a
// state, far under gRPC's 4 MiB default limit, whatever the trust
// domain's size.
const agentChunkBytes = 1 << 20

// sendAgentState sends st as one message when it fits in agentChunkBytes,
// else as several: the first carries everything but the workload
// identities that do not fit, each later one only more identities with the
// same generation, and every message but the last says more. The agent
// applies the state when the last one arrives, so it never serves half.
func sendAgentState(stream authv1.AuthService_WatchAgentServer, st *authv1.AgentState) error {
	docs, corrupt := st.WorkloadIdentities, st.CorruptWorkloadIdentities
	msg := &authv1.AgentState{TrustDomain: st.TrustDomain, Bundle: st.Bundle, Generation: st.Generation, Cas: st.Cas, HostAuthorities: st.HostAuthorities}
	size := 0
	flush := func() error {
		msg.More = true
		if err := stream.Send(msg); err != nil {
			return err
		}
		msg, size = &authv1.AgentState{Generation: st.Generation}, 0
		return nil
	}
	for _, d := range docs {
		if size > 0 && size+len(d) > agentChunkBytes {
			if err := flush(); err != nil {
				return err
			}
		}
		msg.WorkloadIdentities = append(msg.WorkloadIdentities, d)
		size += len(d)
	}
	for _, c := range corrupt {
		n := proto.Size(c)
		if size > 0 && size+n > agentChunkBytes {
			if err := flush(); err != nil {
				return err
			}
		}
		msg.CorruptWorkloadIdentities = append(msg.CorruptWorkloadIdentities, c)
		size += n
	}
	msg.More = false
	return stream.Send(msg)
}

// agentBundle is the trust bundle as agents serve it.
func agentBundle(v *ca.AgentView) *authv1.AgentBundle {
	b := &authv1.AgentBundle{JwtJwks: v.JWTJWKS, WitJwks: v.WITJWKS, Sequence: int64(v.BundleSequence)}
	for _, c := range v.X509Authorities {
		b.X509Authorities = append(b.X509Authorities, c.Raw)
	}
	return b
}

// sameAgentState compares two states but for their generation.
func sameAgentState(a, b *authv1.AgentState) bool {
	return a.TrustDomain == b.TrustDomain && proto.Equal(a.Bundle, b.Bundle) &&
		slices.EqualFunc(a.WorkloadIdentities, b.WorkloadIdentities, bytes.Equal) &&
		maps.EqualFunc(a.Cas, b.Cas, func(x, y *authv1.AgentCA) bool { return proto.Equal(x, y) }) &&
		slices.EqualFunc(a.HostAuthorities, b.HostAuthorities, bytes.Equal) &&
		slices.EqualFunc(a.CorruptWorkloadIdentities, b.CorruptWorkloadIdentities, func(x, y *authv1.CorruptResource) bool { return proto.Equal(x, y) })
}

// describeLabels formats labels for reasons, sorted: {app=web env=prod}.
func describeLabels(labels map[string]string) string {
	if len(labels) == 0 {
		return "no labels"
	}
	parts := make([]string, 0, len(labels))
	for k, v := range labels {
		parts = append(parts, k+"="+v)
	}
	slices.Sort(parts)
	return fmt.Sprintf("labels {%s}", strings.Join(parts, " "))
}
