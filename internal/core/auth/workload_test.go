package auth_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/exp/bundle/witbundle"
	"github.com/spiffe/go-spiffe/v2/exp/svid/witsvid"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/auth/authtest"
	"github.com/wid-project/wid/internal/core/client"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

var exampleTD = spiffeid.RequireTrustDomainFromString("example.org")

func newCSR(t testing.TB) ([]byte, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	return csr, key
}

// workloadServer is a trust domain with a bot "agent" whose role selects
// env=prod, grants /svc/** with DNS SAN web.internal and caps SVIDs at 2h,
// and these workload identities for uid 1000:
//
//	web      prod /svc/web/{{uid}}  dns web.internal, x509 ttl 3h (over the cap)
//	strict   prod /svc/strict       only uid 0
//	sandbox  dev  /svc/sandbox
//	outside  prod /other/x          a path not granted
//	nons     prod /ns/{{namespace}} a template that cannot be filled in
func workloadServer(t *testing.T) (*authtest.Server, *client.Client) {
	t.Helper()
	srv := authtest.Start(t)
	create(t, srv,
		agentRole(t, "prod-agent", []string{"prod"}, []string{"web.internal"}, 2*time.Hour, "/svc/**"),
		wiDoc(t, "web", "prod", "/svc/web/{{ workload.unix.uid }}", []string{"web.internal"}, 3*time.Hour, uidIs("1000")),
		wiDoc(t, "strict", "prod", "/svc/strict", nil, 0, uidIs("0")),
		wiDoc(t, "sandbox", "dev", "/svc/sandbox", nil, 0, uidIs("1000")),
		wiDoc(t, "outside", "prod", "/other/x", nil, 0, uidIs("1000")),
		wiDoc(t, "nons", "prod", "/ns/{{ workload.kubernetes.namespace }}", nil, 0, uidIs("1000")),
	)
	return srv, joinedBot(t, srv, "agent", "prod-agent")
}

var uid1000 = map[string]string{"workload.unix.uid": "1000", "workload.unix.path": "/usr/bin/web"}

func TestIssueWorkloadSVIDs(t *testing.T) {
	srv, bot := workloadServer(t)
	ctx := context.Background()
	state := watch(t, bot, "node-1").next(t, time.Second)

	csr, _ := newCSR(t)
	witKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	witPub, _ := x509.MarshalPKIXPublicKey(witKey.Public())
	resp, err := bot.IssueWorkloadSVIDs(ctx, &authv1.IssueWorkloadSVIDsRequest{
		Attributes: uid1000,
		Svids: []*authv1.WorkloadSVIDRequest{
			{Identity: "web", Type: "x509", Csr: csr},                                                          // 0 issued
			{Identity: "web", Type: "jwt", Audience: []string{"billing"}},                                      // 1 issued
			{Identity: "web", Type: "wit", PublicKey: witPub},                                                  // 2 issued
			{Identity: "strict", Type: "x509", Csr: csr},                                                       // 3 rules
			{Identity: "sandbox", Type: "x509", Csr: csr},                                                      // 4 not selected
			{Identity: "outside", Type: "x509", Csr: csr},                                                      // 5 path not granted
			{SpiffeId: "/svc/config", Type: "x509", Csr: csr},                                                  // 6 issued, from config
			{Identity: "web", Type: "jwt"},                                                                     // 7 no audience
			{Identity: "noons", Type: "x509", Csr: csr},                                                        // 8 no such identity
			{Identity: "nons", Type: "x509", Csr: csr},                                                         // 9 template
			{Identity: "web", Type: "x509", Csr: csr, TtlSeconds: 3 * 3600},                                    // 10 asked over the max
			{SpiffeId: "spiffe://example.org/svc/other", Type: "jwt", Audience: []string{"a"}, TtlSeconds: 60}, // 11 issued
			{SpiffeId: "/svc/config", Type: "x509", Csr: csr[:len(csr)-3]},                                     // 12 bad CSR
		},
	})
	if err != nil {
		t.Fatalf("IssueWorkloadSVIDs: %v", err)
	}
	if len(resp.Results) != 13 {
		t.Fatalf("%d results for 13 requests", len(resp.Results))
	}
	r := resp.Results
	for _, i := range []int{0, 1, 2, 6, 11} {
		if r[i].Error != "" || r[i].Check != "" {
			t.Fatalf("result %d refused: %s (%s)", i, r[i].Error, r[i].Check)
		}
	}

	// x509: go-spiffe verifies it against the bundle the agent was pushed.
	var auths []*x509.Certificate
	for _, der := range state.Bundle.X509Authorities {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		auths = append(auths, c)
	}
	var certs []*x509.Certificate
	for _, der := range r[0].CertChain {
		c, _ := x509.ParseCertificate(der)
		certs = append(certs, c)
	}
	id, _, err := x509svid.Verify(certs, x509bundle.FromX509Authorities(exampleTD, auths))
	if err != nil {
		t.Fatalf("x509svid.Verify: %v", err)
	}
	if id.String() != "spiffe://example.org/svc/web/1000" || r[0].SpiffeId != id.String() || r[0].Hint != "web" {
		t.Errorf("x509 SVID for %s (result says %s, hint %q)", id, r[0].SpiffeId, r[0].Hint)
	}
	if got := certs[0].DNSNames; len(got) != 1 || got[0] != "web.internal" {
		t.Errorf("DNS SANs %v, want the identity's web.internal", got)
	}
	// The identity's 3h is over the role's 2h cap: capped, not refused.
	if life := certs[0].NotAfter.Sub(certs[0].NotBefore); life != 2*time.Hour+time.Minute {
		t.Errorf("x509 SVID lives %s, want the role's cap 2h (+1m backdate)", life)
	}

	// jwt: go-spiffe validates it against a JWT bundle built from jwt_jwks.
	jb, err := jwtbundle.Parse(exampleTD, state.Bundle.JwtJwks)
	if err != nil {
		t.Fatal(err)
	}
	jsvid, err := jwtsvid.ParseAndValidate(r[1].Token, jb, []string{"billing"})
	if err != nil {
		t.Fatalf("jwtsvid.ParseAndValidate: %v", err)
	}
	if jsvid.ID.String() != "spiffe://example.org/svc/web/1000" || r[1].Serial == "" {
		t.Errorf("JWT-SVID for %s, jti %q", jsvid.ID, r[1].Serial)
	}
	if life := time.Until(jsvid.Expiry); life > 5*time.Minute+time.Second || life < 4*time.Minute {
		t.Errorf("JWT-SVID lives %s, want the 5m default", life)
	}

	// wit: go-jose verifies it with wit_jwks; go-spiffe reads the bound key.
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(state.Bundle.WitJwks, &set); err != nil {
		t.Fatal(err)
	}
	jws, err := jose.ParseSignedCompact(r[2].Token, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	keys := set.Key(jws.Signatures[0].Header.KeyID)
	if len(keys) != 1 {
		t.Fatalf("the WIT's kid %q is not in wit_jwks", jws.Signatures[0].Header.KeyID)
	}
	if _, err := jws.Verify(keys[0]); err != nil {
		t.Fatalf("the WIT does not verify with wit_jwks: %v", err)
	}
	wb, _ := witbundle.Parse(exampleTD, state.Bundle.WitJwks)
	wsvid, err := witsvid.ParseAndValidate(r[2].Token, wb)
	if err != nil || wsvid.ID.String() != "spiffe://example.org/svc/web/1000" || !witKey.PublicKey.Equal(wsvid.PublicKey) {
		t.Fatalf("witsvid.ParseAndValidate: %v, %+v", err, wsvid)
	}

	for _, tt := range []struct {
		i            int
		check, words string
	}{
		{3, "rules", `workload.unix.uid is "1000", not "0"`},
		{4, "not_selected", "workload_identity_labels"},
		{5, "path_not_granted", "/svc/**"},
		{7, "invalid_request", "audience"},
		{8, "not_selected", "does not exist"},
		{9, "template", "workload.kubernetes.namespace is not set"},
		{10, "ttl_over_max", "2h"},
		{12, "invalid_request", "CSR"},
	} {
		if r[tt.i].Check != tt.check || !strings.Contains(r[tt.i].Error, tt.words) || len(r[tt.i].CertChain) != 0 || r[tt.i].Token != "" {
			t.Errorf("result %d: %q (check %q), want check %s saying %q and nothing issued", tt.i, r[tt.i].Error, r[tt.i].Check, tt.check, tt.words)
		}
	}
	if r[6].SpiffeId != "spiffe://example.org/svc/config" || r[11].SpiffeId != "spiffe://example.org/svc/other" {
		t.Errorf("config SVIDs issued for %s and %s", r[6].SpiffeId, r[11].SpiffeId)
	}

	// Every item has its own audit event, with the workload's attributes.
	admin := srv.AdminClient(t)
	evs, err := admin.ListAuditEvents(ctx, &authv1.ListAuditEventsRequest{Query: &authv1.AuditQuery{
		Types: []string{"svid.x509.issued", "svid.jwt.issued", "svid.wit.issued", "svid.denied"}, Actor: "bot:agent",
	}})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs.Events) != 13 {
		t.Fatalf("%d SVID events for 13 items", len(evs.Events))
	}
	wantTypes := []string{"svid.x509.issued", "svid.jwt.issued", "svid.wit.issued", "svid.denied", "svid.denied", "svid.denied", "svid.x509.issued", "svid.denied", "svid.denied", "svid.denied", "svid.denied", "svid.jwt.issued", "svid.denied"}
	// The host is the one the bot's certificate was issued for at its join
	// ("test"), not the one a stream of the bot named (node-1): another
	// agent of the same bot may have named any.
	for i, ev := range evs.Events {
		if ev.Type != wantTypes[i] || ev.Host != "test" || ev.Attributes["workload.unix.uid"] != "1000" {
			t.Errorf("event %d: %s on %q with attributes %v; want %s on test with the workload's attributes", i, ev.Type, ev.Host, ev.Attributes, wantTypes[i])
		}
	}
	if ev := evs.Events[0]; ev.Details["identity"] != "web" || ev.Serial != r[0].Serial || ev.SvidType != "x509" || ev.SpiffeId != "spiffe://example.org/svc/web/1000" || ev.TtlSeconds != 7200 || len(ev.DnsSans) != 1 {
		t.Errorf("x509 issuance event %+v", ev)
	}
	if ev := evs.Events[2]; ev.SvidType != "wit" || ev.Serial != r[2].Serial {
		t.Errorf("wit issuance event %+v", ev)
	}
	if ev := evs.Events[3]; ev.Outcome != "denied" || ev.Details["identity"] != "strict" || ev.Details["check"] != "rules" || ev.Reason != r[3].Error {
		t.Errorf("rules denial event %+v", ev)
	}
}

func TestIssueWorkloadSVIDsRefusesMalformedRequests(t *testing.T) {
	srv, bot := workloadServer(t)
	ctx := context.Background()
	csr, _ := newCSR(t)
	many := make([]*authv1.WorkloadSVIDRequest, 2001)
	for i := range many {
		many[i] = &authv1.WorkloadSVIDRequest{Identity: "web", Type: "x509", Csr: csr}
	}
	for name, tt := range map[string]struct {
		svids []*authv1.WorkloadSVIDRequest
		words string
	}{
		"none":         {nil, "no SVIDs"},
		"too many":     {many, "svids is 2001 items long, over the limit of 2000 items"},
		"unknown type": {[]*authv1.WorkloadSVIDRequest{{Identity: "web", Type: "x509", Csr: csr}, {Identity: "web", Type: "saml"}}, `SVID 2 has type "saml"`},
	} {
		_, err := bot.IssueWorkloadSVIDs(ctx, &authv1.IssueWorkloadSVIDsRequest{Attributes: uid1000, Svids: tt.svids})
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), tt.words) {
			t.Errorf("%s: %v, want InvalidArgument saying %q", name, err, tt.words)
		}
	}
	if n := len(auditTypes(t, srv, "svid.x509.issued")); n != 0 {
		t.Errorf("a malformed request issued %d SVIDs", n)
	}
	_, err := srv.AdminClient(t).IssueWorkloadSVIDs(ctx, &authv1.IssueWorkloadSVIDsRequest{Svids: []*authv1.WorkloadSVIDRequest{{Identity: "web", Type: "x509", Csr: csr}}})
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(status.Convert(err).Message(), "only an agent's bot") {
		t.Errorf("admin IssueWorkloadSVIDs: %v", err)
	}
}

func TestExplainWorkloadAttributes(t *testing.T) {
	srv, _ := workloadServer(t)
	ctx := context.Background()
	admin := srv.AdminClient(t)
	for _, principal := range [][2]string{{"bot", "agent"}, {"role", "prod-agent"}} {
		resp, err := admin.Explain(ctx, &authv1.ExplainRequest{PrincipalKind: principal[0], PrincipalName: principal[1], WorkloadAttributes: uid1000})
		if err != nil {
			t.Fatalf("explain for %s: %v", principal, err)
		}
		want := []struct {
			name, check, id, words string
		}{
			{"nons", "template", "", "workload.kubernetes.namespace is not set"},
			{"outside", "path_not_granted", "spiffe://example.org/other/x", "/svc/**"},
			{"sandbox", "not_selected", "", "env=dev"},
			{"strict", "rules", "", `not "0"`},
			{"web", "", "spiffe://example.org/svc/web/1000", "/svc/web/1000"},
		}
		if len(resp.Workloads) != len(want) {
			t.Fatalf("%s: %d workload explanations, want %d", principal, len(resp.Workloads), len(want))
		}
		for i, w := range want {
			got := resp.Workloads[i]
			if got.Identity != w.name || got.Check != w.check || got.Allowed != (w.check == "") || got.SpiffeId != w.id || !strings.Contains(got.Reason, w.words) {
				t.Errorf("%s: workload %d = %+v, want %s check %q id %q saying %q", principal, i, got, w.name, w.check, w.id, w.words)
			}
		}
		if !resp.Allowed || !strings.Contains(resp.Reason, "1 of 5") {
			t.Errorf("%s: summary %v %q", principal, resp.Allowed, resp.Reason)
		}
	}
	// Asking about a SPIFFE ID as well answers both.
	resp, err := admin.Explain(ctx, &authv1.ExplainRequest{PrincipalKind: "bot", PrincipalName: "agent", SpiffeId: "/other/y", WorkloadAttributes: uid1000})
	if err != nil || resp.Allowed || resp.Check != "path_not_granted" || len(resp.Workloads) != 5 {
		t.Fatalf("explain with a SPIFFE ID and attributes: %v %v", resp, err)
	}
	// Without attributes, explain is as before.
	resp, err = admin.Explain(ctx, &authv1.ExplainRequest{PrincipalKind: "bot", PrincipalName: "agent", SpiffeId: "/svc/a"})
	if err != nil || !resp.Allowed || len(resp.Workloads) != 0 {
		t.Fatalf("plain explain: %v %v", resp, err)
	}
	alice, _ := json.Marshal(map[string]any{"kind": "user", "version": "v1", "metadata": map[string]string{"name": "alice"}, "spec": map[string]any{"roles": []string{"prod-agent"}}})
	create(t, srv, alice)
	_, err = admin.Explain(ctx, &authv1.ExplainRequest{PrincipalKind: "user", PrincipalName: "alice", WorkloadAttributes: uid1000})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "bot or a role") {
		t.Fatalf("explain workloads for a user: %v", err)
	}
}

// BenchmarkIssueWorkloadSVIDs measures one IssueWorkloadSVIDs call of n
// X509-SVIDs for n workload identities, over mTLS from a joined bot, with
// every event audited: what an agent pays for a workload with n identities.
func BenchmarkIssueWorkloadSVIDs(b *testing.B) {
	for _, n := range []int{100, 1000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			srv := authtest.Start(b)
			admin := srv.AdminClient(b)
			ctx := context.Background()
			var docs [][]byte
			for i := range n {
				docs = append(docs, benchWI(b, fmt.Sprintf("svc-%04d", i)))
			}
			if _, err := admin.CreateResource(ctx, &authv1.CreateResourceRequest{Resources: docs}); err != nil {
				b.Fatal(err)
			}
			id, err := srv.LocalAgentIdentity(ctx, "bench")
			if err != nil {
				b.Fatal(err)
			}
			c, err := client.Dial(client.Config{Auth: srv.Addr, Identity: id})
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			req := &authv1.IssueWorkloadSVIDsRequest{Attributes: uid1000}
			for i := range n {
				csr, _ := newCSR(b)
				req.Svids = append(req.Svids, &authv1.WorkloadSVIDRequest{Identity: fmt.Sprintf("svc-%04d", i), Type: "x509", Csr: csr})
			}
			b.ResetTimer()
			for b.Loop() {
				resp, err := c.IssueWorkloadSVIDs(ctx, req)
				if err != nil {
					b.Fatal(err)
				}
				if r := resp.Results[n-1]; r.Error != "" {
					b.Fatal(r.Error)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/batch")
		})
	}
}

func benchWI(b *testing.B, name string) []byte {
	b.Helper()
	return []byte(fmt.Sprintf(`{"kind":"workload_identity","version":"v1","metadata":{"name":%q},"spec":{"spiffe":{"id":"/svc/%s/{{ workload.unix.uid }}"},"rules":{"allow":[{"conditions":[{"attribute":"workload.unix.uid","eq":"1000"}]}]}}}`, name, name))
}
