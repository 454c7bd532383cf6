package auth_test

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"strings"
	"testing"
	"time"

	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/auth/authtest"
	"github.com/wid-project/wid/internal/core/client"
	"github.com/wid-project/wid/internal/core/resource"
	"github.com/wid-project/wid/internal/core/x509pop"
	"github.com/wid-project/wid/internal/core/x509pop/x509poptest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func x509PopSetup(t *testing.T, allow ...string) (*authtest.Server, *x509poptest.CA) {
	t.Helper()
	srv := authtest.Start(t)
	ca := x509poptest.NewCA(t, "Example Machines CA")
	ctx := context.Background()
	admin := srv.AdminClient(t)
	if _, err := admin.CreateBot(ctx, &authv1.CreateBotRequest{Name: "node-agent"}); err != nil {
		t.Fatal(err)
	}
	doc, err := json.Marshal(&resource.JoinToken{
		Header: resource.Header{Kind: resource.KindJoinToken, Version: resource.V1, Metadata: resource.Metadata{Name: "nodes"}},
		Spec:   resource.JoinTokenSpec{Bot: "node-agent", Method: resource.JoinMethodX509Pop, X509Pop: &resource.X509PopJoin{CABundle: string(ca.PEM()), Allow: allow}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.CreateResource(ctx, &authv1.CreateResourceRequest{Resources: [][]byte{doc}}); err != nil {
		t.Fatalf("creating the x509pop join token: %v", err)
	}
	return srv, ca
}

// popJoin joins with machine m's certificate; sign signs the challenge
// (m's key unless told otherwise), and edit may spoil the request.
func popJoin(t *testing.T, srv *authtest.Server, m *x509poptest.Machine, signer crypto.Signer, edit func(*authv1.JoinRequest)) (*authv1.JoinRequest, error) {
	t.Helper()
	c, err := client.Dial(client.Config{Auth: srv.Addr, CAPin: srv.CAPin})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	key, _ := client.NewKey()
	csr, _ := client.NewCSR(key)
	ch, err := c.JoinChallenge(ctx, &authv1.JoinChallengeRequest{Token: "nodes"})
	if err != nil {
		t.Fatal(err)
	}
	sig, err := x509pop.Sign(signer, x509pop.Message(ch.Challenge, csr))
	if err != nil {
		t.Fatal(err)
	}
	req := &authv1.JoinRequest{Token: "nodes", Csr: csr, Host: "claimed-host", JoinMethod: "x509pop",
		X509Chain: [][]byte{m.Cert.Raw}, Challenge: ch.Challenge, ChallengeSignature: sig}
	if edit != nil {
		edit(req)
	}
	_, err = c.Join(ctx, req)
	return req, err
}

func TestX509PopJoin(t *testing.T) {
	srv, ca := x509PopSetup(t, "cn=node-1", "san=node-2.example.com")
	now := time.Now()
	node1 := ca.Issue(t, "node-1", nil, now.Add(-time.Minute), now.Add(time.Hour))
	node2 := ca.Issue(t, "other", []string{"node-2.example.com"}, now.Add(-time.Minute), now.Add(time.Hour))

	// The token is reusable, by cn and by san.
	for _, m := range []*x509poptest.Machine{node1, node2, node1} {
		if _, err := popJoin(t, srv, m, m.Key, nil); err != nil {
			t.Fatalf("joining as %s: %v", m.Cert.Subject, err)
		}
	}
	joins := auditTypes(t, srv, "bot.join")
	if len(joins) != 3 {
		t.Fatalf("bot.join events = %d, want 3", len(joins))
	}
	d := joins[0].Details
	fp := x509pop.Fingerprint(node1.Cert)
	if joins[0].Actor != "bot:node-agent" || d["method"] != "x509pop" || d["fingerprint"] != fp || d["subject"] != "CN=node-1,O=Example" || d["token"] != "nodes" {
		t.Errorf("join event = actor %q details %v", joins[0].Actor, d)
	}
	// The host is the certificate's, not the one the agent claimed.
	if joins[0].Host != "x509pop/"+fp {
		t.Errorf("join event host %q, want x509pop/%s", joins[0].Host, fp)
	}
}

// An x509pop join or challenge without a token name, and a join whose
// token does not fit, name their next step as the kubernetes join's do, so
// that widctl words the command; the message names none.
func TestX509PopJoinRefusalsNameNextStep(t *testing.T) {
	srv, ca := x509PopSetup(t, "cn=node-1")
	now := time.Now()
	good := ca.Issue(t, "node-1", nil, now.Add(-time.Minute), now.Add(time.Hour))
	c, err := client.Dial(client.Config{Auth: srv.Addr, CAPin: srv.CAPin})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.JoinChallenge(context.Background(), &authv1.JoinChallengeRequest{})
	if status.Code(err) != codes.InvalidArgument || status.Convert(err).Message() != "an x509pop challenge is for a named join token" {
		t.Fatalf("challenge without a token name = %v", err)
	}
	wantNext(t, err, authv1.NextX509PopTokenName, "")

	for _, tc := range []struct {
		name, token, msg, next string
	}{
		{"no token name", "", "the x509pop join needs the name of an x509pop join token", authv1.NextX509PopTokenName},
		{"unknown token", "nobody", "the x509pop join was refused: check the join token name and that the certificate is one the token admits", authv1.NextX509PopJoinAudit},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := popJoin(t, srv, good, good.Key, func(r *authv1.JoinRequest) { r.Token = tc.token })
			if status.Code(err) != codes.PermissionDenied || status.Convert(err).Message() != tc.msg {
				t.Fatalf("join = %v, want PermissionDenied saying %q", err, tc.msg)
			}
			wantNext(t, err, tc.next, "")
		})
	}
}

func TestX509PopJoinRefusals(t *testing.T) {
	srv, ca := x509PopSetup(t, "cn=node-1")
	now := time.Now()
	good := ca.Issue(t, "node-1", nil, now.Add(-time.Minute), now.Add(time.Hour))
	expired := ca.Issue(t, "node-1", nil, now.Add(-2*time.Hour), now.Add(-time.Hour))
	notAllowed := ca.Issue(t, "node-9", nil, now.Add(-time.Minute), now.Add(time.Hour))
	stranger := x509poptest.NewCA(t, "Someone Else CA").Issue(t, "node-1", nil, now.Add(-time.Minute), now.Add(time.Hour))
	otherKey := ca.Issue(t, "node-1", nil, now.Add(-time.Minute), now.Add(time.Hour)).Key
	valid := func(edit func(*x509.Certificate)) *x509poptest.Machine {
		return ca.IssueWith(t, "node-1", nil, now.Add(-time.Minute), now.Add(time.Hour), edit)
	}
	caLeaf := valid(func(c *x509.Certificate) { c.IsCA, c.BasicConstraintsValid = true, true })
	noSigning := valid(func(c *x509.Certificate) { c.KeyUsage = x509.KeyUsageKeyEncipherment })
	anyEKU := valid(func(c *x509.Certificate) { c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageAny} })
	serverOnly := valid(func(c *x509.Certificate) { c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth} })

	var replayed *authv1.JoinRequest
	if r, err := popJoin(t, srv, good, good.Key, nil); err != nil {
		t.Fatal(err)
	} else {
		replayed = r
	}

	for _, c := range []struct {
		name   string
		m      *x509poptest.Machine
		signer crypto.Signer
		edit   func(*authv1.JoinRequest)
		check  string
		msg    string
	}{
		{"not chaining to the bundle", stranger, stranger.Key, nil, "chain", "the certificate does not chain to the join token's CA bundle"},
		{"expired", expired, expired.Key, nil, "expired", "the certificate expired at " + expired.Cert.NotAfter.UTC().Format(time.RFC3339)},
		{"key not the certificate's", good, otherKey, nil, "signature", "the challenge signature does not verify with the certificate's public key"},
		{"wrong challenge signed", good, good.Key, func(r *authv1.JoinRequest) { r.ChallengeSignature[len(r.ChallengeSignature)/2] ^= 0xff }, "signature", "the challenge signature does not verify"},
		{"signature for another CSR", good, good.Key, func(r *authv1.JoinRequest) { k, _ := client.NewKey(); r.Csr, _ = client.NewCSR(k) }, "signature", "the challenge signature does not verify"},
		{"replayed challenge", good, good.Key, func(r *authv1.JoinRequest) {
			r.Csr, r.Challenge, r.ChallengeSignature = replayed.Csr, replayed.Challenge, replayed.ChallengeSignature
		}, "challenge", "the challenge was already answered"},
		{"forged challenge", good, good.Key, func(r *authv1.JoinRequest) { r.Challenge[0] ^= 1 }, "signature", "the challenge signature does not verify"},
		{"not on the allow list", notAllowed, notAllowed.Key, nil, "allow", "the certificate (CN=node-9,O=Example) is not on the join token's allow list"},
		{"no certificate", good, good.Key, func(r *authv1.JoinRequest) { r.X509Chain = nil }, "certificate", "no certificate was sent"},
		{"a CA certificate", caLeaf, caLeaf.Key, nil, "usage", "the certificate is a CA certificate"},
		{"no digitalSignature", noSigning, noSigning.Key, nil, "usage", "does not include digitalSignature"},
		{"anyExtendedKeyUsage alone", anyEKU, anyEKU.Key, nil, "usage", "does not include clientAuth"},
		{"serverAuth only", serverOnly, serverOnly.Key, nil, "usage", "does not include clientAuth"},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := len(auditTypes(t, srv, "bot.join.denied"))
			_, err := popJoin(t, srv, c.m, c.signer, c.edit)
			if status.Code(err) != codes.PermissionDenied || !strings.Contains(status.Convert(err).Message(), c.msg) {
				t.Fatalf("join = %v, want PermissionDenied saying %q", err, c.msg)
			}
			evs := auditTypes(t, srv, "bot.join.denied")
			if len(evs) != before+1 {
				t.Fatalf("bot.join.denied events = %d, want %d", len(evs), before+1)
			}
			ev := evs[len(evs)-1]
			if ev.Details["check"] != c.check || !strings.Contains(ev.Reason, c.msg) {
				t.Fatalf("denial audited as check %q reason %q, want %q and %q", ev.Details["check"], ev.Reason, c.check, c.msg)
			}
		})
	}
	// Nothing changed: the one good join is the only one.
	if n := len(auditTypes(t, srv, "bot.join")); n != 1 {
		t.Fatalf("bot.join events = %d, want the one good join", n)
	}
}

// A join with no certificate gets the same answer whether its token
// exists or not, so that token names cannot be probed with it.
func TestX509PopJoinWithoutCertificateSaysNothingOfTheToken(t *testing.T) {
	srv, ca := x509PopSetup(t, "cn=node-1")
	now := time.Now()
	m := ca.Issue(t, "node-1", nil, now.Add(-time.Minute), now.Add(time.Hour))
	var msgs []string
	for _, token := range []string{"nodes", "no-such-token"} {
		_, err := popJoin(t, srv, m, m.Key, func(r *authv1.JoinRequest) { r.Token, r.X509Chain = token, nil })
		if status.Code(err) != codes.PermissionDenied {
			t.Fatalf("token %s without a certificate: %v, want PermissionDenied", token, err)
		}
		msgs = append(msgs, status.Convert(err).Message())
	}
	if msgs[0] != msgs[1] {
		t.Fatalf("an existing token answers %q, an unknown one %q: they must not differ", msgs[0], msgs[1])
	}
}

// A certificate the token does not admit does not use up the challenge it
// signed: it is refused before the challenge is redeemed.
func TestX509PopRefusedCertificateLeavesChallenge(t *testing.T) {
	srv, ca := x509PopSetup(t, "cn=node-1")
	now := time.Now()
	good := ca.Issue(t, "node-1", nil, now.Add(-time.Minute), now.Add(time.Hour))
	other := ca.Issue(t, "node-9", nil, now.Add(-time.Minute), now.Add(time.Hour))
	first, err := popJoin(t, srv, other, other.Key, nil)
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("a certificate off the allow list: %v", err)
	}
	_, err = popJoin(t, srv, good, good.Key, func(r *authv1.JoinRequest) {
		sig, err := x509pop.Sign(good.Key, x509pop.Message(first.Challenge, r.Csr))
		if err != nil {
			t.Fatal(err)
		}
		r.Challenge, r.ChallengeSignature = first.Challenge, sig
	})
	if err != nil {
		t.Fatalf("joining with the challenge a refused certificate signed: %v", err)
	}
}

// Challenges come at a bounded rate per source address.
func TestX509PopChallengesAreRateLimited(t *testing.T) {
	srv := authtest.Start(t)
	c, err := client.Dial(client.Config{Auth: srv.Addr, CAPin: srv.CAPin})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := range 200 {
		_, err := c.JoinChallenge(context.Background(), &authv1.JoinChallengeRequest{Token: "nodes"})
		if status.Code(err) == codes.ResourceExhausted {
			if i < 5 {
				t.Fatalf("refused after %d challenges", i)
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	t.Fatal("200 challenges in a row from one address were all handed out")
}
