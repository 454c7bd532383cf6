package attest

import (
	"sync"
	"syscall"
	"time"
)

// memoTTL bounds how long a connection's attestation is reused. Within it,
// each call still checks that the process runs the same binary with the
// same uid, gid and groups (see Unix.Attest); what the memo may miss are
// changes outside the process: a user or group renamed, or the binary
// renamed on disk, which show up within this time.
const memoTTL = time.Minute

// connMemo is one connection's last attestation. It keeps the /proc/<pid>
// directory open: through that descriptor the process cannot be confused
// with a later one given the same pid, so the start time needs no
// re-reading while the connection lives.
type connMemo struct {
	mu      sync.Mutex
	dir     int // -1 until the first attestation
	closed  bool
	res     Result
	exe     fileKey
	status  procStatus
	expires time.Time
}

func newConnMemo() *connMemo { return &connMemo{dir: -1} }

// close releases the directory; later attestations on the connection (none
// are expected) go the long way.
func (m *connMemo) close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	m.forgetLocked()
}

func (m *connMemo) forgetLocked() {
	if m.dir >= 0 {
		_ = syscall.Close(m.dir)
		m.dir = -1
	}
	m.res, m.expires = Result{}, time.Time{}
}
