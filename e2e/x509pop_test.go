package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wid-project/wid/internal/core/x509pop"
	"github.com/wid-project/wid/internal/core/x509pop/x509poptest"
)

// TestX509PopJoin: with the real binaries, widctl makes an x509pop join
// token from a CA file, an agent joins with a certificate that CA issued
// and serves its workload, and the join's audit event and host carry the
// certificate's fingerprint and subject. A certificate from another CA, an
// expired one, one off the allow list and a key that is not the
// certificate's each stop the agent with one sentence, and the refusals
// reaching the auth service are audited.
func TestX509PopJoin(t *testing.T) {
	t.Parallel()
	authDir := newDataDir(t)
	auth := startAgent(t, authDir, "--roles", "auth")
	auth.widctl("bot", "add", "node-agent", "--roles", "local-agent").must(t)
	ca := x509poptest.NewCA(t, "Example Machines CA")
	caFile := filepath.Join(authDir, "machines-ca.pem")
	if err := os.WriteFile(caFile, ca.PEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	out := auth.widctl("token", "create", "--method", "x509pop", "--name", "nodes", "--bot", "node-agent", "--ca-bundle", caFile, "--allow", "cn=node-1").must(t)
	if !strings.Contains(out.stdout, "--join-method x509pop --join-token nodes") {
		t.Fatalf("token create printed:\n%s", out.stdout)
	}
	if r := auth.widctl("token", "create", "--method", "x509pop", "--name", "bad", "--bot", "node-agent", "--ca-bundle", caFile, "--allow", "ou=x"); r.code == 0 || !strings.Contains(r.stderr, `"ou=x" is not cn=VALUE or san=VALUE`) {
		t.Fatalf("--allow ou=x: exit %d\n%s", r.code, r.stderr)
	}
	auth.widctl("workload-identity", "create", "node", "--spiffe-id", "/pop/uid/{{ workload.unix.uid }}", "--rule", "workload.unix.uid="+uid).must(t)

	agentDir := newDataDir(t)
	now := time.Now()
	run := func(m *x509poptest.Machine, keyOf *x509poptest.Machine) (string, error) {
		certFile, _ := m.Write(t, agentDir, "machine")
		_, keyFile := keyOf.Write(t, agentDir, "machine-key")
		args := []string{"start", "--roles", "agent", "--data-dir", agentDir, "--workload-socket", filepath.Join(agentDir, "workload.sock"),
			"--auth", auth.addr, "--ca-pin", auth.pin, "--join-method", "x509pop", "--join-token", "nodes", "--cert", certFile, "--key", keyFile}
		b, err := exec.Command(filepath.Join(binDir, "widagent"), args...).CombinedOutput()
		return string(b), err
	}
	stranger := x509poptest.NewCA(t, "Someone Else CA").Issue(t, "node-1", nil, now.Add(-time.Minute), now.Add(time.Hour))
	expired := ca.Issue(t, "node-1", nil, now.Add(-2*time.Hour), now.Add(-time.Hour))
	offList := ca.Issue(t, "node-9", nil, now.Add(-time.Minute), now.Add(time.Hour))
	good := ca.Issue(t, "node-1", nil, now.Add(-time.Minute), now.Add(time.Hour))
	for _, c := range []struct {
		name    string
		m, key  *x509poptest.Machine
		want    string
		audited string
	}{
		{"another CA", stranger, stranger, "the x509pop join was refused: the certificate does not chain to the join token's CA bundle", `"check":"chain"`},
		{"expired", expired, expired, "the x509pop join was refused: the certificate expired at", `"check":"expired"`},
		{"off the allow list", offList, offList, "is not on the join token's allow list", `"check":"allow"`},
		{"key of another certificate", good, offList, "the key in " + filepath.Join(agentDir, "machine-key.key") + " does not match the certificate", ""},
	} {
		out, err := run(c.m, c.key)
		if err == nil || !strings.Contains(out, c.want) {
			t.Fatalf("%s: agent %v\n%s", c.name, err, out)
		}
		if c.audited != "" {
			denied := auth.widctl("audit", "ls", "--type", "bot.join.denied", "--format", "json").must(t).stdout
			if !strings.Contains(strings.ReplaceAll(denied, `": "`, `":"`), c.audited) || !strings.Contains(denied, x509pop.Fingerprint(c.m.Cert)) {
				t.Fatalf("%s: the refusal is not audited with %s and the fingerprint:\n%s", c.name, c.audited, denied)
			}
		}
	}
	if _, err := os.Stat(filepath.Join(agentDir, "agent")); err == nil {
		entries, _ := os.ReadDir(filepath.Join(agentDir, "agent"))
		if len(entries) > 0 {
			t.Fatalf("a refused join left an identity in %s", agentDir)
		}
	}

	certFile, keyFile := good.Write(t, agentDir, "node-1")
	ag := startAgent(t, agentDir, "--roles", "agent", "--auth", auth.addr, "--ca-pin", auth.pin,
		"--join-method", "x509pop", "--join-token", "nodes", "--cert", certFile, "--key", keyFile)
	fetched, err := exec.Command(filepath.Join(binDir, "widagent"), "api", "fetch", "x509", "--socket", ag.workload).CombinedOutput()
	if err != nil || !strings.Contains(string(fetched), "spiffe://"+auth.td+"/pop/uid/"+uid) {
		t.Fatalf("fetching the workload's SVID: %v\n%s", err, fetched)
	}
	fp := x509pop.Fingerprint(good.Cert)
	joins := auth.widctl("audit", "ls", "--type", "bot.join", "--format", "json").must(t).stdout
	if !strings.Contains(joins, fp) || !strings.Contains(joins, "CN=node-1,O=Example") || !strings.Contains(joins, "x509pop/"+fp) {
		t.Fatalf("the join event lacks the fingerprint, subject or host:\n%s", joins)
	}
}
