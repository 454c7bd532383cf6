package agent

import (
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/resource"
)

// The auth service pushes its SPIFFE ID locks with the bundle. While one
// holds, the agent serves no SVID of an ID it covers: the cached SVID is
// dropped when the state arrives, no workload is entitled to it, and a
// JWT-SVID of it fails validation. The auth service refuses to issue it
// anyway; the agent's part is to stop what it already holds.

// lockOf is the lock that holds on id at now, or nil.
func (s *state) lockOf(id spiffeid.ID, now time.Time) *authv1.AgentLock {
	if s == nil {
		return nil
	}
	for _, l := range s.locks {
		if l.GetExpires() != nil && !now.Before(l.GetExpires().AsTime()) {
			continue
		}
		if resource.LockCoversSPIFFEID(l.GetSpiffeId(), id) {
			return l
		}
	}
	return nil
}

// lockReason says why id is not served under lock l.
func lockReason(id spiffeid.ID, l *authv1.AgentLock) string {
	return fmt.Sprintf("SPIFFE ID %s is locked by lock %s: %s", id, l.GetName(), l.GetReason())
}
