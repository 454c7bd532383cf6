// Package sqlite is wid's default store.Backend: one SQLite file (WAL mode,
// modernc.org/sqlite, no cgo) holding resources, metadata and the audit log.
//
// All writes go through a single connection and start with BEGIN IMMEDIATE,
// so writers inside one process queue in Go instead of racing for SQLite's
// lock and never see SQLITE_BUSY; reads use a separate pool and, thanks to
// WAL, never wait for the writer. It must never hold secrets in plain text:
// callers encrypt what needs encrypting before it gets here.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"time"

	sqlitedriver "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/wid-project/wid/internal/core/store"
)

// busyTimeout bounds how long a connection waits for a lock held by another
// process (an operator's sqlite3 shell, a second widagent by mistake).
const busyTimeout = 5 * time.Second

// timeLayout is the SQL stores' audit time layout, used here for every
// time kept as text: readable in the sqlite3 shell, parseable as
// time.RFC3339Nano, and ordered as text the way it is as time, so range
// filters on the time index compare correctly as strings.
const timeLayout = store.AuditTimeLayout

// DB is a store.Backend on one SQLite file.
type DB struct {
	path string
	// writer has exactly one connection: SQLite allows one writer at a time
	// and queueing here is cheaper and fairer than busy-waiting in SQLite.
	writer *sql.DB
	// reader serves Get, List and audit reads concurrently with the writer.
	reader *sql.DB
	// The audit append runs for every issuance: its statements are parsed
	// once, on the one writer connection, instead of on every commit.
	auditInsert, auditHeadGet, auditHeadSet *sql.Stmt
	// changes wakes the change log's followers after each Apply: one
	// process owns the file, so its own writes are all there is to hear.
	changes store.ChangeSignal
}

var _ store.Backend = (*DB)(nil)

// Open opens (creating if needed) the database at path, applies pending
// schema migrations and returns it ready for use. The parent directory is
// created 0700 and the database files are made 0600: they hold the trust
// domain's CA material.
func Open(ctx context.Context, path string) (*DB, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("resolving database path %s: %w", path, err)
	}
	if err := os.MkdirAll(filepath.Dir(abs), 0o700); err != nil {
		return nil, fmt.Errorf("creating database directory: %w", err)
	}
	// Create the file ourselves so it never exists, even briefly, with the
	// permissions SQLite would pick from the umask.
	f, err := os.OpenFile(abs, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("creating database file: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("creating database file: %w", err)
	}
	if err := os.Chmod(abs, 0o600); err != nil {
		return nil, fmt.Errorf("restricting database file permissions: %w", err)
	}

	writer, err := sql.Open("sqlite", dsn(abs, false))
	if err != nil {
		return nil, fmt.Errorf("opening database %s: %w", abs, err)
	}
	writer.SetMaxOpenConns(1)
	writer.SetMaxIdleConns(1)
	writer.SetConnMaxLifetime(0)
	writer.SetConnMaxIdleTime(0)

	db := &DB{path: abs, writer: writer}
	// Switching a new file to WAL takes an exclusive lock for which SQLite
	// does not run the busy handler, so two processes opening the same new
	// file at once see SQLITE_BUSY at once: retry that, within busyTimeout.
	for deadline := time.Now().Add(busyTimeout); ; {
		err := db.init(ctx)
		if err == nil {
			break
		}
		if !isBusy(err) || time.Now().After(deadline) {
			_ = writer.Close()
			return nil, err
		}
		select {
		case <-ctx.Done():
			_ = writer.Close()
			return nil, fmt.Errorf("opening database %s: %w", abs, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}

	reader, err := sql.Open("sqlite", dsn(abs, true))
	if err != nil {
		_ = writer.Close()
		return nil, fmt.Errorf("opening database %s for reading: %w", abs, err)
	}
	n := max(4, runtime.GOMAXPROCS(0))
	reader.SetMaxOpenConns(n)
	reader.SetMaxIdleConns(n)
	db.reader = reader
	if err := reader.PingContext(ctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("opening database %s for reading: %w", abs, err)
	}
	if err := db.prepareAudit(ctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("opening database %s: %w", abs, err)
	}
	return db, nil
}

func (db *DB) prepareAudit(ctx context.Context) error {
	var err error
	if db.auditInsert, err = db.writer.PrepareContext(ctx, `INSERT INTO audit_events (`+auditColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`); err != nil {
		return fmt.Errorf("preparing audit insert: %w", err)
	}
	if db.auditHeadGet, err = db.writer.PrepareContext(ctx, `SELECT seq, hash FROM audit_head WHERE id = 1`); err != nil {
		return fmt.Errorf("preparing audit head read: %w", err)
	}
	if db.auditHeadSet, err = db.writer.PrepareContext(ctx, `UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1`); err != nil {
		return fmt.Errorf("preparing audit head update: %w", err)
	}
	return nil
}

// dsn builds the driver's connection string. The file: URI form is used so
// that any character in the path is escaped rather than taken as syntax.
func dsn(path string, readOnly bool) string {
	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", busyTimeout.Milliseconds()))
	q.Add("_pragma", "foreign_keys(1)")
	q.Add("_pragma", "synchronous(FULL)")
	if readOnly {
		q.Add("_pragma", "query_only(1)")
	} else {
		q.Add("_pragma", "journal_mode(WAL)")
		q.Set("_txlock", "immediate")
	}
	u := url.URL{Scheme: "file", Path: path, RawQuery: q.Encode()}
	return u.String()
}

func (db *DB) init(ctx context.Context) error {
	var mode string
	if err := db.writer.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return fmt.Errorf("opening database %s: %w", db.path, err)
	}
	if mode != "wal" {
		return fmt.Errorf("opening database %s: journal mode is %q, want wal", db.path, mode)
	}
	if err := migrate(ctx, db.writer); err != nil {
		return fmt.Errorf("migrating database %s: %w", db.path, err)
	}
	// The -wal and -shm files now exist; SQLite gives them the database
	// file's mode, but tighten them too in case they predate this run.
	for _, suffix := range []string{"-wal", "-shm"} {
		if err := os.Chmod(db.path+suffix, 0o600); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("restricting database file permissions: %w", err)
		}
	}
	return nil
}

// Path is the database file's absolute path.
func (db *DB) Path() string { return db.path }

// Close closes both connection pools. The last connection to close
// checkpoints the WAL into the main file.
func (db *DB) Close() error {
	var errs []error
	for _, st := range []*sql.Stmt{db.auditInsert, db.auditHeadGet, db.auditHeadSet} {
		if st != nil {
			_ = st.Close()
		}
	}
	if db.reader != nil {
		if err := db.reader.Close(); err != nil {
			errs = append(errs, fmt.Errorf("closing database readers: %w", err))
		}
	}
	if err := db.writer.Close(); err != nil {
		errs = append(errs, fmt.Errorf("closing database writer: %w", err))
	}
	return errors.Join(errs...)
}

// writeTx runs fn in one BEGIN IMMEDIATE transaction on the writer
// connection, committing if fn returns nil.
func (db *DB) writeTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := db.writer.BeginTx(ctx, nil)
	if err != nil {
		return classify(fmt.Errorf("beginning transaction: %w", err))
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return classify(err)
	}
	if err := tx.Commit(); err != nil {
		return classify(fmt.Errorf("committing transaction: %w", err))
	}
	return nil
}

// classify marks a write error that is about the disk rather than the data
// (full, read-only) with the store's sentinel, so that callers can tell
// people what to fix instead of passing on SQLite's error code.
func classify(err error) error {
	var se *sqlitedriver.Error
	if errors.As(err, &se) {
		switch se.Code() & 0xff {
		case sqlite3.SQLITE_FULL:
			return fmt.Errorf("%w: %w", store.ErrNoSpace, err)
		case sqlite3.SQLITE_READONLY:
			return fmt.Errorf("%w: %w", store.ErrReadOnly, err)
		}
	}
	switch {
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return fmt.Errorf("%w: %w", store.ErrNoSpace, err)
	case errors.Is(err, syscall.EROFS):
		return fmt.Errorf("%w: %w", store.ErrReadOnly, err)
	}
	return err
}

// isBusy reports whether err is SQLITE_BUSY or SQLITE_LOCKED.
func isBusy(err error) bool {
	var se *sqlitedriver.Error
	if !errors.As(err, &se) {
		return false
	}
	c := se.Code() & 0xff
	return c == sqlite3.SQLITE_BUSY || c == sqlite3.SQLITE_LOCKED
}

// isConstraint reports whether err is a SQLite constraint violation of the
// given extended code (or any constraint violation when code is 0).
func isConstraint(err error, code int) bool {
	var se *sqlitedriver.Error
	if !errors.As(err, &se) {
		return false
	}
	if code == 0 {
		return se.Code()&0xff == sqlite3.SQLITE_CONSTRAINT
	}
	return se.Code() == code
}
