package tui

import (
	"fmt"
	"strings"
	"testing"
	"time"

	authv1 "github.com/wid-project/wid/api/auth/v1"
)

// The SVIDs tab marks an SVID revoked by its serial (X.509 only), and
// locked while a lock holds on its SPIFFE ID (the ID or a path above it,
// segment by segment) or on who asked for it.
func TestSVIDMarks(t *testing.T) {
	mk := newMarks()
	mk.setLocks([][]byte{
		[]byte(`{"kind":"lock","metadata":{"name":"l1"},"spec":{"target":{"spiffe_id":"spiffe://example.org/svc/web"},"reason":"r"}}`),
		[]byte(`{"kind":"lock","metadata":{"name":"l2"},"spec":{"target":{"bot":"edge"},"reason":"r","expires":"` + fixedNow.Add(time.Minute).Format(time.RFC3339) + `"}}`),
		[]byte(`{"kind":"lock","metadata":{"name":"l3"},"spec":{"target":{"user":"bob"},"reason":"r","expires":"` + fixedNow.Add(-time.Minute).Format(time.RFC3339) + `"}}`),
	})
	mk.revoke("0a")
	col := svidColumns(mk)[4]
	st := newStyles(asciiRenderer())
	for _, tc := range []struct {
		name string
		e    *authv1.AuditEvent
		at   time.Time
		want string
	}{
		{"revoked", &authv1.AuditEvent{Type: "svid.x509.issued", SpiffeId: "spiffe://example.org/svc/db", Serial: "0a", TtlSeconds: 60}, fixedNow, "REVOKED 0a"},
		{"a JWT's jti is no serial", &authv1.AuditEvent{Type: "svid.jwt.issued", SpiffeId: "spiffe://example.org/svc/db", Serial: "0a", TtlSeconds: 60}, fixedNow, ""},
		{"under a locked path", &authv1.AuditEvent{Type: "svid.x509.issued", SpiffeId: "spiffe://example.org/svc/web/1", Serial: "0b", TtlSeconds: 60}, fixedNow, "LOCKED "},
		{"beside a locked path", &authv1.AuditEvent{Type: "svid.x509.issued", SpiffeId: "spiffe://example.org/svc/webx", Serial: "0b", TtlSeconds: 60}, fixedNow, ""},
		{"another trust domain", &authv1.AuditEvent{Type: "svid.x509.issued", SpiffeId: "spiffe://other.org/svc/web", Serial: "0b", TtlSeconds: 60}, fixedNow, ""},
		{"asked by a locked bot", &authv1.AuditEvent{Type: "svid.x509.issued", Actor: "bot:edge", SpiffeId: "spiffe://example.org/svc/db", Serial: "0b", TtlSeconds: 60}, fixedNow, "LOCKED "},
		{"the bot's lock expired", &authv1.AuditEvent{Type: "svid.x509.issued", Actor: "bot:edge", SpiffeId: "spiffe://example.org/svc/db", Serial: "0b", TtlSeconds: 60}, fixedNow.Add(time.Minute), ""},
		{"an expired lock on the user", &authv1.AuditEvent{Type: "svid.x509.issued", Actor: "bob", SpiffeId: "spiffe://example.org/svc/db", Serial: "0b", TtlSeconds: 60}, fixedNow, ""},
	} {
		got := col.cell(tc.e, tc.at, st)
		marked := strings.HasPrefix(got, "REVOKED") || strings.HasPrefix(got, "LOCKED")
		if (tc.want == "") == marked || !strings.HasPrefix(got, tc.want) {
			t.Errorf("%s: the cell reads %q, want it to start with %q", tc.name, got, tc.want)
		}
	}
	if got := mk.lockOnPath("/svc/web/{{ workload.unix.uid }}", fixedNow); got == nil || got.Metadata.Name != "l1" {
		t.Errorf("the workload identity under /svc/web is not marked locked: %v", got)
	}
}

// The revoked serials remembered are bounded, oldest dropped first.
func TestRevokedSerialsBounded(t *testing.T) {
	mk := newMarks()
	for i := range maxRevoked + 10 {
		mk.revoke(fmt.Sprintf("%x", i))
	}
	if len(mk.revoked) != maxRevoked || mk.revoked["0"] || !mk.revoked[fmt.Sprintf("%x", maxRevoked+9)] {
		t.Fatalf("%d serials remembered (the first: %v), want the newest %d", len(mk.revoked), mk.revoked["0"], maxRevoked)
	}
}
