// Package rotation gates CA rotation steps on what the agents hold: it
// tracks every agent (which CA sequences it took, which keys signed what it
// serves, when it was last seen) in the store, so that every auth replica
// sees every agent, and says which agents a step waits for. It also times
// automatic rotation steps and workloads' settle on the monotonic clock.
// Which step a CA takes is the ca package's; this one only says when.
package rotation

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
	"github.com/wid-project/wid/internal/core/ca"
	"github.com/wid-project/wid/internal/core/store"
)

const (
	// statusKind is the store kind of what each agent last reported.
	statusKind = "agent_status"
	// DefaultAgentWindow: agents seen within it hold rotations back.
	DefaultAgentWindow = 10 * time.Minute
	// HeartbeatInterval is how often the last-seen time of connected agents is
	// written, so that after a restart the auth service still knows which
	// agents were live before the agents have reconnected.
	HeartbeatInterval = time.Minute
	// WorkloadSettle is how long a step that drops a key waits after an
	// agent last renewed SVIDs of that CA. The agent reports a renewal as
	// soon as its cache holds it, while its workloads take the new SVIDs
	// from their streams a moment later and may have a handshake in flight
	// with the old one: dropping the old key at once failed such a
	// handshake on a loaded machine.
	WorkloadSettle = 2 * time.Second
)

// Record is what the auth service knows of one agent (a bot on a host).
type Record struct {
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
	// Connected says the agent follows a replica now: this one (its open
	// streams are counted here), or another that keeps its LastSeen fresh.
	// Not stored.
	Connected bool `json:"-"`
}

// Key names bot's agent on host.
func Key(bot, host string) string { return bot + "@" + host }

// agentStale is how long after its last heartbeat an agent that another
// replica said it follows still counts as connected: that replica may be
// gone without a word (kill -9), and its agents have moved on.
const agentStale = 3 * HeartbeatInterval

// maxAgentWriteRetries bounds the compare-and-set retries of one agent
// record write; only writes of other replicas (the agent moving between
// them) make it retry.
const maxAgentWriteRetries = 20

// Tracker follows agents: which CA sequences they hold and which keys
// signed what they serve. The records live in the store and every read
// and write goes there, so that every replica's rotation Gate sees every
// agent, whichever replica it follows, and a restarted replica still holds
// back a rotation for agents it knew. Only the count of state streams open
// to this replica is kept here.
type Tracker struct {
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

// NewTracker returns a Tracker of the agents stored in db, for the auth
// replica named replica.
func NewTracker(db store.Backend, clock func() time.Time, log interface{ Warn(string, ...any) }, replica string) *Tracker {
	mono := monotonicClock()
	return &Tracker{db: db, clock: clock, mono: mono, settles: newSettleTimes(clock, mono), log: log, replica: replica, conns: map[string]int{}, reported: make(chan struct{}, 1)}
}

// update changes the stored record of bot's agent on host with fn, by
// compare-and-set: writes of other replicas are never overwritten with an
// older reading. The write outlives ctx: a stream that ends still records
// when its agent was last seen.
func (t *Tracker) update(ctx context.Context, bot, host string, fn func(r *Record)) error {
	ctx = context.WithoutCancel(ctx)
	key := Key(bot, host)
	for range maxAgentWriteRetries {
		r := Record{Bot: bot, Host: host}
		o := store.Op{Type: store.OpCreate, Item: store.Item{Kind: statusKind, Name: key}}
		item, err := t.db.Get(ctx, statusKind, key)
		switch {
		case err == nil:
			if err := json.Unmarshal(item.Data, &r); err != nil {
				// Unreadable: replaced by what this write knows.
				r = Record{Bot: bot, Host: host}
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
	return fmt.Errorf("storing the state of agent %s: it kept changing", Key(bot, host))
}

// Connect marks the agent connected until the returned function is called.
func (t *Tracker) Connect(ctx context.Context, bot, host string) func() {
	key := Key(bot, host)
	t.mu.Lock()
	t.conns[key]++
	t.mu.Unlock()
	err := t.update(ctx, bot, host, func(r *Record) {
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
		err := t.update(ctx, bot, host, func(r *Record) {
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

// Following reports whether bot has a state stream open from host here.
func (t *Tracker) Following(bot, host string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.conns[Key(bot, host)] > 0
}

// Report records what bot's agent on host holds. Only an agent with an open
// state stream may report: that is where its host was named, and a bot
// cannot make up hosts that would hold rotations back. ok is false when it
// has none here; err when the store did not take the report.
func (t *Tracker) Report(ctx context.Context, bot, host string, seqs map[string]int64, signedBy map[string]string, gens map[string]int64) (ok bool, err error) {
	if !t.Following(bot, host) {
		return false, nil
	}
	err = t.update(ctx, bot, host, func(r *Record) {
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

// Heartbeat refreshes the last-seen time of the agents connected here and
// forgets agents not seen for agentForget (pods long gone, hosts renamed).
func (t *Tracker) Heartbeat(ctx context.Context) {
	t.mu.Lock()
	keys := make([]string, 0, len(t.conns))
	for key := range t.conns {
		keys = append(keys, key)
	}
	t.mu.Unlock()
	for _, key := range keys {
		bot, host, _ := strings.Cut(key, "@")
		err := t.update(ctx, bot, host, func(r *Record) {
			r.LastSeen = t.clock().UTC()
			r.Replica = t.replica
		})
		if err != nil {
			t.log.Warn("storing an agent's state", "agent", key, "error", err)
		}
	}
	items, err := t.db.List(ctx, statusKind)
	if err != nil {
		t.log.Warn("reading agent states", "error", err)
		return
	}
	now := t.clock()
	for _, it := range items {
		var r Record
		if json.Unmarshal(it.Data, &r) == nil && now.Sub(r.LastSeen) <= agentForget {
			continue
		}
		// The revision read: an agent seen meanwhile is kept.
		if _, err := t.db.Apply(context.WithoutCancel(ctx), store.Op{Type: store.OpDelete, Item: store.Item{Kind: statusKind, Name: it.Name}, ExpectRevision: it.Revision}); err != nil && !errors.Is(err, store.ErrNotFound) && !errors.Is(err, store.ErrConflict) {
			t.log.Warn("forgetting an agent", "agent", it.Name, "error", err)
		}
	}
}

// Live returns the agents connected now (to any replica) or seen within
// window, sorted by bot and host, as the store holds them.
func (t *Tracker) Live(ctx context.Context, window time.Duration) ([]Record, error) {
	items, err := t.db.List(ctx, statusKind)
	if err != nil {
		return nil, fmt.Errorf("reading agent states: %w", err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.clock()
	var out []Record
	for _, it := range items {
		var r Record
		if err := json.Unmarshal(it.Data, &r); err != nil {
			t.log.Warn("skipping an unreadable agent state", "name", it.Name, "error", err)
			continue
		}
		r.Connected = t.conns[it.Name] > 0 ||
			(r.Replica != "" && r.Replica != t.replica && now.Sub(r.LastSeen) <= agentStale)
		if r.Connected || now.Sub(r.LastSeen) <= window {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b Record) int { return strings.Compare(Key(a.Bot, a.Host), Key(b.Bot, b.Host)) })
	return out, nil
}

// Name is how messages name the agent.
func (r Record) Name() string {
	if r.Host == "" {
		return "bot " + strconv.Quote(r.Bot)
	}
	return fmt.Sprintf("bot %q on %s", r.Bot, r.Host)
}

// Gate is what every live agent must hold before a CA takes a step.
type Gate struct {
	// generation is the CA step the agent's report must answer: a report
	// made under an earlier step says nothing of the SVIDs renewed since.
	Generation int64
	Sequence   int64
	// signer, when set, must have signed everything the agent serves
	// from the CA.
	Signer string
}

// GateFor says what moving doc to `to` waits for, where activeSigner is the
// CA's active signer; ok is false when the step waits for nothing.
func GateFor(doc ca.Document, to ca.Phase, activeSigner string) (g Gate, ok bool) {
	from := doc.Phase
	switch {
	case from == ca.PhaseInit && to == ca.PhaseUpdateClients:
		// The new keys may sign only once every agent trusts them.
		return Gate{Generation: doc.Generation, Sequence: doc.Sequence}, true
	case from == ca.PhaseUpdateClients && to == ca.PhaseUpdateServers,
		from == ca.PhaseUpdateServers && to == ca.PhaseStandby,
		from == ca.PhaseRollback && to == ca.PhaseStandby:
		// The other keys may leave only once nothing served is theirs.
		return Gate{Generation: doc.Generation, Sequence: doc.Sequence, Signer: activeSigner}, true
	}
	return Gate{}, false
}

// Laggard is an agent that holds a step back.
type Laggard struct {
	Agent  Record
	Reason string
}

// LagReason says why agent r is behind the step g of CA t, or "".
func LagReason(t ca.Type, g Gate, r Record) string {
	if gen := r.Generations[string(t)]; gen < g.Generation {
		return fmt.Sprintf("has not answered the %s CA's last step yet", t)
	}
	have := r.Sequences[string(t)]
	if have < g.Sequence {
		return fmt.Sprintf("holds the %s CA at sequence %d, not %d yet", t, have, g.Sequence)
	}
	if g.Signer == "" {
		return ""
	}
	signer, holds := r.SignedBy[string(t)]
	switch {
	case !holds, signer == g.Signer:
		return ""
	case signer == authv1.SignerWarmingUp:
		return "has just started and waits a few seconds for its workloads to reconnect"
	case signer == "":
		return fmt.Sprintf("still serves %s SVIDs signed by more than one key", t)
	}
	return fmt.Sprintf("still serves %s SVIDs signed by the other key", t)
}

// SettleReason says why a step that drops a key still waits for an agent
// that has caught up: it renewed too recently for its workloads to have
// taken the new SVIDs up. The agent is not lagging; the step waits.
func (t *Tracker) SettleReason(typ ca.Type, g Gate, r Record) string {
	if g.Signer == "" || r.SignedBy[string(typ)] != g.Signer {
		return ""
	}
	if since := r.SignedSince[string(typ)]; !since.IsZero() && !t.settles.settled(Key(r.Bot, r.Host)+"/"+string(typ), since) {
		return fmt.Sprintf("renewed its %s SVIDs less than %s ago and gives its workloads that long to take them up", typ, WorkloadSettle)
	}
	return ""
}

// Laggards are the agents a step of CA typ waits for: those behind it, and
// those that caught up too recently for their workloads to follow.
func (t *Tracker) Laggards(ctx context.Context, typ ca.Type, g Gate, window time.Duration) ([]Laggard, error) {
	agents, err := t.Live(ctx, window)
	if err != nil {
		return nil, err
	}
	var out []Laggard
	for _, r := range agents {
		reason := LagReason(typ, g, r)
		if reason == "" {
			reason = t.SettleReason(typ, g, r)
		}
		if reason != "" {
			out = append(out, Laggard{Agent: r, Reason: reason})
		}
	}
	return out, nil
}

// DescribeLaggards says which agents hold a step back, and why.
func DescribeLaggards(ls []Laggard) string {
	parts := make([]string, len(ls))
	for i, l := range ls {
		parts[i] = l.Agent.Name() + " " + l.Reason
	}
	return strings.Join(parts, "; ")
}

// LaggardNames are the laggards' bot@host names.
func LaggardNames(ls []Laggard) []string {
	out := make([]string, len(ls))
	for i, l := range ls {
		out[i] = Key(l.Agent.Bot, l.Agent.Host)
	}
	return out
}

// Mono is the tracker's monotonic clock, which rotation steps are timed on.
func (t *Tracker) Mono() time.Duration { return t.mono() }

// Reported wakes whoever waits for an agent's report (the rotation loop).
func (t *Tracker) Reported() <-chan struct{} { return t.reported }
