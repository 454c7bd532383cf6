package auth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"

	"github.com/wid-project/wid/internal/core/rbac"
	"github.com/wid-project/wid/internal/core/resource"
	"github.com/wid-project/wid/internal/core/store"
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
// write changed them since the last read. The set is shared: never modify it.
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
		// An identity whose stored document did not change is taken as it
		// was, neither decoded nor compiled again. The revision alone does
		// not tell: one deleted and created again starts again at 1.
		e := last.entry(it.Name)
		if e == nil || e.wi.Metadata.Revision != it.Revision || !bytes.Equal(e.stored, it.Data) {
			v, err := decodeItem(it)
			var ce *corruptError
			if errors.As(err, &ce) {
				r.report(ce)
				set.corrupt = append(set.corrupt, ce)
				continue
			}
			if err != nil {
				return nil, err
			}
			wi := v.(*resource.WorkloadIdentity)
			e = &workloadEntry{wi: wi, stored: it.Data}
			if e.doc, err = encode(wi); err != nil {
				return nil, err
			}
			e.compiled, e.err = rbac.CompileWorkload(wi)
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

	// onChange is called after every write to a role, bot or workload
	// identity: what agents are served from.
	onChange func()
	// cacheGen counts what forget dropped, so that a document read from
	// the store before a change (here or on another replica) is not
	// cached after the change dropped it.
	cacheGen uint64

	// reported holds the corrupt documents already logged, by
	// "kind/name@revision", so that each is logged once, not per read.
	reported sync.Map
}

func newResources(db store.Backend, log *slog.Logger, onChange func()) *resources {
	if onChange == nil {
		onChange = func() {}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &resources{db: db, log: log, cache: map[string]resource.Resource{}, gens: map[string]string{}, onChange: onChange}
}

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

// advice says what an operator does about it.
func (e *corruptError) advice() string {
	return fmt.Sprintf("remove it with widctl rm %s/%s and create it again, or restore the data dir from a backup", e.kind, e.name)
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
// touch; then, if agents' state may have changed, it says so. Both happen
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
	agentState := false
	r.mu.Lock()
	for _, op := range ops {
		agentState = r.forgetLocked(op.Item.Kind, op.Item.Name) || agentState
	}
	r.mu.Unlock()
	if agentState {
		r.onChange()
	}
	return revs, err
}

// forget drops what is cached of kind/name, after it changed in the store
// (through this replica or another), and reports whether agents' state
// may have changed. Dropping what is not cached is harmless.
func (r *resources) forget(kind, name string) (agentState bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.forgetLocked(kind, name)
}

func (r *resources) forgetLocked(kind, name string) (agentState bool) {
	switch kind {
	case generationKind:
		r.cacheGen++
		delete(r.gens, name)
	case resource.KindWorkloadIdentity:
		r.workloads = nil
		r.workloadsGen++
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
// a typo there would silently grant nothing.
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
			return fmt.Errorf("%s names bot %s, which does not exist: create it first with widctl bot add %s --roles ROLE", resource.Ref(v), t.Spec.Bot, t.Spec.Bot)
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
		return fmt.Errorf("%s names roles that do not exist: %s: create them first with widctl role create", resource.Ref(v), strings.Join(missing, ", "))
	}
	return nil
}
