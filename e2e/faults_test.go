package e2e

import (
	"context"
	"database/sql"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/testkit"
)

// corruptStored overwrites one stored document with bytes that do not
// decode, the way a damaged disk or a bad manual edit would leave it. The
// widagent of dataDir must be stopped.
func corruptStored(t *testing.T, dataDir, kind, name string) {
	t.Helper()
	h, err := sql.Open("sqlite", filepath.Join(dataDir, "wid.db")+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	res, err := h.Exec(`UPDATE resources SET data = ? WHERE kind = ? AND name = ?`, []byte("{\"kind\": \"workload_identity\", \x00\xff garbage"), kind, name)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		t.Fatalf("corrupting %s/%s changed %d rows", kind, name, n)
	}
}

// auditCount counts audit events of one type.
func auditCount(t *testing.T, a *agent, typ string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := a.admin().ListAuditEvents(ctx, &authv1.ListAuditEventsRequest{Query: &authv1.AuditQuery{Types: []string{typ}}})
	if err != nil {
		t.Fatal(err)
	}
	return len(resp.Events)
}

// firstConnect waits for the agent's connection to be audited and returns
// how many agent.connect events there are.
func firstConnect(t *testing.T, a *agent) int {
	t.Helper()
	var n int
	testkit.EventuallyEvery(t, 20*time.Second, 50*time.Millisecond, func() bool {
		n = auditCount(t, a, "agent.connect")
		return n > 0
	}, "the agent's connection was never audited")
	return n
}

// Issue 15 item 2: one workload identity whose stored bytes do not decode
// is skipped and named everywhere (agent log and metric, widctl wi ls,
// widctl explain) while the other 19 are served; the agent does not spin.
func TestCorruptIdentityIsSkippedOthersServed(t *testing.T) {
	t.Parallel()
	dir := newDataDir(t)
	a := startAgent(t, dir)
	a.widctl("rm", "workload_identity/dev-uid").must(t)
	for i := range 20 {
		a.widctl("workload-identity", "create", fmt.Sprintf("wi-%02d", i), "--spiffe-id", fmt.Sprintf("/svc/%02d", i), "--rule", "workload.unix.uid="+uid).must(t)
	}
	connects := firstConnect(t, a)
	a.stop()
	corruptStored(t, dir, "workload_identity", "wi-07")

	b := startAgent(t, dir, "--diag-addr", "127.0.0.1:0")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var got []string
	for {
		c, err := workloadapi.FetchX509Context(ctx, workloadapi.WithAddr("unix://"+b.workload))
		if err != nil {
			t.Fatalf("fetch with one corrupt identity among 20: %v\nagent log:\n%s", err, b.out)
		}
		got = got[:0]
		for _, s := range c.SVIDs {
			got = append(got, s.ID.Path())
		}
		if len(got) >= 19 {
			break
		}
	}
	if len(got) != 19 || strings.Contains(strings.Join(got, ","), "/svc/07") {
		t.Fatalf("served %d SVIDs, want the 19 intact ones: %v", len(got), got)
	}

	// Visible: the agent's log and metric, widctl wi ls and explain.
	if !strings.Contains(b.out.String(), "wi-07") {
		t.Fatalf("the agent's log does not name the corrupt identity:\n%s", b.out)
	}
	if n := metricSum(t, b.diag, "wid_agent_workload_identities_skipped"); n != 1 {
		t.Fatalf("wid_agent_workload_identities_skipped = %v, want 1", n)
	}
	r := b.widctl("wi", "ls")
	if r.code != 0 {
		t.Fatalf("widctl wi ls with a corrupt identity: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if strings.Count(r.stdout, "/svc/") != 19 {
		t.Fatalf("widctl wi ls lists %d identities, want 19:\n%s", strings.Count(r.stdout, "/svc/"), r.stdout)
	}
	if !strings.Contains(r.stderr, "workload_identity/wi-07") || !strings.Contains(r.stderr, "widctl rm workload_identity/wi-07") {
		t.Fatalf("widctl wi ls does not name the corrupt identity and what to do:\n%s", r.stderr)
	}
	r = b.widctl("explain", "--bot", "local-agent", "--workload-attrs", "workload.unix.uid="+uid)
	if !strings.Contains(r.stdout+r.stderr, "wi-07") {
		t.Fatalf("widctl explain does not name the corrupt identity:\nexit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	// No reconnect loop: one agent.connect for the one real connection.
	time.Sleep(3 * time.Second) // a span of time is what is measured here
	if n := auditCount(t, b, "agent.connect") - connects; n != 1 {
		t.Fatalf("the restarted agent's connection was audited %d times in 3s; want once", n)
	}
}

// Issue 15 item 2, the role case: with the local-agent role corrupt the
// agent cannot be served (a role that does not decode grants nothing and
// denies nothing, so it fails closed), and says why in its log, retrying
// with backoff instead of spinning; no agent.connect is audited per retry,
// and widctl names the role and what to do.
func TestCorruptAgentRoleBacksOffAndSaysWhy(t *testing.T) {
	t.Parallel()
	dir := newDataDir(t)
	a := startAgent(t, dir)
	connects := firstConnect(t, a)
	a.stop()
	corruptStored(t, dir, "role", "local-agent")

	b := startAgent(t, dir)
	const span = 6 * time.Second
	time.Sleep(span) // the retry rate over a span of time is what is measured
	log := b.out.String()
	if !strings.Contains(log, "role/local-agent is corrupt") {
		t.Fatalf("the log does not say the local-agent role is corrupt:\n%s", log)
	}
	if n := strings.Count(log, "lost the auth service's stream"); n < 1 || n > 6 {
		t.Fatalf("the agent retried %d times in %s; want a backoff of about a second and more (1 to 6 tries):\n%s", n, span, log)
	}
	if n := auditCount(t, b, "agent.connect") - connects; n != 0 {
		t.Fatalf("%d agent.connect events while no connection could be served; want none", n)
	}
	r := b.widctl("get", "role/local-agent")
	if r.code == 0 || !strings.Contains(r.stderr, "role/local-agent is corrupt") || !strings.Contains(r.stderr, "restore") {
		t.Fatalf("widctl get role/local-agent: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = b.widctl("role", "ls")
	if r.code != 0 || !strings.Contains(r.stderr, "role/local-agent is corrupt") {
		t.Fatalf("widctl role ls: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

// Issue 15 item 3: 50,000 workload identities, far past what one gRPC
// message holds, are all served to the agent (a workload matching the last
// one gets its SVID) and all listed by widctl. They are written straight
// into the store while widagent is stopped, which is quicker than 50,000
// creates and is the same data.
func TestFiftyThousandIdentitiesServedAndListed(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 50,000 identities")
	}
	t.Parallel()
	const total = 50_000
	dir := newDataDir(t)
	a := startAgent(t, dir)
	a.widctl("rm", "workload_identity/dev-uid").must(t)
	// The template, as the auth service stores it; only the last identity
	// matches this test's uid.
	a.widctl("workload-identity", "create", "tpl", "--spiffe-id", "/svc/tpl", "--rule", "workload.unix.uid=4000000000", "--description", "one of many").must(t)
	a.stop()

	h, err := sql.Open("sqlite", filepath.Join(dir, "wid.db")+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	var tpl string
	if err := h.QueryRow(`SELECT data FROM resources WHERE kind = 'workload_identity' AND name = 'tpl'`).Scan(&tpl); err != nil {
		t.Fatal(err)
	}
	tx, err := h.Begin()
	if err != nil {
		t.Fatal(err)
	}
	ins, err := tx.Prepare(`INSERT INTO resources (kind, name, revision, data) VALUES ('workload_identity', ?, 1, ?)`)
	if err != nil {
		t.Fatal(err)
	}
	for i := range total - 1 {
		name := fmt.Sprintf("wi-%05d", i)
		doc := strings.Replace(strings.Replace(tpl, `"tpl"`, `"`+name+`"`, 1), "/svc/tpl", "/svc/"+name, 1)
		if i == total-2 {
			doc = strings.Replace(doc, "4000000000", uid, 1)
		}
		if _, err := ins.Exec(name, doc); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	h.Close()

	b := startAgent(t, dir)
	last := fmt.Sprintf("/svc/wi-%05d", total-2)
	// The first state takes a while to build on a loaded machine; a
	// fetch before it answers Unavailable, as go-spiffe clients retry.
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	var s *x509svid.SVID
	for {
		s, err = workloadapi.FetchX509SVID(ctx, workloadapi.WithAddr("unix://"+b.workload))
		if err == nil || ctx.Err() != nil || !strings.Contains(err.Error(), "Unavailable") {
			break
		}
	}
	if err != nil {
		t.Fatalf("fetch among %d identities: %v\nagent log:\n%s", total, err, b.out)
	}
	if s.ID.Path() != last {
		t.Fatalf("served %s, want %s", s.ID, last)
	}

	r := b.widctl("wi", "ls").must(t, "wi", "ls")
	if n := strings.Count(r.stdout, "/svc/"); n != total {
		t.Fatalf("widctl wi ls lists %d identities, want %d\nstderr:\n%s", n, total, r.stderr)
	}
	r = b.widctl("get", "workload_identity", "--format", "json").must(t, "get", "workload_identity")
	if n := strings.Count(r.stdout, `"kind": "workload_identity"`); n != total {
		t.Fatalf("widctl get workload_identity --format json has %d identities, want %d", n, total)
	}
}

// Issue 15 item 4: with the auth service frozen (SIGSTOP) the agent finds
// its stream dead within seconds (readyz and wid_agent_auth_connected say
// so), and a caller holding a short-lived and a long-lived identity still
// gets the long one's valid SVID at once on a new connection after the
// short one expired, instead of waiting on an issuance that cannot end.
// Not parallel: fetch latencies are measured, so it runs alone.
func TestFrozenAuthDetectedAndValidSVIDsServedAtOnce(t *testing.T) {
	auth := startAgent(t, newDataDir(t), "--roles", "auth")
	tok := tokenFrom(t, auth.widctl("bot", "add", "edge", "--roles", "local-agent").must(t))
	auth.widctl("workload-identity", "create", "short", "--spiffe-id", "/svc/short", "--x509-ttl", "6s", "--rule", "workload.unix.uid="+uid).must(t)
	auth.widctl("workload-identity", "create", "long", "--spiffe-id", "/svc/long", "--x509-ttl", "1h", "--rule", "workload.unix.uid="+uid).must(t)
	ag := startAgent(t, newDataDir(t), "--roles", "agent", "--auth", auth.addr, "--join-token", tok, "--ca-pin", auth.pin, "--diag-addr", "127.0.0.1:0")
	addr := workloadapi.WithAddr("unix://" + ag.workload)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var shortExpiry time.Time
	for shortExpiry.IsZero() {
		c, err := workloadapi.FetchX509Context(ctx, addr)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range c.SVIDs {
			if s.ID.Path() == "/svc/short" && len(c.SVIDs) == 2 {
				shortExpiry = s.Certificates[0].NotAfter
			}
		}
	}
	if got := httpGet(t, "http://"+ag.diag+"/readyz"); got != 200 {
		t.Fatalf("readyz before the outage: %d", got)
	}

	if err := auth.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	t.Cleanup(func() { auth.cmd.Process.Signal(syscall.SIGCONT) })
	if !testkit.WithinEvery(10*time.Second, 100*time.Millisecond, func() bool { return httpGet(t, "http://"+ag.diag+"/readyz") != 200 }) {
		t.Fatalf("readyz still 200 %s after the auth service froze\nagent log:\n%s", time.Since(stopped), ag.out)
	}
	t.Logf("readyz false %s after SIGSTOP", time.Since(stopped).Round(time.Millisecond))
	if v := metricSum(t, ag.diag, "wid_agent_auth_connected"); v != 0 {
		t.Fatalf("wid_agent_auth_connected = %v with the auth service frozen", v)
	}
	if !strings.Contains(ag.out.String(), "lost the auth service's stream") {
		t.Fatalf("the agent's log does not say the stream is down:\n%s", ag.out)
	}

	// Past the short SVID's expiry its renewal is in flight against the
	// frozen auth service; each new connection still gets the long one.
	// Waiting on the clock is the point: the short SVID must have expired.
	time.Sleep(time.Until(shortExpiry.Add(500 * time.Millisecond)))
	var took []time.Duration
	for range 8 {
		fctx, fcancel := context.WithTimeout(ctx, 10*time.Second)
		start := time.Now()
		c, err := workloadapi.FetchX509Context(fctx, addr)
		d := time.Since(start)
		fcancel()
		if err != nil {
			t.Fatalf("a new fetch during the outage, after %s: %v\nagent log:\n%s", d, err, ag.out)
		}
		if len(c.SVIDs) != 1 || c.SVIDs[0].ID.Path() != "/svc/long" {
			t.Fatalf("during the outage the fetch served %d SVIDs (%v), want only /svc/long", len(c.SVIDs), c.SVIDs)
		}
		took = append(took, d)
		// Spreading the fetches over the outage: pacing, not waiting.
		time.Sleep(300 * time.Millisecond)
	}
	slices.Sort(took)
	t.Logf("fetch latencies during the outage: %v", took)
	if med := took[len(took)/2]; med > 100*time.Millisecond {
		t.Fatalf("the median fetch took %s during the outage, want under 100ms: %v", med, took)
	}
	if took[len(took)-1] > 2*time.Second {
		t.Fatalf("a fetch took %s during the outage: %v", took[len(took)-1], took)
	}
}

func httpGet(t *testing.T, url string) int {
	t.Helper()
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
