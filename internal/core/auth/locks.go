package auth

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/audit"
	"github.com/wid-project/wid/internal/core/rbac"
	"github.com/wid-project/wid/internal/core/resource"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Locks are read on every authenticated call, so they are kept in memory:
// loaded at the first call, and reloaded whenever the change feed sees a
// lock change (this replica's writes and every other replica's), which
// also ends the open streams of what a new lock covers.

// checkLocked is the audit check name of a refusal by a lock.
const checkLocked = "locked"

// lockState is this replica's copy of the trust domain's locks.
type lockState struct {
	mu sync.RWMutex
	// list is every stored lock, expired ones too; loaded says it was read.
	list   []*resource.Lock
	loaded bool
	// gen counts reloads, so that a listing read before a change is not
	// kept after it.
	gen uint64

	streamsMu sync.Mutex
	streams   map[*lockedStream]struct{}
}

// lockedStream is an open stream of a user or bot, ended when a lock
// comes to cover its caller.
type lockedStream struct {
	kind, name string
	// hosts are the hosts a bot's stream is held to: its certificate's,
	// and the one its WatchAgent request named. Guarded by streamsMu.
	hosts  []string
	cancel context.CancelCauseFunc
}

type lockedStreamKey struct{}

// lockError is the refusal a lock causes: it names the lock and its reason.
type lockError struct {
	lock *resource.Lock
	// what is who or what is locked, as people read it.
	what string
}

func (e *lockError) Error() string {
	l := e.lock
	msg := fmt.Sprintf("%s is locked by lock %s: %s", e.what, l.Metadata.Name, strings.TrimSpace(l.Spec.Reason))
	if !l.Spec.Expires.IsZero() {
		msg += fmt.Sprintf(" (until %s)", l.Spec.Expires.UTC().Format(time.RFC3339))
	}
	return msg
}

// lockMeta is the ErrorInfo metadata naming lock l, whose removal is the
// next step of a refusal it causes.
func lockMeta(l *resource.Lock) []string {
	return []string{authv1.ErrorMetaKind, resource.KindLock, authv1.ErrorMetaName, l.Metadata.Name}
}

// locks returns every stored lock, from memory after the first read.
func (s *Server) locks(ctx context.Context) ([]*resource.Lock, error) {
	st := &s.lockSt
	st.mu.RLock()
	list, loaded, gen := st.list, st.loaded, st.gen
	st.mu.RUnlock()
	if loaded {
		return list, nil
	}
	list, err := s.readLocks(ctx)
	if err != nil {
		return nil, err
	}
	st.mu.Lock()
	if st.gen == gen {
		st.list, st.loaded = list, true
	}
	st.mu.Unlock()
	return list, nil
}

func (s *Server) readLocks(ctx context.Context) ([]*resource.Lock, error) {
	all, err := s.res.list(ctx, resource.KindLock)
	if err != nil {
		return nil, fmt.Errorf("reading the locks: %w", err)
	}
	out := make([]*resource.Lock, 0, len(all))
	for _, v := range all {
		if l, ok := v.(*resource.Lock); ok {
			out = append(out, l)
		}
	}
	return out, nil
}

// locksChanged reloads the locks after one changed in the store, and ends
// the open streams of every user and bot a lock now covers. A reload that
// fails drops the copy, so the next call reads the store.
func (s *Server) locksChanged(ctx context.Context) {
	st := &s.lockSt
	st.mu.Lock()
	st.gen++
	st.loaded, st.list = false, nil
	st.mu.Unlock()
	list, err := s.locks(ctx)
	if err != nil {
		s.log.Warn("the locks could not be read after a change; every call reads them again until they are", "error", err)
		return
	}
	// Agents stop serving SVIDs of a locked SPIFFE ID: the locks travel
	// with the bundle.
	s.agentChanged(ctx, feedKindCA, "")
	now := s.clock()
	st.streamsMu.Lock()
	defer st.streamsMu.Unlock()
	for ls := range st.streams {
		if l, what := s.lockOfPrincipal(list, ls.kind, ls.name, ls.hosts, now); l != nil {
			ls.cancel(&lockError{lock: l, what: what})
		}
	}
}

// lockOfPrincipal is the lock that holds on the user or bot name (and for a
// bot, on one of the hosts its call is held to), or nil.
func (s *Server) lockOfPrincipal(list []*resource.Lock, kind, name string, hosts []string, now time.Time) (*resource.Lock, string) {
	for _, l := range list {
		if !l.Holds(now) {
			continue
		}
		t := l.Spec.Target
		switch {
		case kind == KindUser && t.User == name:
			return l, fmt.Sprintf("user %q", name)
		case kind == KindBot && t.Bot == name:
			return l, fmt.Sprintf("bot %q", name)
		case kind == KindBot && t.Host != "" && slices.Contains(hosts, t.Host):
			return l, fmt.Sprintf("bot %q on host %q", name, t.Host)
		}
	}
	return nil, ""
}

// refuseLocked refuses a call of a locked user or bot, auditing it. A bot
// is held to the host of its own certificate, never to what another agent
// of the same bot named. Other callers (admins on the local socket,
// anonymous ones) are never locked.
func (s *Server) refuseLocked(ctx context.Context, c *caller, method string) error {
	return s.refuseLockedOn(ctx, c, "", method)
}

// refuseLockedOn is refuseLocked for a call that also names the host it
// runs on (host, may be ""), held to that host as well.
func (s *Server) refuseLockedOn(ctx context.Context, c *caller, host, method string) error {
	if c.Kind != KindUser && c.Kind != KindBot {
		return nil
	}
	list, err := s.locks(ctx)
	if err != nil {
		// Without the locks nothing can say the caller is not locked.
		return storeError("the locks", err)
	}
	l, what := s.lockOfPrincipal(list, c.Kind, c.Name, callerHosts(c, host), s.clock())
	if l == nil {
		return nil
	}
	return s.lockRefusal(ctx, &lockError{lock: l, what: what}, c.Kind, c.Name, c.RemoteAddr, method)
}

// callerHosts are the hosts a bot's call is held to: its certificate's and
// the one the call names, without blanks.
func callerHosts(c *caller, named string) []string {
	var out []string
	for _, h := range []string{c.Host, named} {
		if h != "" && !slices.Contains(out, h) {
			out = append(out, h)
		}
	}
	return out
}

// lockRefusal audits a refusal by a lock and returns its status.
func (s *Server) lockRefusal(ctx context.Context, le *lockError, kind, name, remote, method string) error {
	actor := name
	if kind == KindBot {
		actor = "bot:" + name
	}
	s.recordDenial(ctx, audit.Event{
		Type: audit.TypeAccessDenied, Actor: actor, RemoteAddr: remote, Reason: le.Error(),
		Resource: resource.KindLock + "/" + le.lock.Metadata.Name,
		Details:  map[string]string{"method": method, "check": checkLocked},
	})
	return refusal(codes.PermissionDenied, le.Error(), authv1.NextLiftLock, lockMeta(le.lock)...)
}

// spiffeIDLock is the lock that holds on id (the ID itself or a path
// above it), or nil. A failure to read the locks is an error: issuance
// does not go ahead unchecked.
func (s *Server) spiffeIDLock(ctx context.Context, id spiffeid.ID) (*resource.Lock, error) {
	list, err := s.locks(ctx)
	if err != nil {
		return nil, err
	}
	now := s.clock()
	for _, l := range list {
		if l.Holds(now) && l.LocksSPIFFEID(id) {
			return l, nil
		}
	}
	return nil, nil
}

// lockedIDReason says why issuing id is refused, and names the lock that
// holds on it, or is "" when none does. Reading the locks failing refuses
// too, naming no lock.
func (s *Server) lockedIDReason(ctx context.Context, id spiffeid.ID) (reason, lock string) {
	l, err := s.spiffeIDLock(ctx, id)
	if err != nil {
		return fmt.Sprintf("issuing %s is refused because the locks could not be read: %v", id, err), ""
	}
	if l == nil {
		return "", ""
	}
	return (&lockError{lock: l, what: "SPIFFE ID " + id.String()}).Error(), l.Metadata.Name
}

// watchLocked registers an open stream of a user or bot, returning the
// stream's context, ended with a lockError when a lock comes to cover the
// caller, and a function that unregisters it.
func (s *Server) watchLocked(ctx context.Context, c *caller) (context.Context, func()) {
	if c.Kind != KindUser && c.Kind != KindBot {
		return ctx, func() {}
	}
	ctx, cancel := context.WithCancelCause(ctx)
	ls := &lockedStream{kind: c.Kind, name: c.Name, hosts: callerHosts(c, ""), cancel: cancel}
	ctx = context.WithValue(ctx, lockedStreamKey{}, ls)
	st := &s.lockSt
	st.streamsMu.Lock()
	if st.streams == nil {
		st.streams = map[*lockedStream]struct{}{}
	}
	st.streams[ls] = struct{}{}
	st.streamsMu.Unlock()
	return ctx, func() {
		st.streamsMu.Lock()
		delete(st.streams, ls)
		st.streamsMu.Unlock()
		cancel(nil)
	}
}

// streamOnHost holds the stream of ctx to host as well, which it named
// after it opened: a lock on that host that comes later ends it.
func (s *Server) streamOnHost(ctx context.Context, host string) {
	ls, ok := ctx.Value(lockedStreamKey{}).(*lockedStream)
	if !ok || host == "" {
		return
	}
	st := &s.lockSt
	st.streamsMu.Lock()
	if !slices.Contains(ls.hosts, host) {
		ls.hosts = append(ls.hosts, host)
	}
	st.streamsMu.Unlock()
}

// lockedStreamError is the error a stream ended by a lock returns: the
// lock's refusal, audited, in place of whatever the handler returned.
func (s *Server) lockedStreamError(ctx context.Context, c *caller, method string, err error) error {
	var le *lockError
	if !errors.As(context.Cause(ctx), &le) {
		return err
	}
	s.log.Info("ended the stream of a locked caller", "kind", c.Kind, "name", c.Name, "lock", le.lock.Metadata.Name)
	return s.lockRefusal(ctx, le, c.Kind, c.Name, c.RemoteAddr, method)
}

// lockStreamInterceptor ends the streams of callers a lock comes to cover.
// It runs after streamAuth, which has refused callers already locked.
func (s *Server) lockStreamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	c := callerFrom(ss.Context())
	ctx, done := s.watchLocked(ss.Context(), c)
	defer done()
	err := handler(srv, &callerStream{ServerStream: ss, ctx: ctx})
	return s.lockedStreamError(ctx, c, info.FullMethod, err)
}

// checkLockResource refuses a lock that would last past MaxLockTTL or that
// would lock the last admin out, and records who made it.
func (s *Server) checkLockResource(ctx context.Context, v resource.Resource) error {
	l, ok := v.(*resource.Lock)
	if !ok {
		return nil
	}
	now := s.clock()
	if !l.Spec.Expires.IsZero() {
		if l.Spec.Expires.Sub(now) > resource.MaxLockTTL {
			return status.Errorf(codes.InvalidArgument, "lock %s would last until %s, past a year from now: give a TTL of at most %s, or remove the lock by hand later", l.Metadata.Name, l.Spec.Expires.UTC().Format(time.RFC3339), resource.MaxLockTTL)
		}
		if !l.Spec.Expires.After(now) {
			return status.Errorf(codes.InvalidArgument, "lock %s expires at %s, which has passed: give a time in the future", l.Metadata.Name, l.Spec.Expires.UTC().Format(time.RFC3339))
		}
	}
	// Whatever the request said: the creator is who made the call.
	c := callerFrom(ctx)
	l.Spec.CreatedBy = c.Actor(s)
	if t := l.Spec.Target.User; t != "" && c.Kind == KindUser && t == c.Name {
		last, err := s.lastAdmin(ctx, t)
		if err != nil {
			return storeError("user/"+t, err)
		}
		if last {
			return status.Errorf(codes.FailedPrecondition, "locking user %q, yourself, is refused: you are the last user who may remove locks, so it would lock every admin out; have another admin lock you, or use the admin socket on the auth host", t)
		}
	}
	return nil
}

// lastAdmin reports whether user is the only unlocked user whose roles
// allow removing locks.
func (s *Server) lastAdmin(ctx context.Context, user string) (bool, error) {
	users, err := s.res.list(ctx, resource.KindUser)
	if err != nil {
		return false, err
	}
	list, err := s.locks(ctx)
	if err != nil {
		return false, err
	}
	now := s.clock()
	var admins []string
	for _, v := range users {
		u := v.(*resource.User)
		roles, err := s.res.roles(ctx, u.Spec.Roles)
		if err != nil {
			return false, err
		}
		if !rbac.CheckRule(roles, resource.KindLock, verbDelete).Allowed {
			continue
		}
		if l, _ := s.lockOfPrincipal(list, KindUser, u.Metadata.Name, nil, now); l != nil {
			continue
		}
		admins = append(admins, u.Metadata.Name)
	}
	sort.Strings(admins)
	return slices.Equal(admins, []string{user}), nil
}

// refuseLockedJoin refuses a join as a locked bot, or from a locked host,
// before the join token's use is counted. Unlike other join refusals it
// says why: the caller holds a valid token, so the lock tells it nothing
// about which tokens exist.
func (s *Server) refuseLockedJoin(ctx context.Context, req *authv1.JoinRequest, bot, token string) error {
	list, err := s.locks(ctx)
	if err != nil {
		return storeError("the locks", err)
	}
	host := agentHost(req.Host)
	now := s.clock()
	for _, l := range list {
		if !l.Holds(now) {
			continue
		}
		var what string
		switch t := l.Spec.Target; {
		case t.Bot == bot:
			what = fmt.Sprintf("bot %q", bot)
		case host != "" && t.Host == host:
			what = fmt.Sprintf("bot %q on host %q", bot, host)
		default:
			continue
		}
		msg := (&lockError{lock: l, what: what}).Error()
		return s.joinDeniedWith(ctx, req, bot, token, msg, msg, map[string]string{"check": checkLocked, "lock": l.Metadata.Name},
			append([]string{authv1.NextLiftLock}, lockMeta(l)...)...)
	}
	return nil
}

// agentLocks are the SPIFFE ID locks as agents apply them, in name order.
// Expired ones are left out; one that expires later is sent with its
// expiry, which the agent checks itself.
func (s *Server) agentLocks() ([]*authv1.AgentLock, error) {
	ctx, cancel := context.WithTimeout(context.Background(), changeReadTimeout)
	defer cancel()
	list, err := s.locks(ctx)
	if err != nil {
		return nil, err
	}
	now := s.clock()
	var out []*authv1.AgentLock
	for _, l := range list {
		if l.Spec.Target.SPIFFEID == "" || !l.Holds(now) {
			continue
		}
		al := &authv1.AgentLock{Name: l.Metadata.Name, SpiffeId: l.Spec.Target.SPIFFEID, Reason: l.Spec.Reason}
		if !l.Spec.Expires.IsZero() {
			al.Expires = timestamppb.New(l.Spec.Expires)
		}
		out = append(out, al)
	}
	return out, nil
}
