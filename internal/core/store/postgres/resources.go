package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/wid-project/wid/internal/core/store"
)

// Get returns one item, or store.ErrNotFound.
func (db *DB) Get(ctx context.Context, kind, name string) (store.Item, error) {
	it := store.Item{Kind: kind, Name: name}
	err := db.pool.QueryRow(ctx,
		`SELECT revision, data FROM resources WHERE kind = $1 AND name = $2`, kind, name).
		Scan(&it.Revision, &it.Data)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Item{}, fmt.Errorf("getting %s/%s: %w", kind, name, store.ErrNotFound)
	}
	if err != nil {
		return store.Item{}, fmt.Errorf("getting %s/%s: %w", kind, name, unreachable(err))
	}
	return it, nil
}

// List returns every item of kind ordered by name.
func (db *DB) List(ctx context.Context, kind string) ([]store.Item, error) {
	// COLLATE "C": names sort by bytes, as in SQLite, whatever the
	// database's locale.
	rows, err := db.pool.Query(ctx,
		`SELECT name, revision, data FROM resources WHERE kind = $1 ORDER BY name COLLATE "C"`, kind)
	return collectItems(kind, rows, err)
}

// ListAfter returns up to limit items of kind whose names sort after
// after, in name order: one page of a listing.
func (db *DB) ListAfter(ctx context.Context, kind, after string, limit int) ([]store.Item, error) {
	rows, err := db.pool.Query(ctx,
		`SELECT name, revision, data FROM resources WHERE kind = $1 AND name COLLATE "C" > $2 ORDER BY name COLLATE "C" LIMIT $3`, kind, after, limit)
	return collectItems(kind, rows, err)
}

func collectItems(kind string, rows pgx.Rows, err error) ([]store.Item, error) {
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", kind, unreachable(err))
	}
	items, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.Item, error) {
		it := store.Item{Kind: kind}
		err := r.Scan(&it.Name, &it.Revision, &it.Data)
		return it, err
	})
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", kind, unreachable(err))
	}
	return items, nil
}

// Apply performs ops in one transaction: either every op takes effect or
// none does. It returns each op's resulting revision (0 for deletes).
//
// Each op is one statement that checks the expected revision in its WHERE
// clause: PostgreSQL re-checks that clause against the newest version of a
// row after waiting for its lock, so a concurrent writer's change makes the
// compare-and-set fail rather than be overwritten.
func (db *DB) Apply(ctx context.Context, ops ...store.Op) ([]int64, error) {
	if err := store.CheckOps(ops); err != nil {
		return nil, err
	}
	if len(ops) == 0 {
		return []int64{}, nil
	}
	revs := make([]int64, len(ops))
	err := db.writeTx(ctx, func(tx pgx.Tx) error {
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
	// The NOTIFY reaches this process too, but later, and not at all while
	// its listening connection is down.
	db.changes.Notify()
	return revs, nil
}

func applyOp(ctx context.Context, tx pgx.Tx, op store.Op) (int64, error) {
	kind, name, want := op.Item.Kind, op.Item.Name, op.ExpectRevision
	data := op.Item.Data
	if data == nil {
		// The column is NOT NULL; an empty document is still a document.
		data = []byte{}
	}
	var rev int64
	switch op.Type {
	case store.OpCreate:
		_, err := tx.Exec(ctx, `INSERT INTO resources (kind, name, revision, data) VALUES ($1, $2, 1, $3)`, kind, name, data)
		if sqlState(err) == codeUniqueViolation {
			return 0, fmt.Errorf("creating %s/%s: %w", kind, name, store.ErrAlreadyExists)
		}
		if err != nil {
			return 0, fmt.Errorf("creating %s/%s: %w", kind, name, err)
		}
		return 1, nil

	case store.OpUpdate:
		err := tx.QueryRow(ctx, `UPDATE resources SET revision = revision + 1, data = $3
			WHERE kind = $1 AND name = $2 AND ($4::bigint = 0 OR revision = $4) RETURNING revision`,
			kind, name, data, want).Scan(&rev)
		if errors.Is(err, pgx.ErrNoRows) {
			return 0, missOrConflict(ctx, tx, "updating", kind, name, want)
		}
		if err != nil {
			return 0, fmt.Errorf("updating %s/%s: %w", kind, name, err)
		}
		return rev, nil

	case store.OpUpsert:
		if want == 0 {
			// ON CONFLICT makes two upserts of a missing item both succeed,
			// one after the other, instead of one failing on the key.
			err := tx.QueryRow(ctx, `INSERT INTO resources (kind, name, revision, data) VALUES ($1, $2, 1, $3)
				ON CONFLICT (kind, name) DO UPDATE SET revision = resources.revision + 1, data = EXCLUDED.data
				RETURNING revision`, kind, name, data).Scan(&rev)
			if err != nil {
				return 0, fmt.Errorf("writing %s/%s: %w", kind, name, err)
			}
			return rev, nil
		}
		// A missing item has revision 0, so an upsert that expects a
		// revision conflicts with an item that was deleted meanwhile.
		err := tx.QueryRow(ctx, `UPDATE resources SET revision = revision + 1, data = $3
			WHERE kind = $1 AND name = $2 AND revision = $4 RETURNING revision`,
			kind, name, data, want).Scan(&rev)
		if errors.Is(err, pgx.ErrNoRows) {
			cur, err := currentRevision(ctx, tx, kind, name)
			if err != nil {
				return 0, fmt.Errorf("writing %s/%s: %w", kind, name, err)
			}
			return 0, fmt.Errorf("writing %s/%s: expected revision %d, found %d: %w", kind, name, want, cur, store.ErrConflict)
		}
		if err != nil {
			return 0, fmt.Errorf("writing %s/%s: %w", kind, name, err)
		}
		return rev, nil

	case store.OpDelete:
		err := tx.QueryRow(ctx, `DELETE FROM resources
			WHERE kind = $1 AND name = $2 AND ($3::bigint = 0 OR revision = $3) RETURNING revision`,
			kind, name, want).Scan(&rev)
		if errors.Is(err, pgx.ErrNoRows) {
			return 0, missOrConflict(ctx, tx, "deleting", kind, name, want)
		}
		if err != nil {
			return 0, fmt.Errorf("deleting %s/%s: %w", kind, name, err)
		}
		return 0, nil
	}
	return 0, fmt.Errorf("applying change to %s/%s: unknown operation %d", kind, name, op.Type)
}

// missOrConflict explains why an update or delete matched no row: the item
// is gone (ErrNotFound) or has another revision than expected (ErrConflict).
func missOrConflict(ctx context.Context, tx pgx.Tx, verb, kind, name string, want int64) error {
	cur, err := currentRevision(ctx, tx, kind, name)
	if err != nil {
		return fmt.Errorf("%s %s/%s: %w", verb, kind, name, err)
	}
	if cur == 0 {
		return fmt.Errorf("%s %s/%s: %w", verb, kind, name, store.ErrNotFound)
	}
	return fmt.Errorf("%s %s/%s: expected revision %d, found %d: %w", verb, kind, name, want, cur, store.ErrConflict)
}

// currentRevision is the item's revision, 0 when it does not exist.
func currentRevision(ctx context.Context, tx pgx.Tx, kind, name string) (int64, error) {
	var cur int64
	err := tx.QueryRow(ctx, `SELECT revision FROM resources WHERE kind = $1 AND name = $2`, kind, name).Scan(&cur)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	return cur, err
}

// GetMeta returns the value stored under key, or store.ErrNotFound.
func (db *DB) GetMeta(ctx context.Context, key string) (string, error) {
	var v string
	err := db.pool.QueryRow(ctx, `SELECT value FROM meta WHERE key = $1`, key).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", fmt.Errorf("reading metadata %q: %w", key, store.ErrNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("reading metadata %q: %w", key, unreachable(err))
	}
	return v, nil
}

// PutMetaOnce sets key to value if it is unset; setting it again to the same
// value succeeds, to anything else fails with store.ErrConflict. Two
// processes racing to set it both see the winner's value: the losing insert
// waits for the winner's commit, and the read after it sees that commit.
func (db *DB) PutMetaOnce(ctx context.Context, key, value string) error {
	return db.writeTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING`, key, value); err != nil {
			return fmt.Errorf("setting metadata %q: %w", key, err)
		}
		var cur string
		if err := tx.QueryRow(ctx, `SELECT value FROM meta WHERE key = $1`, key).Scan(&cur); err != nil {
			return fmt.Errorf("setting metadata %q: %w", key, err)
		}
		if cur != value {
			// Values are left out of the error: metadata is not
			// guaranteed to be fit for logs.
			return fmt.Errorf("setting metadata %q: already set to a different value: %w", key, store.ErrConflict)
		}
		return nil
	})
}
