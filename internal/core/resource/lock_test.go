package resource

import (
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func TestLockValidate(t *testing.T) {
	lock := func(target LockTarget, reason string) *Lock {
		return &Lock{Header: Header{Kind: KindLock, Version: V1, Metadata: Metadata{Name: "l1"}}, Spec: LockSpec{Target: target, Reason: reason}}
	}
	for _, tt := range []struct {
		name string
		l    *Lock
		want string
	}{
		{"bot", lock(LockTarget{Bot: "edge"}, "why"), ""},
		{"path", lock(LockTarget{SPIFFEID: "/svc/web"}, "why"), ""},
		{"id", lock(LockTarget{SPIFFEID: "spiffe://example.org/svc/web"}, "why"), ""},
		{"no target", lock(LockTarget{}, "why"), "spec.target is missing"},
		{"two targets", lock(LockTarget{Bot: "a", User: "b"}, "why"), "names 2 targets"},
		{"no reason", lock(LockTarget{Bot: "a"}, "  "), "spec.reason is missing"},
		{"long reason", lock(LockTarget{Bot: "a"}, strings.Repeat("x", MaxLockReason+1)), "over the limit"},
		{"bad bot", lock(LockTarget{Bot: "A B"}, "why"), "spec.target.bot"},
		{"bad host", lock(LockTarget{Host: "a b"}, "why"), "not a host name"},
		{"x509pop host", lock(LockTarget{Host: "x509pop/" + strings.Repeat("0a", 32)}, "why"), ""},
		{"x509pop host, short", lock(LockTarget{Host: "x509pop/0a"}, "why"), "not a host name"},
		{"x509pop host, upper case", lock(LockTarget{Host: "x509pop/" + strings.Repeat("0A", 32)}, "why"), "not a host name"},
		{"other slash", lock(LockTarget{Host: "a/b"}, "why"), "not a host name"},
		{"whole trust domain", lock(LockTarget{SPIFFEID: "spiffe://example.org"}, "why"), "whole trust domain"},
		{"not an id", lock(LockTarget{SPIFFEID: "web"}, "why"), "neither a SPIFFE ID nor its path"},
	} {
		err := tt.l.Validate()
		if tt.want == "" && err != nil {
			t.Errorf("%s: %v", tt.name, err)
		}
		if tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("%s: got %v, want an error saying %q", tt.name, err, tt.want)
		}
	}
}

func TestLockCoversSPIFFEID(t *testing.T) {
	id := func(s string) spiffeid.ID { return spiffeid.RequireFromString(s) }
	for _, tt := range []struct {
		target, id string
		want       bool
	}{
		{"/svc/web", "spiffe://example.org/svc/web", true},
		{"/svc/web", "spiffe://example.org/svc/web/1", true},
		{"/svc/web", "spiffe://example.org/svc/webx", false},
		{"/svc/web", "spiffe://example.org/svc", false},
		{"spiffe://example.org/svc/web", "spiffe://example.org/svc/web/a/b", true},
		{"spiffe://other.org/svc/web", "spiffe://example.org/svc/web", false},
		{"", "spiffe://example.org/svc/web", false},
	} {
		if got := LockCoversSPIFFEID(tt.target, id(tt.id)); got != tt.want {
			t.Errorf("lock %q covers %s: %v, want %v", tt.target, tt.id, got, tt.want)
		}
	}
}
