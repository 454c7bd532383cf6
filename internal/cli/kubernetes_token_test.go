package cli_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wid-project/wid/internal/cli/cmdutil"
	"github.com/wid-project/wid/internal/core/auth/authtest"
	"github.com/wid-project/wid/internal/core/kubejoin"
	"github.com/wid-project/wid/internal/core/kubejoin/kubejointest"
)

// Kubernetes join tokens are made with flags or from a file, listed
// without a use count, and refused with one sentence when incomplete.
func TestKubernetesJoinTokens(t *testing.T) {
	w := start(t, authtest.WithKubernetesClusters(kubejoin.Cluster{Name: "main", JWKSURL: "https://kubernetes.default.svc/openid/v1/jwks"}))
	w.OK("role", "create", "nodes", "--spiffe-path", "/k8s/**")
	w.OK("bot", "create", "k8s-agent", "--roles", "nodes")

	text := w.OK("token", "create", "--method", "kubernetes", "--name", "k8s-nodes", "--bot", "k8s-agent", "--allow", "wid:wid-agent", "--allow", "edge:*", "--token-review")
	for _, want := range []string{
		"Kubernetes join token k8s-nodes for bot k8s-agent (never expires):",
		"service accounts allowed: wid:wid-agent, edge:*",
		"checked by:               token review",
		"token audience:           wid:example.org",
		"widagent start --roles agent --auth " + w.Srv.Addr + " --ca-pin " + w.Srv.CAPin + " --join-method kubernetes --join-token k8s-nodes --sa-token-file /var/run/secrets/tokens/wid",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("token create --method kubernetes printed:\n%s\nwithout %q", text, want)
		}
	}

	is := kubejointest.NewIssuer(t)
	jwks := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(jwks, []byte(is.JWKS(t)), 0o600); err != nil {
		t.Fatal(err)
	}
	out := w.OK("token", "create", "--method", "kubernetes", "--name", "static", "--bot", "k8s-agent", "--allow", "wid:wid-agent",
		"--issuer", kubejointest.IssuerURL, "--jwks-file", jwks, "--ttl", "720h", "--format", "json")
	var j struct {
		TokenName string   `json:"token_name"`
		Audience  string   `json:"audience"`
		Check     string   `json:"check"`
		Allow     []string `json:"allow"`
	}
	if err := json.Unmarshal([]byte(out), &j); err != nil {
		t.Fatalf("--format json: %v\n%s", err, out)
	}
	if j.TokenName != "static" || j.Audience != "wid:example.org" || j.Check != "issuer keys given in the token" || len(j.Allow) != 1 {
		t.Errorf("json = %+v", j)
	}
	if got := w.OK("get", "token/static", "--format", "yaml"); !strings.Contains(got, "method: kubernetes") || !strings.Contains(got, `"kid":"key-1"`) || strings.Contains(got, "uses:") {
		t.Errorf("get token/static:\n%s", got)
	}
	ls := w.OK("token", "ls")
	if !strings.Contains(ls, "k8s-nodes") || !strings.Contains(ls, "kubernetes") {
		t.Errorf("token ls:\n%s", ls)
	}

	badJWKS := filepath.Join(t.TempDir(), "bad.json")
	if err := os.WriteFile(badJWKS, []byte(`{"keys": [`), 0o600); err != nil {
		t.Fatal(err)
	}
	doc := `kind: token
version: v1
metadata:
  name: from-file
spec:
  bot: k8s-agent
  method: kubernetes
  kubernetes:
    allow:
      - service_account: wid:wid-agent
    issuer: https://kubernetes.default.svc.cluster.local
    cluster: main
`
	if code, out, errOut := w.RunIn(doc, "create", "-f", "-"); code != 0 || out != "created token/from-file\n" {
		t.Fatalf("create -f: exit %d, %q %q", code, out, errOut)
	}
	if got := w.OK("token", "get", "from-file"); !strings.Contains(got, "issuer keys of cluster main") {
		t.Errorf("token get:\n%s", got)
	}

	for _, c := range []struct {
		name  string
		stdin string
		args  []string
		want  string
	}{
		{"no issuer in file", strings.Replace(doc, "    issuer: https://kubernetes.default.svc.cluster.local\n", "", 1), []string{"create", "-f", "-"}, "spec.kubernetes.issuer is missing"},
		{"typo in file", strings.Replace(doc, "cluster:", "clustre:", 1), []string{"create", "-f", "-"}, "clustre"},
		{"a file of the auth host in the token", strings.Replace(doc, "    cluster: main\n", "    cluster: main\n    token_file: /root/token\n", 1), []string{"create", "-f", "-"},
			"spec.kubernetes.token_file is no longer a join token field: files the auth service reads and servers it calls are set in its own configuration (kubernetes_clusters in widagent's config file)"},
		{"name taken", "", []string{"token", "create", "--method", "kubernetes", "--name", "k8s-nodes", "--bot", "k8s-agent", "--token-review", "--allow", "a:b"},
			"error: token/k8s-nodes already exists: remove it first with widctl rm token/k8s-nodes, or replace it with widctl create -f FILE --force\n"},
		{"no allow", "", []string{"token", "create", "--method", "kubernetes", "--name", "x", "--bot", "k8s-agent", "--token-review"}, "no service account may join: pass --allow"},
		{"bad allow", "", []string{"token", "create", "--method", "kubernetes", "--name", "x", "--bot", "k8s-agent", "--token-review", "--allow", "wid-agent"}, `--allow "wid-agent" is not namespace:name`},
		{"uses", "", []string{"token", "create", "--method", "kubernetes", "--name", "x", "--bot", "k8s-agent", "--token-review", "--allow", "a:b", "--uses", "3"}, "--uses is not for --method kubernetes"},
		{"no check", "", []string{"token", "create", "--method", "kubernetes", "--name", "x", "--bot", "k8s-agent", "--allow", "a:b"}, "say how to check service-account tokens"},
		{"no name", "", []string{"token", "create", "--method", "kubernetes", "--bot", "k8s-agent", "--allow", "a:b", "--token-review"}, "pass --name NAME"},
		{"kubernetes flags on a secret token", "", []string{"token", "create", "--bot", "k8s-agent", "--allow", "a:b"}, "are for --method kubernetes"},
		{"empty jwks file", "", []string{"token", "create", "--method", "kubernetes", "--name", "x", "--bot", "k8s-agent", "--allow", "a:b", "--issuer", "https://i", "--jwks-file", os.DevNull}, "is empty: save the cluster's keys with kubectl get --raw /openid/v1/jwks"},
		{"bad jwks file", "", []string{"token", "create", "--method", "kubernetes", "--name", "x", "--bot", "k8s-agent", "--allow", "a:b", "--issuer", "https://i", "--jwks-file", badJWKS}, "spec.kubernetes.jwks is not a JSON Web Key Set"},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, out, errOut := w.RunIn(c.stdin, c.args...)
			if code != cmdutil.ExitBadInput || !strings.Contains(errOut, c.want) || strings.Count(errOut, "\n") != 1 || out != "" {
				t.Errorf("exit %d, stdout %q, stderr %q; want one line with %q", code, out, errOut, c.want)
			}
		})
	}
}
