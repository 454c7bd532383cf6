package auth_test

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"strings"
	"testing"
	"time"

	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/auth/authtest"
	"github.com/wid-project/wid/internal/core/client"
	"github.com/wid-project/wid/internal/core/kubejoin"
	"github.com/wid-project/wid/internal/core/kubejoin/kubejointest"
	"github.com/wid-project/wid/internal/core/resource"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

const k8sAudience = "wid:example.org"

func kubernetesTokenDoc(t *testing.T, name, bot string, k *resource.KubernetesJoin) []byte {
	t.Helper()
	b, err := json.Marshal(&resource.JoinToken{
		Header: resource.Header{Kind: resource.KindJoinToken, Version: resource.V1, Metadata: resource.Metadata{Name: name}},
		Spec:   resource.JoinTokenSpec{Bot: bot, Method: resource.JoinMethodKubernetes, Kubernetes: k},
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// testCluster is the stand-in cluster in the auth service's configuration.
func testCluster(is *kubejointest.Issuer) kubejoin.Cluster {
	return kubejoin.Cluster{Name: "test", APIServer: is.Server.URL, JWKSURL: is.JWKSURL(), CAFile: is.CAFile, TokenFile: is.TokenFile}
}

// kubernetesSetup starts an auth service with bot k8s-agent and the join
// token k8s-nodes that admits wid:wid-agent, checked against the JWKS URL
// of is, configured as cluster test.
func kubernetesSetup(t *testing.T) (*authtest.Server, *kubejointest.Issuer) {
	t.Helper()
	is := kubejointest.NewIssuer(t)
	srv := authtest.Start(t, authtest.WithKubernetesClusters(testCluster(is)))
	ctx := context.Background()
	admin := srv.AdminClient(t)
	if _, err := admin.CreateBot(ctx, &authv1.CreateBotRequest{Name: "k8s-agent"}); err != nil {
		t.Fatal(err)
	}
	doc := kubernetesTokenDoc(t, "k8s-nodes", "k8s-agent", &resource.KubernetesJoin{
		Allow:  []resource.KubernetesAllow{{ServiceAccount: "wid:wid-agent"}},
		Issuer: kubejointest.IssuerURL, Cluster: "test",
	})
	if _, err := admin.CreateResource(ctx, &authv1.CreateResourceRequest{Resources: [][]byte{doc}}); err != nil {
		t.Fatalf("creating the kubernetes join token: %v", err)
	}
	return srv, is
}

func kubernetesJoin(srv *authtest.Server, name, saToken string) (*authv1.JoinResponse, *client.Identity, error) {
	c, err := client.Dial(client.Config{Auth: srv.Addr, CAPin: srv.CAPin})
	if err != nil {
		return nil, nil, err
	}
	defer c.Close()
	key, _ := client.NewKey()
	csr, _ := client.NewCSR(key)
	resp, err := c.Join(context.Background(), &authv1.JoinRequest{
		Token: name, Csr: csr, Host: "node-1", JoinMethod: "kubernetes", ServiceAccountToken: saToken,
	})
	if err != nil {
		return nil, nil, err
	}
	id, err := client.NewIdentity(key, resp.CertChain, resp.HostCa)
	return resp, id, err
}

func TestKubernetesJoin(t *testing.T) {
	srv, is := kubernetesSetup(t)
	if got := srv.KubernetesAudience(); got != k8sAudience {
		t.Errorf("audience = %q, want %q", got, k8sAudience)
	}
	is.AddKey(t, "rogue", false)
	now := time.Now()
	good := kubejointest.Good(k8sAudience, now)
	with := func(f func(*kubejointest.Token)) string {
		tok := good
		f(&tok)
		return is.Sign(t, tok)
	}

	// Many nodes join with the one token: it is reusable.
	for _, pod := range []string{"wid-agent-a", "wid-agent-b"} {
		resp, id, err := kubernetesJoin(srv, "k8s-nodes", with(func(tok *kubejointest.Token) { tok.Pod = pod }))
		if err != nil {
			t.Fatalf("joining as %s: %v", pod, err)
		}
		if resp.Bot != "k8s-agent" || resp.TrustDomain != "example.org" {
			t.Errorf("joined as %q of %q", resp.Bot, resp.TrustDomain)
		}
		// The certificate is the bot's and verifies against the host CA.
		pool := x509.NewCertPool()
		for _, der := range resp.HostCa {
			c, _ := x509.ParseCertificate(der)
			pool.AddCert(c)
		}
		if _, err := id.Leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			t.Errorf("bot certificate does not verify: %v", err)
		}
	}
	joins := auditTypes(t, srv, "bot.join")
	if len(joins) != 2 {
		t.Fatalf("bot.join events = %d, want 2", len(joins))
	}
	d := joins[1].Details
	if joins[1].Actor != "bot:k8s-agent" || d["method"] != "kubernetes" || d["service_account"] != "wid:wid-agent" || d["pod"] != "wid-agent-b" || d["node"] != "node-1" || d["token"] != "k8s-nodes" {
		t.Errorf("join event = actor %q details %v", joins[1].Actor, d)
	}

	for _, c := range []struct {
		name, token, check, msg string
	}{
		{"wrong audience", with(func(tok *kubejointest.Token) { tok.Audience = []string{"https://kubernetes.default.svc"} }), "audience",
			`the token's audience is ["https://kubernetes.default.svc"], not wid:example.org: set audience: wid:example.org in the projected service-account token volume`},
		{"expired", with(func(tok *kubejointest.Token) { tok.IssuedAt = now.Add(-3 * time.Hour) }), "expired", "the token expired at"},
		{"unknown key", with(func(tok *kubejointest.Token) { tok.Kid = "rogue" }), "unknown key", `signed by key "rogue"`},
		{"disallowed service account", with(func(tok *kubejointest.Token) { tok.ServiceAccount = "default" }), "allow",
			`service account wid:default is not in the join token's allow list`},
		{"malformed", "eyJhbGciOi.garbage", "malformed", "is not a signed JWT"},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := len(auditTypes(t, srv, "bot.join.denied"))
			_, _, err := kubernetesJoin(srv, "k8s-nodes", c.token)
			if status.Code(err) != codes.PermissionDenied {
				t.Fatalf("join = %v, want PermissionDenied", err)
			}
			// The caller gets the one answer of every refusal; the
			// audit log says which check failed.
			msg := status.Convert(err).Message()
			if msg != srv.KubernetesJoinRefusedForTest() {
				t.Errorf("message %q is not the one kubernetes join refusal", msg)
			}
			if strings.Contains(msg, c.token) {
				t.Errorf("the refusal repeats the service-account token")
			}
			evs := auditTypes(t, srv, "bot.join.denied")
			if len(evs) != before+1 {
				t.Fatalf("denials audited: %d, want %d", len(evs), before+1)
			}
			ev := evs[len(evs)-1]
			if ev.Outcome != "denied" || ev.Details["check"] != c.check || ev.Details["token"] != "k8s-nodes" || ev.Details["method"] != "kubernetes" || ev.Host != "node-1" {
				t.Errorf("denial event = outcome %q host %q details %v", ev.Outcome, ev.Host, ev.Details)
			}
			if strings.Contains(ev.Reason, c.token) {
				t.Errorf("the audit event holds the service-account token")
			}
			if !strings.Contains(ev.Reason, c.msg) {
				t.Errorf("audit reason %q does not contain %q", ev.Reason, c.msg)
			}
		})
	}
	if n := len(auditTypes(t, srv, "bot.join")); n != 2 {
		t.Errorf("refused joins issued certificates: %d joins", n)
	}
}

func TestKubernetesTokenCannotBeUsedAsASecret(t *testing.T) {
	srv, is := kubernetesSetup(t)
	// The plain path never finds a named token, whatever is sent.
	for _, secret := range []string{"k8s-nodes", is.Sign(t, kubejointest.Good(k8sAudience, time.Now()))} {
		if _, err := join(srv, secret); status.Code(err) != codes.PermissionDenied {
			t.Errorf("plain join with %.20q: %v, want PermissionDenied", secret, err)
		}
	}
	// And a secret token is no kubernetes token.
	bot, err := srv.AdminClient(t).CreateBot(context.Background(), &authv1.CreateBotRequest{Name: "plain"})
	if err != nil {
		t.Fatal(err)
	}
	tok := bot.Token
	var jt resource.JoinToken
	if err := json.Unmarshal(bot.JoinToken, &jt); err != nil {
		t.Fatal(err)
	}
	_, _, err = kubernetesJoin(srv, jt.Metadata.Name, is.Sign(t, kubejointest.Good(k8sAudience, time.Now())))
	if status.Code(err) != codes.PermissionDenied || status.Convert(err).Message() != srv.KubernetesJoinRefusedForTest() {
		t.Errorf("kubernetes join with a secret token's name: %v", err)
	}
	// The secret still works for its own method: the failed attempt did not use it up.
	if _, err := join(srv, tok); err != nil {
		t.Errorf("the secret token no longer joins: %v", err)
	}
}

// A kubernetes join answers an unknown token name exactly as it answers a
// known token whose check failed, so names cannot be probed; the audit log
// tells them apart.
func TestKubernetesJoinDoesNotRevealTokenNames(t *testing.T) {
	srv, is := kubernetesSetup(t)
	wrongAud := kubejointest.Good("https://kubernetes.default.svc", time.Now())
	_, _, known := kubernetesJoin(srv, "k8s-nodes", is.Sign(t, wrongAud))
	_, _, unknown := kubernetesJoin(srv, "no-such-token", is.Sign(t, wrongAud))
	if status.Code(known) != codes.PermissionDenied || status.Code(unknown) != status.Code(known) || status.Convert(unknown).Message() != status.Convert(known).Message() {
		t.Fatalf("a known token answered %v, an unknown one %v: the answers differ", known, unknown)
	}
	evs := auditTypes(t, srv, "bot.join.denied")
	if len(evs) != 2 || evs[0].Details["check"] != "audience" || evs[1].Reason != "unknown join token" || evs[1].Actor != "anonymous" {
		t.Fatalf("the audit log does not keep the real reasons: %v", evs)
	}
}

// A join token names no file and no URL: those belong to the auth
// service's configuration, and a token that names one is refused saying so.
// A cluster the configuration lacks is refused too.
func TestKubernetesJoinTokenNamesNoFilesOrURLs(t *testing.T) {
	is := kubejointest.NewIssuer(t)
	srv := authtest.Start(t, authtest.WithKubernetesClusters(testCluster(is)))
	ctx := context.Background()
	admin := srv.AdminClient(t)
	if _, err := admin.CreateBot(ctx, &authv1.CreateBotRequest{Name: "k8s-agent"}); err != nil {
		t.Fatal(err)
	}
	for field, k := range map[string]*resource.KubernetesJoin{
		"token_file": {TokenReview: true, TokenFile: "/root/secret"},
		"ca_file":    {TokenReview: true, CAFile: "/etc/shadow"},
		"api_server": {TokenReview: true, APIServer: is.Server.URL},
		"jwks_url":   {Issuer: kubejointest.IssuerURL, JWKSURL: is.JWKSURL()},
	} {
		k.Allow = []resource.KubernetesAllow{{ServiceAccount: "wid:*"}}
		_, err := admin.CreateResource(ctx, &authv1.CreateResourceRequest{Resources: [][]byte{kubernetesTokenDoc(t, "evil", "k8s-agent", k)}})
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "spec.kubernetes."+field+" is no longer a join token field: files the auth service reads and servers it calls are set in its own configuration (kubernetes_clusters in widagent's config file)") {
			t.Errorf("a token with %s: %v", field, err)
		}
	}
	k := &resource.KubernetesJoin{Allow: []resource.KubernetesAllow{{ServiceAccount: "wid:*"}}, TokenReview: true, Cluster: "elsewhere"}
	_, err := admin.CreateResource(ctx, &authv1.CreateResourceRequest{Resources: [][]byte{kubernetesTokenDoc(t, "evil", "k8s-agent", k)}})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(status.Convert(err).Message(), `names kubernetes cluster "elsewhere", which the auth service does not define`) {
		t.Errorf("a token naming an unconfigured cluster: %v", err)
	}
	if hits := is.ReviewHits.Load() + is.JWKSHits.Load(); hits != 0 {
		t.Errorf("refused tokens reached the cluster %d times", hits)
	}
}

func TestKubernetesJoinTokenResource(t *testing.T) {
	srv := authtest.Start(t)
	ctx := context.Background()
	admin := srv.AdminClient(t)
	k := &resource.KubernetesJoin{Allow: []resource.KubernetesAllow{{ServiceAccount: "wid:wid-agent"}}, TokenReview: true}
	_, err := admin.CreateResource(ctx, &authv1.CreateResourceRequest{Resources: [][]byte{kubernetesTokenDoc(t, "k8s", "ghost", k)}})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(status.Convert(err).Message(), "names bot ghost, which does not exist") {
		t.Errorf("token for a missing bot: %v", err)
	}
	// A bot and its token in one file.
	botDoc, _ := json.Marshal(&resource.Bot{Header: resource.Header{Kind: resource.KindBot, Version: resource.V1, Metadata: resource.Metadata{Name: "ghost"}}})
	if _, err := admin.CreateResource(ctx, &authv1.CreateResourceRequest{Resources: [][]byte{botDoc, kubernetesTokenDoc(t, "k8s", "ghost", k)}}); err != nil {
		t.Fatalf("bot and token together: %v", err)
	}
	got, err := admin.GetResource(ctx, &authv1.GetResourceRequest{Kind: "token", Name: "k8s"})
	if err != nil || !strings.Contains(string(got.Resource), `"token_review":true`) {
		t.Errorf("get = %s, %v", got.GetResource(), err)
	}
	_, err = admin.CreateJoinToken(ctx, &authv1.CreateJoinTokenRequest{Bot: "ghost", Method: "kubernetes"})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "a kubernetes join token has no secret") {
		t.Errorf("secret kubernetes token: %v", err)
	}
	secretDoc := []byte(`{"kind":"token","version":"v1","metadata":{"name":"abc"},"spec":{"bot":"ghost","method":"token","uses":1,"expires":"2030-01-02T15:04:05Z"}}`)
	if _, err := admin.CreateResource(ctx, &authv1.CreateResourceRequest{Resources: [][]byte{secretDoc}}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("secret token by file: %v, want InvalidArgument", err)
	}
}

func TestKubernetesJoinWithTokenReview(t *testing.T) {
	is := kubejointest.NewIssuer(t)
	srv := authtest.Start(t, authtest.WithKubernetesClusters(testCluster(is)))
	ctx := context.Background()
	admin := srv.AdminClient(t)
	if _, err := admin.CreateBot(ctx, &authv1.CreateBotRequest{Name: "k8s-agent"}); err != nil {
		t.Fatal(err)
	}
	doc := kubernetesTokenDoc(t, "review", "k8s-agent", &resource.KubernetesJoin{
		Allow:       []resource.KubernetesAllow{{ServiceAccount: "wid:*"}},
		TokenReview: true, Cluster: "test",
	})
	if _, err := admin.CreateResource(ctx, &authv1.CreateResourceRequest{Resources: [][]byte{doc}}); err != nil {
		t.Fatal(err)
	}
	is.Review("opaque-token-1", kubejointest.ReviewedPod("wid", "wid-agent", "wid-agent-q1"))
	resp, _, err := kubernetesJoin(srv, "review", "opaque-token-1")
	if err != nil || resp.Bot != "k8s-agent" {
		t.Fatalf("join = %v, %v", resp, err)
	}
	is.Review("opaque-token-2", kubejointest.ReviewedPod("kube-system", "wid-agent", "p"))
	_, _, err = kubernetesJoin(srv, "review", "opaque-token-2")
	if status.Code(err) != codes.PermissionDenied || status.Convert(err).Message() != srv.KubernetesJoinRefusedForTest() {
		t.Errorf("other namespace: %v", err)
	}
	// The cluster cannot be asked: the agent is told to retry, and the
	// audit log says why.
	is.Server.Close()
	_, _, err = kubernetesJoin(srv, "review", "opaque-token-1")
	if status.Code(err) != codes.Unavailable || strings.Contains(status.Convert(err).Message(), is.Server.URL) {
		t.Errorf("API server down: %v", err)
	}
	evs := auditTypes(t, srv, "bot.join.denied")
	if len(evs) != 2 || evs[1].Details["check"] != "unavailable" || !strings.Contains(evs[1].Reason, "TokenReview") {
		t.Errorf("denials = %v", evs)
	}
}

// BenchmarkKubernetesJoin is one node's join through the auth service's
// gRPC API: token check with cached keys, bot certificate, audit event.
func BenchmarkKubernetesJoin(b *testing.B) {
	is := kubejointest.NewIssuer(b)
	srv := authtest.Start(b, authtest.WithKubernetesClusters(testCluster(is)))
	ctx := context.Background()
	admin := srv.AdminClient(b)
	if _, err := admin.CreateBot(ctx, &authv1.CreateBotRequest{Name: "k8s-agent"}); err != nil {
		b.Fatal(err)
	}
	doc, _ := json.Marshal(&resource.JoinToken{
		Header: resource.Header{Kind: resource.KindJoinToken, Version: resource.V1, Metadata: resource.Metadata{Name: "k8s-nodes"}},
		Spec: resource.JoinTokenSpec{Bot: "k8s-agent", Method: resource.JoinMethodKubernetes, Kubernetes: &resource.KubernetesJoin{
			Allow: []resource.KubernetesAllow{{ServiceAccount: "wid:wid-agent"}}, Issuer: kubejointest.IssuerURL, Cluster: "test",
		}},
	})
	if _, err := admin.CreateResource(ctx, &authv1.CreateResourceRequest{Resources: [][]byte{doc}}); err != nil {
		b.Fatal(err)
	}
	c, err := client.Dial(client.Config{Auth: srv.Addr, CAPin: srv.CAPin})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	key, _ := client.NewKey()
	csr, _ := client.NewCSR(key)
	req := &authv1.JoinRequest{Token: "k8s-nodes", Csr: csr, Host: "node", JoinMethod: "kubernetes", ServiceAccountToken: is.Sign(b, kubejointest.Good(k8sAudience, time.Now()))}
	b.ResetTimer()
	for b.Loop() {
		if _, err := c.Join(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}
