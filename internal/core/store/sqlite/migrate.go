package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/wid-project/wid/internal/core/store"
)

// migrations are the schema steps in order; migrations[i] brings the schema
// to version i+1. Append new steps, never edit applied ones: a database
// records only the number of steps it has taken.
//
// Names are plain and stable on purpose: operators read (and, to test
// `widctl audit verify`, tamper with) these tables from the sqlite3 shell.
var migrations = store.Migrations{
	{
		`CREATE TABLE resources (
			kind     TEXT    NOT NULL,
			name     TEXT    NOT NULL,
			revision INTEGER NOT NULL,
			data     BLOB    NOT NULL,
			PRIMARY KEY (kind, name)
		)`,
		`CREATE TABLE meta (
			key   TEXT PRIMARY KEY,
			value TEXT NOT NULL
		)`,
		`CREATE TABLE audit_events (
			seq       INTEGER PRIMARY KEY,
			time      TEXT NOT NULL,
			type      TEXT NOT NULL,
			actor     TEXT NOT NULL,
			spiffe_id TEXT NOT NULL,
			outcome   TEXT NOT NULL,
			data      BLOB NOT NULL,
			prev_hash TEXT NOT NULL,
			hash      TEXT NOT NULL
		)`,
		`CREATE INDEX audit_events_type ON audit_events (type)`,
		`CREATE INDEX audit_events_actor ON audit_events (actor)`,
		`CREATE INDEX audit_events_spiffe_id ON audit_events (spiffe_id)`,
		`CREATE INDEX audit_events_time ON audit_events (time)`,
		// The head lives apart from the rows so that deleting the newest
		// rows leaves evidence behind.
		`CREATE TABLE audit_head (
			id   INTEGER PRIMARY KEY CHECK (id = 1),
			seq  INTEGER NOT NULL,
			hash TEXT    NOT NULL
		)`,
		`INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '')`,
	},
	{
		// The change log: one row per op of every Apply, written in the
		// same transaction. AUTOINCREMENT so that a revision is never
		// given out twice, even after the newest rows were pruned.
		`CREATE TABLE changes (
			revision INTEGER PRIMARY KEY AUTOINCREMENT,
			kind     TEXT NOT NULL,
			name     TEXT NOT NULL,
			op       TEXT NOT NULL,
			time     TEXT NOT NULL
		)`,
		// Every change at or below this revision may have been pruned:
		// a follower behind it has missed changes.
		`CREATE TABLE changes_pruned (
			id       INTEGER PRIMARY KEY CHECK (id = 1),
			revision INTEGER NOT NULL
		)`,
		`INSERT INTO changes_pruned (id, revision) VALUES (1, 0)`,
	},
}

// schemaVersion is the schema version this build creates and understands.
func schemaVersion() int { return migrations.Version() }

// migrate brings the schema up to schemaVersion(). Each step runs in its own
// transaction together with its schema_version row, and re-reads the version
// inside that transaction, so two processes opening the same new file at once
// apply each step exactly once.
func migrate(ctx context.Context, db *sql.DB) error {
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (
		version    INTEGER PRIMARY KEY,
		applied_at TEXT NOT NULL
	)`); err != nil {
		return fmt.Errorf("creating schema_version table: %w", err)
	}
	for {
		done, err := migrateStep(ctx, db)
		if err != nil {
			return err
		}
		if done {
			return nil
		}
	}
}

// migrateStep applies the next pending step, reporting done when there is none.
func migrateStep(ctx context.Context, db *sql.DB) (done bool, err error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return false, fmt.Errorf("beginning migration: %w", err)
	}
	defer func() {
		if err != nil || done {
			_ = tx.Rollback()
		}
	}()
	var current int
	if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_version`).Scan(&current); err != nil {
		return false, fmt.Errorf("reading schema version: %w", err)
	}
	if current == schemaVersion() {
		return true, nil
	}
	next := current + 1
	if err := migrations.Apply(ctx, current, next, func(ctx context.Context, stmt string) error {
		_, err := tx.ExecContext(ctx, stmt)
		return err
	}, func(ctx context.Context, v int) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO schema_version (version, applied_at) VALUES (?, ?)`,
			v, time.Now().UTC().Format(timeLayout))
		return err
	}); err != nil {
		return false, err
	}
	if err := tx.Commit(); err != nil {
		return false, fmt.Errorf("committing schema version %d: %w", next, err)
	}
	return false, nil
}
