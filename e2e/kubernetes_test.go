package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wid-project/wid/internal/core/kubejoin/kubejointest"
)

// TestKubernetesJoin: with the real binaries, an agent joins with a
// projected service-account token checked against the JWKS of a cluster in
// the auth service's config file, and serves its workload; a token for
// another audience stops the agent, and the refusal is in the audit log
// with the reason. A join token that names a file of the auth host is
// refused.
func TestKubernetesJoin(t *testing.T) {
	t.Parallel()
	is := kubejointest.NewIssuer(t)
	authDir := newDataDir(t)
	config := filepath.Join(authDir, "auth.yaml")
	if err := os.WriteFile(config, []byte("kubernetes_clusters:\n  - name: test\n    jwks_url: "+is.JWKSURL()+"\n    ca_file: "+is.CAFile+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	auth := startAgent(t, authDir, "--roles", "auth", "--config", config)
	auth.widctl("bot", "add", "k8s-agent", "--roles", "local-agent").must(t)
	evil := "kind: token\nversion: v1\nmetadata: {name: evil}\nspec: {bot: k8s-agent, method: kubernetes, kubernetes: {allow: [{service_account: 'wid:*'}], token_review: true, token_file: /etc/shadow}}\n"
	if r := auth.widctlIn(evil, "create", "-f", "-"); r.code == 0 || !strings.Contains(r.stderr, "spec.kubernetes.token_file is no longer a join token field") {
		t.Fatalf("a join token naming a file of the auth host: exit %d\n%s", r.code, r.stderr)
	}
	out := auth.widctl("token", "add", "--method", "kubernetes", "--name", "k8s-nodes", "--bot", "k8s-agent", "--allow", "wid:wid-agent",
		"--issuer", kubejointest.IssuerURL, "--cluster", "test").must(t)
	if !strings.Contains(out.stdout, "token audience:           wid:example.org") {
		t.Fatalf("token add printed:\n%s", out.stdout)
	}
	auth.widctl("workload-identity", "create", "node", "--spiffe-id", "/k8s/uid/{{ workload.unix.uid }}", "--rule", "workload.unix.uid="+uid).must(t)

	agentDir := newDataDir(t)
	saFile := filepath.Join(agentDir, "sa-token")
	wrong := kubejointest.Good("https://kubernetes.default.svc", time.Now())
	if err := os.WriteFile(saFile, []byte(is.Sign(t, wrong)), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"start", "--roles", "agent", "--data-dir", agentDir, "--workload-socket", filepath.Join(agentDir, "workload.sock"),
		"--auth", auth.addr, "--ca-pin", auth.pin, "--join-method", "kubernetes", "--join-token", "k8s-nodes", "--sa-token-file", saFile}
	refused, err := exec.Command(filepath.Join(binDir, "widagent"), args...).CombinedOutput()
	if err == nil || !strings.Contains(string(refused), "the kubernetes join was refused: check the join token name, that the projected service-account token has audience wid:example.org") ||
		!strings.Contains(string(refused), "; an admin finds the reason with widctl audit ls --type bot.join.denied") {
		t.Fatalf("agent with a wrong-audience token: %v\n%s", err, refused)
	}
	denied := auth.widctl("audit", "ls", "--type", "bot.join.denied", "--format", "json").must(t)
	if (!strings.Contains(denied.stdout, `"check": "audience"`) && !strings.Contains(denied.stdout, `"check":"audience"`)) || !strings.Contains(denied.stdout, "set audience: wid:example.org") {
		t.Errorf("the refusal is not audited with its check:\n%s", denied.stdout)
	}

	if err := os.WriteFile(saFile, []byte(is.Sign(t, kubejointest.Good("wid:example.org", time.Now()))), 0o600); err != nil {
		t.Fatal(err)
	}
	ag := startAgent(t, agentDir, args[1:]...)
	fetched, err := exec.Command(filepath.Join(binDir, "widagent"), "api", "fetch", "x509", "--socket", ag.workload).CombinedOutput()
	if err != nil || !strings.Contains(string(fetched), "spiffe://example.org/k8s/uid/"+uid) {
		t.Fatalf("fetching the workload's SVID: %v\n%s", err, fetched)
	}
	joins := auth.widctl("audit", "ls", "--type", "bot.join", "--format", "json").must(t)
	if !strings.Contains(joins.stdout, "wid:wid-agent") || !strings.Contains(joins.stdout, "wid-agent-x7k2p") {
		t.Errorf("the join event lacks the service account and pod:\n%s", joins.stdout)
	}
}
