package auth_test

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"
	"time"

	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/auth"
	"github.com/wid-project/wid/internal/core/auth/authtest"
	"github.com/wid-project/wid/internal/core/ca"
)

// TestCASubjectAndDefaultTTLs: ca_subject names the CA certificates of a
// new trust domain, and svid_ttl and jwt_svid_ttl are the life of SVIDs
// whose request names none.
func TestCASubjectAndDefaultTTLs(t *testing.T) {
	subj := ca.Subject{Country: "DE", Organization: "Example GmbH", CommonName: "Example SPIFFE CA"}
	srv := authtest.Start(t, func(c *auth.Config) {
		c.CASubject = subj
		c.SVIDTTL = 20 * time.Minute
		c.JWTSVIDTTL = 90 * time.Second
	})
	ctx := context.Background()
	b, err := srv.AdminClient(t).GetBundle(ctx, &authv1.GetBundleRequest{})
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b.X509Pem)
	if blk == nil {
		t.Fatal("the bundle holds no PEM certificate")
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if got := cert.Subject; got.CommonName != subj.CommonName || len(got.Country) != 1 || got.Country[0] != "DE" || len(got.Organization) != 1 || got.Organization[0] != subj.Organization {
		t.Fatalf("spiffe CA subject %q, want C=DE, O=Example GmbH, CN=Example SPIFFE CA", got)
	}

	web := loggedInUser(t, srv, "web", grant("/svc/web"))
	x, err := web.SignX509SVID(ctx, &authv1.SignX509SVIDRequest{SpiffeId: "/svc/web", Csr: mustCSR(t)})
	if err != nil {
		t.Fatal(err)
	}
	if life := time.Until(x.ExpiresAt.AsTime()); life > 20*time.Minute || life < 19*time.Minute {
		t.Fatalf("X509-SVID lives %s, want svid_ttl 20m", life)
	}
	j, err := web.SignJWTSVID(ctx, &authv1.SignJWTSVIDRequest{SpiffeId: "/svc/web", Audience: []string{"db"}})
	if err != nil {
		t.Fatal(err)
	}
	if life := time.Until(j.ExpiresAt.AsTime()); life > 90*time.Second || life < 80*time.Second {
		t.Fatalf("JWT-SVID lives %s, want jwt_svid_ttl 90s", life)
	}
	// A TTL the request names still wins.
	x, err = web.SignX509SVID(ctx, &authv1.SignX509SVIDRequest{SpiffeId: "/svc/web", Csr: mustCSR(t), TtlSeconds: 300})
	if err != nil {
		t.Fatal(err)
	}
	if life := time.Until(x.ExpiresAt.AsTime()); life > 5*time.Minute {
		t.Fatalf("X509-SVID asked for 5m lives %s", life)
	}
}

func TestIssuanceSettingsRefused(t *testing.T) {
	for _, tt := range []struct {
		cfg  func(*auth.Config)
		want string
	}{
		{func(c *auth.Config) { c.CASubject.Country = "Germany" }, `ca_subject.country "Germany" is not an ISO 3166 two-letter code`},
		{func(c *auth.Config) { c.CASubject.CommonName = strings.Repeat("x", 65) }, "ca_subject.common_name must be UTF-8 of at most 64 characters"},
		{func(c *auth.Config) { c.SVIDTTL = -time.Hour }, "svid_ttl -1h0m0s is negative"},
		{func(c *auth.Config) { c.JWTSVIDTTL = 1000 * time.Hour }, "jwt_svid_ttl 1000h0m0s is longer than 720h0m0s"},
	} {
		cfg := auth.Config{DataDir: t.TempDir(), Version: "test"}
		tt.cfg(&cfg)
		srv, err := auth.Open(context.Background(), cfg)
		if err == nil {
			srv.Close()
		}
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Open: %v, want %q", err, tt.want)
		}
	}
}
