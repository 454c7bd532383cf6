// Package agentsync is the agent's side of the WatchAgent protocol that
// does not depend on what the agent does with a state: gathering a state
// sent in several messages, and deciding whether a delta applies on top of
// the state held. The agent and the fleet simulator both follow streams
// with it. It never decodes a workload identity.
package agentsync

import (
	"fmt"

	authv1 "github.com/wid-project/wid/api/auth/v1"
)

// MaxChunks bounds the messages of one state, so that a stream that never
// ends a state cannot grow the agent's memory without limit: at the auth
// service's 1 MiB a chunk, 4 GiB of workload identities.
const MaxChunks = 4096

// Position is the state an agent holds, as its next WatchAgentRequest
// names it. The zero Position holds nothing: the agent gets a snapshot.
type Position struct {
	TrustDomain string
	Epoch       string
	Revision    int64
}

// Request is the WatchAgentRequest of an agent on host at pos.
func Request(host string, pos Position) *authv1.WatchAgentRequest {
	return &authv1.WatchAgentRequest{Host: host, Incremental: true, Epoch: pos.Epoch, Revision: pos.Revision, TrustDomain: pos.TrustDomain}
}

// Of is the position a whole state leaves the agent at.
func Of(st *authv1.AgentState) Position {
	return Position{TrustDomain: st.GetTrustDomain(), Epoch: st.GetEpoch(), Revision: st.GetRevision()}
}

// Gatherer joins the messages of one state. The zero Gatherer is ready.
type Gatherer struct {
	pending *authv1.AgentState
	chunks  int
}

// Add takes the next message of a stream but heartbeats. It returns the
// state once its last message arrived, else nil.
func (g *Gatherer) Add(msg *authv1.AgentState) (*authv1.AgentState, error) {
	if g.pending != nil {
		if msg.GetGeneration() != g.pending.GetGeneration() {
			return nil, fmt.Errorf("the auth service began state %d before it finished state %d", msg.GetGeneration(), g.pending.GetGeneration())
		}
		if g.chunks++; g.chunks > MaxChunks {
			return nil, fmt.Errorf("the auth service sent state %d in over %d messages", msg.GetGeneration(), MaxChunks)
		}
		g.pending.WorkloadIdentities = append(g.pending.WorkloadIdentities, msg.GetWorkloadIdentities()...)
		g.pending.RemovedWorkloadIdentities = append(g.pending.RemovedWorkloadIdentities, msg.GetRemovedWorkloadIdentities()...)
		g.pending.CorruptWorkloadIdentities = append(g.pending.CorruptWorkloadIdentities, msg.GetCorruptWorkloadIdentities()...)
		g.pending.More = msg.GetMore()
		msg = g.pending
	}
	if msg.GetMore() {
		g.pending = msg
		return nil, nil
	}
	g.pending, g.chunks = nil, 0
	return msg, nil
}

// CheckDelta says why the delta st does not apply on top of pos, or nil
// when it does: same trust domain and epoch, and based on pos's revision.
// An agent that gets an error asks for a snapshot.
func CheckDelta(pos Position, st *authv1.AgentState) error {
	switch {
	case pos.Epoch == "":
		return fmt.Errorf("the auth service sent a delta (revision %d) to an agent that holds no state of its change log", st.GetRevision())
	case st.GetTrustDomain() != pos.TrustDomain:
		return fmt.Errorf("the auth service sent a delta of trust domain %q to an agent of %q", st.GetTrustDomain(), pos.TrustDomain)
	case st.GetEpoch() != pos.Epoch:
		return fmt.Errorf("the auth service sent a delta of epoch %s to an agent at epoch %s", st.GetEpoch(), pos.Epoch)
	case st.GetBaseRevision() != pos.Revision:
		return fmt.Errorf("the auth service sent a delta from revision %d to an agent at revision %d", st.GetBaseRevision(), pos.Revision)
	case st.GetRevision() <= pos.Revision:
		return fmt.Errorf("the auth service sent a delta to revision %d, not past the agent's %d", st.GetRevision(), pos.Revision)
	}
	return nil
}
