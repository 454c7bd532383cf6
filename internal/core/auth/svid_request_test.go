package auth_test

import (
	"context"
	"strings"
	"testing"

	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/auth/authtest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// A malformed request is the caller's error: InvalidArgument with the
// reason, and an audited denial, also when the roles' patterns happen to
// cover it (*.example.com covers "a*.example.com").
func TestMalformedSVIDRequestsAreInvalidAndAudited(t *testing.T) {
	srv := authtest.Start(t)
	ctx := context.Background()
	spec := grant("/svc/web")
	spec.Allow.SPIFFE[0].DNSSANs = []string{"*.example.com"}
	web := loggedInUser(t, srv, "web", spec)

	for _, c := range []struct {
		name string
		call func() error
		want string
	}{
		{"wildcard inside a label", func() error {
			_, err := web.SignX509SVID(ctx, &authv1.SignX509SVIDRequest{SpiffeId: "/svc/web", DnsSans: []string{"a*.example.com"}, Csr: mustCSR(t)})
			return err
		}, `DNS SAN "a*.example.com" has a * that is not the whole leftmost label`},
		{"empty audience", func() error {
			_, err := web.SignJWTSVID(ctx, &authv1.SignJWTSVIDRequest{SpiffeId: "/svc/web", Audience: []string{""}})
			return err
		}, "audience 1 of the JWT-SVID is empty"},
		{"no audience", func() error {
			_, err := web.SignJWTSVID(ctx, &authv1.SignJWTSVIDRequest{SpiffeId: "/svc/web"})
			return err
		}, "a JWT-SVID needs at least one audience"},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := len(auditTypes(t, srv, "svid.denied"))
			err := c.call()
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), c.want) {
				t.Fatalf("got %v, want InvalidArgument saying %q", err, c.want)
			}
			evs := auditTypes(t, srv, "svid.denied")
			if len(evs) != before+1 || !strings.Contains(evs[len(evs)-1].Reason, c.want) || evs[len(evs)-1].Details["check"] != "invalid_request" {
				t.Fatalf("the refusal was not audited with its reason: %v", evs)
			}
		})
	}
	// A well-formed name under the granted wildcard is issued.
	if _, err := web.SignX509SVID(ctx, &authv1.SignX509SVIDRequest{SpiffeId: "/svc/web", DnsSans: []string{"a.example.com"}, Csr: mustCSR(t)}); err != nil {
		t.Fatalf("a.example.com: %v", err)
	}
}
