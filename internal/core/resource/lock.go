package resource

import (
	"fmt"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// KindLock is a lock: while it holds, the auth service refuses its target.
const KindLock = "lock"

// MaxLockTTL is the longest a lock may last: a lock meant for longer is a
// removal, and one with a typo'd TTL (10000h) should not outlive everyone's
// memory of why it was made.
const MaxLockTTL = 366 * 24 * time.Hour

// MaxLockReason bounds a lock's reason, which goes into every refusal.
const MaxLockReason = 1024

// maxHost bounds a host name (as DNS does).
const maxHost = 253

// Lock takes an identity back before its certificates expire: while it
// holds (until spec.expires, or until it is removed when that is unset),
// the auth service refuses every call of a locked user or bot (and of bots
// on a locked host) and every issuance of a locked SPIFFE ID, and agents
// stop serving SVIDs of a locked SPIFFE ID.
type Lock struct {
	Header `json:",inline" yaml:",inline"`
	Spec   LockSpec `json:"spec" yaml:"spec"`
}

type LockSpec struct {
	Target LockTarget `json:"target" yaml:"target"`
	// Reason is shown in every refusal the lock causes.
	Reason string `json:"reason" yaml:"reason"`
	// Expires is when the lock stops holding; zero holds until removed.
	Expires time.Time `json:"expires,omitzero" yaml:"expires,omitempty"`
	// CreatedBy is who made the lock; set by the auth service.
	CreatedBy string `json:"created_by,omitempty" yaml:"created_by,omitempty"`
}

// LockTarget names what is locked: exactly one field is set.
type LockTarget struct {
	User string `json:"user,omitempty" yaml:"user,omitempty"`
	Bot  string `json:"bot,omitempty" yaml:"bot,omitempty"`
	// Host locks every bot whose agent runs on that host.
	Host string `json:"host,omitempty" yaml:"host,omitempty"`
	// SPIFFEID is a SPIFFE ID or its path (/svc/web); it locks that ID and
	// every ID under it (/svc/web/...).
	SPIFFEID string `json:"spiffe_id,omitempty" yaml:"spiffe_id,omitempty"`
}

// String names the target as people read it: `bot "web-agent"`.
func (t LockTarget) String() string {
	switch {
	case t.User != "":
		return fmt.Sprintf("user %q", t.User)
	case t.Bot != "":
		return fmt.Sprintf("bot %q", t.Bot)
	case t.Host != "":
		return fmt.Sprintf("host %q", t.Host)
	case t.SPIFFEID != "":
		return "SPIFFE ID " + t.SPIFFEID
	}
	return "nothing"
}

func (t LockTarget) count() int {
	n := 0
	for _, v := range []string{t.User, t.Bot, t.Host, t.SPIFFEID} {
		if v != "" {
			n++
		}
	}
	return n
}

// Validate checks the lock as a whole. That it does not last past
// MaxLockTTL is checked by the auth service, which owns the clock.
func (l *Lock) Validate() error {
	if err := l.validateHeader(KindLock); err != nil {
		return err
	}
	res := resourceName(KindLock, l.Metadata.Name)
	t := l.Spec.Target
	switch t.count() {
	case 0:
		return fieldErrorf(res, "spec.target", "is missing: lock exactly one of user, bot, host or spiffe_id")
	case 1:
	default:
		return fieldErrorf(res, "spec.target", "names %d targets: lock exactly one of user, bot, host or spiffe_id, and make one lock per target", t.count())
	}
	if t.User != "" {
		if err := ValidateName(t.User); err != nil {
			return &FieldError{Resource: res, Field: "spec.target.user", Message: "spec.target.user: user " + err.Error()}
		}
	}
	if t.Bot != "" {
		if err := ValidateName(t.Bot); err != nil {
			return &FieldError{Resource: res, Field: "spec.target.bot", Message: "spec.target.bot: bot " + err.Error()}
		}
	}
	if t.Host != "" {
		if len(t.Host) > maxHost || strings.ContainsAny(t.Host, " \t\r\n") || (strings.Contains(t.Host, "/") && !isX509PopHost(t.Host)) {
			return fieldErrorf(res, "spec.target.host", "%s is not a host name: give the host name its agent reports, as the agent list shows it", quote(t.Host))
		}
	}
	if t.SPIFFEID != "" {
		if err := validateLockSPIFFEID(t.SPIFFEID); err != nil {
			return &FieldError{Resource: res, Field: "spec.target.spiffe_id", Message: "spec.target.spiffe_id: " + err.Error()}
		}
	}
	reason := strings.TrimSpace(l.Spec.Reason)
	if reason == "" {
		return fieldErrorf(res, "spec.reason", "is missing: say why, since every refusal the lock causes shows it")
	}
	if len(l.Spec.Reason) > MaxLockReason {
		return fieldErrorf(res, "spec.reason", "is %d bytes long, over the limit of %d: shorten it", len(l.Spec.Reason), MaxLockReason)
	}
	return nil
}

// isX509PopHost reports whether h is the host of an x509pop agent:
// x509pop/ and the certificate's SHA-256 in lowercase hex, the one form of
// host with a slash.
func isX509PopHost(h string) bool {
	fp, ok := strings.CutPrefix(h, "x509pop/")
	if !ok || len(fp) != 64 {
		return false
	}
	for _, r := range fp {
		if !strings.ContainsRune("0123456789abcdef", r) {
			return false
		}
	}
	return true
}

func validateLockSPIFFEID(s string) error {
	if len(s) > MaxSPIFFEIDLength {
		return fmt.Errorf("SPIFFE ID %s is %d bytes long, over the limit of %d bytes", quote(s), len(s), MaxSPIFFEIDLength)
	}
	if strings.HasPrefix(s, "/") {
		return ValidateSPIFFEIDPath(s)
	}
	id, err := spiffeid.FromString(s)
	if err != nil {
		return fmt.Errorf("%s is neither a SPIFFE ID nor its path: write spiffe://TRUST-DOMAIN/PATH or /PATH", quote(s))
	}
	if id.Path() == "" {
		return fmt.Errorf("SPIFFE ID %s names the whole trust domain: lock a path, as in spiffe://%s/svc/web", quote(s), id.TrustDomain().Name())
	}
	return nil
}

// Holds reports whether the lock holds at now.
func (l *Lock) Holds(now time.Time) bool {
	return l.Spec.Expires.IsZero() || now.Before(l.Spec.Expires)
}

// LocksSPIFFEID reports whether the lock covers id: the same ID, or one
// under its path. A lock naming another trust domain covers nothing here.
func (l *Lock) LocksSPIFFEID(id spiffeid.ID) bool {
	return LockCoversSPIFFEID(l.Spec.Target.SPIFFEID, id)
}

// LockCoversSPIFFEID reports whether a lock target (a SPIFFE ID or its
// path) covers id: the same ID, or one under its path, segment by segment
// (/svc/web covers /svc/web/1 but not /svc/webx).
func LockCoversSPIFFEID(target string, id spiffeid.ID) bool {
	if target == "" || id.IsZero() {
		return false
	}
	p := target
	if !strings.HasPrefix(target, "/") {
		tid, err := spiffeid.FromString(target)
		if err != nil || tid.TrustDomain() != id.TrustDomain() {
			return false
		}
		p = tid.Path()
	}
	got := id.Path()
	return got == p || strings.HasPrefix(got, strings.TrimSuffix(p, "/")+"/")
}
