package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/wid-project/wid/internal/core/store"
	"github.com/wid-project/wid/internal/core/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Backend {
		db, err := Open(t.Context(), filepath.Join(t.TempDir(), "wid.db"))
		if err != nil {
			t.Fatal(err)
		}
		return db
	})
}

func TestOpenCreatesPrivateFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data", "nested")
	path := filepath.Join(dir, "wid.db")
	db, err := Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// A write makes sure the WAL exists.
	if err := db.PutMetaOnce(t.Context(), "k", "v"); err != nil {
		t.Fatal(err)
	}

	st, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.Mode().Perm(); got != 0o700 {
		t.Errorf("directory mode = %o, want 700", got)
	}
	for _, name := range []string{path, path + "-wal", path + "-shm"} {
		st, err := os.Stat(name)
		if err != nil {
			t.Fatalf("stat %s: %v", name, err)
		}
		if got := st.Mode().Perm(); got != 0o600 {
			t.Errorf("%s mode = %o, want 600", filepath.Base(name), got)
		}
	}
}

func TestOpenTightensExistingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "wid.db")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	db, err := Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.Mode().Perm(); got != 0o600 {
		t.Errorf("mode = %o, want 600", got)
	}
}

func TestPragmas(t *testing.T) {
	db, err := Open(t.Context(), filepath.Join(t.TempDir(), "wid.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	want := map[string]string{
		"journal_mode": "wal",
		"busy_timeout": "5000",
		"synchronous":  "2", // FULL
		"foreign_keys": "1",
	}
	for _, pool := range []struct {
		name string
		db   *sql.DB
	}{{"writer", db.writer}, {"reader", db.reader}} {
		for pragma, v := range want {
			var got string
			if err := pool.db.QueryRowContext(t.Context(), "PRAGMA "+pragma).Scan(&got); err != nil {
				t.Fatal(err)
			}
			if got != v {
				t.Errorf("%s: PRAGMA %s = %s, want %s", pool.name, pragma, got, v)
			}
		}
	}
	// Reads must not be able to write behind the writer's back.
	if _, err := db.reader.ExecContext(t.Context(), `INSERT INTO meta (key, value) VALUES ('x', 'y')`); err == nil {
		t.Error("reader pool accepted a write")
	}
}

func TestMigrationsAreIdempotent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "wid.db")
	for range 3 {
		db, err := Open(t.Context(), path)
		if err != nil {
			t.Fatal(err)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
	}
	db, err := Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var rows, version int
	if err := db.reader.QueryRowContext(t.Context(), `SELECT COUNT(*), MAX(version) FROM schema_version`).Scan(&rows, &version); err != nil {
		t.Fatal(err)
	}
	if rows != schemaVersion() || version != schemaVersion() {
		t.Fatalf("schema_version has %d rows up to %d, want %d up to %d", rows, version, schemaVersion(), schemaVersion())
	}
	seq, hash, err := db.AuditHead(t.Context())
	if err != nil || seq != 0 || hash != "" {
		t.Fatalf("audit head after reopen = %d %q %v, want a single empty head", seq, hash, err)
	}
}

func TestConcurrentOpenOfNewFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "wid.db")
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			db, err := Open(t.Context(), path)
			if err == nil {
				err = db.Close()
			}
			errs <- err
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

func TestNewerSchemaIsRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "wid.db")
	db, err := Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	future := schemaVersion() + 1
	if _, err := db.writer.ExecContext(t.Context(), `INSERT INTO schema_version (version, applied_at) VALUES (?, 'later')`, future); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	_, err = Open(t.Context(), path)
	if err == nil {
		t.Fatal("opening a database from a newer wid succeeded")
	}
	for _, want := range []string{"newer", "upgrade wid"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

func TestDataSurvivesReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "wid.db")
	ctx := t.Context()
	db, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Apply(ctx, store.Op{Type: store.OpCreate, Item: store.Item{Kind: "role", Name: "r", Data: []byte("d")}}); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db, err = Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	it, err := db.Get(ctx, "role", "r")
	if err != nil || it.Revision != 1 || string(it.Data) != "d" {
		t.Fatalf("after reopen Get = %+v, %v", it, err)
	}
}

func TestOpenFailsOnCanceledContext(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	path := filepath.Join(t.TempDir(), "wid.db")
	if _, err := Open(ctx, path); err == nil {
		t.Fatal("Open with a canceled context succeeded")
	}
}

func TestOpenReportsUnusablePath(t *testing.T) {
	dir := t.TempDir()
	blocker := filepath.Join(dir, "file")
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Open(t.Context(), filepath.Join(blocker, "wid.db"))
	if err == nil {
		t.Fatal("Open under a regular file succeeded")
	}
	if !strings.Contains(err.Error(), "creating database directory") {
		t.Fatalf("error %q does not say what failed", err)
	}
}

func TestAppendAroundTheHeadIsAChainError(t *testing.T) {
	ctx := t.Context()
	db, err := Open(ctx, filepath.Join(t.TempDir(), "wid.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// A row written behind the head's back, as with the sqlite3 shell.
	if _, err := db.writer.ExecContext(ctx, `INSERT INTO audit_events (seq, time, type, actor, spiffe_id, outcome, data, prev_hash, hash)
		VALUES (2, '2030-01-01T00:00:00.000000000Z', 't', 'a', '', 'success', X'', 'h1', 'h2')`); err != nil {
		t.Fatal(err)
	}
	storetest.AppendAroundTheHead(t, db)
}

// TestWriteTransactionsTakeTheLockAtBegin checks BEGIN IMMEDIATE: a write
// transaction holds SQLite's write lock from its start, so it can never
// fail half-way with SQLITE_BUSY when it first writes.
func TestWriteTransactionsTakeTheLockAtBegin(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "wid.db")
	db, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()

	other, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(0)")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	other.SetMaxOpenConns(1)

	tx, err := db.writer.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Nothing written yet, and still the other connection cannot write.
	if _, err := other.ExecContext(ctx, `INSERT INTO meta (key, value) VALUES ('k', 'v')`); err == nil {
		t.Fatal("another connection wrote while a write transaction was open: BEGIN was not IMMEDIATE")
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	if _, err := other.ExecContext(ctx, `INSERT INTO meta (key, value) VALUES ('k', 'v')`); err != nil {
		t.Fatalf("write after the transaction ended: %v", err)
	}
}

// A full disk reaches callers as store.ErrNoSpace, so the auth service can
// say "disk full" instead of passing on SQLite's error. SQLite reports a
// database at its max_page_count exactly as it reports ENOSPC (SQLITE_FULL).
func TestWriteOnAFullDiskIsErrNoSpace(t *testing.T) {
	db, err := Open(t.Context(), filepath.Join(t.TempDir(), "wid.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var pages int
	if err := db.writer.QueryRowContext(t.Context(), "PRAGMA page_count").Scan(&pages); err != nil {
		t.Fatal(err)
	}
	if _, err := db.writer.ExecContext(t.Context(), "PRAGMA max_page_count = "+strconv.Itoa(pages)); err != nil {
		t.Fatal(err)
	}
	big := make([]byte, 64<<10)
	row := store.AuditRow{Seq: 1, Type: "t", Actor: "a", Outcome: "success", Data: big, Hash: "h"}
	err = db.AppendAudit(t.Context(), []store.AuditRow{row})
	if !errors.Is(err, store.ErrNoSpace) {
		t.Fatalf("append on a full database: %v, want store.ErrNoSpace", err)
	}
	_, err = db.Apply(t.Context(), store.Op{Type: store.OpCreate, Item: store.Item{Kind: "k", Name: "n", Data: big}})
	if !errors.Is(err, store.ErrNoSpace) {
		t.Fatalf("apply on a full database: %v, want store.ErrNoSpace", err)
	}
}

func openBench(b *testing.B) store.Backend {
	db, err := Open(b.Context(), filepath.Join(b.TempDir(), "wid.db"))
	if err != nil {
		b.Fatal(err)
	}
	return db
}

func BenchmarkApply(b *testing.B)         { storetest.BenchApply(b, openBench) }
func BenchmarkAppendAudit(b *testing.B)   { storetest.BenchAppendAudit(b, 1, openBench) }
func BenchmarkAppendAudit16(b *testing.B) { storetest.BenchAppendAudit(b, 16, openBench) }
