package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/wid-project/wid/internal/core/store"
)

const auditColumns = `seq, time, type, actor, spiffe_id, outcome, data, prev_hash, hash`

// AppendAudit appends rows in one transaction, after checking that they
// continue the chain recorded in audit_head; otherwise it fails with
// store.ErrAuditChain and writes nothing. The head row is read FOR UPDATE:
// appends from every process that shares the database queue on that row
// lock, and each sees the head its predecessor committed.
func (db *DB) AppendAudit(ctx context.Context, rows []store.AuditRow) error {
	if len(rows) == 0 {
		return nil
	}
	_, err := db.AppendAuditChained(ctx, func(int64, string) []store.AuditRow { return rows })
	return err
}

// AppendAuditChained appends the rows that build makes from the chain head,
// in one transaction that reads the head under its row lock first: build
// runs while this process holds the head, so its rows follow the head as
// it is, however many other processes append meanwhile, and nothing is
// written twice or in vain. build may run more than once (the transaction
// is retried after a deadlock); the rows of the run that committed are
// returned. Rows that do not follow the head fail with store.ErrAuditChain.
func (db *DB) AppendAuditChained(ctx context.Context, build func(headSeq int64, headHash string) []store.AuditRow) ([]store.AuditRow, error) {
	var rows []store.AuditRow
	err := db.writeTx(ctx, func(tx pgx.Tx) error {
		var headSeq int64
		var headHash string
		err := tx.QueryRow(ctx, `SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE`).Scan(&headSeq, &headHash)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("appending audit events: the audit_head row is missing: %w", store.ErrAuditChain)
		}
		if err != nil {
			return fmt.Errorf("appending audit events: reading head: %w", err)
		}
		rows = build(headSeq, headHash)
		if len(rows) == 0 {
			return nil
		}
		prevSeq, prevHash := headSeq, headHash
		for _, r := range rows {
			if r.Seq != prevSeq+1 || r.PrevHash != prevHash {
				return fmt.Errorf("appending audit event %d after event %d: %w", r.Seq, prevSeq, store.ErrAuditChain)
			}
			prevSeq, prevHash = r.Seq, r.Hash
		}

		// The rows and the head move in one round trip.
		var b pgx.Batch
		for _, r := range rows {
			data := r.Data
			if data == nil {
				data = []byte{}
			}
			b.Queue(`INSERT INTO audit_events (`+auditColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
				r.Seq, store.FormatAuditTime(r.Time), r.Type, r.Actor, r.SPIFFEID, r.Outcome, data, r.PrevHash, r.Hash)
		}
		last := rows[len(rows)-1]
		b.Queue(`UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1`, last.Seq, last.Hash)
		res := tx.SendBatch(ctx, &b)
		for _, r := range rows {
			if _, err := res.Exec(); err != nil {
				_ = res.Close()
				if sqlState(err) == codeUniqueViolation {
					// A row already holds this seq although the head says
					// otherwise: the table was written around the head.
					return fmt.Errorf("appending audit event %d: a row with that seq exists: %w", r.Seq, store.ErrAuditChain)
				}
				return fmt.Errorf("appending audit event %d: %w", r.Seq, err)
			}
		}
		if _, err := res.Exec(); err != nil {
			_ = res.Close()
			return fmt.Errorf("appending audit events: updating head: %w", err)
		}
		if err := res.Close(); err != nil {
			return fmt.Errorf("appending audit events: %w", err)
		}
		return nil
	})
	return rows, err
}

// AuditHead returns the seq and hash recorded by the last append (0 and ""
// when the log is empty or its head row has been deleted).
func (db *DB) AuditHead(ctx context.Context) (int64, string, error) {
	var seq int64
	var hash string
	err := db.pool.QueryRow(ctx, `SELECT seq, hash FROM audit_head WHERE id = 1`).Scan(&seq, &hash)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, "", nil
	}
	if err != nil {
		return 0, "", fmt.Errorf("reading audit head: %w", err)
	}
	return seq, hash, nil
}

// QueryAudit returns the rows matching f, oldest first. Since is inclusive,
// Until exclusive. With f.Limit > 0 it returns the newest f.Limit of them.
func (db *DB) QueryAudit(ctx context.Context, f store.AuditFilter) ([]store.AuditRow, error) {
	return store.QueryAuditRows(ctx, dialect, auditColumns, f, db.queryAudit)
}

// ScanAudit calls fn for every row after afterSeq in seq order, a page at
// a time (see store.ScanAuditRows).
func (db *DB) ScanAudit(ctx context.Context, afterSeq int64, fn func(store.AuditRow) error) error {
	return store.ScanAuditRows(ctx, dialect, auditColumns, afterSeq, db.queryAudit, fn)
}

func (db *DB) queryAudit(ctx context.Context, q string, args ...any) ([]store.AuditRow, error) {
	rows, err := db.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.AuditRow, error) {
		var r store.AuditRow
		var ts string
		if err := row.Scan(&r.Seq, &ts, &r.Type, &r.Actor, &r.SPIFFEID, &r.Outcome, &r.Data, &r.PrevHash, &r.Hash); err != nil {
			return r, err
		}
		// A time column an operator has overwritten with something that is
		// not a time reads as the zero time rather than failing the whole
		// read: the row's hash then no longer matches and verification
		// names it.
		if t, err := time.Parse(time.RFC3339Nano, ts); err == nil {
			r.Time = t.UTC()
		}
		return r, nil
	})
}

// dialect is PostgreSQL's: numbered placeholders, and a list matched with
// = ANY of one array argument.
var dialect = store.SQLDialect{
	Placeholder: func(n int) string { return fmt.Sprintf("$%d", n) },
	In: func(column string, values []string, arg func(any) string) string {
		return column + " = ANY(" + arg(values) + ")"
	},
}
