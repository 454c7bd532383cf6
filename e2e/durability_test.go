package e2e

import (
	"context"
	"database/sql"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/client"
	"github.com/wid-project/wid/internal/testkit"
	_ "modernc.org/sqlite"
)

// Done-when 5: kill -9 while 16 clients issue; every SVID a client got is audited.
func TestKill9WhileIssuing(t *testing.T) {
	dir := newDataDir(t)
	a := startAgent(t, dir)
	var (
		mu       sync.Mutex
		received = map[string]bool{}
	)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	wg := startLoad(ctx, t, a, 16, func(ctx context.Context, c *client.Client) error {
		key, _ := client.NewKey()
		csr, _ := client.NewCSR(key)
		resp, err := c.SignX509SVID(ctx, &authv1.SignX509SVIDRequest{SpiffeId: "/svc/load", Csr: csr})
		if err != nil {
			return err // the auth service is gone
		}
		mu.Lock()
		received[resp.Serial] = true
		mu.Unlock()
		return nil
	})
	// Let issuance run at full speed before the kill: at least 100 SVIDs
	// and half a second, however busy the machine is.
	testkit.Within(10*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(received) >= 100
	})
	// The half second of load is the point: the kill must land mid-stream.
	time.Sleep(500 * time.Millisecond)
	a.kill()
	wg.Wait()
	cancel()
	if len(received) < 100 {
		t.Fatalf("only %d SVIDs issued before the kill; the test needs load", len(received))
	}

	b := startAgent(t, dir)
	evs, err := b.admin().ListAuditEvents(context.Background(), &authv1.ListAuditEventsRequest{Query: &authv1.AuditQuery{Types: []string{"svid.x509.issued"}}})
	if err != nil {
		t.Fatal(err)
	}
	audited := map[string]bool{}
	for _, e := range evs.Events {
		audited[e.Serial] = true
	}
	missing := 0
	for s := range received {
		if !audited[s] {
			missing++
		}
	}
	if missing > 0 {
		t.Fatalf("%d of %d SVIDs received by clients have no audit event", missing, len(received))
	}
	r := b.widctl("audit", "verify")
	if r.code != 0 {
		t.Fatalf("audit verify after kill -9: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	t.Logf("%d SVIDs received, %d issuance events audited", len(received), len(audited))
}

// sqlExec runs SQL on the store the way an operator would, with the sqlite3
// CLI when the machine has it, else through the same SQLite engine.
func sqlExec(t *testing.T, db, stmt string) {
	t.Helper()
	if path, err := exec.LookPath("sqlite3"); err == nil {
		out, err := exec.Command(path, db, stmt).CombinedOutput()
		if err != nil {
			t.Fatalf("sqlite3 %q: %v\n%s", stmt, err, out)
		}
		return
	}
	t.Logf("no sqlite3 CLI here; running %q through modernc.org/sqlite", stmt)
	h, err := sql.Open("sqlite", db+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if _, err := h.Exec(stmt); err != nil {
		t.Fatalf("%q: %v", stmt, err)
	}
}

// Done-when 6: audit verify names an edited event and a deleted one.
func TestAuditVerifyFindsTampering(t *testing.T) {
	a := startAgent(t, newDataDir(t))
	for _, n := range []string{"a", "b", "c", "d", "e", "f"} {
		a.widctl("role", "create", "r-"+n, "--spiffe-path", "/svc/"+n).must(t)
	}
	a.widctl("audit", "verify").must(t)
	db := filepath.Join(a.dataDir, "wid.db")

	sqlExec(t, db, "UPDATE audit_events SET actor='mallory' WHERE seq=4")
	r := a.widctl("audit", "verify")
	if r.code == 0 {
		t.Fatalf("audit verify passed after an edit:\n%s", r.stdout)
	}
	out := r.stdout + r.stderr
	if !strings.Contains(out, "4") || !strings.Contains(out, "edited") {
		t.Fatalf("audit verify does not name edited event 4:\n%s", out)
	}

	sqlExec(t, db, "UPDATE audit_events SET actor=(SELECT json_extract(data,'$.actor') FROM audit_events WHERE seq=4) WHERE seq=4")
	a.widctl("audit", "verify").must(t)

	sqlExec(t, db, "DELETE FROM audit_events WHERE seq=6")
	r = a.widctl("audit", "verify")
	out = r.stdout + r.stderr
	if r.code == 0 || !strings.Contains(out, "gap") || !strings.Contains(out, "6") {
		t.Fatalf("audit verify does not name the gap at 6: exit %d\n%s", r.code, out)
	}
}

// startLoad makes a bot that may issue /svc/* on a and runs workers
// clients of it, each calling call until ctx ends or call fails. It
// returns once every worker has had one call succeed, with the group to
// wait on for them all to stop.
func startLoad(ctx context.Context, t *testing.T, a *agent, workers int, call func(context.Context, *client.Client) error) *sync.WaitGroup {
	t.Helper()
	a.widctl("role", "create", "svc", "--spiffe-path", "/svc/*").must(t)
	token := tokenFrom(t, a.widctl("bot", "add", "load", "--roles", "svc").must(t))
	id, err := joinBot(t, a, token)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	started := make(chan struct{}, workers)
	for range workers {
		c, err := client.Dial(client.Config{Auth: a.addr, Identity: id})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		wg.Go(func() {
			for first := true; ctx.Err() == nil; first = false {
				if call(ctx, c) != nil {
					return
				}
				if first {
					started <- struct{}{}
				}
			}
		})
	}
	for range workers {
		<-started
	}
	return &wg
}
