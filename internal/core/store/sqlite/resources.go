package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	sqlite3 "modernc.org/sqlite/lib"

	"github.com/wid-project/wid/internal/core/store"
)

// Get returns one item, or store.ErrNotFound.
func (db *DB) Get(ctx context.Context, kind, name string) (store.Item, error) {
	it := store.Item{Kind: kind, Name: name}
	err := db.reader.QueryRowContext(ctx,
		`SELECT revision, data FROM resources WHERE kind = ? AND name = ?`, kind, name).
		Scan(&it.Revision, &it.Data)
	if errors.Is(err, sql.ErrNoRows) {
		return store.Item{}, fmt.Errorf("getting %s/%s: %w", kind, name, store.ErrNotFound)
	}
	if err != nil {
		return store.Item{}, fmt.Errorf("getting %s/%s: %w", kind, name, err)
	}
	return it, nil
}

// ListAfter returns up to limit items of kind whose names sort after
// after, ordered by name: one page of a list, read without the rest.
func (db *DB) ListAfter(ctx context.Context, kind, after string, limit int) ([]store.Item, error) {
	rows, err := db.reader.QueryContext(ctx,
		`SELECT name, revision, data FROM resources WHERE kind = ? AND name > ? ORDER BY name LIMIT ?`, kind, after, limit)
	return collectItems(kind, rows, err)
}

// List returns every item of kind ordered by name.
func (db *DB) List(ctx context.Context, kind string) ([]store.Item, error) {
	rows, err := db.reader.QueryContext(ctx,
		`SELECT name, revision, data FROM resources WHERE kind = ? ORDER BY name`, kind)
	return collectItems(kind, rows, err)
}

// collectItems reads the (name, revision, data) rows of a listing of kind.
func collectItems(kind string, rows *sql.Rows, err error) ([]store.Item, error) {
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", kind, err)
	}
	defer rows.Close()
	var items []store.Item
	for rows.Next() {
		it := store.Item{Kind: kind}
		if err := rows.Scan(&it.Name, &it.Revision, &it.Data); err != nil {
			return nil, fmt.Errorf("listing %s: %w", kind, err)
		}
		items = append(items, it)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing %s: %w", kind, err)
	}
	return items, nil
}

// Apply performs ops in one transaction: either every op takes effect or
// none does. It returns each op's resulting revision (0 for deletes).
func (db *DB) Apply(ctx context.Context, ops ...store.Op) ([]int64, error) {
	if err := store.CheckOps(ops); err != nil {
		return nil, err
	}
	if len(ops) == 0 {
		return []int64{}, nil
	}
	revs := make([]int64, len(ops))
	err := db.writeTx(ctx, func(tx *sql.Tx) error {
		for i, op := range ops {
			rev, err := applyOp(ctx, tx, op)
			if err != nil {
				return &store.OpError{Index: i, Err: err}
			}
			revs[i] = rev
		}
		return recordChanges(ctx, tx, ops, revs)
	})
	if err != nil {
		return nil, err
	}
	db.changes.Notify()
	return revs, nil
}

func applyOp(ctx context.Context, tx *sql.Tx, op store.Op) (int64, error) {
	kind, name := op.Item.Kind, op.Item.Name
	data := op.Item.Data
	if data == nil {
		// The column is NOT NULL; an empty document is still a document.
		data = []byte{}
	}
	// The transaction holds the write lock (BEGIN IMMEDIATE), so what we
	// read here cannot change before we write.
	var cur int64
	err := tx.QueryRowContext(ctx, `SELECT revision FROM resources WHERE kind = ? AND name = ?`, kind, name).Scan(&cur)
	exists := err == nil
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("reading %s/%s: %w", kind, name, err)
	}

	switch op.Type {
	case store.OpCreate:
		if exists {
			return 0, fmt.Errorf("creating %s/%s: %w", kind, name, store.ErrAlreadyExists)
		}
		if _, err := tx.ExecContext(ctx,
			`INSERT INTO resources (kind, name, revision, data) VALUES (?, ?, 1, ?)`, kind, name, data); err != nil {
			if isConstraint(err, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY) {
				return 0, fmt.Errorf("creating %s/%s: %w", kind, name, store.ErrAlreadyExists)
			}
			return 0, fmt.Errorf("creating %s/%s: %w", kind, name, err)
		}
		return 1, nil

	case store.OpUpdate:
		if !exists {
			return 0, fmt.Errorf("updating %s/%s: %w", kind, name, store.ErrNotFound)
		}
		if op.ExpectRevision != 0 && op.ExpectRevision != cur {
			return 0, fmt.Errorf("updating %s/%s: expected revision %d, found %d: %w", kind, name, op.ExpectRevision, cur, store.ErrConflict)
		}
		if _, err := tx.ExecContext(ctx,
			`UPDATE resources SET revision = ?, data = ? WHERE kind = ? AND name = ?`, cur+1, data, kind, name); err != nil {
			return 0, fmt.Errorf("updating %s/%s: %w", kind, name, err)
		}
		return cur + 1, nil

	case store.OpUpsert:
		// A missing item has revision 0, so an upsert that expects a
		// revision conflicts with an item that was deleted meanwhile.
		if op.ExpectRevision != 0 && op.ExpectRevision != cur {
			return 0, fmt.Errorf("writing %s/%s: expected revision %d, found %d: %w", kind, name, op.ExpectRevision, cur, store.ErrConflict)
		}
		if exists {
			if _, err := tx.ExecContext(ctx,
				`UPDATE resources SET revision = ?, data = ? WHERE kind = ? AND name = ?`, cur+1, data, kind, name); err != nil {
				return 0, fmt.Errorf("writing %s/%s: %w", kind, name, err)
			}
			return cur + 1, nil
		}
		if _, err := tx.ExecContext(ctx,
			`INSERT INTO resources (kind, name, revision, data) VALUES (?, ?, 1, ?)`, kind, name, data); err != nil {
			return 0, fmt.Errorf("writing %s/%s: %w", kind, name, err)
		}
		return 1, nil

	case store.OpDelete:
		if !exists {
			return 0, fmt.Errorf("deleting %s/%s: %w", kind, name, store.ErrNotFound)
		}
		if op.ExpectRevision != 0 && op.ExpectRevision != cur {
			return 0, fmt.Errorf("deleting %s/%s: expected revision %d, found %d: %w", kind, name, op.ExpectRevision, cur, store.ErrConflict)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM resources WHERE kind = ? AND name = ?`, kind, name); err != nil {
			return 0, fmt.Errorf("deleting %s/%s: %w", kind, name, err)
		}
		return 0, nil
	}
	return 0, fmt.Errorf("applying change to %s/%s: unknown operation %d", kind, name, op.Type)
}

// GetMeta returns the value stored under key, or store.ErrNotFound.
func (db *DB) GetMeta(ctx context.Context, key string) (string, error) {
	var v string
	err := db.reader.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = ?`, key).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("reading metadata %q: %w", key, store.ErrNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("reading metadata %q: %w", key, err)
	}
	return v, nil
}

// PutMetaOnce sets key to value if it is unset; setting it again to the same
// value succeeds, to anything else fails with store.ErrConflict.
func (db *DB) PutMetaOnce(ctx context.Context, key, value string) error {
	return db.writeTx(ctx, func(tx *sql.Tx) error {
		var cur string
		err := tx.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = ?`, key).Scan(&cur)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			if _, err := tx.ExecContext(ctx, `INSERT INTO meta (key, value) VALUES (?, ?)`, key, value); err != nil {
				return fmt.Errorf("setting metadata %q: %w", key, err)
			}
			return nil
		case err != nil:
			return fmt.Errorf("setting metadata %q: %w", key, err)
		case cur != value:
			// Values are left out of the error: metadata is not
			// guaranteed to be fit for logs.
			return fmt.Errorf("setting metadata %q: already set to a different value: %w", key, store.ErrConflict)
		}
		return nil
	})
}
