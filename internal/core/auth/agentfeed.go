package auth

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/ca"
	"github.com/wid-project/wid/internal/core/rbac"
	"github.com/wid-project/wid/internal/core/resource"
	"github.com/wid-project/wid/internal/core/store"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// How agents are kept up to date (Config.AgentSync).
const (
	// AgentSyncIncremental sends an agent what changed since the revision
	// it holds, from the change log (the default).
	AgentSyncIncremental = "incremental"
	// AgentSyncFull rebuilds and sends each agent its whole state on every
	// change, as wid did before the change log: kept to measure against.
	AgentSyncFull = "full"
)

// feedKindCA names a change to the CAs as agents see them (bundle, CA
// sequences and signers, host authorities) in agentChanged. It is no
// resource kind.
const feedKindCA = "ca"

// defaultBotLogEntries bounds each bot's part of the change log; an agent
// whose revision is older than what is kept gets a snapshot.
const defaultBotLogEntries = 8192

// botIdleTTL is how long a bot's selection is kept with none of its agents
// connected, so that an agent that reconnects soon gets a delta.
const botIdleTTL = 5 * time.Minute

// agentFeed is the in-memory change log agent streams follow. Each process
// has its own, named by a random epoch: a revision is meaningful only with
// its epoch, so an agent coming from another process or replica gets one
// snapshot and then deltas.
//
// What agents are sent changes through changed(kind, name) only: a write
// to a workload identity, role or bot, or a CA reload. A change costs
// O(bots following it) here; each agent stream then reads only the entries
// of its bot since its revision.
type agentFeed struct {
	td  string
	log *slog.Logger
	res *resources
	cas func() (*ca.AgentView, error)
	// locks are the SPIFFE ID locks agents apply; nil sends none.
	locks func() ([]*authv1.AgentLock, error)
	// crls are the CRLs agents serve (DER); nil sends none.
	crls func() ([][]byte, error)
	// revokedIDs are the JWT revocations agents apply; nil sends none.
	revokedIDs func() ([]*authv1.AgentRevokedID, error)
	clock      func() time.Time
	maxEntries int
	// federated are the foreign trust domains' bundles, sent with the CAs.
	federated func() []*authv1.FederatedBundle

	// mu is taken to write by changes and stream starts and ends, and to
	// read by the streams computing what to send: a thousand streams
	// woken by one change read at once, and the next change waits only
	// for those reading, not for all of them in turn.
	mu    sync.RWMutex
	epoch string
	head  int64
	// caRev is the revision of the last change to ca; corruptRev of the
	// last change to the corrupt workload identities (corruptKey).
	caRev      int64
	ca         *agentCAs
	corruptRev int64
	corruptKey string
	bots       map[string]*botSelection
}

// agentCAs is what agents get of the CAs.
type agentCAs struct {
	bundle *authv1.AgentBundle
	cas    map[string]*authv1.AgentCA
	host   [][]byte
	locks  []*authv1.AgentLock
	crls   [][]byte
	// revoked are the JWT revocations, kept apart from the lines above.
	revoked []*authv1.AgentRevokedID
}

func (a *agentCAs) equal(b *agentCAs) bool {
	return a != nil && b != nil && proto.Equal(a.bundle, b.bundle) &&
		maps.EqualFunc(a.cas, b.cas, func(x, y *authv1.AgentCA) bool { return proto.Equal(x, y) }) &&
		slices.EqualFunc(a.host, b.host, func(x, y []byte) bool { return string(x) == string(y) }) &&
		slices.EqualFunc(a.locks, b.locks, func(x, y *authv1.AgentLock) bool { return proto.Equal(x, y) }) &&
		slices.EqualFunc(a.crls, b.crls, func(x, y []byte) bool { return string(x) == string(y) }) &&
		slices.EqualFunc(a.revoked, b.revoked, func(x, y *authv1.AgentRevokedID) bool { return proto.Equal(x, y) })
}

// botSelection is which workload identities one bot's roles select,
// computed once per change and shared by all the bot's agents, with the
// bot's part of the change log: the names whose document or selection
// changed, by revision.
type botSelection struct {
	bot       string
	roleNames []string
	roles     []*resource.Role
	names     map[string]bool
	// entries are the changes of (floor, head]; an agent at a revision
	// under floor gets a snapshot. floor starts at the revision the
	// selection was made at: changes before it were not followed.
	entries []feedEntry
	floor   int64
	// err ends the bot's streams: the bot was removed or lost the right to
	// read workload identities.
	err  error
	wake *stateNotifier
	// agents counts the bot's open streams; idleSince is when the last
	// one closed.
	agents    int
	idleSince time.Time
	// cacheMu guards what the bot's streams share while they read: the
	// last snapshot's documents and the last delta, shared by every agent
	// of the bot at the same revisions.
	cacheMu    sync.Mutex
	snapRev    int64
	snapDocs   [][]byte
	deltaFrom  int64
	deltaTo    int64
	deltaState *authv1.AgentState
	// prepMu guards the last snapshot and delta as encoded for the wire,
	// sent as they are to every agent of the bot that gets them: a join
	// storm then encodes a snapshot once per bot and revision, and not
	// once per agent (which at a thousand agents was most of the auth
	// service's memory). The snapshots are kept apart for agents that
	// follow the change log and those that do not, which get no revision.
	prepMu    sync.Mutex
	prepSnap  [2]*preparedState
	prepDelta *preparedState
}

// preparedState is a state as encoded for the wire, one message per chunk.
type preparedState struct {
	base, rev int64
	msgs      []*grpc.PreparedMsg
}

type feedEntry struct {
	rev  int64
	name string
}

func newAgentFeed(td string, log *slog.Logger, res *resources, cas func() (*ca.AgentView, error), clock func() time.Time) *agentFeed {
	var b [12]byte
	rand.Read(b[:])
	f := &agentFeed{td: td, log: log, res: res, cas: cas, clock: clock, maxEntries: defaultBotLogEntries,
		epoch: hex.EncodeToString(b[:]), head: 1, bots: map[string]*botSelection{}}
	// What the first CA reload is compared with; if the CAs cannot be read
	// now, snapshots read them until a reload records them.
	f.ca, _ = f.buildCAs()
	return f
}

// changed records a change to kind/name, after the caches were brought up
// to date with it (resources.changed), and wakes the agents it concerns.
func (f *agentFeed) changed(ctx context.Context, kind, name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch kind {
	case resource.KindWorkloadIdentity:
		f.identityChangedLocked(ctx, name)
	case resource.KindRole:
		f.head++
		for _, sel := range f.bots {
			if slices.Contains(sel.roleNames, name) {
				f.reselectLocked(ctx, sel)
			}
		}
	case resource.KindBot:
		f.head++
		if sel := f.bots[name]; sel != nil {
			f.reselectLocked(ctx, sel)
		}
	case feedKindCA:
		next, err := f.buildCAs()
		if err != nil {
			f.log.Error("the CAs could not be read for agents; they keep the last ones sent", "error", err)
			return
		}
		if next.equal(f.ca) {
			return
		}
		f.head++
		f.ca, f.caRev = next, f.head
		f.wakeAllLocked()
	}
	f.pruneLocked()
}

func (f *agentFeed) buildCAs() (*agentCAs, error) {
	view, err := f.cas()
	if err != nil {
		return nil, err
	}
	c := &agentCAs{bundle: agentBundle(view), cas: map[string]*authv1.AgentCA{}}
	if f.federated != nil {
		c.bundle.FederatedBundles = f.federated()
	}
	for t, v := range view.CAs {
		c.cas[string(t)] = &authv1.AgentCA{Sequence: v.Sequence, ActiveSignerId: v.ActiveSignerID, Phase: string(v.Phase), Generation: v.Generation}
	}
	for _, h := range view.HostAuthorities {
		c.host = append(c.host, h.Raw)
	}
	if f.locks != nil {
		if c.locks, err = f.locks(); err != nil {
			return nil, err
		}
	}
	if f.crls != nil {
		if c.crls, err = f.crls(); err != nil {
			return nil, err
		}
	}
	if f.revokedIDs != nil {
		if c.revoked, err = f.revokedIDs(); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// identityChangedLocked logs the workload identity name for every bot that
// held it or selects it now: the others' agents neither had it nor get it.
func (f *agentFeed) identityChangedLocked(ctx context.Context, name string) {
	set, err := f.res.workloadIdentities(ctx)
	if err != nil {
		f.resetLocked("the workload identities could not be read", err)
		return
	}
	f.head++
	e := set.byName[name]
	for _, sel := range f.bots {
		if sel.err != nil {
			continue
		}
		was := sel.names[name]
		is := e != nil && rbac.SelectsWorkloadIdentity(sel.roles, e.wi.Metadata.Labels)
		if !was && !is {
			continue
		}
		if is {
			sel.names[name] = true
		} else {
			delete(sel.names, name)
		}
		f.appendLocked(sel, name)
	}
	if key := corruptKey(set); key != f.corruptKey {
		f.corruptKey, f.corruptRev = key, f.head
		f.wakeAllLocked()
	}
}

func corruptKey(set *workloadSet) string {
	var b strings.Builder
	for _, c := range set.corrupt {
		b.WriteString(c.name + "\x00" + c.err.Error() + "\x00")
	}
	return b.String()
}

// appendLocked logs name at the head for sel and wakes its agents.
func (f *agentFeed) appendLocked(sel *botSelection, name string) {
	sel.entries = append(sel.entries, feedEntry{rev: f.head, name: name})
	f.compactLocked(sel)
	sel.wake.changed()
}

// compactLocked bounds sel's log. It drops down to half the bound at once,
// so that it copies once per maxEntries/2 changes and not on every one.
func (f *agentFeed) compactLocked(sel *botSelection) {
	n := len(sel.entries)
	if n <= f.maxEntries {
		return
	}
	drop := n - f.maxEntries/2
	sel.floor = sel.entries[drop-1].rev
	sel.entries = slices.Clone(sel.entries[drop:])
}

// reselectLocked computes sel again after its bot or one of its roles
// changed, and logs the identities that joined or left it.
func (f *agentFeed) reselectLocked(ctx context.Context, sel *botSelection) {
	next, err := f.selectFor(ctx, sel.bot)
	if err != nil {
		f.failLocked(sel, err)
		return
	}
	names := make([]string, 0)
	for n := range sel.names {
		if !next.names[n] {
			names = append(names, n)
		}
	}
	for n := range next.names {
		if !sel.names[n] {
			names = append(names, n)
		}
	}
	sel.roleNames, sel.roles, sel.names = next.roleNames, next.roles, next.names
	for _, n := range names {
		sel.entries = append(sel.entries, feedEntry{rev: f.head, name: n})
	}
	if len(names) > 0 {
		f.compactLocked(sel)
		sel.wake.changed()
	}
}

// failLocked ends sel's streams with err, and forgets sel so that the
// bot's next stream finds out afresh.
func (f *agentFeed) failLocked(sel *botSelection, err error) {
	sel.err = err
	if f.bots[sel.bot] == sel {
		delete(f.bots, sel.bot)
	}
	sel.wake.changed()
}

// resetLocked forgets every selection after the feed could not follow a
// change: every stream ends, and its agent comes back for a snapshot.
func (f *agentFeed) resetLocked(why string, err error) {
	f.log.Warn(why+"; every agent stream restarts from a snapshot", "error", err)
	f.head++
	for _, sel := range f.bots {
		f.failLocked(sel, status.Errorf(codes.Unavailable, "the auth service lost track of changes: reconnect"))
	}
}

// lostTrack sends every agent a snapshot, for when this replica cannot
// know what changed in the store: each bot's selection is made again from
// the store, and the log of each starts afresh at a new revision, under
// which every stream's revision falls.
func (f *agentFeed) lostTrack(ctx context.Context) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.head++
	for _, sel := range f.bots {
		next, err := f.selectFor(ctx, sel.bot)
		if err != nil {
			f.failLocked(sel, err)
			continue
		}
		sel.roleNames, sel.roles, sel.names = next.roleNames, next.roles, next.names
		sel.entries, sel.floor = nil, f.head
		sel.cacheMu.Lock()
		sel.snapDocs, sel.deltaState = nil, nil
		sel.cacheMu.Unlock()
		sel.prepMu.Lock()
		sel.prepSnap, sel.prepDelta = [2]*preparedState{}, nil
		sel.prepMu.Unlock()
		sel.wake.changed()
	}
}

func (f *agentFeed) wakeAllLocked() {
	for _, sel := range f.bots {
		sel.wake.changed()
	}
}

// pruneLocked forgets the selections of bots with no agent for a while.
func (f *agentFeed) pruneLocked() {
	now := f.clock()
	for name, sel := range f.bots {
		if sel.agents == 0 && now.Sub(sel.idleSince) > botIdleTTL {
			delete(f.bots, name)
		}
	}
}

// selectFor reads bot and its roles and selects its workload identities.
// The bot and its roles are read again each time: a bot that was removed
// or lost the right to read workload identities gets an error that ends its
// streams.
func (f *agentFeed) selectFor(ctx context.Context, bot string) (*botSelection, error) {
	b, roles, err := agentRoles(ctx, f.res, bot)
	if err != nil {
		return nil, err
	}
	set, err := f.res.workloadIdentities(ctx)
	if err != nil {
		return nil, storeError(resource.KindWorkloadIdentity, err)
	}
	sel := &botSelection{bot: bot, roleNames: slices.Clone(b.Spec.Roles), roles: roles, names: map[string]bool{}}
	for _, e := range set.list {
		if rbac.SelectsWorkloadIdentity(roles, e.wi.Metadata.Labels) {
			sel.names[e.wi.Metadata.Name] = true
		}
	}
	return sel, nil
}

// acquire returns bot's selection for one more of its streams, making it
// if no stream of the bot has it; release when the stream ends.
func (f *agentFeed) acquire(ctx context.Context, bot string) (*botSelection, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	sel := f.bots[bot]
	if sel == nil {
		var err error
		if sel, err = f.selectFor(ctx, bot); err != nil {
			return nil, err
		}
		sel.floor, sel.wake = f.head, newStateNotifier()
		f.bots[bot] = sel
	}
	sel.agents++
	return sel, nil
}

func (f *agentFeed) release(sel *botSelection) {
	f.mu.Lock()
	defer f.mu.Unlock()
	sel.agents--
	if sel.agents == 0 {
		sel.idleSince = f.clock()
	}
}

// position checks the revision an agent says it holds, and says why it
// gets a snapshot instead of deltas ("" when it gets deltas).
func (f *agentFeed) position(sel *botSelection, td, epoch string, rev int64) (reason string, level slog.Level) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	switch {
	case epoch == "":
		return "it holds no state", slog.LevelDebug
	case td != f.td:
		return "its revision is of trust domain " + clipPosition(td), slog.LevelWarn
	case epoch != f.epoch:
		return "its revision is of another auth process (a restart or another replica)", slog.LevelInfo
	case rev < 0:
		return "it named a negative revision", slog.LevelWarn
	case rev > f.head:
		return "it named a revision this auth service has not reached", slog.LevelWarn
	case rev < sel.floor:
		return "its revision is older than the change log keeps", slog.LevelInfo
	}
	return "", 0
}

// snapshot is bot's whole state at the head.
func (f *agentFeed) snapshot(ctx context.Context, sel *botSelection) (*authv1.AgentState, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if sel.err != nil {
		return nil, sel.err
	}
	set, err := f.res.workloadIdentities(ctx)
	if err != nil {
		return nil, storeError(resource.KindWorkloadIdentity, err)
	}
	cas, err := f.currentCAs()
	if err != nil {
		return nil, err
	}
	sel.cacheMu.Lock()
	if sel.snapDocs == nil || sel.snapRev != f.head {
		docs := make([][]byte, 0, len(sel.names))
		for _, e := range set.list {
			if sel.names[e.wi.Metadata.Name] && rbac.SelectsWorkloadIdentity(sel.roles, e.wi.Metadata.Labels) {
				docs = append(docs, e.doc)
			}
		}
		sel.snapRev, sel.snapDocs = f.head, docs
	}
	docs := sel.snapDocs
	sel.cacheMu.Unlock()
	st := &authv1.AgentState{TrustDomain: f.td, Epoch: f.epoch, Revision: f.head, WorkloadIdentities: docs}
	addCAs(st, cas)
	addCorrupt(st, set)
	return st, nil
}

// currentCAs is what agents get of the CAs, read once if no change has
// been recorded yet. The caller holds mu to read.
func (f *agentFeed) currentCAs() (*agentCAs, error) {
	if f.ca != nil {
		return f.ca, nil
	}
	// Only before the first CA change: build without recording it, as
	// every stream that gets here would build the same.
	c, err := f.buildCAs()
	if err != nil {
		return nil, status.Errorf(codes.Internal, "reading the CAs: %v", err)
	}
	return c, nil
}

func addCAs(st *authv1.AgentState, c *agentCAs) {
	st.Bundle, st.Cas, st.HostAuthorities, st.Locks, st.Crls = c.bundle, c.cas, c.host, c.locks, c.crls
	st.RevokedIds = c.revoked
}

func addCorrupt(st *authv1.AgentState, set *workloadSet) {
	// A corrupt identity's labels are unknown, so every agent hears of it:
	// each says so in its log and metrics while serving the rest.
	for _, c := range set.corrupt {
		st.CorruptWorkloadIdentities = append(st.CorruptWorkloadIdentities, &authv1.CorruptResource{Kind: c.kind, Name: c.name, Error: c.err.Error()})
	}
}

// delta is what changed for sel's agents since rev: nil when nothing did.
// ok is false when rev is older than the log: the agent needs a snapshot.
// to is the revision the agent holds after it (rev when nothing changed).
func (f *agentFeed) delta(ctx context.Context, sel *botSelection, rev int64) (st *authv1.AgentState, to int64, ok bool, err error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if sel.err != nil {
		return nil, 0, false, sel.err
	}
	if rev < sel.floor || rev > f.head {
		return nil, 0, false, nil
	}
	i := sort.Search(len(sel.entries), func(i int) bool { return sel.entries[i].rev > rev })
	caChanged, corruptChanged := f.caRev > rev, f.corruptRev > rev
	if i == len(sel.entries) && !caChanged && !corruptChanged {
		// The agent stays where it is: the next delta it gets must be
		// based on the revision it holds.
		return nil, rev, true, nil
	}
	sel.cacheMu.Lock()
	defer sel.cacheMu.Unlock()
	if sel.deltaState != nil && sel.deltaFrom == rev && sel.deltaTo == f.head {
		return sel.deltaState, f.head, true, nil
	}
	set, err := f.res.workloadIdentities(ctx)
	if err != nil {
		return nil, 0, false, storeError(resource.KindWorkloadIdentity, err)
	}
	st = &authv1.AgentState{TrustDomain: f.td, Epoch: f.epoch, Revision: f.head, Delta: true, BaseRevision: rev}
	seen := make(map[string]bool, len(sel.entries)-i)
	for _, en := range sel.entries[i:] {
		if seen[en.name] {
			continue
		}
		seen[en.name] = true
		if e := set.byName[en.name]; e != nil && sel.names[en.name] && rbac.SelectsWorkloadIdentity(sel.roles, e.wi.Metadata.Labels) {
			st.WorkloadIdentities = append(st.WorkloadIdentities, e.doc)
		} else {
			st.RemovedWorkloadIdentities = append(st.RemovedWorkloadIdentities, en.name)
		}
	}
	if caChanged {
		addCAs(st, f.ca)
	}
	addCorrupt(st, set)
	sel.deltaFrom, sel.deltaTo, sel.deltaState = rev, f.head, st
	return st, f.head, true, nil
}

// agentRoles reads bot and its roles for what its agents are served, and
// refuses a bot that was removed or may no longer read workload identities:
// the error ends its streams.
func agentRoles(ctx context.Context, res *resources, bot string) (*resource.Bot, []*resource.Role, error) {
	b, err := res.bot(ctx, bot)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil, status.Errorf(codes.Unauthenticated, "bot %q no longer exists: create it again and join with a new token", bot)
	}
	if err != nil {
		return nil, nil, storeError("bot/"+bot, err)
	}
	roles, err := res.roles(ctx, b.Spec.Roles)
	if err != nil {
		return nil, nil, storeError("roles", err)
	}
	for _, verb := range []string{verbRead, verbList} {
		if d := rbac.CheckRule(roles, resource.KindWorkloadIdentity, verb); !d.Allowed {
			return nil, nil, status.Error(codes.PermissionDenied, d.Reason)
		}
	}
	return b, roles, nil
}

// maxPositionLog bounds what of an agent's position (its trust domain and
// epoch, any length up to gRPC's message limit) goes into a log line.
const maxPositionLog = 255

// clipPosition cuts an agent-sent position field for the log.
func clipPosition(v string) string {
	if len(v) > maxPositionLog {
		return v[:maxPositionLog] + "..."
	}
	return v
}
