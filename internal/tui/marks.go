package tui

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	authv1 "github.com/wid-project/wid/api/auth/v1"
	coreres "github.com/wid-project/wid/internal/core/resource"
)

// maxRevoked bounds the revoked serials the dashboard remembers: the
// SVIDs tab keeps at most maxEvents issuances to mark.
const maxRevoked = maxEvents

// marks are what the SVIDs and Roles tabs flag: the serials revoked (from
// the audit log's svid.x509.revoked events) and the locks (listed as
// resources, polled like roles).
type marks struct {
	revoked map[string]bool
	// order holds revoked serials oldest first, so the oldest go first.
	order []string

	locks []lockDoc
	// locksLoaded says the locks were listed at least once; locksErr why
	// the caller may not list them.
	locksLoaded bool
	locksErr    error
}

// lockDoc is a lock as the auth service lists it.
type lockDoc struct {
	Metadata struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec coreres.LockSpec `json:"spec"`
}

func newMarks() *marks { return &marks{revoked: map[string]bool{}} }

func (m *marks) revoke(serial string) {
	if serial == "" || m.revoked[serial] {
		return
	}
	m.revoked[serial] = true
	m.order = append(m.order, serial)
	if len(m.order) > maxRevoked {
		delete(m.revoked, m.order[0])
		m.order = slices.Clone(m.order[1:])
	}
}

func (m *marks) setLocks(raw [][]byte) {
	m.locks, m.locksLoaded, m.locksErr = m.locks[:0], true, nil
	for _, b := range raw {
		var l lockDoc
		if err := json.Unmarshal(b, &l); err != nil {
			continue
		}
		m.locks = append(m.locks, l)
	}
	slices.SortFunc(m.locks, func(a, b lockDoc) int { return strings.Compare(a.Metadata.Name, b.Metadata.Name) })
}

func (m *marks) setLocksDenied(err error) { m.locks, m.locksLoaded, m.locksErr = nil, true, err }

// isRevoked says whether e issued an X509-SVID whose serial was revoked.
func (m *marks) isRevoked(e *authv1.AuditEvent) bool {
	return svidType(e) == "x509" && e.Serial != "" && m.revoked[e.Serial]
}

// lockOn returns the lock that holds at now on e's SPIFFE ID or on who
// asked for it (a user or a bot), or nil.
func (m *marks) lockOn(e *authv1.AuditEvent, now time.Time) *lockDoc {
	id, idErr := spiffeid.FromString(e.SpiffeId)
	for i := range m.locks {
		l := &m.locks[i]
		if !l.holds(now) {
			continue
		}
		t := l.Spec.Target
		switch {
		case t.SPIFFEID != "" && idErr == nil && coreres.LockCoversSPIFFEID(t.SPIFFEID, id),
			t.User != "" && (e.Actor == t.User || e.Actor == "user:"+t.User),
			t.Bot != "" && e.Actor == "bot:"+t.Bot:
			return l
		}
	}
	return nil
}

// lockOnPath returns the lock that holds at now on a SPIFFE ID path (or
// the path of a workload identity's template), or nil.
func (m *marks) lockOnPath(path string, now time.Time) *lockDoc {
	if i := strings.Index(path, "://"); i >= 0 {
		rest := path[i+3:]
		path = rest[strings.IndexByte(rest+"/", '/'):]
	}
	for i := range m.locks {
		l := &m.locks[i]
		p := l.Spec.Target.SPIFFEID
		if p == "" || !l.holds(now) {
			continue
		}
		if i := strings.Index(p, "://"); i >= 0 {
			rest := p[i+3:]
			p = rest[strings.IndexByte(rest+"/", '/'):]
		}
		if path == p || strings.HasPrefix(path, strings.TrimSuffix(p, "/")+"/") {
			return l
		}
	}
	return nil
}

func (l *lockDoc) holds(now time.Time) bool {
	return l.Spec.Expires.IsZero() || now.Before(l.Spec.Expires)
}

// line is a lock as the Roles tab lists it.
func (l *lockDoc) line(now time.Time, st styles) string {
	state := st.denied.Render("LOCKED")
	until := "until removed"
	if !l.Spec.Expires.IsZero() {
		until = "until " + l.Spec.Expires.UTC().Format("2006-01-02 15:04 UTC")
	}
	if !l.holds(now) {
		state, until = st.dim.Render("EXPIRED"), "expired "+l.Spec.Expires.UTC().Format("2006-01-02 15:04 UTC")
	}
	parts := []string{l.Spec.Target.String(), l.Spec.Reason, until}
	if l.Spec.CreatedBy != "" {
		parts = append(parts, "by "+l.Spec.CreatedBy)
	}
	return fmt.Sprintf("%s %s  %s", state, strings.Join(parts, " · "), st.dim.Render(l.Metadata.Name))
}

// svidState is what the detail pane of an SVID adds: whether it was
// revoked, and the lock on it.
func (m *marks) svidState(e *authv1.AuditEvent, now time.Time) [][2]string {
	var fs [][2]string
	if m.isRevoked(e) {
		fs = append(fs, [2]string{"revoked", "yes: relying parties that check the CRL refuse it"})
	}
	if l := m.lockOn(e, now); l != nil {
		fs = append(fs, [2]string{"locked", l.Spec.Target.String() + ": " + l.Spec.Reason + " (lock " + l.Metadata.Name + ")"})
	}
	return fs
}
