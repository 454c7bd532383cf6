package postgres

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/wid-project/wid/internal/core/store"
	"github.com/wid-project/wid/internal/core/store/postgres/pgtest"
	"github.com/wid-project/wid/internal/core/store/storetest"
	"github.com/wid-project/wid/internal/testkit"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func open(t *testing.T, dbURL string) *DB {
	t.Helper()
	db, err := Open(t.Context(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Backend {
		return open(t, pgtest.Database(t))
	})
}

func TestMigrationsAreIdempotent(t *testing.T) {
	name, dbURL := pgtest.NamedDatabase(t)
	for range 3 {
		if err := open(t, dbURL).Close(); err != nil {
			t.Fatal(err)
		}
	}
	db := open(t, dbURL)
	defer db.Close()
	var rows, version int
	if err := db.pool.QueryRow(t.Context(), `SELECT COUNT(*), MAX(version) FROM schema_version`).Scan(&rows, &version); err != nil {
		t.Fatal(err)
	}
	if rows != schemaVersion() || version != schemaVersion() {
		t.Fatalf("schema_version of %s has %d rows up to %d, want %d up to %d", name, rows, version, schemaVersion(), schemaVersion())
	}
	seq, hash, err := db.AuditHead(t.Context())
	if err != nil || seq != 0 || hash != "" {
		t.Fatalf("audit head after reopen = %d %q %v, want a single empty head", seq, hash, err)
	}
}

// TestConcurrentOpenMigratesOnce starts several processes' worth of Opens
// on one new database at once: without the advisory lock, their CREATE
// TABLEs collide.
func TestConcurrentOpenMigratesOnce(t *testing.T) {
	dbURL := pgtest.Database(t)
	const n = 6
	var wg sync.WaitGroup
	errs := make(chan error, n)
	start := make(chan struct{})
	for range n {
		wg.Go(func() {
			<-start
			db, err := Open(t.Context(), dbURL)
			if err == nil {
				err = db.Close()
			}
			errs <- err
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	db := open(t, dbURL)
	defer db.Close()
	var rows int
	if err := db.pool.QueryRow(t.Context(), `SELECT COUNT(*) FROM audit_head`).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if rows != 1 {
		t.Fatalf("audit_head has %d rows, want 1", rows)
	}
}

func TestNewerSchemaIsRefused(t *testing.T) {
	dbURL := pgtest.Database(t)
	db := open(t, dbURL)
	future := schemaVersion() + 1
	if _, err := db.pool.Exec(t.Context(), `INSERT INTO schema_version (version) VALUES ($1)`, future); err != nil {
		t.Fatal(err)
	}
	db.Close()
	_, err := Open(t.Context(), dbURL)
	if err == nil {
		t.Fatal("opening a database from a newer wid succeeded")
	}
	for _, want := range []string{"newer", "upgrade wid", fmt.Sprint(future)} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if strings.Contains(err.Error(), pgtest.Shared(t).Password()) {
		t.Errorf("error %q holds the password", err)
	}
}

func TestDataSurvivesReopen(t *testing.T) {
	dbURL := pgtest.Database(t)
	ctx := t.Context()
	db := open(t, dbURL)
	if _, err := db.Apply(ctx, store.Op{Type: store.OpCreate, Item: store.Item{Kind: "role", Name: "r", Data: []byte("d")}}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	db = open(t, dbURL)
	defer db.Close()
	it, err := db.Get(ctx, "role", "r")
	if err != nil || it.Revision != 1 || string(it.Data) != "d" {
		t.Fatalf("after reopen Get = %+v, %v", it, err)
	}
}

func TestAppendAroundTheHeadIsAChainError(t *testing.T) {
	ctx := t.Context()
	db := open(t, pgtest.Database(t))
	defer db.Close()
	// A row written behind the head's back, as with psql.
	if _, err := db.pool.Exec(ctx, `INSERT INTO audit_events (seq, time, type, actor, spiffe_id, outcome, data, prev_hash, hash)
		VALUES (2, '2030-01-01T00:00:00.000000000Z', 't', 'a', '', 'success', '', 'h1', 'h2')`); err != nil {
		t.Fatal(err)
	}
	storetest.AppendAroundTheHead(t, db)
}

// waitForLockWait waits until some session of the database waits for a
// lock, so a test knows its writer is blocked behind another transaction.
func waitForLockWait(t *testing.T, db *DB) {
	t.Helper()
	testkit.Eventually(t, 30*time.Second, func() bool {
		var n int
		if err := db.pool.QueryRow(t.Context(), `SELECT COUNT(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n > 0
	}, "no session waited for a lock")
}

// TestCreateRaceIsAlreadyExists: a create that waits on another
// transaction's uncommitted insert of the same item gets the unique
// violation when that commits, and reports it as ErrAlreadyExists.
func TestCreateRaceIsAlreadyExists(t *testing.T) {
	ctx := t.Context()
	db := open(t, pgtest.Database(t))
	defer db.Close()
	tx, err := db.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `INSERT INTO resources (kind, name, revision, data) VALUES ('role', 'r', 1, 'first')`); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := db.Apply(ctx, store.Op{Type: store.OpCreate, Item: store.Item{Kind: "role", Name: "r", Data: []byte("second")}})
		done <- err
	}()
	waitForLockWait(t, db)
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	err = <-done
	if !errors.Is(err, store.ErrAlreadyExists) || !strings.Contains(err.Error(), "role/r") {
		t.Fatalf("racing create: %v, want ErrAlreadyExists naming role/r", err)
	}
	it, err := db.Get(ctx, "role", "r")
	if err != nil || string(it.Data) != "first" {
		t.Fatalf("Get = %+v, %v; want the first writer's item", it, err)
	}
}

// TestCompareAndSetWaitsForTheOtherWriter: an update expecting revision 1
// that waits on another transaction updating the same item sees, once that
// commits, revision 2, and fails with ErrConflict instead of overwriting.
func TestCompareAndSetWaitsForTheOtherWriter(t *testing.T) {
	ctx := t.Context()
	db := open(t, pgtest.Database(t))
	defer db.Close()
	if _, err := db.Apply(ctx, store.Op{Type: store.OpCreate, Item: store.Item{Kind: "role", Name: "r", Data: []byte("v1")}}); err != nil {
		t.Fatal(err)
	}
	tx, err := db.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `UPDATE resources SET revision = 2, data = 'other' WHERE kind = 'role' AND name = 'r'`); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := db.Apply(ctx, store.Op{Type: store.OpUpdate, Item: store.Item{Kind: "role", Name: "r", Data: []byte("mine")}, ExpectRevision: 1})
		done <- err
	}()
	waitForLockWait(t, db)
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, store.ErrConflict) {
		t.Fatalf("CAS behind another writer: %v, want ErrConflict", err)
	}
	it, err := db.Get(ctx, "role", "r")
	if err != nil || it.Revision != 2 || string(it.Data) != "other" {
		t.Fatalf("Get = %+v, %v; want the other writer's revision 2", it, err)
	}
}

// TestAuditAppendsQueueOnTheHead: an append waits for another
// transaction holding the head, then finds the head moved and fails with
// ErrAuditChain instead of forking the chain.
func TestAuditAppendsQueueOnTheHead(t *testing.T) {
	ctx := t.Context()
	db := open(t, pgtest.Database(t))
	defer db.Close()
	tx, err := db.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `SELECT 1 FROM audit_head WHERE id = 1 FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO audit_events (`+auditColumns+`) VALUES (1, '2030-01-01T00:00:00.000000000Z', 't', 'a', '', 'success', '', '', 'other1')`); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `UPDATE audit_head SET seq = 1, hash = 'other1' WHERE id = 1`); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		done <- db.AppendAudit(ctx, []store.AuditRow{{Seq: 1, Type: "t", Outcome: "success", Hash: "mine1"}})
	}()
	waitForLockWait(t, db)
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, store.ErrAuditChain) {
		t.Fatalf("append behind another writer: %v, want ErrAuditChain", err)
	}
	seq, hash, err := db.AuditHead(ctx)
	if err != nil || seq != 1 || hash != "other1" {
		t.Fatalf("head = %d %q %v; want the other writer's", seq, hash, err)
	}
}

// TestDeadlockedApplyIsRetried: an Apply that deadlocks with another
// transaction is the one PostgreSQL aborts (it waited first, so its
// deadlock check runs first); the store runs it again once the other one
// is through, and it succeeds.
func TestDeadlockedApplyIsRetried(t *testing.T) {
	ctx := t.Context()
	// PostgreSQL breaks a cycle by aborting the waiter whose deadlock
	// check (once, deadlock_timeout after it began to wait) sees it. The
	// Apply checks after 5 s and this test's transaction after a minute,
	// so the Apply is the one aborted even when this test is slow to close
	// the cycle on a loaded machine.
	db := open(t, pgtest.Database(t)+"&deadlock_timeout=5s")
	defer db.Close()
	item := func(name string) store.Item { return store.Item{Kind: "k", Name: name, Data: []byte("x")} }
	if _, err := db.Apply(ctx, store.Op{Type: store.OpCreate, Item: item("a")}, store.Op{Type: store.OpCreate, Item: item("b")}); err != nil {
		t.Fatal(err)
	}
	tx, err := db.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `SET LOCAL deadlock_timeout = '60s'`); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `UPDATE resources SET revision = revision + 1 WHERE kind = 'k' AND name = 'a'`); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		// Locks b, then waits for a.
		_, err := db.Apply(ctx, store.Op{Type: store.OpUpdate, Item: item("b")}, store.Op{Type: store.OpUpdate, Item: item("a")})
		done <- err
	}()
	waitForLockWait(t, db)
	// Waits for b: a cycle, which PostgreSQL breaks by aborting the Apply.
	if _, err := tx.Exec(ctx, `UPDATE resources SET revision = revision + 1 WHERE kind = 'k' AND name = 'b'`); err != nil {
		t.Fatalf("the other transaction was the one aborted: %v", err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Apply after a deadlock: %v", err)
	}
	for _, n := range []string{"a", "b"} {
		if it, err := db.Get(ctx, "k", n); err != nil || it.Revision != 3 {
			t.Fatalf("k/%s = rev %d, %v; want 3 (both writers)", n, it.Revision, err)
		}
	}
}

func TestListSortsByBytes(t *testing.T) {
	ctx := t.Context()
	db := open(t, pgtest.Database(t))
	defer db.Close()
	for _, n := range []string{"b", "B", "a-b", "a_b", "ab", "é"} {
		if _, err := db.Apply(ctx, store.Op{Type: store.OpCreate, Item: store.Item{Kind: "k", Name: n, Data: []byte("x")}}); err != nil {
			t.Fatal(err)
		}
	}
	items, err := db.List(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, it := range items {
		got = append(got, it.Name)
	}
	if want := "B a-b a_b ab b é"; strings.Join(got, " ") != want {
		t.Fatalf("List = %v, want %s", got, want)
	}
}

// TestOpenErrorsNameTheServerNotThePassword: each way of failing to reach
// or log into the server is one sentence that names the server and what
// failed, and never holds the password.
func TestOpenErrorsNameTheServerNotThePassword(t *testing.T) {
	srv := pgtest.Shared(t)
	const secret = "s3cret-Pa55word"
	closedPort := func() string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		return addr
	}()
	// A server that accepts connections and never answers.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() {
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	withPassword := func(host, db, pw string) string {
		u := url.URL{Scheme: "postgres", User: url.UserPassword("postgres", pw), Host: host, Path: "/" + db, RawQuery: "sslmode=disable"}
		return u.String()
	}
	cases := []struct {
		name string
		url  string
		want []string
	}{
		{"refused", withPassword(closedPort, "wid", secret), []string{closedPort, "refused"}},
		{"wrong password", withPassword(srv.Addr(), "postgres", secret), []string{srv.Addr(), "refused the password", `"postgres"`}},
		{"missing database", withPassword(srv.Addr(), "nope", srv.Password()), []string{srv.Addr(), `database "nope" does not exist`}},
		{"silent", withPassword(silent.Addr().String(), "wid", secret) + "&connect_timeout=1", []string{silent.Addr().String(), "did not answer within 1s"}},
		{"bad port", "postgres://postgres:" + secret + "@127.0.0.1:notaport/wid", []string{"invalid"}},
		{"unparsable", "postgres://postgres:" + secret + "@[::1/wid", []string{"invalid"}},
		{"not postgres", "mysql://root:" + secret + "@127.0.0.1/wid", []string{"postgres://"}},
		{"tls refused", "postgres://postgres:" + secret + "@" + srv.Addr() + "/postgres?sslmode=require", []string{srv.Addr(), "TLS"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			db, err := Open(ctx, tc.url)
			if err == nil {
				db.Close()
				t.Fatal("Open succeeded")
			}
			msg := err.Error()
			t.Log(msg)
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not say %q", msg, w)
				}
			}
			for _, secret := range []string{secret, srv.Password()} {
				if strings.Contains(msg, secret) {
					t.Errorf("error %q holds the password", msg)
				}
			}
			if strings.Contains(msg, "\n") {
				t.Errorf("error %q is more than one line", msg)
			}
		})
	}
}

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"postgres://wid:s3cret@db:5432/wid?sslmode=verify-full": "postgres://wid:xxxxx@db:5432/wid?sslmode=verify-full",
		"postgres://wid@db/wid?password=s3cret":                 "postgres://wid@db/wid?password=xxxxx",
		"postgres://db/wid":                                     "postgres://db/wid",
	} {
		if got := RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

// The pool really is a pool: reads do not wait for a write transaction.
func TestReadsDoNotWaitForWriters(t *testing.T) {
	ctx := t.Context()
	db := open(t, pgtest.Database(t))
	defer db.Close()
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO meta (key, value) VALUES ('k', 'v')`); err != nil {
			return err
		}
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if _, err := db.GetMeta(rctx, "k"); !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("read during an open write: %v, want ErrNotFound (uncommitted)", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// openBench opens a database on a server with fsync on, as in production,
// so that the figures compare with the SQLite store's (synchronous=FULL).
func openBench(b *testing.B) store.Backend {
	srv := pgtest.SharedWith(b, pgtest.Options{Durable: true})
	name, dbURL, err := srv.CreateDatabase(b.Context())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { srv.DropDatabase(context.Background(), name) })
	db, err := Open(b.Context(), dbURL)
	if err != nil {
		b.Fatal(err)
	}
	return db
}

func BenchmarkApply(b *testing.B)         { storetest.BenchApply(b, openBench) }
func BenchmarkAppendAudit(b *testing.B)   { storetest.BenchAppendAudit(b, 1, openBench) }
func BenchmarkAppendAudit16(b *testing.B) { storetest.BenchAppendAudit(b, 16, openBench) }

// ListAfter pages a kind in name order, as the auth service's paged
// listing walks it: every item once, none of another kind.
func TestListAfterPages(t *testing.T) {
	db := open(t, pgtest.Database(t))
	ctx := t.Context()
	var ops []store.Op
	for _, name := range []string{"b", "a", "d", "c", "e"} {
		ops = append(ops, store.Op{Type: store.OpCreate, Item: store.Item{Kind: "role", Name: name, Data: []byte("{}")}})
	}
	ops = append(ops, store.Op{Type: store.OpCreate, Item: store.Item{Kind: "bot", Name: "bb", Data: []byte("{}")}})
	if _, err := db.Apply(ctx, ops...); err != nil {
		t.Fatal(err)
	}
	var got []string
	after := ""
	for {
		page, err := db.ListAfter(ctx, "role", after, 2)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		for _, it := range page {
			got = append(got, it.Name)
		}
		after = page[len(page)-1].Name
	}
	if strings.Join(got, ",") != "a,b,c,d,e" {
		t.Fatalf("pages gave %v, want a,b,c,d,e", got)
	}
}

// A database that refuses new connections (ALLOW_CONNECTIONS false, as
// while it is being dropped or restored) answers SQLSTATE 55000 at connect
// time; that is the database being unreachable, not an internal error.
func TestRefusedConnectionIsUnavailable(t *testing.T) {
	srv := pgtest.Shared(t)
	name, dbURL := pgtest.NamedDatabase(t)
	db := open(t, dbURL)
	t.Cleanup(func() { db.Close() })
	ctx := t.Context()
	quoted := pgx.Identifier{name}.Sanitize()
	if err := srv.Exec(ctx, "postgres", "ALTER DATABASE "+quoted+" ALLOW_CONNECTIONS false"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = srv.Exec(context.Background(), "postgres", "ALTER DATABASE "+quoted+" ALLOW_CONNECTIONS true")
	})
	if err := srv.Exec(ctx, "postgres", "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name); err != nil {
		t.Fatal(err)
	}
	// The first attempts may meet the ended connections; later ones
	// must connect anew and be refused.
	for i := range 3 {
		_, err := db.Apply(ctx, store.Op{Type: store.OpCreate, Item: store.Item{Kind: "role", Name: "while-gone", Data: []byte(`{}`)}})
		if !errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("Apply %d with connections refused: %v, want store.ErrUnavailable", i+1, err)
		}
	}
}
