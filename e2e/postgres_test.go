package e2e

import (
	"context"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/wid-project/wid/internal/core/store/postgres/pgtest"
)

// TestStartOnPostgres: widagent start --store postgres://... creates the
// trust domain in the database (and nothing in a SQLite file), serves an
// SVID, audits in the database, and a restart on the same store loads the
// same trust domain.
func TestStartOnPostgres(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.Database(t)
	dir := newDataDir(t)
	a := startAgent(t, dir, "--store", dbURL, "--trust-domain", "pg.example")
	if a.td != "pg.example" {
		t.Fatalf("trust domain %q", a.td)
	}
	fetch := func(a *agent) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		svid, err := workloadapi.FetchX509SVID(ctx, workloadapi.WithAddr("unix://"+a.workload))
		if err != nil {
			t.Fatalf("fetch: %v\n%s", err, a.out)
		}
		if want := "spiffe://pg.example/uid/" + uid; svid.ID.String() != want {
			t.Fatalf("SVID is %s, want %s", svid.ID, want)
		}
	}
	fetch(a)
	if _, err := os.Stat(filepath.Join(dir, "wid.db")); !os.IsNotExist(err) {
		t.Fatalf("a SQLite store appeared in the data dir: %v", err)
	}
	if strings.Contains(a.out.String(), pgtest.Shared(t).Password()) {
		t.Fatalf("widagent logged the store's password:\n%s", a.out)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var td string
	var events int
	if err := conn.QueryRow(ctx, `SELECT value FROM meta WHERE key = 'trust_domain'`).Scan(&td); err != nil || td != "pg.example" {
		t.Fatalf("trust domain in PostgreSQL = %q, %v", td, err)
	}
	if err := conn.QueryRow(ctx, `SELECT COUNT(*) FROM audit_events WHERE type = 'svid.x509.issued'`).Scan(&events); err != nil || events == 0 {
		t.Fatalf("%d issuance events in PostgreSQL, %v; want some", events, err)
	}
	a.widctl("audit", "verify").must(t)

	// The keys stay in the data dir; the trust domain comes from the store.
	a.stop()
	b := startAgent(t, dir, "--store", dbURL)
	if b.td != "pg.example" || b.pin != a.pin {
		t.Fatalf("restart on the same store: trust domain %q pin %s, want pg.example %s", b.td, b.pin, a.pin)
	}
	fetch(b)
	b.widctl("audit", "verify").must(t)
}

// TestStartWithBadStoreFails: an unreachable server, a wrong password and a
// URL that is not a store each end widagent start with a non-zero exit and
// one sentence naming the server and what failed, without the password.
func TestStartWithBadStoreFails(t *testing.T) {
	t.Parallel()
	srv := pgtest.Shared(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()
	const secret = "hunter2-not-it"
	pgURL := func(host, db string) string {
		u := url.URL{Scheme: "postgres", User: url.UserPassword("postgres", secret), Host: host, Path: "/" + db, RawQuery: "sslmode=disable"}
		return u.String()
	}
	for _, c := range []struct {
		name, store, want string
		code              int
	}{
		{"unreachable", pgURL(closed, "wid"), "error: cannot use the PostgreSQL store at " + closed + ": the connection was refused", 1},
		{"wrong password", pgURL(srv.Addr(), "postgres"), "error: cannot use the PostgreSQL store at " + srv.Addr() + `: the server refused the password of user "postgres"`, 1},
		{"unknown scheme", "mysql://root:" + secret + "@db/wid", `error: --store scheme "mysql" is unknown`, 2},
		{"no such database", strings.Replace(pgURL(srv.Addr(), "nosuchdb"), secret, url.QueryEscape(srv.Password()), 1), "error: cannot use the PostgreSQL store at " + srv.Addr() + `: database "nosuchdb" does not exist there`, 1},
		// Whether the resolver says "no such host" or fails, the sentence names the host.
		{"unknown host", pgURL("nosuchhost.invalid:5432", "wid"), "error: cannot use the PostgreSQL store at nosuchhost.invalid:5432: ", 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			dir := newDataDir(t)
			cmd := exec.CommandContext(ctx, filepath.Join(binDir, "widagent"), "start", "--data-dir", dir,
				"--auth-listen", "127.0.0.1:0", "--workload-socket", filepath.Join(dir, "workload.sock"), "--store", c.store)
			var stdout, stderr strings.Builder
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			ee, ok := err.(*exec.ExitError)
			if !ok || ee.ExitCode() != c.code {
				t.Fatalf("widagent start: %v, want exit %d\nstderr:\n%s", err, c.code, stderr.String())
			}
			var errLines []string
			for _, l := range strings.Split(strings.TrimSpace(stderr.String()), "\n") {
				if strings.HasPrefix(l, "error:") {
					errLines = append(errLines, l)
				}
			}
			if len(errLines) != 1 || !strings.HasPrefix(errLines[0], c.want) {
				t.Fatalf("error lines %q, want one starting %q\nstderr:\n%s", errLines, c.want, stderr.String())
			}
			if c.name == "unknown host" && !strings.Contains(errLines[0], "host name nosuchhost.invalid") {
				t.Fatalf("the error does not say the host name failed: %s", errLines[0])
			}
			if out := stdout.String() + stderr.String(); strings.Contains(out, secret) || strings.Contains(out, srv.Password()) {
				t.Fatalf("the password is in the output:\n%s", out)
			}
		})
	}
}
