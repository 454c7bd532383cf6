package auth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	authv1 "github.com/wid-project/wid/api/auth/v1"

	"github.com/wid-project/wid/internal/core/rbac"
	"github.com/wid-project/wid/internal/core/resource"
	"github.com/wid-project/wid/internal/core/store"
	"google.golang.org/grpc/codes"
)

// workloadSet is every workload identity of the trust domain, as agents and
// issuance need them: sorted by name, encoded and compiled once per revision.
type workloadSet struct {
	list   []*workloadEntry
	byName map[string]*workloadEntry
	// corrupt are the stored identities that do not decode: left out of
	// list, so that one damaged document cannot stop the others.
	corrupt []*corruptError
}

// entry is the set's identity of that name, nil if none (or no set).
func (s *workloadSet) entry(name string) *workloadEntry {
	if s == nil {
		return nil
	}
	return s.byName[name]
}

type workloadEntry struct {
	wi *resource.WorkloadIdentity
	// doc is the identity's wire document (as GetResource returns it).
	doc []byte
	// stored is the document as the store holds it.
	stored []byte
	// compiled is nil when the stored identity does not compile; err says why.
	compiled *rbac.Workload
	err      error
}

// workloadIdentities returns every workload identity, from memory unless a
// write dropped them since the last read. The set is shared: never modify it.
func (r *resources) workloadIdentities(ctx context.Context) (*workloadSet, error) {
	r.mu.RLock()
	set, gen, last := r.workloads, r.workloadsGen, r.lastWorkloads
	r.mu.RUnlock()
	if set != nil {
		return set, nil
	}
	items, err := r.db.List(ctx, resource.KindWorkloadIdentity)
	if err != nil {
		return nil, err
	}
	set = &workloadSet{byName: make(map[string]*workloadEntry, len(items))}
	for _, it := range items {
		e, ce, err := r.workloadEntryOf(it, last.entry(it.Name))
		if ce != nil {
			set.corrupt = append(set.corrupt, ce)
			continue
		}
		if err != nil {
			return nil, err
		}
		set.list = append(set.list, e)
		set.byName[it.Name] = e
	}
	sort.Slice(set.list, func(i, j int) bool { return set.list[i].wi.Metadata.Name < set.list[j].wi.Metadata.Name })
	r.mu.Lock()
	if r.workloadsGen == gen {
		r.workloads = set
	}
	r.lastWorkloads = set
	r.mu.Unlock()
	return set, nil
}

// workloadEntryOf decodes, encodes and compiles a stored workload
// identity, or takes prev when its stored document did not change (the
// revision alone does not tell: one deleted and created again starts again
// at 1). A document that does not decode comes back as corrupt, reported.
func (r *resources) workloadEntryOf(it store.Item, prev *workloadEntry) (*workloadEntry, *corruptError, error) {
	if prev != nil && prev.wi.Metadata.Revision == it.Revision && bytes.Equal(prev.stored, it.Data) {
		return prev, nil, nil
	}
	v, err := decodeItem(it)
	var ce *corruptError
	if errors.As(err, &ce) {
		r.report(ce)
		return nil, ce, nil
	}
	if err != nil {
		return nil, nil, err
	}
	wi, ok := v.(*resource.WorkloadIdentity)
	if !ok {
		return nil, nil, fmt.Errorf("the store holds a %s as workload identity %s", v.GetKind(), it.Name)
	}
	e := &workloadEntry{wi: wi, stored: it.Data}
	if e.doc, err = encode(wi); err != nil {
		return nil, nil, err
	}
	e.compiled, e.err = rbac.CompileWorkload(wi)
	return e, nil, nil
}

// refreshWorkloads brings the set up to date with writes to the workload
// identities named, reading only those from the store: a change costs one
// read and one encoding per identity written, and one copy of the set per
// batch however many identities it holds. A read that fails drops the set,
// and the next read lists them all. Refreshes are serialized and each
// reads the store after its write, so the set ends with the newest stored
// documents.
func (r *resources) refreshWorkloads(ctx context.Context, names []string) (changedNames map[string]bool) {
	if len(names) == 0 {
		return map[string]bool{}
	}
	r.refreshMu.Lock()
	defer r.refreshMu.Unlock()
	r.mu.RLock()
	set := r.workloads
	r.mu.RUnlock()
	if set == nil || !r.incremental {
		// Also keeps a listing begun before the write from being kept.
		r.dropWorkloads()
		return nil
	}
	changed := make(map[string]bool, len(names))
	changedNames = map[string]bool{}
	var (
		entries []*workloadEntry
		corrupt []*corruptError
	)
	for _, name := range names {
		if changed[name] {
			continue
		}
		changed[name] = true
		it, err := r.db.Get(ctx, resource.KindWorkloadIdentity, name)
		if errors.Is(err, store.ErrNotFound) {
			if set.byName[name] != nil || slices.ContainsFunc(set.corrupt, func(c *corruptError) bool { return c.name == name }) {
				changedNames[name] = true
			}
			continue
		}
		if err != nil {
			r.log.Warn("a changed workload identity could not be read; every identity is read again", "workload_identity", name, "error", err)
			r.dropWorkloads()
			return nil
		}
		e, ce, err := r.workloadEntryOf(it, set.byName[name])
		if ce != nil {
			corrupt = append(corrupt, ce)
			changedNames[name] = true
			continue
		}
		if err != nil {
			r.log.Warn("a changed workload identity could not be read; every identity is read again", "workload_identity", name, "error", err)
			r.dropWorkloads()
			return nil
		}
		entries = append(entries, e)
		if set.byName[name] != e {
			changedNames[name] = true
		}
	}
	if len(changedNames) == 0 {
		// Seen again unchanged (the store's change log shows this replica
		// its own writes): no copy of the set.
		return changedNames
	}
	next := &workloadSet{byName: make(map[string]*workloadEntry, len(set.byName)+len(entries)), list: make([]*workloadEntry, 0, len(set.list)+len(entries))}
	for _, e := range set.list {
		if !changed[e.wi.Metadata.Name] {
			next.list = append(next.list, e)
		}
	}
	next.list = append(next.list, entries...)
	sort.Slice(next.list, func(i, j int) bool { return next.list[i].wi.Metadata.Name < next.list[j].wi.Metadata.Name })
	for _, e := range next.list {
		next.byName[e.wi.Metadata.Name] = e
	}
	for _, c := range set.corrupt {
		if !changed[c.name] {
			next.corrupt = append(next.corrupt, c)
		}
	}
	next.corrupt = append(next.corrupt, corrupt...)
	sort.Slice(next.corrupt, func(i, j int) bool { return next.corrupt[i].name < next.corrupt[j].name })
	r.mu.Lock()
	r.refreshes++
	// The generation moves so that a listing begun before is not kept.
	r.workloads, r.lastWorkloads = next, next
	r.workloadsGen++
	r.mu.Unlock()
	return changedNames
}

// dropWorkloads makes the next read list every workload identity.
func (r *resources) dropWorkloads() {
	r.mu.Lock()
	r.workloads = nil
	r.workloadsGen++
	r.mu.Unlock()
}

// resourceChange names one written resource.
type resourceChange struct{ kind, name string }

// changed brings the caches up to date with writes, made in this process
// or, read from the store's change log, by another replica. It returns the
// workload identities that changed in the set, or nil when it cannot tell
// (the set was dropped, or the sync is full): a change seen twice, as the
// change log shows this replica its own writes again, changes nothing the
// second time.
func (r *resources) changed(ctx context.Context, changes ...resourceChange) map[string]bool {
	var names []string
	r.mu.Lock()
	for _, c := range changes {
		r.forgetLocked(c.kind, c.name)
		if c.kind == resource.KindWorkloadIdentity {
			names = append(names, c.name)
		}
	}
	r.mu.Unlock()
	return r.refreshWorkloads(ctx, names)
}

// resources reads and writes resources through the store, keeping decoded
// roles, users and bots in memory: every RPC needs its caller's roles, and
// the store should not be on that path. Writes go through here, so the cache
// is dropped exactly when something changes.
type resources struct {
	db    store.Backend
	log   *slog.Logger
	mu    sync.RWMutex
	cache map[string]resource.Resource // "kind/name"
	// gens caches principals' generations by "kind/name" (see generation.go).
	gens map[string]string

	// workloads is every workload identity, compiled; nil when a write
	// dropped it. workloadsGen counts those drops, so that a list read from
	// the store before a write is not kept after it.
	workloads    *workloadSet
	workloadsGen uint64
	// lastWorkloads is the previous set, whose compiled identities the next
	// one reuses when their revision did not change.
	lastWorkloads *workloadSet
	// incremental keeps the set across writes, refreshing only the changed
	// identity; without it every write drops the set (the full agent sync
	// does, for comparison).
	incremental bool
	// refreshMu serializes refreshes of the set; refreshes counts them.
	refreshMu sync.Mutex
	refreshes int

	// onChange is called with the kind and name of every resource a write
	// touched, after the write: it refreshes the caches (see changed) and
	// tells agent streams. The write's outcome may be unknown; it is called
	// then too.
	onChange func(changes ...resourceChange)
	// cacheGen counts what forget dropped, so that a document read from
	// the store before a change (here or on another replica) is not
	// cached after the change dropped it.
	cacheGen uint64

	// reported holds the corrupt documents already logged, by
	// "kind/name@revision", so that each is logged once, not per read.
	reported sync.Map
}

// newResources makes the resource cache; onChange nil means r.changed.
func newResources(db store.Backend, log *slog.Logger, onChange func(changes ...resourceChange)) *resources {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &resources{db: db, log: log, cache: map[string]resource.Resource{}, gens: map[string]string{}, onChange: onChange, incremental: true}
	if r.onChange == nil {
		r.onChange = func(changes ...resourceChange) {
			ctx, cancel := context.WithTimeout(context.Background(), changeReadTimeout)
			defer cancel()
			r.changed(ctx, changes...)
		}
	}
	return r
}

// changeReadTimeout bounds the store reads that bring caches up to date
// after a write. They do not take the writer's context: a write that was
// made must reach the caches even if its caller has gone.
const changeReadTimeout = 10 * time.Second

// corruptError is a stored document that does not decode.
type corruptError struct {
	kind, name string
	revision   int64
	err        error
}

func (e *corruptError) Error() string {
	return fmt.Sprintf("stored %s/%s is corrupt: %v", e.kind, e.name, e.err)
}

func (e *corruptError) Unwrap() error { return e.err }

// advice says what an operator does about it, for the auth service's log
// and explain answers; widctl names its command (see advice.Next).
func (e *corruptError) advice() string {
	return "remove it and create it again, or restore the data dir from a backup"
}

// report logs a corrupt document once per stored revision.
func (r *resources) report(e *corruptError) {
	key := fmt.Sprintf("%s/%s@%d", e.kind, e.name, e.revision)
	if _, seen := r.reported.LoadOrStore(key, true); seen {
		return
	}
	r.log.Error("a stored document does not decode; it is skipped", "resource", e.kind+"/"+e.name, "revision", e.revision, "error", e.err, "fix", e.advice())
}

func (r *resources) get(ctx context.Context, kind, name string) (resource.Resource, error) {
	key := kind + "/" + name
	r.mu.RLock()
	v, ok := r.cache[key]
	gen := r.cacheGen
	r.mu.RUnlock()
	if ok {
		return v, nil
	}
	it, err := r.db.Get(ctx, kind, name)
	if err != nil {
		return nil, err
	}
	v, err = decodeItem(it)
	if err != nil {
		return nil, err
	}
	if kind == resource.KindRole || kind == resource.KindUser || kind == resource.KindBot {
		r.mu.Lock()
		if r.cacheGen == gen {
			r.cache[key] = v
		}
		r.mu.Unlock()
	}
	return v, nil
}

func decodeItem(it store.Item) (resource.Resource, error) {
	v, err := resource.UnmarshalStored(it.Data)
	if err != nil {
		return nil, &corruptError{kind: it.Kind, name: it.Name, revision: it.Revision, err: err}
	}
	v.GetMetadata().Revision = it.Revision
	return v, nil
}

// list returns every resource of kind that decodes; the corrupt ones are
// logged and skipped, so that one damaged document cannot stop everything
// else of its kind.
func (r *resources) list(ctx context.Context, kind string) ([]resource.Resource, error) {
	out, _, err := r.listAll(ctx, kind)
	return out, err
}

// listAll is list, also naming the corrupt documents it skipped.
func (r *resources) listAll(ctx context.Context, kind string) ([]resource.Resource, []*corruptError, error) {
	items, err := r.db.List(ctx, kind)
	if err != nil {
		return nil, nil, err
	}
	out := make([]resource.Resource, 0, len(items))
	var corrupt []*corruptError
	for _, it := range items {
		v, err := decodeItem(it)
		var ce *corruptError
		if errors.As(err, &ce) {
			r.report(ce)
			corrupt = append(corrupt, ce)
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		out = append(out, v)
	}
	return out, corrupt, nil
}

func (r *resources) role(ctx context.Context, name string) (*resource.Role, error) {
	v, err := r.get(ctx, resource.KindRole, name)
	if err != nil {
		return nil, err
	}
	return v.(*resource.Role), nil
}

func (r *resources) user(ctx context.Context, name string) (*resource.User, error) {
	v, err := r.get(ctx, resource.KindUser, name)
	if err != nil {
		return nil, err
	}
	return v.(*resource.User), nil
}

func (r *resources) bot(ctx context.Context, name string) (*resource.Bot, error) {
	v, err := r.get(ctx, resource.KindBot, name)
	if err != nil {
		return nil, err
	}
	return v.(*resource.Bot), nil
}

// roles loads named roles; a missing role is skipped, because deleting a
// role must not lock its holders out of everything else.
func (r *resources) roles(ctx context.Context, names []string) ([]*resource.Role, error) {
	out := make([]*resource.Role, 0, len(names))
	for _, n := range names {
		role, err := r.role(ctx, n)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, role)
	}
	return out, nil
}

// apply writes ops atomically and drops the cached copies of what they
// touch; then it calls onChange for each. Both happen
// even when Apply failed: its outcome may be unknown, and a needless
// reload or state check costs little.
func (r *resources) apply(ctx context.Context, ops ...store.Op) ([]int64, error) {
	// Generation writes go last, so that revs[i] stays the revision of ops[i].
	gens, err := r.generationOps(ctx, ops)
	if err != nil {
		return nil, err
	}
	ops = append(ops[:len(ops):len(ops)], gens...)
	revs, err := r.db.Apply(ctx, ops...)
	r.mu.Lock()
	for _, op := range ops {
		r.forgetLocked(op.Item.Kind, op.Item.Name)
	}
	r.mu.Unlock()
	changes := make([]resourceChange, len(ops))
	for i, op := range ops {
		changes[i] = resourceChange{op.Item.Kind, op.Item.Name}
	}
	r.onChange(changes...)
	return revs, err
}

// forgetLocked drops what is cached of kind/name, after it changed in the
// store (through this replica or another), and reports whether agents'
// state may have changed. Dropping what is not cached is harmless.
func (r *resources) forgetLocked(kind, name string) (agentState bool) {
	switch kind {
	case generationKind:
		r.cacheGen++
		delete(r.gens, name)
	case resource.KindWorkloadIdentity:
		// The incremental sync refreshes the set instead (see changed).
		if !r.incremental {
			r.workloads = nil
			r.workloadsGen++
		}
		return true
	case resource.KindRole, resource.KindBot, resource.KindUser:
		r.cacheGen++
		delete(r.cache, kind+"/"+name)
		return kind != resource.KindUser
	}
	// Nothing else is cached here.
	return false
}

// forgetAll drops every cached document, for when this replica cannot
// know what changed.
func (r *resources) forgetAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cacheGen++
	clear(r.cache)
	clear(r.gens)
	r.workloads = nil
	r.lastWorkloads = nil
	r.workloadsGen++
}

// op encodes a resource as a store op. The revision is the store's, not part of the document.
func op(t store.OpType, v resource.Resource) (store.Op, error) {
	if u, ok := v.(*resource.User); ok && u.Status != nil {
		// A status is reported, never stored.
		c := *u
		c.Status = nil
		v = &c
	}
	md := v.GetMetadata()
	expect := md.Revision
	rev := md.Revision
	md.Revision = 0
	data, err := json.Marshal(v)
	md.Revision = rev
	if err != nil {
		return store.Op{}, fmt.Errorf("encoding %s: %w", resource.Ref(v), err)
	}
	o := store.Op{Type: t, Item: store.Item{Kind: v.GetKind(), Name: md.Name, Data: data}}
	if t == store.OpUpdate {
		o.ExpectRevision = expect
	}
	return o, nil
}

func (r *resources) ensureBuiltinRoles(ctx context.Context) error {
	for _, role := range rbac.BuiltinRoles() {
		if _, err := r.db.Get(ctx, resource.KindRole, role.Metadata.Name); err == nil {
			continue
		}
		o, err := op(store.OpCreate, role)
		if err != nil {
			return err
		}
		if _, err := r.apply(ctx, o); err != nil && !errors.Is(err, store.ErrAlreadyExists) {
			return fmt.Errorf("creating built-in role %s: %w", role.Metadata.Name, err)
		}
	}
	return nil
}

// holders lists who holds a role, to refuse deleting a role still in use.
func (r *resources) holders(ctx context.Context, role string) ([]string, error) {
	var out []string
	for _, kind := range []string{resource.KindUser, resource.KindBot} {
		list, err := r.list(ctx, kind)
		if err != nil {
			return nil, err
		}
		for _, v := range list {
			var roles []string
			switch t := v.(type) {
			case *resource.User:
				roles = t.Spec.Roles
			case *resource.Bot:
				roles = t.Spec.Roles
			}
			for _, n := range roles {
				if n == role {
					out = append(out, kind+" "+v.GetMetadata().Name)
				}
			}
		}
	}
	sort.Strings(out)
	return out, nil
}

// checkRolesExist refuses users and bots that name roles that don't exist:
// a typo there would silently grant nothing. Its refusals are statuses
// that name the next step; other errors are the store's.
func (r *resources) checkRolesExist(ctx context.Context, v resource.Resource, pending map[string]bool) error {
	var roles []string
	switch t := v.(type) {
	case *resource.User:
		roles = t.Spec.Roles
	case *resource.Bot:
		roles = t.Spec.Roles
	case *resource.JoinToken:
		if pending["bot/"+t.Spec.Bot] {
			return nil
		}
		if _, err := r.bot(ctx, t.Spec.Bot); errors.Is(err, store.ErrNotFound) {
			return refusal(codes.FailedPrecondition, fmt.Sprintf("%s names bot %s, which does not exist", resource.Ref(v), t.Spec.Bot),
				authv1.NextCreateBotFirst, authv1.ErrorMetaKind, resource.KindBot, authv1.ErrorMetaName, t.Spec.Bot)
		} else if err != nil {
			return err
		}
		return nil
	default:
		return nil
	}
	var missing []string
	for _, n := range roles {
		if pending[n] {
			continue
		}
		if _, err := r.role(ctx, n); errors.Is(err, store.ErrNotFound) {
			missing = append(missing, n)
		} else if err != nil {
			return err
		}
	}
	if len(missing) > 0 {
		return refusal(codes.FailedPrecondition, fmt.Sprintf("%s names roles that do not exist: %s", resource.Ref(v), strings.Join(missing, ", ")), authv1.NextCreateRoles)
	}
	return nil
}
