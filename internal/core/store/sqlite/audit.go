package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/wid-project/wid/internal/core/store"
)

const auditColumns = `seq, time, type, actor, spiffe_id, outcome, data, prev_hash, hash`

// AppendAudit appends rows in one transaction, after checking that they
// continue the chain recorded in audit_head; otherwise it fails with
// store.ErrAuditChain and writes nothing.
func (db *DB) AppendAudit(ctx context.Context, rows []store.AuditRow) error {
	if len(rows) == 0 {
		return nil
	}
	return db.writeTx(ctx, func(tx *sql.Tx) error {
		var headSeq int64
		var headHash string
		err := tx.StmtContext(ctx, db.auditHeadGet).QueryRowContext(ctx).Scan(&headSeq, &headHash)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("appending audit events: the audit_head row is missing: %w", store.ErrAuditChain)
		}
		if err != nil {
			return fmt.Errorf("appending audit events: reading head: %w", err)
		}
		prevSeq, prevHash := headSeq, headHash
		for _, r := range rows {
			if r.Seq != prevSeq+1 || r.PrevHash != prevHash {
				return fmt.Errorf("appending audit event %d after event %d: %w", r.Seq, prevSeq, store.ErrAuditChain)
			}
			prevSeq, prevHash = r.Seq, r.Hash
		}

		insert := tx.StmtContext(ctx, db.auditInsert)
		for _, r := range rows {
			data := r.Data
			if data == nil {
				data = []byte{}
			}
			if _, err := insert.ExecContext(ctx, r.Seq, store.FormatAuditTime(r.Time), r.Type, r.Actor, r.SPIFFEID, r.Outcome, data, r.PrevHash, r.Hash); err != nil {
				if isConstraint(err, 0) {
					// A row already holds this seq although the head says
					// otherwise: the table was written around the head.
					return fmt.Errorf("appending audit event %d: %v: %w", r.Seq, err, store.ErrAuditChain)
				}
				return fmt.Errorf("appending audit event %d: %w", r.Seq, err)
			}
		}
		last := rows[len(rows)-1]
		if _, err := tx.StmtContext(ctx, db.auditHeadSet).ExecContext(ctx, last.Seq, last.Hash); err != nil {
			return fmt.Errorf("appending audit events: updating head: %w", err)
		}
		return nil
	})
}

// AuditHead returns the seq and hash recorded by the last append (0 and ""
// when the log is empty or its head row has been deleted).
func (db *DB) AuditHead(ctx context.Context) (int64, string, error) {
	var seq int64
	var hash string
	err := db.reader.QueryRowContext(ctx, `SELECT seq, hash FROM audit_head WHERE id = 1`).Scan(&seq, &hash)
	if errors.Is(err, sql.ErrNoRows) {
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
	rows, err := db.reader.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []store.AuditRow
	for rows.Next() {
		var r store.AuditRow
		var ts string
		if err := rows.Scan(&r.Seq, &ts, &r.Type, &r.Actor, &r.SPIFFEID, &r.Outcome, &r.Data, &r.PrevHash, &r.Hash); err != nil {
			return nil, err
		}
		// A time column an operator has overwritten with something that is
		// not a time reads as the zero time rather than failing the whole
		// read: the row's hash then no longer matches and verification
		// names it, which is more useful than refusing to read the log.
		if t, err := time.Parse(time.RFC3339Nano, ts); err == nil {
			r.Time = t.UTC()
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// dialect is SQLite's: ? placeholders, and a list matched with IN and one
// argument per value.
var dialect = store.SQLDialect{
	Placeholder: func(int) string { return "?" },
	In: func(column string, values []string, arg func(any) string) string {
		ps := make([]string, len(values))
		for i, v := range values {
			ps[i] = arg(v)
		}
		return column + " IN (" + strings.Join(ps, ", ") + ")"
	},
}
