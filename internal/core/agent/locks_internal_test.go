package agent

import (
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	authv1 "github.com/wid-project/wid/api/auth/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// A revoked SPIFFE ID refuses the JWT-SVIDs of it (or, pushed by a lock,
// of the IDs under its path) issued before the revocation, in the second
// of it too, until its end; a token without iat is refused; later tokens,
// siblings sharing a prefix and ended revocations are not.
func TestRevokedJWT(t *testing.T) {
	at := time.Date(2030, 1, 1, 12, 0, 0, 500_000_000, time.UTC)
	st := &state{revokedIDs: []*authv1.AgentRevokedID{
		{SpiffeId: "spiffe://example.org/svc/web", RevokedAt: timestamppb.New(at), Until: timestamppb.New(at.Add(time.Hour)), Reason: "key leaked"},
		{SpiffeId: "/svc/pay", Prefix: true, RevokedAt: timestamppb.New(at), Until: timestamppb.New(at.Add(time.Hour))},
		{SpiffeId: "spiffe://example.org/svc/old", RevokedAt: timestamppb.New(at), Until: timestamppb.New(at.Add(time.Minute))},
	}}
	now := at.Add(10 * time.Minute)
	for _, tc := range []struct {
		id     string
		iat    time.Time
		hasIat bool
		want   string
	}{
		{"/svc/web", at.Add(-time.Minute), true, "was revoked at 2030-01-01T12:00:00Z and this token was issued before: key leaked"},
		{"/svc/web", at.Truncate(time.Second), true, "was revoked at"},
		{"/svc/web", at.Truncate(time.Second).Add(time.Second), true, ""},
		{"/svc/web", time.Time{}, false, "has no issue time"},
		{"/svc/web/1", at.Add(-time.Minute), true, ""},
		{"/svc/pay/api", at.Add(-time.Minute), true, "was revoked at"},
		{"/svc/payroll", at.Add(-time.Minute), true, ""},
		{"/svc/old", at.Add(-time.Minute), true, ""},
	} {
		id := spiffeid.RequireFromString("spiffe://example.org" + tc.id)
		got := st.revokedJWT(id, tc.iat, tc.hasIat, now)
		if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("%s issued at %s: %q, want %q", tc.id, tc.iat, got, tc.want)
		}
	}
}

// The agent reads the iat of a token it holds, to drop one issued before
// a revocation from its cache.
func TestTokenIssuedAt(t *testing.T) {
	enc := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	if iat, ok := tokenIssuedAt(enc(`{"alg":"ES256"}`) + "." + enc(`{"iat":1893499200,"sub":"x"}`) + ".sig"); !ok || !iat.Equal(time.Unix(1893499200, 0)) {
		t.Fatalf("iat = %s %v", iat, ok)
	}
	for _, bad := range []string{"", "a.b", "a." + enc(`{"sub":"x"}`) + ".c", "a.!!.c"} {
		if _, ok := tokenIssuedAt(bad); ok {
			t.Errorf("tokenIssuedAt(%q) found an iat", bad)
		}
	}
}
