package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/wid-project/wid/internal/core/store"
)

// recordChanges appends one change per op, inside Apply's transaction. The
// one writer connection makes the revisions' order the commit order.
func recordChanges(ctx context.Context, tx *sql.Tx, ops []store.Op, revs []int64) error {
	now := time.Now().UTC().Format(timeLayout)
	for i, op := range ops {
		if _, err := tx.ExecContext(ctx, `INSERT INTO changes (kind, name, op, time) VALUES (?, ?, ?, ?)`,
			op.Item.Kind, op.Item.Name, store.OpName(recordedOp(op.Type, revs[i])), now); err != nil {
			return fmt.Errorf("recording the change to %s/%s: %w", op.Item.Kind, op.Item.Name, err)
		}
	}
	return nil
}

// recordedOp is what an op did: an upsert created the item when its
// resulting revision is the first.
func recordedOp(t store.OpType, rev int64) store.OpType {
	if t == store.OpUpsert {
		if rev == 1 {
			return store.OpCreate
		}
		return store.OpUpdate
	}
	return t
}

// ChangesAfter returns up to limit changes after revision after, oldest
// first, or store.ErrChangesPruned when some of them were pruned.
func (db *DB) ChangesAfter(ctx context.Context, after int64, limit int) ([]store.Change, error) {
	limit = pageLimit(limit)
	// One read transaction: the rows and the pruning mark are of the same
	// moment, so rows pruned meanwhile cannot go unnoticed.
	tx, err := db.reader.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("reading changes: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	var pruned int64
	if err := tx.QueryRowContext(ctx, `SELECT revision FROM changes_pruned WHERE id = 1`).Scan(&pruned); err != nil {
		return nil, fmt.Errorf("reading changes: %w", err)
	}
	if after < pruned {
		return nil, fmt.Errorf("reading changes after revision %d (pruned up to %d): %w", after, pruned, store.ErrChangesPruned)
	}
	rows, err := tx.QueryContext(ctx, `SELECT revision, kind, name, op, time FROM changes WHERE revision > ? ORDER BY revision LIMIT ?`, after, limit)
	if err != nil {
		return nil, fmt.Errorf("reading changes: %w", err)
	}
	defer rows.Close()
	var out []store.Change
	for rows.Next() {
		var c store.Change
		var op, ts string
		if err := rows.Scan(&c.Revision, &c.Kind, &c.Name, &op, &ts); err != nil {
			return nil, fmt.Errorf("reading changes: %w", err)
		}
		c.Op = store.ParseOpName(op)
		if c.Time, err = time.Parse(time.RFC3339Nano, ts); err != nil {
			return nil, fmt.Errorf("reading change %d: bad time %q: %w", c.Revision, ts, err)
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading changes: %w", err)
	}
	return out, nil
}

// ChangeHead returns the newest change's revision, 0 before the first.
func (db *DB) ChangeHead(ctx context.Context) (int64, error) {
	var head int64
	err := db.reader.QueryRowContext(ctx, `SELECT MAX(COALESCE((SELECT MAX(revision) FROM changes), 0), revision) FROM changes_pruned WHERE id = 1`).Scan(&head)
	if err != nil {
		return 0, fmt.Errorf("reading the change log's head: %w", err)
	}
	return head, nil
}

// PruneChanges deletes up to limit of the oldest changes that are neither
// among the newest keep nor recorded at or after before.
func (db *DB) PruneChanges(ctx context.Context, keep int, before time.Time, limit int) (int, error) {
	keep, limit = max(keep, 1), pageLimit(limit)
	var n int
	err := db.writeTx(ctx, func(tx *sql.Tx) error {
		n = 0
		// The newest change that may go: keep rows are newer than it.
		var cut int64
		err := tx.QueryRowContext(ctx, `SELECT revision FROM changes ORDER BY revision DESC LIMIT 1 OFFSET ?`, keep).Scan(&cut)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("pruning changes: %w", err)
		}
		rows, err := tx.QueryContext(ctx, `DELETE FROM changes WHERE revision IN (
				SELECT revision FROM changes WHERE revision <= ? AND time < ? ORDER BY revision LIMIT ?)
			RETURNING revision`,
			cut, before.UTC().Format(timeLayout), limit)
		if err != nil {
			return fmt.Errorf("pruning changes: %w", err)
		}
		var last int64
		for rows.Next() {
			var rev int64
			if err := rows.Scan(&rev); err != nil {
				rows.Close()
				return fmt.Errorf("pruning changes: %w", err)
			}
			n, last = n+1, max(last, rev)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("pruning changes: %w", err)
		}
		if n == 0 {
			return nil
		}
		// The mark covers the newest change deleted: a follower below
		// it has missed changes for good.
		if _, err := tx.ExecContext(ctx, `UPDATE changes_pruned SET revision = MAX(revision, ?) WHERE id = 1`, last); err != nil {
			return fmt.Errorf("pruning changes: %w", err)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}

// WatchChanges wakes after every Apply of this process.
func (db *DB) WatchChanges() (<-chan struct{}, func()) { return db.changes.Watch() }

func pageLimit(limit int) int {
	if limit <= 0 || limit > store.MaxChangesPage {
		return store.MaxChangesPage
	}
	return limit
}
