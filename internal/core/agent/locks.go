package agent

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
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

// A revoked SPIFFE ID (svid revoke --spiffe-id, or a lock, which outlives
// its removal here) comes with the time it was revoked: a JWT-SVID of it
// issued before then fails validation until every such token has expired.
// A token's iat has whole seconds, rounded down: one whose iat is before
// the revocation may have been issued before it, and is refused (one
// issued later in that second too; its holder fetches a new one).

// revokedJWT says why a JWT-SVID of id issued at iat (unknown when !ok)
// no longer validates, or is "" when it does.
func (s *state) revokedJWT(id spiffeid.ID, iat time.Time, ok bool, now time.Time) string {
	if s == nil {
		return ""
	}
	for _, r := range s.revokedIDs {
		if !now.Before(r.GetUntil().AsTime()) {
			continue
		}
		if r.GetPrefix() {
			if !resource.LockCoversSPIFFEID(r.GetSpiffeId(), id) {
				continue
			}
		} else if r.GetSpiffeId() != id.String() {
			continue
		}
		at := r.GetRevokedAt().AsTime()
		if ok && !iat.Before(at) {
			continue
		}
		msg := fmt.Sprintf("SPIFFE ID %s was revoked at %s and this token was issued before", id, at.UTC().Format(time.RFC3339))
		if !ok {
			msg = fmt.Sprintf("SPIFFE ID %s was revoked at %s and this token has no issue time", id, at.UTC().Format(time.RFC3339))
		}
		if reason := r.GetReason(); reason != "" {
			msg += ": " + reason
		}
		return msg
	}
	return ""
}

// issuedAt is the token's iat claim.
func issuedAt(claims map[string]any) (time.Time, bool) {
	switch v := claims["iat"].(type) {
	case float64:
		return time.Unix(int64(v), 0), true
	case json.Number:
		n, err := v.Int64()
		return time.Unix(n, 0), err == nil
	}
	return time.Time{}, false
}

// tokenIssuedAt reads the iat of a token this agent holds (its signature
// was checked when it was issued).
func tokenIssuedAt(token string) (time.Time, bool) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return time.Time{}, false
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return time.Time{}, false
	}
	var claims map[string]any
	if json.Unmarshal(payload, &claims) != nil {
		return time.Time{}, false
	}
	return issuedAt(claims)
}
