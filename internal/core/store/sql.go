package store

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"
)

// What the SQL backends share: the logic is the same, and each dialect
// keeps its own SQL text (placeholders, list matching, DDL, locking).

// AuditTimeLayout is how the SQL backends store an audit row's time: RFC
// 3339 with a fixed nine-digit fraction, so that text order is time order
// and nanoseconds (part of the row's hash) survive.
const AuditTimeLayout = "2006-01-02T15:04:05.000000000Z"

// FormatAuditTime is t in AuditTimeLayout, in UTC.
func FormatAuditTime(t time.Time) string { return t.UTC().Format(AuditTimeLayout) }

// SQLDialect is what differs between the SQL backends when a query is
// built from parts.
type SQLDialect struct {
	// Placeholder is the text that stands for the n-th argument, from 1.
	Placeholder func(n int) string
	// In matches column against a list of values, adding the arguments it
	// needs with arg (which returns each one's placeholder).
	In func(column string, values []string, arg func(any) string) string
}

// AuditQuery is the SELECT of columns from audit_events behind QueryAudit
// for f, in d's dialect, with its arguments. With f.Limit > 0 it selects
// the newest rows first: the caller reverses them to return oldest first.
func AuditQuery(d SQLDialect, columns string, f AuditFilter) (string, []any) {
	var where []string
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return d.Placeholder(len(args))
	}
	if len(f.Types) > 0 {
		where = append(where, d.In("type", f.Types, arg))
	}
	if f.Actor != "" {
		where = append(where, "actor = "+arg(f.Actor))
	}
	if f.SPIFFEID != "" {
		where = append(where, "spiffe_id = "+arg(f.SPIFFEID))
	}
	if f.Outcome != "" {
		where = append(where, "outcome = "+arg(f.Outcome))
	}
	if !f.Since.IsZero() {
		where = append(where, "time >= "+arg(FormatAuditTime(f.Since)))
	}
	if !f.Until.IsZero() {
		where = append(where, "time < "+arg(FormatAuditTime(f.Until)))
	}
	if f.AfterSeq > 0 {
		where = append(where, "seq > "+arg(f.AfterSeq))
	}
	if f.BeforeSeq > 0 {
		where = append(where, "seq < "+arg(f.BeforeSeq))
	}
	q := `SELECT ` + columns + ` FROM audit_events`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	if f.Limit > 0 {
		q += " ORDER BY seq DESC LIMIT " + arg(f.Limit)
	} else {
		q += " ORDER BY seq"
	}
	return q, args
}

// Migrations are a SQL backend's schema steps in order: Migrations[i]
// brings the schema to version i+1. Append new steps, never edit applied
// ones: a database records only the number of steps it has taken.
type Migrations [][]string

// Version is the schema version this build creates and understands.
func (m Migrations) Version() int { return len(m) }

// Apply takes a database at schema version current up to version to
// (at most m.Version()): it runs each step's statements with exec and
// records each version taken with record. The backend supplies both, and
// the transaction and locking around them. A database newer than this
// build is refused.
func (m Migrations) Apply(ctx context.Context, current, to int, exec func(ctx context.Context, stmt string) error, record func(ctx context.Context, version int) error) error {
	if current > m.Version() {
		return fmt.Errorf("database schema version %d is newer than the %d this build of wid knows: upgrade wid", current, m.Version())
	}
	for v := current + 1; v <= min(to, m.Version()); v++ {
		for _, stmt := range m[v-1] {
			if err := exec(ctx, stmt); err != nil {
				return fmt.Errorf("applying schema version %d: %w", v, err)
			}
		}
		if err := record(ctx, v); err != nil {
			return fmt.Errorf("recording schema version %d: %w", v, err)
		}
	}
	return nil
}

// CheckOps refuses a batch for Apply with an op that names no item or has
// an unknown type, before a backend starts its transaction.
func CheckOps(ops []Op) error {
	for i, op := range ops {
		if op.Item.Kind == "" || op.Item.Name == "" {
			return &OpError{Index: i, Err: fmt.Errorf("applying change %d: kind and name are required", i+1)}
		}
		if op.Type < OpCreate || op.Type > OpDelete {
			return &OpError{Index: i, Err: fmt.Errorf("applying change %d to %s/%s: unknown operation %d", i+1, op.Item.Kind, op.Item.Name, op.Type)}
		}
	}
	return nil
}

// AuditReader runs a SELECT of audit rows in a backend's own way.
type AuditReader func(ctx context.Context, q string, args ...any) ([]AuditRow, error)

// QueryAuditRows is QueryAudit for a SQL backend that reads with read:
// the rows matching f, oldest first.
func QueryAuditRows(ctx context.Context, d SQLDialect, columns string, f AuditFilter, read AuditReader) ([]AuditRow, error) {
	q, args := AuditQuery(d, columns, f)
	rows, err := read(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("querying audit events: %w", err)
	}
	if f.Limit > 0 {
		slices.Reverse(rows)
	}
	return rows, nil
}

// AuditScanPage is how many audit rows ScanAuditRows holds at once.
const AuditScanPage = 1000

// ScanAuditRows is ScanAudit for a SQL backend that reads with read: fn
// sees every row after afterSeq in seq order, read a page at a time with
// no query open while fn runs, so fn may use the store and the log may
// be of any size.
func ScanAuditRows(ctx context.Context, d SQLDialect, columns string, afterSeq int64, read AuditReader, fn func(AuditRow) error) error {
	q := `SELECT ` + columns + ` FROM audit_events WHERE seq > ` + d.Placeholder(1) + ` ORDER BY seq LIMIT ` + d.Placeholder(2)
	for {
		page, err := read(ctx, q, afterSeq, AuditScanPage)
		if err != nil {
			return fmt.Errorf("scanning audit events after %d: %w", afterSeq, err)
		}
		for _, r := range page {
			if err := fn(r); err != nil {
				return err
			}
			afterSeq = r.Seq
		}
		if len(page) < AuditScanPage {
			return nil
		}
	}
}
