package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/audit"
	"github.com/wid-project/wid/internal/core/ca"
	"github.com/wid-project/wid/internal/core/login"
	"github.com/wid-project/wid/internal/core/resource"
	"github.com/wid-project/wid/internal/core/store"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

const (
	// agentStatusKind is the store kind of what each agent last reported.
	agentStatusKind = "agent_status"
	// DefaultAgentWindow: agents seen within it hold rotations back.
	DefaultAgentWindow = 10 * time.Minute
	// agentHeartbeat is how often the last-seen time of connected agents is
	// written, so that after a restart the auth service still knows which
	// agents were live before the agents have reconnected.
	agentHeartbeat = time.Minute
	// rotationTick is how often automatic rotations and rollbacks are
	// looked at, besides every agent report.
	rotationTick = 250 * time.Millisecond
	// workloadSettle is how long a step that drops a key waits after an
	// agent last renewed SVIDs of that CA. The agent reports a renewal as
	// soon as its cache holds it, while its workloads take the new SVIDs
	// from their streams a moment later and may have a handshake in flight
	// with the old one: dropping the old key at once failed such a
	// handshake on a loaded machine.
	workloadSettle = 2 * time.Second
)

// agentRecord is what the auth service knows of one agent (a bot on a host).
type agentRecord struct {
	Bot       string            `json:"bot"`
	Host      string            `json:"host"`
	LastSeen  time.Time         `json:"last_seen"`
	Sequences map[string]int64  `json:"sequences,omitempty"`
	SignedBy  map[string]string `json:"signed_by,omitempty"`
	// Generations are the CA generations the last report answered.
	Generations map[string]int64 `json:"generations,omitempty"`
	// SignedSince is when each SignedBy entry took its current value.
	SignedSince map[string]time.Time `json:"signed_since,omitempty"`
	// Replica names the auth replica whose state stream the agent follows,
	// "" once it has left it.
	Replica string `json:"replica,omitempty"`
	// connected says the agent follows a replica now: this one (its open
	// streams are counted here), or another that keeps its LastSeen fresh.
	// Not stored.
	connected bool
}

func agentKey(bot, host string) string { return bot + "@" + host }

// agentStale is how long after its last heartbeat an agent that another
// replica said it follows still counts as connected: that replica may be
// gone without a word (kill -9), and its agents have moved on.
const agentStale = 3 * agentHeartbeat

// maxAgentWriteRetries bounds the compare-and-set retries of one agent
// record write; only writes of other replicas (the agent moving between
// them) make it retry.
const maxAgentWriteRetries = 20

// agentTracker follows agents: which CA sequences they hold and which keys
// signed what they serve. The records live in the store and every read
// and write goes there, so that every replica's rotation gate sees every
// agent, whichever replica it follows, and a restarted replica still holds
// back a rotation for agents it knew. Only the count of state streams open
// to this replica is kept here.
type agentTracker struct {
	db    store.Backend
	clock func() time.Time
	// mono times what must not move with the wall clock: rotation steps
	// and how long an agent's workloads have had to settle.
	mono    func() time.Duration
	settles *settleTimes
	log     interface {
		Warn(string, ...any)
	}
	// replica names this auth process in records of agents it serves.
	replica string

	mu sync.Mutex
	// conns counts the state streams open here, by agent key.
	conns map[string]int
	// reported wakes the rotation loop.
	reported chan struct{}
}

func newAgentTracker(db store.Backend, clock func() time.Time, log interface{ Warn(string, ...any) }, replica string) *agentTracker {
	mono := monotonicClock()
	return &agentTracker{db: db, clock: clock, mono: mono, settles: newSettleTimes(clock, mono), log: log, replica: replica, conns: map[string]int{}, reported: make(chan struct{}, 1)}
}

// update changes the stored record of bot's agent on host with fn, by
// compare-and-set: writes of other replicas are never overwritten with an
// older reading. The write outlives ctx: a stream that ends still records
// when its agent was last seen.
func (t *agentTracker) update(ctx context.Context, bot, host string, fn func(r *agentRecord)) error {
	ctx = context.WithoutCancel(ctx)
	key := agentKey(bot, host)
	for range maxAgentWriteRetries {
		r := agentRecord{Bot: bot, Host: host}
		o := store.Op{Type: store.OpCreate, Item: store.Item{Kind: agentStatusKind, Name: key}}
		item, err := t.db.Get(ctx, agentStatusKind, key)
		switch {
		case err == nil:
			if err := json.Unmarshal(item.Data, &r); err != nil {
				// Unreadable: replaced by what this write knows.
				r = agentRecord{Bot: bot, Host: host}
			}
			o.Type, o.ExpectRevision = store.OpUpdate, item.Revision
		case !errors.Is(err, store.ErrNotFound):
			return fmt.Errorf("reading the state of agent %s: %w", key, err)
		}
		fn(&r)
		if o.Item.Data, err = json.Marshal(&r); err != nil {
			return fmt.Errorf("encoding the state of agent %s: %w", key, err)
		}
		_, err = t.db.Apply(ctx, o)
		if err == nil {
			return nil
		}
		if !errors.Is(err, store.ErrConflict) && !errors.Is(err, store.ErrAlreadyExists) && !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("storing the state of agent %s: %w", key, err)
		}
	}
	return fmt.Errorf("storing the state of agent %s: it kept changing", agentKey(bot, host))
}

// connect marks the agent connected until the returned function is called.
func (t *agentTracker) connect(ctx context.Context, bot, host string) func() {
	key := agentKey(bot, host)
	t.mu.Lock()
	t.conns[key]++
	t.mu.Unlock()
	err := t.update(ctx, bot, host, func(r *agentRecord) {
		r.LastSeen = t.clock().UTC()
		r.Replica = t.replica
	})
	if err != nil {
		// The stream still gates rotations here; other replicas learn of
		// the agent with its next report or heartbeat.
		t.log.Warn("storing an agent's state", "agent", key, "error", err)
	}
	return func() {
		t.mu.Lock()
		t.conns[key]--
		last := t.conns[key] == 0
		if last {
			delete(t.conns, key)
		}
		t.mu.Unlock()
		err := t.update(ctx, bot, host, func(r *agentRecord) {
			r.LastSeen = t.clock().UTC()
			// The agent may already follow another replica.
			if last && r.Replica == t.replica {
				r.Replica = ""
			}
		})
		if err != nil {
			t.log.Warn("storing an agent's state", "agent", key, "error", err)
		}
	}
}

// following reports whether bot has a state stream open from host here.
func (t *agentTracker) following(bot, host string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.conns[agentKey(bot, host)] > 0
}

// report records what bot's agent on host holds. Only an agent with an open
// state stream may report: that is where its host was named, and a bot
// cannot make up hosts that would hold rotations back. ok is false when it
// has none here; err when the store did not take the report.
func (t *agentTracker) report(ctx context.Context, bot, host string, seqs map[string]int64, signedBy map[string]string, gens map[string]int64) (ok bool, err error) {
	if !t.following(bot, host) {
		return false, nil
	}
	err = t.update(ctx, bot, host, func(r *agentRecord) {
		now := t.clock().UTC()
		since := make(map[string]time.Time, len(signedBy))
		for typ, signer := range signedBy {
			if old, ok := r.SignedBy[typ]; ok && old == signer && !r.SignedSince[typ].IsZero() {
				since[typ] = r.SignedSince[typ]
			} else {
				since[typ] = now
			}
		}
		r.LastSeen = now
		r.Replica = t.replica
		r.Sequences = seqs
		r.SignedBy = signedBy
		r.SignedSince = since
		r.Generations = gens
	})
	if err != nil {
		return true, err
	}
	select {
	case t.reported <- struct{}{}:
	default:
	}
	return true, nil
}

// agentForget is how long an agent's record is kept after it was last seen.
const agentForget = 7 * 24 * time.Hour

// heartbeat refreshes the last-seen time of the agents connected here and
// forgets agents not seen for agentForget (pods long gone, hosts renamed).
func (t *agentTracker) heartbeat(ctx context.Context) {
	t.mu.Lock()
	keys := make([]string, 0, len(t.conns))
	for key := range t.conns {
		keys = append(keys, key)
	}
	t.mu.Unlock()
	for _, key := range keys {
		bot, host, _ := strings.Cut(key, "@")
		err := t.update(ctx, bot, host, func(r *agentRecord) {
			r.LastSeen = t.clock().UTC()
			r.Replica = t.replica
		})
		if err != nil {
			t.log.Warn("storing an agent's state", "agent", key, "error", err)
		}
	}
	items, err := t.db.List(ctx, agentStatusKind)
	if err != nil {
		t.log.Warn("reading agent states", "error", err)
		return
	}
	now := t.clock()
	for _, it := range items {
		var r agentRecord
		if json.Unmarshal(it.Data, &r) == nil && now.Sub(r.LastSeen) <= agentForget {
			continue
		}
		// The revision read: an agent seen meanwhile is kept.
		if _, err := t.db.Apply(context.WithoutCancel(ctx), store.Op{Type: store.OpDelete, Item: store.Item{Kind: agentStatusKind, Name: it.Name}, ExpectRevision: it.Revision}); err != nil && !errors.Is(err, store.ErrNotFound) && !errors.Is(err, store.ErrConflict) {
			t.log.Warn("forgetting an agent", "agent", it.Name, "error", err)
		}
	}
}

// live returns the agents connected now (to any replica) or seen within
// window, sorted by bot and host, as the store holds them.
func (t *agentTracker) live(ctx context.Context, window time.Duration) ([]agentRecord, error) {
	items, err := t.db.List(ctx, agentStatusKind)
	if err != nil {
		return nil, fmt.Errorf("reading agent states: %w", err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.clock()
	var out []agentRecord
	for _, it := range items {
		var r agentRecord
		if err := json.Unmarshal(it.Data, &r); err != nil {
			t.log.Warn("skipping an unreadable agent state", "name", it.Name, "error", err)
			continue
		}
		r.connected = t.conns[it.Name] > 0 ||
			(r.Replica != "" && r.Replica != t.replica && now.Sub(r.LastSeen) <= agentStale)
		if r.connected || now.Sub(r.LastSeen) <= window {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b agentRecord) int { return strings.Compare(agentKey(a.Bot, a.Host), agentKey(b.Bot, b.Host)) })
	return out, nil
}

func (r agentRecord) name() string {
	if r.Host == "" {
		return "bot " + strconv.Quote(r.Bot)
	}
	return fmt.Sprintf("bot %q on %s", r.Bot, r.Host)
}

// gate is what every live agent must hold before a CA takes a step.
type gate struct {
	// generation is the CA step the agent's report must answer: a report
	// made under an earlier step says nothing of the SVIDs renewed since.
	generation int64
	sequence   int64
	// signer, when set, must have signed everything the agent serves
	// from the CA.
	signer string
}

// gateFor says what moving doc to `to` waits for; ok is false when the step
// waits for nothing.
func (s *Server) gateFor(doc ca.Document, to ca.Phase) (g gate, ok bool) {
	from := doc.Phase
	switch {
	case from == ca.PhaseInit && to == ca.PhaseUpdateClients:
		// The new keys may sign only once every agent trusts them.
		return gate{generation: doc.Generation, sequence: doc.Sequence}, true
	case from == ca.PhaseUpdateClients && to == ca.PhaseUpdateServers,
		from == ca.PhaseUpdateServers && to == ca.PhaseStandby,
		from == ca.PhaseRollback && to == ca.PhaseStandby:
		// The other keys may leave only once nothing served is theirs.
		return gate{generation: doc.Generation, sequence: doc.Sequence, signer: s.cas.ActiveSignerID(doc.Type)}, true
	}
	return gate{}, false
}

// laggard is an agent that holds a step back.
type laggard struct {
	agent  agentRecord
	reason string
}

func (s *Server) lagReason(t ca.Type, g gate, r agentRecord) string {
	if gen := r.Generations[string(t)]; gen < g.generation {
		return fmt.Sprintf("has not answered the %s CA's last step yet", t)
	}
	have := r.Sequences[string(t)]
	if have < g.sequence {
		return fmt.Sprintf("holds the %s CA at sequence %d, not %d yet", t, have, g.sequence)
	}
	if g.signer == "" {
		return ""
	}
	signer, holds := r.SignedBy[string(t)]
	switch {
	case !holds, signer == g.signer:
		return ""
	case signer == authv1.SignerWarmingUp:
		return "has just started and waits a few seconds for its workloads to reconnect"
	case signer == "":
		return fmt.Sprintf("still serves %s SVIDs signed by more than one key", t)
	}
	return fmt.Sprintf("still serves %s SVIDs signed by the other key", t)
}

// settleReason says why a step that drops a key still waits for an agent
// that has caught up: it renewed too recently for its workloads to have
// taken the new SVIDs up. The agent is not lagging; the step waits.
func (s *Server) settleReason(t ca.Type, g gate, r agentRecord) string {
	if g.signer == "" || r.SignedBy[string(t)] != g.signer {
		return ""
	}
	if since := r.SignedSince[string(t)]; !since.IsZero() && !s.agents.settles.settled(agentKey(r.Bot, r.Host)+"/"+string(t), since) {
		return fmt.Sprintf("renewed its %s SVIDs less than %s ago and gives its workloads that long to take them up", t, workloadSettle)
	}
	return ""
}

// laggards are the agents a step waits for: those behind it, and those that
// caught up too recently for their workloads to follow.
func (s *Server) laggards(ctx context.Context, t ca.Type, g gate, window time.Duration) ([]laggard, error) {
	agents, err := s.agents.live(ctx, window)
	if err != nil {
		return nil, err
	}
	var out []laggard
	for _, r := range agents {
		reason := s.lagReason(t, g, r)
		if reason == "" {
			reason = s.settleReason(t, g, r)
		}
		if reason != "" {
			out = append(out, laggard{agent: r, reason: reason})
		}
	}
	return out, nil
}

func describeLaggards(ls []laggard) string {
	parts := make([]string, len(ls))
	for i, l := range ls {
		parts[i] = l.agent.name() + " " + l.reason
	}
	return strings.Join(parts, "; ")
}

func laggardNames(ls []laggard) []string {
	out := make([]string, len(ls))
	for i, l := range ls {
		out[i] = agentKey(l.agent.Bot, l.agent.Host)
	}
	return out
}

// ReportAgentStatus records what an agent holds.
func (s *Server) ReportAgentStatus(ctx context.Context, req *authv1.ReportAgentStatusRequest) (*authv1.ReportAgentStatusResponse, error) {
	c := callerFrom(ctx)
	if err := s.requireAgent(ctx, c, "report agent status"); err != nil {
		return nil, err
	}
	host := agentHost(req.Host)
	seqs, signed, gens := byCAType(req.Sequences), byCAType(req.SignedBy), byCAType(req.Generations)
	ok, err := s.agents.report(ctx, c.Name, host, seqs, signed, gens)
	if err != nil {
		return nil, storeError("agent status", err)
	}
	if !ok {
		return nil, status.Errorf(codes.FailedPrecondition, "bot %q has no state stream open from host %q: an agent reports what it holds only while it follows the auth service (WatchAgent)", c.Name, host)
	}
	return &authv1.ReportAgentStatusResponse{}, nil
}

// byCAType keeps the entries of m keyed by a CA type, dropping the others.
func byCAType[V any](m map[string]V) map[string]V {
	out := make(map[string]V, len(m))
	for k, v := range m {
		if _, err := ca.ParseType(k); err == nil {
			out[k] = v
		}
	}
	return out
}

// maxIssuedTTL is the longest life of anything CA t signs: a rotation's
// grace period must cover it, so that what an old key signed just before
// the switch expires before the old key leaves the bundle. By is what sets it.
func (s *Server) maxIssuedTTL(ctx context.Context, t ca.Type) (max time.Duration, by string, err error) {
	switch t {
	case ca.TypeHost:
		return serverCertTTL, "the auth service's certificate", nil
	case ca.TypeUser:
		max, by = login.DefaultSessionTTL, "the default login"
	}
	list, err := s.res.list(ctx, resource.KindRole)
	if err != nil {
		return 0, "", err
	}
	for _, v := range list {
		r, ok := v.(*resource.Role)
		if !ok {
			continue
		}
		var d time.Duration
		switch t {
		case ca.TypeUser:
			d = r.Spec.Options.MaxSessionTTL.D()
			if d == 0 {
				continue
			}
			d = min(d, login.MaxSessionTTL)
		default:
			if len(r.Spec.Allow.SPIFFE) == 0 {
				continue
			}
			d = r.Spec.Options.MaxSVIDTTL.D()
			if d == 0 {
				d = resource.MaxSVIDTTL
			}
		}
		if d > max {
			max, by = d, fmt.Sprintf("role %q", r.Metadata.Name)
		}
	}
	return max, by, nil
}

func (s *Server) RotateCA(ctx context.Context, req *authv1.RotateCARequest) (*authv1.RotateCAResponse, error) {
	if err := s.authorize(ctx, resource.ResourceCertAuthority, resource.VerbUpdate); err != nil {
		return nil, err
	}
	// Checked against the CAs as stored: another replica may have moved them.
	if err := s.refreshCAs(ctx); err != nil {
		return nil, storeError("certificate authorities", err)
	}
	c := callerFrom(ctx)
	types, err := parseCATypes(req.Type)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	grace := time.Duration(req.GracePeriodSeconds) * time.Second
	if req.GracePeriodSeconds < 0 {
		return nil, status.Error(codes.InvalidArgument, "the grace period must be positive")
	}
	mode := ca.Mode(strings.ToLower(req.Mode))
	switch {
	case mode == "" && grace > 0:
		mode = ca.ModeAuto
	case mode == ca.ModeManual && grace > 0:
		return nil, status.Error(codes.InvalidArgument, "a grace period starts an automatic rotation: drop --manual, or drop --grace-period and move the phases yourself")
	case mode == ca.ModeAuto && grace == 0:
		return nil, status.Error(codes.InvalidArgument, "an automatic rotation needs --grace-period, such as --grace-period 30h")
	case mode != "" && mode != ca.ModeAuto && mode != ca.ModeManual:
		return nil, status.Errorf(codes.InvalidArgument, "unknown rotation mode %q: use manual or auto", req.Mode)
	}
	phaseName := req.Phase
	if phaseName == "" {
		if mode != ca.ModeAuto {
			return nil, status.Error(codes.InvalidArgument, "say which phase to move to with --phase (init, update_clients, update_servers, standby or rollback), or start an automatic rotation with --grace-period")
		}
		phaseName = string(ca.PhaseInit)
	}
	to, err := ca.ParsePhase(phaseName)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if grace > 0 && to != ca.PhaseInit {
		return nil, status.Errorf(codes.InvalidArgument, "a grace period starts a rotation, so it goes with --phase init, not %s", to)
	}
	window := agentWindow(req.AgentWindowSeconds)

	// Check every CA before moving any, so that --type all moves all or none.
	type plan struct {
		t      ca.Type
		doc    ca.Document
		lags   []laggard
		maxTTL time.Duration
	}
	plans := make([]plan, 0, len(types))
	for _, t := range types {
		doc, err := s.cas.Document(t)
		if err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
		sreq := ca.StepRequest{Type: t, From: doc.Phase, To: to, Mode: mode, GracePeriod: grace}
		if err := ca.CheckStep(doc, sreq); err != nil {
			s.recordRotationRefusal(ctx, c, t, doc.Phase, to, err.Error())
			return nil, status.Error(codes.FailedPrecondition, err.Error())
		}
		var maxTTL time.Duration
		if grace > 0 {
			max, by, err := s.maxIssuedTTL(ctx, t)
			maxTTL = max
			if err != nil {
				return nil, storeError("roles", err)
			}
			// The old key must stay trusted for that long after it stops
			// signing (see ca.Rotation.Tail).
			if grace < max {
				msg := fmt.Sprintf("the grace period %s is shorter than the %s that %s lets a %s CA certificate or SVID live: give at least --grace-period %s, or lower that limit first",
					resource.FormatDuration(grace), resource.FormatDuration(max), by, t, resource.FormatDuration(max))
				s.recordRotationRefusal(ctx, c, t, doc.Phase, to, msg)
				return nil, status.Error(codes.InvalidArgument, msg)
			}
		}
		p := plan{t: t, doc: doc, maxTTL: maxTTL}
		if g, ok := s.gateFor(doc, to); ok {
			if p.lags, err = s.laggards(ctx, t, g, window); err != nil {
				return nil, storeError("agent status", err)
			}
		}
		if len(p.lags) > 0 && !req.Force {
			msg := fmt.Sprintf("the %s CA cannot move from %s to %s yet: %d agent(s) lag: %s. Wait for them (widctl ca status shows them), or add --force to move on without them",
				t, doc.Phase, to, len(p.lags), describeLaggards(p.lags))
			s.recordRotationRefusal(ctx, c, t, doc.Phase, to, msg)
			return nil, status.Error(codes.FailedPrecondition, msg)
		}
		plans = append(plans, p)
	}

	resp := &authv1.RotateCAResponse{}
	for _, p := range plans {
		step, err := s.cas.Step(ctx, ca.StepRequest{Type: p.t, From: p.doc.Phase, Generation: p.doc.Generation, To: to, Mode: mode, GracePeriod: grace, MaxTTL: p.maxTTL})
		if err != nil {
			code := codes.Internal
			if errors.Is(err, ca.ErrTransition) {
				code = codes.FailedPrecondition
			}
			return resp, status.Errorf(code, "moving the %s CA to %s: %v", p.t, to, err)
		}
		if err := s.recordRotationStep(ctx, c.Actor(s), c.RemoteAddr, step, p.lags); err != nil {
			return resp, err
		}
		resp.Steps = append(resp.Steps, stepProto(step, p.lags))
		resp.Cas = append(resp.Cas, s.caInfo(step.Doc))
	}
	return resp, nil
}

func parseCATypes(s string) ([]ca.Type, error) {
	if strings.EqualFold(strings.TrimSpace(s), "all") {
		return slices.Clone(ca.Types), nil
	}
	if strings.TrimSpace(s) == "" {
		return nil, errors.New("say which CA with --type: spiffe, jwt, wit, user, host or all")
	}
	t, err := ca.ParseType(s)
	if err != nil {
		return nil, fmt.Errorf("%w, or all", err)
	}
	return []ca.Type{t}, nil
}

func agentWindow(seconds int64) time.Duration {
	if seconds <= 0 {
		return DefaultAgentWindow
	}
	return time.Duration(seconds) * time.Second
}

func stepProto(st ca.Step, lags []laggard) *authv1.RotationStep {
	return &authv1.RotationStep{
		Type: string(st.Type), From: string(st.From), To: string(st.To), Forced: len(lags) > 0,
		Laggards: laggardNames(lags), OldFingerprint: st.Old, NewFingerprint: st.New, Sequence: st.Sequence,
	}
}

func (s *Server) recordRotationStep(ctx context.Context, actor, remote string, st ca.Step, lags []laggard) error {
	details := map[string]string{
		"ca_type": string(st.Type), "from": string(st.From), "to": string(st.To), "mode": string(st.Mode),
		"old_fingerprint": st.Old, "new_fingerprint": st.New, "sequence": strconv.FormatInt(st.Sequence, 10),
	}
	reason := ""
	if len(lags) > 0 {
		details["forced"] = "true"
		details["laggards"] = strings.Join(laggardNames(lags), ",")
		reason = "forced past lagging agents: " + describeLaggards(lags)
	}
	if _, err := s.audit.Emit(context.WithoutCancel(ctx), audit.Event{
		Type: audit.TypeCARotation, Actor: actor, Host: s.host, RemoteAddr: remote, Outcome: audit.OutcomeSuccess,
		Resource: resource.ResourceCertAuthority + "/" + string(st.Type), Reason: reason, Details: details,
	}); err != nil {
		// The step is stored; say so rather than pretend it failed.
		return status.Errorf(codes.Unavailable, "the %s CA moved to %s but the audit log could not record it: %v", st.Type, st.To, err)
	}
	return nil
}

func (s *Server) recordRotationRefusal(ctx context.Context, c *caller, t ca.Type, from, to ca.Phase, reason string) {
	s.recordDenial(ctx, audit.Event{
		Type: audit.TypeCARotation, Actor: c.Actor(s), RemoteAddr: c.RemoteAddr, Reason: reason,
		Resource: resource.ResourceCertAuthority + "/" + string(t),
		Details:  map[string]string{"ca_type": string(t), "from": string(from), "to": string(to)},
	})
}

func (s *Server) ListCAs(ctx context.Context, _ *authv1.ListCAsRequest) (*authv1.ListCAsResponse, error) {
	if err := s.authorize(ctx, resource.ResourceCertAuthority, resource.VerbList); err != nil {
		return nil, err
	}
	if err := s.refreshCAs(ctx); err != nil {
		return nil, storeError("certificate authorities", err)
	}
	resp := &authv1.ListCAsResponse{}
	for _, t := range ca.Types {
		doc, err := s.cas.Document(t)
		if err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
		resp.Cas = append(resp.Cas, s.caInfo(doc))
	}
	return resp, nil
}

func (s *Server) GetCAStatus(ctx context.Context, req *authv1.GetCAStatusRequest) (*authv1.GetCAStatusResponse, error) {
	if err := s.authorize(ctx, resource.ResourceCertAuthority, resource.VerbRead); err != nil {
		return nil, err
	}
	if err := s.refreshCAs(ctx); err != nil {
		return nil, storeError("certificate authorities", err)
	}
	types := ca.Types
	if req.Type != "" {
		var err error
		if types, err = parseCATypes(req.Type); err != nil {
			return nil, status.Error(codes.InvalidArgument, err.Error())
		}
	}
	window := agentWindow(req.AgentWindowSeconds)
	agents, err := s.agents.live(ctx, window)
	if err != nil {
		return nil, storeError("agent status", err)
	}
	resp := &authv1.GetCAStatusResponse{}
	for _, t := range types {
		doc, err := s.cas.Document(t)
		if err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
		st := &authv1.CAStatus{Ca: s.caInfo(doc)}
		next := ca.NextPhase(doc.Phase)
		g, gated := s.gateFor(doc, next)
		if !gated {
			// Outside a rotation, report against the CA as it stands.
			g = gate{generation: doc.Generation, sequence: doc.Sequence}
		}
		var lags []laggard
		for _, r := range agents {
			a := &authv1.AgentCAState{
				Bot: r.Bot, Host: r.Host, LastSeen: timestamppb.New(r.LastSeen), Connected: r.connected,
				Sequence: r.Sequences[string(t)], SignedBy: r.SignedBy[string(t)],
			}
			if reason := s.lagReason(t, g, r); reason != "" {
				a.Lagging, a.Reason = true, reason
				lags = append(lags, laggard{agent: r, reason: reason})
			} else if reason := s.settleReason(t, g, r); gated && reason != "" {
				lags = append(lags, laggard{agent: r, reason: reason})
			}
			st.Agents = append(st.Agents, a)
		}
		if gated && len(lags) > 0 {
			st.Blocked = fmt.Sprintf("moving to %s waits for %d agent(s): %s", next, len(lags), describeLaggards(lags))
		}
		resp.Cas = append(resp.Cas, st)
	}
	return resp, nil
}

func (s *Server) caInfo(doc ca.Document) *authv1.CAInfo {
	info := &authv1.CAInfo{Type: string(doc.Type), Phase: string(doc.Phase), Mode: string(doc.Mode), Sequence: doc.Sequence}
	for _, k := range doc.KeySets {
		signer, _ := k.SignerID()
		info.Keys = append(info.Keys, &authv1.CAKey{
			Id: k.ID, State: string(k.State), Algorithm: string(k.Algorithm), Kid: k.KID,
			Fingerprint: ca.Fingerprint(k.PublicKey), NotBefore: timestamppb.New(k.NotBefore), NotAfter: timestamppb.New(k.NotAfter),
			SignerId: signer,
		})
	}
	if r := doc.Rotation; r != nil {
		info.RotationStarted = timestamppb.New(r.Started)
		info.PhaseStarted = timestamppb.New(r.PhaseStarted)
		info.GracePeriodSeconds = int64(r.GracePeriod / time.Second)
		info.RolledBackFrom = string(r.RolledBackFrom)
	}
	if doc.Phase != ca.PhaseStandby {
		info.NextPhase = string(ca.NextPhase(doc.Phase))
	}
	if at := doc.NextStepAt(); !at.IsZero() {
		info.NextStepAt = timestamppb.New(at)
	}
	return info
}

// runRotations moves automatic rotations on when their time comes and
// finishes rollbacks, each once no live agent lags. It runs on the one
// replica that holds the periodic-work lease, until ctx ends (the lease
// is lost), and reads the CAs from the store at every look, since another
// replica may have stepped them.
func (s *Server) runRotations(ctx context.Context) {
	tick := time.NewTicker(rotationTick)
	defer tick.Stop()
	blocked := map[ca.Type]string{}
	sched := newStepSchedule(s.clock, s.agents.mono)
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-s.agents.reported:
		}
		if err := s.refreshCAs(ctx); err != nil {
			if ctx.Err() == nil {
				s.log.Warn("reading the CAs to move rotations on", "error", err)
			}
			continue
		}
		for _, t := range ca.Types {
			doc, err := s.cas.Document(t)
			if err != nil {
				continue
			}
			to := ca.Phase("")
			switch {
			case doc.Phase == ca.PhaseRollback:
				to = ca.PhaseStandby
			case sched.due(doc):
				to = ca.NextPhase(doc.Phase)
			}
			if to == "" {
				delete(blocked, t)
				continue
			}
			if g, ok := s.gateFor(doc, to); ok {
				lags, err := s.laggards(ctx, t, g, DefaultAgentWindow)
				if err != nil {
					s.log.Warn("a CA rotation waits: reading agent states failed", "ca", t, "error", err)
					continue
				}
				if len(lags) > 0 {
					if msg := describeLaggards(lags); blocked[t] != msg {
						blocked[t] = msg
						s.log.Warn("a CA rotation waits for agents", "ca", t, "from", doc.Phase, "to", to, "laggards", msg)
					}
					continue
				}
			}
			delete(blocked, t)
			step, err := s.cas.Step(ctx, ca.StepRequest{Type: t, From: doc.Phase, Generation: doc.Generation, To: to})
			if err != nil {
				if !errors.Is(err, ca.ErrTransition) {
					s.log.Warn("moving a CA rotation on", "ca", t, "to", to, "error", err)
				}
				continue
			}
			if err := s.recordRotationStep(ctx, "auth@"+s.host, "", step, nil); err != nil {
				s.log.Error("recording a rotation step", "ca", t, "error", err)
			}
			s.log.Info("CA rotation moved on", "ca", t, "from", step.From, "to", step.To, "sequence", step.Sequence)
		}
	}
}
