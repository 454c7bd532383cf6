// Package store keeps wid's state: resources (as JSON documents with a
// revision), certificate authorities, small metadata and the audit log rows.
// It knows nothing of what the documents mean; callers encode and validate.
// Every multi-row change happens in one transaction.
package store

import (
	"context"
	"errors"
	"time"
)

var (
	// ErrNotFound: no item of that kind and name.
	ErrNotFound = errors.New("not found")
	// ErrAlreadyExists: a create found the item there.
	ErrAlreadyExists = errors.New("already exists")
	// ErrConflict: the item's revision was not the one expected.
	ErrConflict = errors.New("revision conflict")
	// ErrAuditChain: an audit append did not follow the current head.
	ErrAuditChain = errors.New("audit append does not follow the chain head")
	// ErrNoSpace: a write failed because the disk (or the database's size
	// limit) is full. Nothing of that write was stored.
	ErrNoSpace = errors.New("disk full")
	// ErrReadOnly: a write failed because the store's files or file system
	// are read-only.
	ErrReadOnly = errors.New("the store is read-only")
	// ErrUnavailable: the database server could not be reached, or ended
	// the connection, so the operation did not happen (a write's
	// transaction was not committed). Trying again later may succeed.
	ErrUnavailable = errors.New("the database cannot be reached")
)

// OpError is the failure of one op of an Apply. Index is the op's place
// among the ops given (from 0), so that a caller can say which document of
// a batch failed; Err is the op's error (wrapping ErrAlreadyExists,
// ErrNotFound, ErrConflict...), and its text is the error's text.
type OpError struct {
	Index int
	Err   error
}

func (e *OpError) Error() string { return e.Err.Error() }
func (e *OpError) Unwrap() error { return e.Err }

// Item is one stored document.
type Item struct {
	Kind     string
	Name     string
	Revision int64
	// Data is the document, normally JSON.
	Data []byte
}

// OpType is what an Op does.
type OpType int

const (
	// OpCreate fails with ErrAlreadyExists if the item exists.
	OpCreate OpType = iota + 1
	// OpUpdate fails with ErrNotFound if missing, ErrConflict if ExpectRevision is set and differs.
	OpUpdate
	// OpUpsert creates or replaces.
	OpUpsert
	// OpDelete fails with ErrNotFound if missing, ErrConflict if ExpectRevision is set and differs.
	OpDelete
)

// Op is one change inside an atomic Apply.
type Op struct {
	Type OpType
	Item Item
	// ExpectRevision, when non-zero, must equal the stored revision (compare-and-set).
	ExpectRevision int64
}

// AuditRow is one audit event as stored. Hash covers every other field
// (see audit.HashRow), so editing any column is detectable.
type AuditRow struct {
	Seq      int64
	Time     time.Time
	Type     string
	Actor    string
	SPIFFEID string
	Outcome  string
	// Data is the whole event as canonical JSON.
	Data     []byte
	PrevHash string
	Hash     string
}

// AuditFilter selects audit rows; zero fields match everything.
type AuditFilter struct {
	Types    []string
	Actor    string
	SPIFFEID string
	Outcome  string
	Since    time.Time
	Until    time.Time
	AfterSeq int64
	// BeforeSeq > 0 matches rows with a smaller seq: paging back from it.
	BeforeSeq int64
	// Limit > 0 returns the newest Limit matching rows; the result is always oldest first.
	Limit int
}

// Backend is what the auth service needs from a database. SQLite now,
// PostgreSQL later: keep it to what both do well.
type Backend interface {
	Get(ctx context.Context, kind, name string) (Item, error)
	// List returns every item of a kind, ordered by name.
	List(ctx context.Context, kind string) ([]Item, error)
	// Apply performs ops in one transaction, all or nothing, and returns the
	// resulting revision of each op's item (0 for deletes). The same
	// transaction appends one Change per op to the change log, so a
	// failed Apply leaves no change behind and a committed one is never
	// missing from it.
	Apply(ctx context.Context, ops ...Op) ([]int64, error)

	// ChangesAfter returns up to limit changes (at most MaxChangesPage)
	// with a revision above after, oldest first. It fails with
	// ErrChangesPruned when some of those changes were pruned.
	ChangesAfter(ctx context.Context, after int64, limit int) ([]Change, error)
	// ChangeHead returns the newest change's revision, 0 before the first
	// change. A follower starts from it before it reads anything else, so
	// that every later change reaches it.
	ChangeHead(ctx context.Context) (int64, error)
	// PruneChanges deletes up to limit of the oldest changes, keeping the
	// newest keep (at least one) and every change recorded at or after
	// before; it returns how many it deleted. Its work is bounded by keep
	// and limit, whatever the log's length.
	PruneChanges(ctx context.Context, keep int, before time.Time, limit int) (int, error)
	// WatchChanges returns a channel that receives when changes may have
	// been appended: after this process's writes, and on PostgreSQL after
	// another process's (LISTEN/NOTIFY) and after the listening connection
	// was lost and made again, when notifications may have been missed.
	// A wake-up says nothing of what changed: read ChangesAfter. The
	// function stops the channel.
	WatchChanges() (<-chan struct{}, func())

	// GetMeta and PutMeta keep small facts such as the trust domain name.
	GetMeta(ctx context.Context, key string) (string, error)
	// PutMeta sets key only if it is unset or already equal; otherwise ErrConflict.
	PutMetaOnce(ctx context.Context, key, value string) error

	// AppendAudit appends rows in one transaction. rows[0].PrevHash must equal
	// the current head hash and rows[0].Seq the head seq + 1 (else ErrAuditChain),
	// each row following the previous one.
	AppendAudit(ctx context.Context, rows []AuditRow) error
	// AuditHead returns the last row's seq and hash ("" and 0 when empty), as
	// recorded with the last append (kept apart from the rows so that deleting
	// the newest row is detectable).
	AuditHead(ctx context.Context) (seq int64, hash string, err error)
	QueryAudit(ctx context.Context, f AuditFilter) ([]AuditRow, error)
	// ScanAudit calls fn for every row in seq order starting after afterSeq.
	ScanAudit(ctx context.Context, afterSeq int64, fn func(AuditRow) error) error

	Close() error
}
