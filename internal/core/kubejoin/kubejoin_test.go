package kubejoin_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wid-project/wid/internal/core/kubejoin"
	"github.com/wid-project/wid/internal/core/kubejoin/kubejointest"
	"github.com/wid-project/wid/internal/core/resource"
	authnv1 "k8s.io/api/authentication/v1"
)

const aud = "wid:example.org"

// clock is a settable test clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func newClock() *clock { return &clock{now: time.Now().Truncate(time.Second)} }

// testCluster is the stand-in cluster as the auth service's configuration
// names it.
func testCluster(is *kubejointest.Issuer) kubejoin.Cluster {
	return kubejoin.Cluster{Name: "test", APIServer: is.Server.URL, JWKSURL: is.JWKSURL(), CAFile: is.CAFile, TokenFile: is.TokenFile}
}

// verifier knows the stand-in cluster.
func verifier(is *kubejointest.Issuer, clock func() time.Time, clusters ...kubejoin.Cluster) *kubejoin.Verifier {
	if len(clusters) == 0 {
		clusters = []kubejoin.Cluster{testCluster(is)}
	}
	return kubejoin.NewVerifier(kubejoin.Options{Clock: clock, Clusters: clusters})
}

func jwksConfig(*kubejointest.Issuer) *resource.KubernetesJoin {
	return &resource.KubernetesJoin{
		Allow:   []resource.KubernetesAllow{{ServiceAccount: "wid:wid-agent"}},
		Issuer:  kubejointest.IssuerURL,
		Cluster: "test",
	}
}

func wantRefusal(t *testing.T, err error, check, text string) {
	t.Helper()
	var r *kubejoin.Refusal
	if !errors.As(err, &r) {
		t.Fatalf("error %v is not a refusal", err)
	}
	if r.Check != check {
		t.Errorf("check = %q, want %q (reason %q)", r.Check, check, r.Reason)
	}
	if !strings.Contains(r.Reason, text) {
		t.Errorf("reason %q does not contain %q", r.Reason, text)
	}
}

func TestVerifyWithJWKS(t *testing.T) {
	is := kubejointest.NewIssuer(t)
	is.AddKey(t, "unpublished", false)
	clk := newClock()
	now := clk.Now()
	good := kubejointest.Good(aud, now)
	with := func(f func(*kubejointest.Token)) kubejointest.Token {
		tok := good
		f(&tok)
		return tok
	}
	for _, c := range []struct {
		name, check, text string
		token             string
	}{
		{"wrong audience", kubejoin.CheckAudience, `audience is ["https://kubernetes.default.svc"], not wid:example.org: set audience: wid:example.org`,
			is.Sign(t, with(func(tok *kubejointest.Token) { tok.Audience = []string{"https://kubernetes.default.svc"} }))},
		{"expired", kubejoin.CheckExpired, "the token expired at",
			is.Sign(t, with(func(tok *kubejointest.Token) { tok.IssuedAt = now.Add(-2 * time.Hour) }))},
		{"not yet valid", kubejoin.CheckNotYetValid, "not valid yet",
			is.Sign(t, with(func(tok *kubejointest.Token) { tok.IssuedAt = now.Add(10 * time.Minute) }))},
		{"unknown key", kubejoin.CheckUnknownKey, `signed by key "unpublished", which issuer https://kubernetes.default.svc.cluster.local does not publish`,
			is.Sign(t, with(func(tok *kubejointest.Token) { tok.Kid = "unpublished" }))},
		{"wrong issuer", kubejoin.CheckIssuer, `issuer is "https://evil.example", not`,
			is.Sign(t, with(func(tok *kubejointest.Token) { tok.Issuer = "https://evil.example" }))},
		{"short life", kubejoin.CheckLifetime, "lives 5m0s, less than the 10m0s",
			is.Sign(t, with(func(tok *kubejointest.Token) { tok.Lifetime = 5 * time.Minute }))},
		{"malformed", kubejoin.CheckMalformed, "is not a signed JWT", "not.a.jwt"},
		{"empty", kubejoin.CheckMalformed, "no service-account token was sent", " \n"},
		{"tampered", kubejoin.CheckSignature, "signature does not verify", tamper(is.Sign(t, good))},
	} {
		t.Run(c.name, func(t *testing.T) {
			v := verifier(is, clk.Now)
			_, err := v.Verify(context.Background(), jwksConfig(is), aud, c.token)
			wantRefusal(t, err, c.check, c.text)
			if strings.Contains(err.Error(), c.token) && strings.TrimSpace(c.token) != "" {
				t.Errorf("the refusal repeats the token: %v", err)
			}
		})
	}
	t.Run("good", func(t *testing.T) {
		v := verifier(is, clk.Now)
		sa, err := v.Verify(context.Background(), jwksConfig(is), aud, is.Sign(t, good)+"\n")
		if err != nil {
			t.Fatal(err)
		}
		want := kubejoin.ServiceAccount{Namespace: "wid", Name: "wid-agent", PodName: "wid-agent-x7k2p", PodUID: "9a8b7c6d-5e4f-4a3b-2c1d-0e9f8a7b6c5d", NodeName: "node-1"}
		if sa != want {
			t.Errorf("service account = %+v, want %+v", sa, want)
		}
	})
	t.Run("static jwks", func(t *testing.T) {
		v := verifier(is, clk.Now)
		k := jwksConfig(is)
		k.Cluster, k.JWKS = "", is.JWKS(t)
		hits := is.JWKSHits.Load()
		sa, err := v.Verify(context.Background(), k, aud, is.Sign(t, good))
		if err != nil || sa.String() != "wid:wid-agent" {
			t.Fatalf("Verify = %v, %v", sa, err)
		}
		if is.JWKSHits.Load() != hits {
			t.Error("a static JWKS fetched the URL")
		}
	})
}

// tamper flips the payload so the signature no longer matches.
func tamper(tok string) string {
	parts := strings.Split(tok, ".")
	p := []byte(parts[1])
	if p[5] == 'A' {
		p[5] = 'B'
	} else {
		p[5] = 'A'
	}
	parts[1] = string(p)
	return strings.Join(parts, ".")
}

func TestJWKSIsCachedAndRefetchedOnUnknownKidAtMostEvery30s(t *testing.T) {
	is := kubejointest.NewIssuer(t)
	clk := newClock()
	v := verifier(is, clk.Now)
	k := jwksConfig(is)
	ctx := context.Background()
	for range 3 {
		if _, err := v.Verify(ctx, k, aud, is.Sign(t, kubejointest.Good(aud, clk.Now()))); err != nil {
			t.Fatal(err)
		}
	}
	if n := is.JWKSHits.Load(); n != 1 {
		t.Fatalf("3 joins fetched the JWKS %d times, want 1", n)
	}
	// The cluster rotates its key: the first token with the new kid
	// refetches, if the last fetch is old enough.
	is.AddKey(t, "key-2", true)
	rotated := kubejointest.Good(aud, clk.Now())
	rotated.Kid = "key-2"
	_, err := v.Verify(ctx, k, aud, is.Sign(t, rotated))
	wantRefusal(t, err, kubejoin.CheckUnknownKey, `"key-2"`)
	if n := is.JWKSHits.Load(); n != 1 {
		t.Fatalf("an unknown kid within 30s of a fetch fetched again (%d fetches)", n)
	}
	clk.Add(kubejoin.MinRefetch)
	rotated.IssuedAt = clk.Now()
	if _, err := v.Verify(ctx, k, aud, is.Sign(t, rotated)); err != nil {
		t.Fatalf("after the refetch delay, the new key is still unknown: %v", err)
	}
	if n := is.JWKSHits.Load(); n != 2 {
		t.Fatalf("JWKS fetched %d times, want 2", n)
	}
	// Keys past their age are fetched again; if that fails, the cached
	// ones still work.
	clk.Add(kubejoin.MaxKeysAge)
	is.Server.Close()
	good := kubejointest.Good(aud, clk.Now())
	if _, err := v.Verify(ctx, k, aud, is.Sign(t, good)); err != nil {
		t.Fatalf("with the issuer down, cached keys no longer work: %v", err)
	}
}

func TestJWKSUnreachableIsNotARefusal(t *testing.T) {
	is := kubejointest.NewIssuer(t)
	clk := newClock()
	untrusted := testCluster(is)
	untrusted.CAFile = ""
	v := verifier(is, clk.Now, untrusted)
	k := jwksConfig(is)
	_, err := v.Verify(context.Background(), k, aud, is.Sign(t, kubejointest.Good(aud, clk.Now())))
	var r *kubejoin.Refusal
	if err == nil || errors.As(err, &r) {
		t.Fatalf("an issuer whose certificate we do not trust gave %v, want a fetch error", err)
	}
	if !strings.Contains(err.Error(), "fetching the cluster's issuer keys from "+is.JWKSURL()) {
		t.Errorf("error %q does not say what failed", err)
	}
}

func TestVerifyWithTokenReview(t *testing.T) {
	is := kubejointest.NewIssuer(t)
	k := &resource.KubernetesJoin{
		Allow: []resource.KubernetesAllow{{ServiceAccount: "wid:wid-agent"}}, TokenReview: true, Cluster: "test",
	}
	noToken := testCluster(is)
	noToken.Name, noToken.TokenFile = "no-token", ""
	v := verifier(is, nil, testCluster(is), noToken)
	ctx := context.Background()

	is.Review("good-token", kubejointest.ReviewedPod("wid", "wid-agent", "wid-agent-abcde"))
	sa, err := v.Verify(ctx, k, aud, "good-token")
	if err != nil {
		t.Fatal(err)
	}
	if sa.String() != "wid:wid-agent" || sa.PodName != "wid-agent-abcde" || sa.NodeName != "node-1" {
		t.Errorf("service account = %+v", sa)
	}

	is.Review("other-aud", authnv1.TokenReviewStatus{Error: `[invalid bearer token, token audiences ["https://kubernetes.default.svc"] is invalid for the target audiences ["wid:example.org"]]`})
	_, err = v.Verify(ctx, k, aud, "other-aud")
	wantRefusal(t, err, kubejoin.CheckAudience, "set audience: wid:example.org")

	_, err = v.Verify(ctx, k, aud, "forged")
	wantRefusal(t, err, kubejoin.CheckTokenReview, "did not authenticate the service-account token")

	legacy := kubejointest.ReviewedPod("wid", "wid-agent", "")
	delete(legacy.User.Extra, "authentication.kubernetes.io/pod-name")
	is.Review("legacy", legacy)
	_, err = v.Verify(ctx, k, aud, "legacy")
	wantRefusal(t, err, kubejoin.CheckLifetime, "is not bound to a pod")

	user := kubejointest.ReviewedPod("wid", "wid-agent", "p")
	user.User.Username = "alice"
	is.Review("user", user)
	_, err = v.Verify(ctx, k, aud, "user")
	wantRefusal(t, err, kubejoin.CheckServiceAccount, `"alice", which is not a service account`)

	wrongAud := kubejointest.ReviewedPod("wid", "wid-agent", "p")
	wrongAud.Audiences = []string{"vault"}
	is.Review("wrong-aud", wrongAud)
	_, err = v.Verify(ctx, k, aud, "wrong-aud")
	wantRefusal(t, err, kubejoin.CheckAudience, `authenticated the token for ["vault"]`)

	// Without the reviewer's credentials the API server refuses us: that
	// is the auth service's misconfiguration, not the agent's fault.
	bad := *k
	bad.Cluster = "no-token"
	_, err = v.Verify(ctx, &bad, aud, "good-token")
	var r *kubejoin.Refusal
	if err == nil || errors.As(err, &r) || !strings.Contains(err.Error(), "system:auth-delegator") {
		t.Errorf("unauthorized review gave %v", err)
	}
	if is.ReviewHits.Load() != 6 {
		t.Errorf("the stand-in decoded %d well-formed TokenReviews, want 6", is.ReviewHits.Load())
	}
}

func TestTokenReviewOutsideAClusterNeedsAnAPIServer(t *testing.T) {
	v := kubejoin.NewVerifier(kubejoin.Options{Getenv: func(string) string { return "" }})
	k := &resource.KubernetesJoin{Allow: []resource.KubernetesAllow{{ServiceAccount: "a:b"}}, TokenReview: true}
	_, err := v.Verify(context.Background(), k, aud, "t")
	if err == nil || !strings.Contains(err.Error(), "configure the cluster under kubernetes_clusters") {
		t.Errorf("got %v", err)
	}
	// A cluster the configuration does not define is the auth service's
	// problem, not a refusal of the agent.
	k.Cluster = "elsewhere"
	_, err = v.Verify(context.Background(), k, aud, "t")
	var r *kubejoin.Refusal
	if err == nil || errors.As(err, &r) || !strings.Contains(err.Error(), `names kubernetes cluster "elsewhere", which the auth service's configuration does not define`) {
		t.Errorf("an unknown cluster gave %v", err)
	}
}

func TestValidateClusters(t *testing.T) {
	good := kubejoin.Cluster{Name: "main", APIServer: "https://10.0.0.1:6443", CAFile: "/etc/wid/ca.crt", TokenFile: "/etc/wid/token"}
	if err := kubejoin.ValidateClusters([]kubejoin.Cluster{good}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		list []kubejoin.Cluster
		want string
	}{
		{"twice", []kubejoin.Cluster{good, good}, "defined twice"},
		{"bad name", []kubejoin.Cluster{{Name: "Main!", APIServer: good.APIServer}}, "is not a valid name"},
		{"nothing to call", []kubejoin.Cluster{{Name: "x"}}, "neither api_server nor jwks_url"},
		{"http", []kubejoin.Cluster{{Name: "x", JWKSURL: "http://a/keys"}}, "is not an https URL"},
		{"relative file", []kubejoin.Cluster{{Name: "x", APIServer: good.APIServer, TokenFile: "token"}}, "is not an absolute path"},
	} {
		if err := kubejoin.ValidateClusters(c.list); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want %q", c.name, err, c.want)
		}
	}
}

func TestParseClaims(t *testing.T) {
	for _, c := range []struct{ name, payload, text string }{
		{"not json", `{`, "not valid JSON claims"},
		{"no kubernetes claim", `{"sub":"system:serviceaccount:a:b"}`, "no kubernetes.io service account claim"},
		{"bad namespace", `{"sub":"system:serviceaccount:A:b","kubernetes.io":{"namespace":"A","serviceaccount":{"name":"b"}}}`, "has no valid namespace"},
		{"subject mismatch", `{"sub":"system:serviceaccount:a:c","kubernetes.io":{"namespace":"a","serviceaccount":{"name":"b"}}}`, `subject "system:serviceaccount:a:c" does not match its service account a:b`},
		{"bad aud type", `{"aud":5,"kubernetes.io":{"namespace":"a","serviceaccount":{"name":"b"}}}`, "not valid JSON claims"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := kubejoin.ParseClaims([]byte(c.payload))
			if err == nil || !strings.Contains(err.Error(), c.text) {
				t.Errorf("ParseClaims = %v, want %q", err, c.text)
			}
		})
	}
}

// FuzzParseClaims feeds arbitrary payloads to the claims parser: it must
// never panic, refuse with a Refusal, and accept only valid service
// accounts that agree with sub.
func FuzzParseClaims(f *testing.F) {
	for _, s := range []string{
		`{"iss":"https://k","sub":"system:serviceaccount:wid:wid-agent","aud":["wid:example.org"],"exp":1900000000,"iat":1800000000,"kubernetes.io":{"namespace":"wid","serviceaccount":{"name":"wid-agent","uid":"u"},"pod":{"name":"p","uid":"u"},"node":{"name":"n"}}}`,
		`{"sub":"system:serviceaccount:a:b","aud":"x","kubernetes.io":{"namespace":"a","serviceaccount":{"name":"b"}}}`,
		`{"kubernetes.io":null}`, `{"exp":"soon"}`, `[]`, `null`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		c, err := kubejoin.ParseClaims(payload)
		if err != nil {
			var r *kubejoin.Refusal
			if c != nil || !errors.As(err, &r) {
				t.Fatalf("ParseClaims gave %v, %v", c, err)
			}
			return
		}
		if _, _, err := resource.ParseServiceAccount(c.ServiceAccount.String(), false); err != nil {
			t.Fatalf("accepted invalid service account %q: %v", c.ServiceAccount, err)
		}
		if c.Subject != "system:serviceaccount:"+c.ServiceAccount.String() {
			t.Fatalf("accepted subject %q for %s", c.Subject, c.ServiceAccount)
		}
	})
}

// BenchmarkVerifyJWKS is one join's token check with the issuer's keys
// cached: what the auth service spends per joining node.
func BenchmarkVerifyJWKS(b *testing.B) {
	is := kubejointest.NewIssuer(b)
	v := verifier(is, nil)
	k := jwksConfig(is)
	tok := is.Sign(b, kubejointest.Good(aud, time.Now()))
	ctx := context.Background()
	if _, err := v.Verify(ctx, k, aud, tok); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		if _, err := v.Verify(ctx, k, aud, tok); err != nil {
			b.Fatal(err)
		}
	}
}
