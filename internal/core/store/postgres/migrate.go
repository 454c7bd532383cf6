package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/wid-project/wid/internal/core/store"
)

// migrations are the schema steps in order; migrations[i] brings the schema
// to version i+1. Append new steps, never edit applied ones: a database
// records only the number of steps it has taken.
//
// The tables and columns are those of the SQLite store, so that operators
// (and tests of `widctl audit verify`) read them the same way in psql.
var migrations = store.Migrations{
	{
		`CREATE TABLE resources (
			kind     text   NOT NULL,
			name     text   NOT NULL,
			revision bigint NOT NULL,
			data     bytea  NOT NULL,
			PRIMARY KEY (kind, name)
		)`,
		`CREATE TABLE meta (
			key   text PRIMARY KEY,
			value text NOT NULL
		)`,
		// time is text in the SQLite store's fixed nine-digit layout, not
		// timestamptz: that keeps nanoseconds (timestamptz has
		// microseconds, and a changed time would break the row's hash),
		// and the "C" collation makes its text order the time order.
		`CREATE TABLE audit_events (
			seq       bigint PRIMARY KEY,
			time      text COLLATE "C" NOT NULL,
			type      text  NOT NULL,
			actor     text  NOT NULL,
			spiffe_id text  NOT NULL,
			outcome   text  NOT NULL,
			data      bytea NOT NULL,
			prev_hash text  NOT NULL,
			hash      text  NOT NULL
		)`,
		`CREATE INDEX audit_events_type ON audit_events (type)`,
		`CREATE INDEX audit_events_actor ON audit_events (actor)`,
		`CREATE INDEX audit_events_spiffe_id ON audit_events (spiffe_id)`,
		`CREATE INDEX audit_events_time ON audit_events (time)`,
		// The head lives apart from the rows so that deleting the newest
		// rows leaves evidence behind; appends lock it (SELECT ... FOR
		// UPDATE), which serializes them across every process.
		`CREATE TABLE audit_head (
			id   integer PRIMARY KEY CHECK (id = 1),
			seq  bigint  NOT NULL,
			hash text    NOT NULL
		)`,
		`INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '')`,
	},
	{
		// The change log: one row per op of every Apply, written in the
		// same transaction. Writers take changeLock before they draw a
		// revision and hold it to their commit, so revisions become
		// visible in their order and a follower never skips one that
		// commits late. time is clock_timestamp() under that lock, so it
		// grows with the revision.
		`CREATE TABLE changes (
			revision bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
			kind     text NOT NULL,
			name     text NOT NULL,
			op       text NOT NULL,
			time     timestamptz NOT NULL DEFAULT clock_timestamp()
		)`,
		// Every change at or below this revision may have been pruned:
		// a follower behind it has missed changes.
		`CREATE TABLE changes_pruned (
			id       integer PRIMARY KEY CHECK (id = 1),
			revision bigint  NOT NULL
		)`,
		`INSERT INTO changes_pruned (id, revision) VALUES (1, 0)`,
	},
}

// schemaVersion is the schema version this build creates and understands.
func schemaVersion() int { return migrations.Version() }

// migrationLock is the advisory lock key that serializes migrations of one
// database ("wid" and "schema" in ASCII); advisory locks are per database.
const migrationLock int64 = 0x776964_736368656d

// migrate brings the schema up to schemaVersion() in one transaction that
// first takes the migration advisory lock: when several processes start at
// once on a new database, the first one migrates and the others wait, then
// find nothing to do. DDL is transactional in PostgreSQL, so a process that
// dies half-way leaves the schema as it was.
func migrate(ctx context.Context, pool *pgxpool.Pool) error {
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, migrationLock); err != nil {
			return fmt.Errorf("taking the migration lock: %w", err)
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_version (
			version    integer     PRIMARY KEY,
			applied_at timestamptz NOT NULL DEFAULT now()
		)`); err != nil {
			return fmt.Errorf("creating the schema_version table: %w", err)
		}
		var current int
		if err := tx.QueryRow(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_version`).Scan(&current); err != nil {
			return fmt.Errorf("reading the schema version: %w", err)
		}
		return migrations.Apply(ctx, current, schemaVersion(), func(ctx context.Context, stmt string) error {
			_, err := tx.Exec(ctx, stmt)
			return err
		}, func(ctx context.Context, v int) error {
			_, err := tx.Exec(ctx, `INSERT INTO schema_version (version) VALUES ($1)`, v)
			return err
		})
	})
}
