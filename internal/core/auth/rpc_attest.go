package auth

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/audit"
	"github.com/wid-project/wid/internal/core/rbac"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// MaxAttestations caps the attestations of one RecordAttestations call.
const MaxAttestations = 10000

// maxRecentAttestations is how many attestation ids are remembered to drop
// a batch sent again after a lost answer. Agents resend within seconds, so
// this covers far more than a retry needs.
const maxRecentAttestations = 100000

// Detail keys of workload.attest events.
const (
	detailSPIFFEIDs     = "spiffe_ids"
	detailMethod        = "method"
	detailAttestationID = "attestation_id"
	detailAgentTime     = "agent_time"
)

// AttestationTimeWindow is how far from the auth service's clock an
// attestation's time may be and still date its event.
const AttestationTimeWindow = 5 * time.Minute

// recentIDs remembers the last ids recorded, oldest forgotten first. An id
// is claimed before its event is written and kept only once the write
// succeeded, so that two copies of a batch racing each other record it once
// and a failed write can be retried.
type recentIDs struct {
	mu    sync.Mutex
	ids   map[string]*idState
	order []string // ring of remembered ids
	next  int
}

type idState struct {
	// done is closed when the write that claimed the id finished; recorded
	// says whether it succeeded.
	done     chan struct{}
	recorded bool
}

func newRecentIDs(capacity int) *recentIDs {
	return &recentIDs{ids: make(map[string]*idState), order: make([]string, capacity)}
}

// claim returns, for each id, the state to finish once written, or nil when
// the id was recorded already or appears earlier in ids. An id that another
// call is writing right now is waited for.
func (r *recentIDs) claim(ctx context.Context, ids []string) ([]*idState, error) {
	out := make([]*idState, len(ids))
	seen := make(map[string]bool, len(ids))
	for i, id := range ids {
		if id == "" {
			out[i] = &idState{done: make(chan struct{})}
			continue
		}
		if seen[id] {
			continue
		}
		seen[id] = true
		for {
			r.mu.Lock()
			st := r.ids[id]
			if st == nil {
				st = &idState{done: make(chan struct{})}
				r.remember(id, st)
				r.mu.Unlock()
				out[i] = st
				break
			}
			r.mu.Unlock()
			select {
			case <-st.done:
			case <-ctx.Done():
				r.finish(ids, out, false)
				return nil, ctx.Err()
			}
			if st.recorded {
				break
			}
			// The other write failed and forgot the id: claim it again.
		}
	}
	return out, nil
}

// remember adds id, forgetting the oldest when full. Call with mu held.
func (r *recentIDs) remember(id string, st *idState) {
	if old := r.order[r.next]; old != "" {
		delete(r.ids, old)
	}
	r.order[r.next] = id
	r.next = (r.next + 1) % len(r.order)
	r.ids[id] = st
}

// finish settles the claims made by claim: kept when recorded, forgotten
// otherwise.
func (r *recentIDs) finish(ids []string, claims []*idState, recorded bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, st := range claims {
		if st == nil {
			continue
		}
		st.recorded = recorded
		if !recorded && ids[i] != "" && r.ids[ids[i]] == st {
			// Its slot in the ring stays; forgetting it there is harmless.
			delete(r.ids, ids[i])
		}
		close(st.done)
	}
}

func (s *Server) RecordAttestations(ctx context.Context, req *authv1.RecordAttestationsRequest) (*authv1.RecordAttestationsResponse, error) {
	c := callerFrom(ctx)
	if err := s.requireAgent(ctx, c, "record attestations"); err != nil {
		return nil, err
	}
	if n := len(req.Attestations); n > MaxAttestations {
		return nil, status.Errorf(codes.InvalidArgument, "the request holds %d attestations, over the limit of %d per call: split it", n, MaxAttestations)
	}
	host := agentHost(req.Host)
	if err := s.refuseLockedOn(ctx, c, host, "/wid.auth.v1.AuthService/RecordAttestations"); err != nil {
		return nil, err
	}
	if err := s.checkAttestations(ctx, c, host, req.Attestations); err != nil {
		return nil, err
	}
	ids := make([]string, len(req.Attestations))
	for i, a := range req.Attestations {
		ids[i] = a.Id
	}
	claims, err := s.attestations.claim(ctx, ids)
	if err != nil {
		return nil, status.FromContextError(err).Err()
	}
	var events []audit.Event
	for i, a := range req.Attestations {
		if claims[i] == nil {
			continue // recorded before
		}
		events = append(events, s.attestationEvent(c, host, a))
	}
	_, err = s.audit.EmitAll(ctx, events)
	s.attestations.finish(ids, claims, err == nil)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "the attestations could not be recorded: %v: send them again", err)
	}
	return &authv1.RecordAttestationsResponse{}, nil
}

// attestationEvent is the audit event of one attestation.
func (s *Server) attestationEvent(c *caller, host string, a *authv1.Attestation) audit.Event {
	ev := audit.Event{
		Type: audit.TypeWorkloadAttest, Actor: c.Actor(s), Host: host, RemoteAddr: c.RemoteAddr,
		Attributes: a.Attributes, Outcome: a.Outcome, Reason: a.Reason, Details: map[string]string{},
	}
	now := s.clock()
	ev.Time = now
	if a.Time != nil {
		// The agent's time is kept when it is near ours. Otherwise the
		// event is dated when it arrived and the agent's claim is kept
		// apart: a bot must not date events into the past (nor the
		// future, where they would sort after what follows them), and
		// refusing would make an agent back from an outage drop them.
		if t := a.Time.AsTime(); !t.Before(now.Add(-AttestationTimeWindow)) && !t.After(now.Add(AttestationTimeWindow)) {
			ev.Time = t
		} else {
			ev.Details[detailAgentTime] = t.UTC().Format(time.RFC3339Nano)
		}
	}
	if ev.Outcome == "" {
		ev.Outcome = audit.OutcomeDenied
		if len(a.SpiffeIds) > 0 {
			ev.Outcome = audit.OutcomeSuccess
		}
	}
	if len(a.SpiffeIds) > 0 {
		ev.SPIFFEID = a.SpiffeIds[0]
		ev.Details[detailSPIFFEIDs] = strings.Join(a.SpiffeIds, ",")
	}
	if a.Method != "" {
		ev.Details[detailMethod] = a.Method
	}
	if a.Id != "" {
		ev.Details[detailAttestationID] = a.Id
	}
	if len(ev.Details) == 0 {
		ev.Details = nil
	}
	return ev
}

// checkAttestations refuses, audited, a batch that a bot's agent could not
// have observed: from a host where the bot follows no state stream, or
// crediting a workload with a SPIFFE ID the bot may not issue. Only what
// the agent could have served may enter the audit log under its name.
func (s *Server) checkAttestations(ctx context.Context, c *caller, host string, list []*authv1.Attestation) error {
	refuse := func(code codes.Code, msg string) error {
		s.recordDenial(ctx, audit.Event{
			Type: audit.TypeAccessDenied, Actor: c.Actor(s), Host: host, RemoteAddr: c.RemoteAddr, Reason: msg,
			Details: map[string]string{"method": "RecordAttestations"},
		})
		return status.Error(code, msg)
	}
	if !s.agents.Following(c.Name, host) {
		// Retryable: the agent's stream may be reconnecting.
		return refuse(codes.FailedPrecondition, fmt.Sprintf("bot %q has no state stream open from host %q: an agent records attestations of the host it follows the auth service from (WatchAgent)", c.Name, host))
	}
	for i, a := range list {
		switch a.Outcome {
		case "", audit.OutcomeSuccess, audit.OutcomeDenied:
		default:
			return status.Errorf(codes.InvalidArgument, "attestation %d has outcome %q: use success or denied", i+1, a.Outcome)
		}
		for _, raw := range a.SpiffeIds {
			id, err := spiffeid.FromString(raw)
			if err != nil || id.TrustDomain() != s.td {
				return refuse(codes.InvalidArgument, fmt.Sprintf("attestation %d names %q, which is not a SPIFFE ID of trust domain %s", i+1, truncateForMessage(raw), s.td.Name()))
			}
			if d := rbac.CheckSVID(c.Roles, rbac.Request{ID: id}); !d.Allowed {
				return refuse(codes.PermissionDenied, fmt.Sprintf("attestation %d credits a workload with %s, which bot %q may not issue: %s", i+1, id, c.Name, d.Reason))
			}
		}
	}
	return nil
}

// truncateForMessage keeps a caller's value short in an error.
func truncateForMessage(s string) string {
	const max = 200
	if len(s) > max {
		return s[:max] + "..."
	}
	return s
}
