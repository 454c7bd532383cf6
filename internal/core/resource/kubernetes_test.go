package resource

import (
	"strings"
	"testing"
)

const testJWKS = `{"keys":[{"kty":"EC","crv":"P-256","kid":"k1","alg":"ES256","use":"sig",` +
	`"x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}`

func validKubernetesToken() *JoinToken {
	return &JoinToken{
		Header: Header{Kind: KindJoinToken, Version: V1, Metadata: Metadata{Name: "k8s-nodes"}},
		Spec: JoinTokenSpec{Bot: "k8s-agent", Method: JoinMethodKubernetes, Kubernetes: &KubernetesJoin{
			Allow:   []KubernetesAllow{{ServiceAccount: "wid:wid-agent"}, {ServiceAccount: "edge:*"}},
			Issuer:  "https://kubernetes.default.svc.cluster.local",
			Cluster: "main",
		}},
	}
}

func TestKubernetesJoinTokenValidate(t *testing.T) {
	runValidate(t, func() Resource { return validKubernetesToken() }, func(res Resource) []validateCase {
		s := &res.(*JoinToken).Spec
		k := func() *KubernetesJoin { return s.Kubernetes }
		return []validateCase{
			{"no kubernetes", func() { s.Kubernetes = nil }, "spec.kubernetes", "is missing: a kubernetes join token needs allow"},
			{"kubernetes on a token token", func() { s.Method = JoinMethodToken; s.Uses = 1 }, "spec.kubernetes", "is only for method kubernetes"},
			{"secret", func() { s.SecretHash = strings.Repeat("ab", 32) }, "spec.secret_hash", "has no secret"},
			{"uses", func() { s.Uses = 3 }, "spec.uses", "is reused by every node"},
			{"no allow", func() { k().Allow = nil }, "spec.kubernetes.allow", "is empty: list the service accounts"},
			{"no colon", func() { k().Allow[1].ServiceAccount = "wid-agent" }, "spec.kubernetes.allow[2].service_account", `"wid-agent" is not namespace:name`},
			{"bad namespace", func() { k().Allow[0].ServiceAccount = "Wid:agent" }, "spec.kubernetes.allow[1].service_account", "has no valid namespace"},
			{"bad name", func() { k().Allow[0].ServiceAccount = "wid:agent_1" }, "spec.kubernetes.allow[1].service_account", "has no valid service account name"},
			{"wildcard namespace", func() { k().Allow[0].ServiceAccount = "*:agent" }, "spec.kubernetes.allow[1].service_account", "has no valid namespace"},
			{"no way to check", func() { k().Cluster = "" }, "spec.kubernetes", "says no way to check service-account tokens"},
			{"both ways", func() { k().TokenReview = true }, "spec.kubernetes", "sets both token_review and issuer keys"},
			{"cluster and keys", func() { k().JWKS = testJWKS }, "spec.kubernetes.jwks", "is set along with cluster"},
			{"no issuer", func() { k().Issuer = "" }, "spec.kubernetes.issuer", "is missing"},
			{"bad cluster name", func() { k().Cluster = "Main/1" }, "spec.kubernetes.cluster", "is not a cluster name"},
			{"bad jwks", func() { k().Cluster = ""; k().JWKS = "{" }, "spec.kubernetes.jwks", "is not a JSON Web Key Set"},
			{"empty jwks", func() { k().Cluster = ""; k().JWKS = `{"keys":[]}` }, "spec.kubernetes.jwks", "holds no keys"},
			{"private jwks", func() {
				k().Cluster = ""
				k().JWKS = strings.Replace(testJWKS, `"kid"`, `"d":"jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI","kid"`, 1)
			}, "spec.kubernetes.jwks", `key 1 (kid "k1") is a private key`},
			// Files and URLs are the auth service's configuration, never a token's.
			{"jwks url", func() { k().JWKSURL = "https://attacker.example/keys" }, "spec.kubernetes.jwks_url", "is no longer a join token field: files the auth service reads and servers it calls are set in its own configuration (kubernetes_clusters"},
			{"api server", func() { k().APIServer = "https://attacker.example" }, "spec.kubernetes.api_server", "is no longer a join token field"},
			{"ca file", func() { k().CAFile = "/etc/wid/ca.crt" }, "spec.kubernetes.ca_file", "is no longer a join token field"},
			{"token file", func() { k().TokenFile = "/root/.kube/token" }, "spec.kubernetes.token_file", "is no longer a join token field"},
		}
	})
	review := validKubernetesToken()
	review.Spec.Kubernetes = &KubernetesJoin{Allow: []KubernetesAllow{{ServiceAccount: "wid:wid-agent"}}, TokenReview: true, Cluster: "main"}
	if err := review.Validate(); err != nil {
		t.Errorf("token review config refused: %v", err)
	}
	static := validKubernetesToken()
	static.Spec.Kubernetes.Cluster, static.Spec.Kubernetes.JWKS = "", testJWKS
	if err := static.Validate(); err != nil {
		t.Errorf("static JWKS refused: %v", err)
	}
}

func TestKubernetesAllows(t *testing.T) {
	k := validKubernetesToken().Spec.Kubernetes
	for _, c := range []struct {
		ns, name string
		want     bool
	}{
		{"wid", "wid-agent", true},
		{"wid", "other", false},
		{"edge", "anything", true},
		{"widx", "wid-agent", false},
		{"", "", false},
	} {
		if got := k.Allows(c.ns, c.name); got != c.want {
			t.Errorf("Allows(%q, %q) = %v, want %v", c.ns, c.name, got, c.want)
		}
	}
}

func TestKubernetesTokenYAMLRoundTrip(t *testing.T) {
	in := `kind: token
version: v1
metadata:
  name: k8s-nodes
spec:
  bot: k8s-agent
  method: kubernetes
  kubernetes:
    allow:
      - service_account: wid:wid-agent
    token_review: true
`
	rs, err := Decode([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	out, err := MarshalYAML(rs[0])
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != in {
		t.Errorf("YAML -> struct -> YAML changed the text:\n--- got\n%s--- want\n%s", out, in)
	}
	_, err = Decode([]byte(strings.Replace(in, "token_review: true", "token_reviw: true", 1)))
	checkErr(t, err, `token_reviw`)
}

// FuzzParseServiceAccount feeds arbitrary allow rules to the parser: it must
// never panic, and what it accepts must be a valid namespace and name that
// Allows matches.
func FuzzParseServiceAccount(f *testing.F) {
	for _, s := range []string{"wid:wid-agent", "edge:*", "a:b.c", ":", "ns:", ":name", "a:b:c", "Wid:x", "x:" + strings.Repeat("a", 300), "\xff:\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ns, name, err := ParseServiceAccount(s, true)
		if err != nil {
			if ns != "" || name != "" {
				t.Fatalf("ParseServiceAccount(%q) returned parts along with %v", s, err)
			}
			return
		}
		if ns+":"+name != s {
			t.Fatalf("ParseServiceAccount(%q) = %q, %q: not the input", s, ns, name)
		}
		k := &KubernetesJoin{Allow: []KubernetesAllow{{ServiceAccount: s}}}
		if name != Wildcard && !k.Allows(ns, name) {
			t.Fatalf("rule %q does not allow its own service account", s)
		}
		if k.Allows(ns+"x", name) {
			t.Fatalf("rule %q allows another namespace", s)
		}
	})
}
