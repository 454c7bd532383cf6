package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/wid-project/wid/internal/core/store"
)

// changeLock is the advisory lock key that orders the change log's writers
// ("wid" and "change" in ASCII). Held from drawing a revision to the
// commit, it makes the revisions' order the order in which they become
// visible: without it a follower could read revision 7 before revision 6
// commits and never look back.
const changeLock int64 = 0x776964_6368616e

// changesChannel is the NOTIFY channel of the change log. Its payload is
// empty: a wake-up, after which followers read the log.
const changesChannel = "wid_changes"

// listenerApplicationName names the listening connection in
// pg_stat_activity.
const listenerApplicationName = "widagent changes"

// Bounds of the pause between the listener's connection attempts, and how
// long it waits for a notification before it checks that its connection
// still works (a connection cut without a reset can look idle forever).
const (
	listenRetryMin     = 100 * time.Millisecond
	listenRetryMax     = 5 * time.Second
	defaultListenCheck = 30 * time.Second
)

// recordChanges appends one change per op and notifies the listeners,
// inside Apply's transaction: PostgreSQL delivers the notification on
// commit, and drops it on rollback along with the rows.
func recordChanges(ctx context.Context, tx pgx.Tx, ops []store.Op, revs []int64) error {
	kinds, names, opNames := make([]string, len(ops)), make([]string, len(ops)), make([]string, len(ops))
	for i, op := range ops {
		kinds[i], names[i] = op.Item.Kind, op.Item.Name
		opNames[i] = store.OpName(recordedOp(op.Type, revs[i]))
	}
	// The lock is taken after the ops, so that it is held only for the
	// insert and the commit and no writer waits for it while holding
	// row locks. The three statements go in one round trip and run in
	// order.
	b := &pgx.Batch{}
	b.Queue(`SELECT pg_advisory_xact_lock($1)`, changeLock)
	b.Queue(`INSERT INTO changes (kind, name, op)
		SELECT k, n, o FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS u(k, n, o, i) ORDER BY i`,
		kinds, names, opNames)
	b.Queue(`SELECT pg_notify($1, '')`, changesChannel)
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("recording changes: %w", err)
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
	if limit <= 0 || limit > store.MaxChangesPage {
		limit = store.MaxChangesPage
	}
	var out []store.Change
	// One snapshot: the rows and the pruning mark are of the same moment,
	// so rows pruned meanwhile cannot go unnoticed.
	err := pgx.BeginTxFunc(ctx, db.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		var pruned int64
		if err := tx.QueryRow(ctx, `SELECT revision FROM changes_pruned WHERE id = 1`).Scan(&pruned); err != nil {
			return err
		}
		if after < pruned {
			return fmt.Errorf("after revision %d (pruned up to %d): %w", after, pruned, store.ErrChangesPruned)
		}
		rows, err := tx.Query(ctx, `SELECT revision, kind, name, op, time FROM changes WHERE revision > $1 ORDER BY revision LIMIT $2`, after, limit)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.Change, error) {
			var c store.Change
			var op string
			err := r.Scan(&c.Revision, &c.Kind, &c.Name, &op, &c.Time)
			c.Op = store.ParseOpName(op)
			return c, err
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("reading changes: %w", err)
	}
	return out, nil
}

// ChangeHead returns the newest change's revision, 0 before the first.
func (db *DB) ChangeHead(ctx context.Context) (int64, error) {
	var head int64
	err := db.pool.QueryRow(ctx, `SELECT GREATEST(COALESCE((SELECT MAX(revision) FROM changes), 0), revision)
		FROM changes_pruned WHERE id = 1`).Scan(&head)
	if err != nil {
		return 0, fmt.Errorf("reading the change log's head: %w", err)
	}
	return head, nil
}

// PruneChanges deletes up to limit of the oldest changes that are neither
// among the newest keep nor recorded at or after before. Replicas may prune
// at once: the deletes and the mark serialize on their rows.
func (db *DB) PruneChanges(ctx context.Context, keep int, before time.Time, limit int) (int, error) {
	keep = max(keep, 1)
	if limit <= 0 || limit > store.MaxChangesPage {
		limit = store.MaxChangesPage
	}
	var n int
	err := db.writeTx(ctx, func(tx pgx.Tx) error {
		n = 0
		// The newest change that may go: the keep newest are above it.
		var cut int64
		err := tx.QueryRow(ctx, `SELECT revision FROM changes ORDER BY revision DESC OFFSET $1 LIMIT 1`, keep).Scan(&cut)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		var last *int64
		if err := tx.QueryRow(ctx, `WITH gone AS (
				DELETE FROM changes WHERE revision IN (
					SELECT revision FROM changes WHERE revision <= $1 AND time < $2 ORDER BY revision LIMIT $3)
				RETURNING revision)
			SELECT COUNT(*), MAX(revision) FROM gone`, cut, before, limit).Scan(&n, &last); err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
		// The mark covers the newest change deleted: a follower below it
		// has missed changes for good.
		_, err = tx.Exec(ctx, `UPDATE changes_pruned SET revision = GREATEST(revision, $1) WHERE id = 1`, *last)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("pruning changes: %w", err)
	}
	return n, nil
}

// WatchChanges wakes after this process's writes and, through a connection
// that LISTENs, after every other process's. The listener starts with the
// first watcher and stops on Close.
func (db *DB) WatchChanges() (<-chan struct{}, func()) {
	ch, stop := db.changes.Watch()
	db.listenOnce.Do(func() {
		db.listenMu.Lock()
		defer db.listenMu.Unlock()
		if db.closed {
			return
		}
		ctx, cancel := context.WithCancel(context.Background())
		db.stopListen, db.listenDone = cancel, make(chan struct{})
		go func() {
			defer close(db.listenDone)
			db.runListener(ctx)
		}()
	})
	return ch, stop
}

// runListener keeps a LISTEN connection until ctx ends, connecting again
// after every loss. Each (re)connection wakes the watchers once LISTEN is
// in place: what committed while no one listened is then read from the
// log, so a lost notification delays nothing past the reconnection.
func (db *DB) runListener(ctx context.Context) {
	pause := db.listenRetry
	for {
		listened := db.listenUntilLost(ctx)
		if ctx.Err() != nil {
			return
		}
		if listened {
			pause = db.listenRetry
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		pause = min(2*pause, listenRetryMax)
	}
}

// listenUntilLost connects, LISTENs and wakes the watchers on every
// notification until the connection fails or ctx ends. listened reports
// whether LISTEN took effect.
func (db *DB) listenUntilLost(ctx context.Context) (listened bool) {
	conn, err := pgx.ConnectConfig(ctx, db.listen)
	if err != nil {
		return false
	}
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = conn.Close(closeCtx)
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+changesChannel); err != nil {
		return false
	}
	db.changes.Notify()
	for {
		waitCtx, cancel := context.WithTimeout(ctx, db.listenCheck)
		_, err := conn.WaitForNotification(waitCtx)
		cancel()
		switch {
		case err == nil:
			db.changes.Notify()
		case ctx.Err() != nil || conn.IsClosed():
			return true
		case errors.Is(err, context.DeadlineExceeded):
			// Quiet for a while: make sure the connection still works.
			pingCtx, cancel := context.WithTimeout(ctx, db.listenCheck)
			err := conn.Ping(pingCtx)
			cancel()
			if err != nil {
				return true
			}
			db.listenChecks.Add(1)
		default:
			return true
		}
	}
}
