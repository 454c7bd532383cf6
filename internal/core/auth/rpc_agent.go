package auth

import (
	"bytes"
	"context"
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
	"google.golang.org/grpc"
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

// A stream that pushed agentBurstPushes states within agentBurstWindow
// waits agentBurstInterval after the last before the next. Each push costs
// the auth service a send per agent: with a thousand agents, a burst of a
// hundred changes a few tens of milliseconds apart made a hundred pushes
// per agent and starved the writes themselves (bench/fleet). Single
// changes, and the first few of a burst, still go out at once.
const (
	agentBurstPushes   = 3
	agentBurstWindow   = time.Second
	agentBurstInterval = 250 * time.Millisecond
)

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

// StateChanged tells agent streams to look again at the CAs they are
// served from: call it after changing the CAs outside the CA manager (the
// resource API and CA reloads already tell them).
func (s *Server) StateChanged() { s.agentChanged(context.Background(), feedKindCA, "") }

// resourcesChanged is where every write to resources ends, whether made by
// this process or, read from the store's change log, by another replica: it
// brings the caches up to date and tells agent streams. It takes every
// resource one write touched, so that a batch refreshes the cached workload
// identities once.
func (s *Server) resourcesChanged(changes ...resourceChange) {
	ctx, cancel := context.WithTimeout(context.Background(), changeReadTimeout)
	defer cancel()
	s.applyResourceChanges(ctx, changes...)
}

// applyResourceChanges is resourcesChanged within ctx.
func (s *Server) applyResourceChanges(ctx context.Context, changes ...resourceChange) {
	identities := s.res.changed(ctx, changes...)
	if slices.ContainsFunc(changes, func(c resourceChange) bool { return c.kind == resource.KindLock }) {
		s.locksChanged(ctx)
	}
	if slices.ContainsFunc(changes, func(c resourceChange) bool { return c.kind == revocationKind || c.kind == jwtRevocationKind }) {
		s.revocationsChanged(ctx)
	}
	for _, c := range changes {
		// A workload identity seen again unchanged (this replica's own
		// write, read back from the store's change log) is not pushed twice.
		if c.kind == resource.KindWorkloadIdentity && identities != nil && !identities[c.name] {
			continue
		}
		s.agentChanged(ctx, c.kind, c.name)
	}
}

// agentsLostTrack sends every agent a snapshot (with the full sync, every
// stream looks again), for when this replica cannot know
// what changed in the store.
func (s *Server) agentsLostTrack(ctx context.Context) {
	if s.agentLog != nil {
		s.agentLog.lostTrack(ctx)
		return
	}
	s.changes.changed()
}

// agentChanged tells agent streams that kind/name changed: with the change
// log, only those of the bots it concerns.
func (s *Server) agentChanged(ctx context.Context, kind, name string) {
	switch kind {
	case resource.KindWorkloadIdentity, resource.KindRole, resource.KindBot, feedKindCA:
	default:
		return
	}
	if s.agentLog != nil {
		s.agentLog.changed(ctx, kind, name)
		return
	}
	s.changes.changed()
}

// agentHost cleans the host an agent names.
func agentHost(h string) string {
	h = strings.TrimSpace(h)
	if len(h) > maxHostLength {
		h = h[:maxHostLength]
	}
	return h
}

// rememberLegacyHost records the host named by the WatchAgent stream of
// a bot certificate that carries none (issued before hosts were written
// into certificates), so that the calls made with it, and its renewal,
// are held to that host on this replica; the returned function forgets it
// when the stream ends.
func (s *Server) rememberLegacyHost(c *caller, host string) func() {
	if c.Host != "" || host == "" || c.Serial == "" {
		return func() {}
	}
	s.legacyHosts.Store(c.Serial, host)
	return func() { s.legacyHosts.CompareAndDelete(c.Serial, host) }
}

// legacyHostOf is the host recorded by rememberLegacyHost for a
// certificate serial, or "".
func (s *Server) legacyHostOf(serial string) string {
	if h, ok := s.legacyHosts.Load(serial); ok {
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
	return refusal(codes.PermissionDenied, fmt.Sprintf("only an agent's bot may %s, and you are the %s %q", what, c.Kind, c.Name), authv1.NextJoinAgent)
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
	// The stream is held to the host its certificate was issued for, and
	// to the one it names too: a lock on either refuses it, now and when
	// one comes.
	// The stream is registered on the host before the check, so that a
	// lock made in between still ends it.
	s.streamOnHost(ctx, host)
	if err := s.refuseLockedOn(ctx, c, host, "/wid.auth.v1.AuthService/WatchAgent"); err != nil {
		return err
	}
	defer s.rememberLegacyHost(c, host)()
	defer s.agents.Connect(ctx, c.Name, host)()
	w := &agentStream{s: s, stream: stream, bot: c.Name, host: host}
	if s.agentLog == nil {
		return w.full(c)
	}
	return w.incremental(c, req)
}

// agentStream is one agent's WatchAgent stream.
type agentStream struct {
	s         *Server
	stream    authv1.AuthService_WatchAgentServer
	bot, host string
	// pushes are the times of the last agentBurstPushes pushes, oldest first.
	pushes []time.Time
}

// connected audits the agent's connection, once it is real: an agent
// retrying against a state that cannot be built does not write an event
// per retry.
func (w *agentStream) connected(c *caller) error {
	if _, err := w.s.audit.Emit(w.stream.Context(), audit.Event{
		Type: audit.TypeAgentConnect, Actor: c.Actor(w.s), Host: w.host, RemoteAddr: c.RemoteAddr, Outcome: audit.OutcomeSuccess,
	}); err != nil {
		return status.Errorf(codes.Unavailable, "the agent's connection could not be audited: %v", err)
	}
	return nil
}

// incremental follows the change log: a snapshot first unless the agent
// holds a revision of this log, then the changes of the bot's selection,
// the CAs and the corrupt identities. An agent that did not ask for deltas
// gets a snapshot whenever a delta would have been sent.
func (w *agentStream) incremental(c *caller, req *authv1.WatchAgentRequest) error {
	s, f, ctx := w.s, w.s.agentLog, w.stream.Context()
	sel, err := f.acquire(ctx, w.bot)
	if err != nil {
		return w.failed(err)
	}
	defer f.release(sel)
	rev, deltas := req.Revision, req.Incremental
	snapshot := true
	if deltas {
		reason, level := f.position(sel, req.TrustDomain, req.Epoch, req.Revision)
		if reason == "" {
			snapshot = false
		} else {
			s.log.Log(ctx, level, "an agent gets a snapshot", "bot", w.bot, "host", w.host, "why", reason,
				"its_epoch", clipPosition(req.Epoch), "its_revision", req.Revision, "epoch", f.epoch)
		}
	}
	if err := w.connected(c); err != nil {
		return err
	}
	for {
		changed := sel.wake.wait()
		var st *authv1.AgentState
		if !snapshot {
			var (
				ok  bool
				err error
			)
			if st, rev, ok, err = f.delta(ctx, sel, rev); err != nil {
				return w.failed(err)
			}
			if !ok {
				s.log.Info("an agent gets a snapshot", "bot", w.bot, "host", w.host, "why", "its revision is older than the change log keeps")
			}
			// An agent that takes no deltas gets a snapshot whenever it
			// would have got one.
			snapshot = !ok || (st != nil && !deltas)
		}
		if snapshot {
			var err error
			if rev, err = w.sendSnapshot(sel, deltas); err != nil {
				return err
			}
			snapshot = false
		} else if st != nil {
			if err := w.sendShared(sel, &sel.prepDelta, st, deltas); err != nil {
				return err
			}
		}
		if err := w.idle(changed); err != nil || ctx.Err() != nil {
			return err
		}
	}
}

// failed logs why the agent's state could not be built, and ends the stream.
func (w *agentStream) failed(err error) error {
	w.s.log.Warn("an agent's state could not be built; its stream ends and it retries", "bot", w.bot, "host", w.host, "error", status.Convert(err).Message())
	return err
}

// stamp is st, shared with the bot's other streams, as a shallow copy with
// a generation of its own (shared too once encoded: see sendShared).
func (w *agentStream) stamp(st *authv1.AgentState, deltas bool) *authv1.AgentState {
	m := &authv1.AgentState{TrustDomain: st.TrustDomain, Bundle: st.Bundle, WorkloadIdentities: st.WorkloadIdentities,
		Cas: st.Cas, HostAuthorities: st.HostAuthorities, CorruptWorkloadIdentities: st.CorruptWorkloadIdentities,
		Epoch: st.Epoch, Revision: st.Revision, Delta: st.Delta, BaseRevision: st.BaseRevision,
		RemovedWorkloadIdentities: st.RemovedWorkloadIdentities, Locks: st.Locks, Crls: st.Crls, Generation: w.s.generation.Add(1)}
	m.RevokedIds = st.RevokedIds
	if !deltas {
		m.Epoch, m.Revision = "", 0
	}
	return m
}

// sendSnapshot sends the bot's whole state, in one of a bounded number of
// slots, and returns its revision.
func (w *agentStream) sendSnapshot(sel *botSelection, deltas bool) (int64, error) {
	ctx := w.stream.Context()
	release, err := w.s.snapshotSlot(ctx)
	if err != nil {
		return 0, err
	}
	defer release()
	st, err := w.s.agentLog.snapshot(ctx, sel)
	if err != nil {
		return 0, w.failed(err)
	}
	slot := &sel.prepSnap[0]
	if deltas {
		slot = &sel.prepSnap[1]
	}
	return st.Revision, w.sendShared(sel, slot, st, deltas)
}

// sendShared sends st, a state shared by the bot's streams, as the
// messages encoded by the first of them to send it (kept in *slot): the
// same revisions make the same state, so one encoding serves every agent
// of the bot, under one generation. The first encodes while holding
// prepMu, so that the others wait for its bytes instead of each encoding
// its own.
func (w *agentStream) sendShared(sel *botSelection, slot **preparedState, st *authv1.AgentState, deltas bool) error {
	sel.prepMu.Lock()
	p := *slot
	if p == nil || p.base != st.BaseRevision || p.rev != st.Revision {
		p = &preparedState{base: st.BaseRevision, rev: st.Revision}
		err := sendAgentState(w.stamp(st, deltas), func(m *authv1.AgentState) error {
			pm := new(grpc.PreparedMsg)
			if err := pm.Encode(w.stream, m); err != nil {
				return err
			}
			p.msgs = append(p.msgs, pm)
			return nil
		})
		if err != nil {
			sel.prepMu.Unlock()
			return w.failed(status.Errorf(codes.Internal, "encoding the agent's state: %v", err))
		}
		*slot = p
	}
	sel.prepMu.Unlock()
	var err error
	for _, m := range p.msgs {
		if err = w.sendBounded(func() error { return w.stream.SendMsg(m) }); err != nil {
			break
		}
	}
	w.pushed()
	return err
}

// full rebuilds the whole state on every change and sends it when it
// differs from the last: the sync before the change log, kept to measure
// against (AgentSyncFull).
func (w *agentStream) full(c *caller) error {
	s, ctx := w.s, w.stream.Context()
	var last *authv1.AgentState
	for {
		changed := s.changes.wait()
		st, err := s.agentState(ctx, w.bot)
		if err != nil {
			s.log.Warn("an agent's state could not be built; its stream ends and it retries", "bot", w.bot, "host", w.host, "error", status.Convert(err).Message())
			return err
		}
		if last == nil {
			if err := w.connected(c); err != nil {
				return err
			}
		}
		if last == nil || !sameAgentState(last, st) {
			st.Generation = s.generation.Add(1)
			if err := w.send(st); err != nil {
				return err
			}
			last = st
		}
		if err := w.idle(changed); err != nil || ctx.Err() != nil {
			return err
		}
	}
}

// idle waits for changed, sending heartbeats meanwhile, then out the rest
// of the push interval. It returns nil with the stream's context done.
func (w *agentStream) idle(changed <-chan struct{}) error {
	ctx := w.stream.Context()
	for {
		t := time.NewTimer(AgentHeartbeat)
		select {
		case <-changed:
			t.Stop()
		case <-t.C:
			if err := w.sendBounded(func() error { return w.stream.Send(&authv1.AgentState{Heartbeat: true}) }); err != nil {
				return err
			}
			continue
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-w.s.stopping:
			t.Stop()
			return status.Error(codes.Unavailable, "the auth service is stopping: reconnect")
		}
		break
	}
	// Coalesce a burst: the state is read after the wait, so the push
	// that follows carries everything up to then.
	if wait := w.pushGap(); wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
		case <-w.s.stopping:
			return status.Error(codes.Unavailable, "the auth service is stopping: reconnect")
		}
	}
	return nil
}

// maxSnapshotSends bounds the snapshots being sent at once. A snapshot is
// encoded once per bot and revision (sendShared), but each send still
// holds a share of the transport's buffers and CPU, so a join storm of a
// thousand agents goes through in turns; a stuck agent holds its slot at
// most the send timeout.
const maxSnapshotSends = 32

// snapshotSlot waits for a slot to send a snapshot in; release it after.
func (s *Server) snapshotSlot(ctx context.Context) (func(), error) {
	select {
	case s.snapshotSends <- struct{}{}:
		return func() { <-s.snapshotSends }, nil
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	case <-s.stopping:
		return nil, status.Error(codes.Unavailable, "the auth service is stopping: reconnect")
	}
}

// pushGap is how long the stream still waits before its next push.
func (w *agentStream) pushGap() time.Duration {
	n := len(w.pushes)
	if n == 0 {
		return 0
	}
	last := w.pushes[n-1]
	if n == agentBurstPushes && time.Since(w.pushes[0]) < agentBurstWindow {
		return agentBurstInterval - time.Since(last)
	}
	return agentPushInterval - time.Since(last)
}

func (w *agentStream) send(st *authv1.AgentState) error {
	err := sendAgentState(st, func(m *authv1.AgentState) error {
		return w.sendBounded(func() error { return w.stream.Send(m) })
	})
	w.pushed()
	return err
}

// pushed records a push, for pushGap.
func (w *agentStream) pushed() {
	if len(w.pushes) == agentBurstPushes {
		w.pushes = append(w.pushes[:0], w.pushes[1:]...)
	}
	w.pushes = append(w.pushes, time.Now())
}

// sendBounded sends one message, giving up when the agent has not taken it
// within the send timeout: what a stream holds is bounded by gRPC's flow
// control window and one state, and a stuck agent's stream is ended (which
// unblocks the send) rather than held. The agent reconnects with its
// revision and gets what it missed.
func (w *agentStream) sendBounded(send func() error) error {
	done := make(chan error, 1)
	go func() { done <- send() }()
	t := time.NewTimer(w.s.agentSendTimeout)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
	}
	w.s.metrics.agentStreamsDropped.Inc()
	w.s.log.Warn("ended the stream of an agent that reads nothing; it resyncs when it reconnects", "bot", w.bot, "host", w.host,
		"timeout", w.s.agentSendTimeout, "metric", "wid_auth_agent_streams_dropped_total")
	return status.Errorf(codes.ResourceExhausted, "the stream was ended: the agent read nothing for %s while a state waited", w.s.agentSendTimeout)
}

// agentState builds what bot's agent serves from. The bot and its roles are
// read again each time: a role change changes which identities it gets, and
// a bot that was removed or lost the right to read workload identities ends
// its stream.
func (s *Server) agentState(ctx context.Context, bot string) (*authv1.AgentState, error) {
	_, roles, err := agentRoles(ctx, s.res, bot)
	if err != nil {
		return nil, err
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
	st.Bundle.FederatedBundles = s.fed.agentBundles()
	for t, c := range view.CAs {
		st.Cas[string(t)] = &authv1.AgentCA{Sequence: c.Sequence, ActiveSignerId: c.ActiveSignerID, Phase: string(c.Phase), Generation: c.Generation}
	}
	for _, c := range view.HostAuthorities {
		st.HostAuthorities = append(st.HostAuthorities, c.Raw)
	}
	if st.Locks, err = s.agentLocks(); err != nil {
		return nil, storeError("the locks", err)
	}
	if st.Crls, err = s.agentCRLs(); err != nil {
		return nil, status.Errorf(codes.Internal, "building the CRLs: %v", err)
	}
	if st.RevokedIds, err = s.agentRevokedIDs(); err != nil {
		return nil, storeError("the revoked SPIFFE IDs", err)
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
// identities (and removed names) that do not fit, each later one only more
// of them with the same generation, and every message but the last says
// more. The agent applies the state when the last one arrives, so it never
// serves half.
func sendAgentState(st *authv1.AgentState, send func(*authv1.AgentState) error) error {
	docs, removed, corrupt := st.WorkloadIdentities, st.RemovedWorkloadIdentities, st.CorruptWorkloadIdentities
	msg := &authv1.AgentState{TrustDomain: st.TrustDomain, Bundle: st.Bundle, Generation: st.Generation, Cas: st.Cas, HostAuthorities: st.HostAuthorities,
		Epoch: st.Epoch, Revision: st.Revision, Delta: st.Delta, BaseRevision: st.BaseRevision, Locks: st.Locks, Crls: st.Crls}
	msg.RevokedIds = st.RevokedIds
	size := 0
	add := func(n int) error {
		if size > 0 && size+n > agentChunkBytes {
			msg.More = true
			if err := send(msg); err != nil {
				return err
			}
			msg, size = &authv1.AgentState{Generation: st.Generation}, 0
		}
		size += n
		return nil
	}
	for _, d := range docs {
		if err := add(len(d)); err != nil {
			return err
		}
		msg.WorkloadIdentities = append(msg.WorkloadIdentities, d)
	}
	for _, n := range removed {
		if err := add(len(n)); err != nil {
			return err
		}
		msg.RemovedWorkloadIdentities = append(msg.RemovedWorkloadIdentities, n)
	}
	for _, c := range corrupt {
		if err := add(proto.Size(c)); err != nil {
			return err
		}
		msg.CorruptWorkloadIdentities = append(msg.CorruptWorkloadIdentities, c)
	}
	msg.More = false
	return send(msg)
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
		slices.EqualFunc(a.Locks, b.Locks, func(x, y *authv1.AgentLock) bool { return proto.Equal(x, y) }) &&
		slices.EqualFunc(a.Crls, b.Crls, bytes.Equal) &&
		slices.EqualFunc(a.RevokedIds, b.RevokedIds, func(x, y *authv1.AgentRevokedID) bool { return proto.Equal(x, y) }) &&
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
