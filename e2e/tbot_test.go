package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"github.com/wid-project/wid/internal/testkit"
)

// TestTbotConfig: widagent start -c takes a config file in tbot's shape
// (version: v2, onboarding, two spiffe-workload-api services), joins with
// its token, and serves each service's svids on that service's own socket
// to a go-spiffe client; a field wid does not support stops the agent
// with its name, before the token is spent.
func TestTbotConfig(t *testing.T) {
	t.Parallel()
	auth := startAgent(t, newDataDir(t), "--roles", "auth")
	tok := tokenFrom(t, auth.widctl("bot", "add", "tbot-like", "--roles", "local-agent").must(t))
	dir := newDataDir(t)
	main, other := filepath.Join(dir, "main.sock"), filepath.Join(dir, "other.sock")
	cfg := func(extra string) string {
		return fmt.Sprintf(`version: v2
auth_server: %s
onboarding:
  join_method: token
  token: %s
  ca_pins: [%q]
storage:
  type: directory
  path: %s
services:
  - type: spiffe-workload-api
    listen: unix://%s
    svids:
      - path: /svc/foo
        hint: foo
        rules:
          - unix: {uid: %s}
  - type: spiffe-workload-api
    listen: unix://%s
    svids:
      - path: /svc/bar
        hint: bar
        rules:
          - unix: {uid: %s}
%s`, auth.addr, tok, auth.pin, dir, main, uid, other, uid, extra)
	}
	file := filepath.Join(dir, "tbot.yaml")
	if err := os.WriteFile(file, []byte(cfg("        sans: {ip: [10.0.0.1]}\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(filepath.Join(binDir, "widagent"), "start", "--config", file).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "services[2].svids[1].sans.ip: wid's agent config SVIDs take DNS SANs only") {
		t.Fatalf("a tbot config with sans.ip: %v\n%s", err, out)
	}
	if err := os.WriteFile(file, []byte(cfg("")), 0o600); err != nil {
		t.Fatal(err)
	}
	// The token was not spent by the refused start: this one joins with it.
	startAgent(t, dir, "--config", file, "--roles", "agent", "--workload-socket", main)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for sock, want := range map[string]string{main: "/svc/foo", other: "/svc/bar"} {
		var ids []string
		var err error
		// The 20s of ctx cover both sockets.
		deadline, _ := ctx.Deadline()
		if !testkit.WithinEvery(time.Until(deadline), 50*time.Millisecond, func() bool {
			var svids []*x509svid.SVID
			svids, err = workloadapi.FetchX509SVIDs(ctx, workloadapi.WithAddr("unix://"+sock))
			if err != nil {
				return false
			}
			ids = ids[:0]
			for _, s := range svids {
				ids = append(ids, s.ID.Path())
			}
			return slices.Contains(ids, want)
		}) {
			t.Fatalf("socket %s never served %s: %v %v", sock, want, ids, err)
		}
		for _, other := range []string{"/svc/foo", "/svc/bar"} {
			if other != want && slices.Contains(ids, other) {
				t.Fatalf("socket %s serves %s, another service's SVID: %v", sock, other, ids)
			}
		}
		src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr("unix://"+sock)))
		if err != nil {
			t.Fatal(err)
		}
		sv, err := src.GetX509SVID()
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := x509svid.Verify(sv.Certificates, src); err != nil {
			t.Fatalf("the SVID of %s does not verify against its bundle: %v", sock, err)
		}
		src.Close()
	}
}
