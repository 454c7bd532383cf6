// Package postgres is the store.Backend on PostgreSQL (pgx v5), for auth
// services that keep their trust domain in a database server rather than in
// a file of their own: the first step towards several replicas sharing one.
//
// It behaves as the SQLite store does, checked by the same conformance
// suite: per-item revisions with compare-and-set, put-once metadata, and an
// audit log whose appends must follow the chain head. Writers in any number
// of processes are serialized by row locks in the database, never by a lock
// in this process. Errors map to the store's sentinels by SQLSTATE code. It
// must never hold secrets in plain text, and never put the connection
// string's password into an error or a log.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/wid-project/wid/internal/core/store"
)

// SQLSTATE codes the store acts on (PostgreSQL Appendix A).
const (
	codeUniqueViolation      = "23505"
	codeSerializationFailure = "40001"
	codeDeadlockDetected     = "40P01"
	codeInvalidPassword      = "28P01"
	codeInvalidAuthorization = "28000"
	codeInvalidCatalogName   = "3D000"
	codeCannotConnectNow     = "57P03"
	codeAdminShutdown        = "57P01"
	codeCrashShutdown        = "57P02"
	codeTooManyConnections   = "53300"
)

// connectTimeout bounds each connection attempt when the URL does not set
// connect_timeout, so that an unreachable host fails a start in seconds.
const connectTimeout = 10 * time.Second

// maxTxAttempts bounds the retries of a transaction that PostgreSQL aborted
// to break a deadlock between writers; nothing of it was committed.
const maxTxAttempts = 5

// DB is a store.Backend on one PostgreSQL database.
type DB struct {
	pool *pgxpool.Pool

	// changes wakes the change log's followers in this process: after its
	// own writes, and from the listener after other processes' commits.
	changes store.ChangeSignal
	// listen is the listener's connection configuration: the pool's, with
	// its own application_name so that operators can tell it apart.
	listen *pgx.ConnConfig
	// listenRetry is the least pause before the listener connects again;
	// listenCheck how long it waits quietly before it checks its connection.
	listenRetry, listenCheck time.Duration
	// listenChecks counts the checks the listener's connection passed.
	listenChecks atomic.Int64
	// listenOnce starts the listener with the first watcher; stopListen
	// and listenDone stop it on Close.
	listenOnce sync.Once
	listenMu   sync.Mutex
	stopListen context.CancelFunc
	listenDone chan struct{}
	closed     bool
}

var _ store.Backend = (*DB)(nil)

// Open connects to the database at url (postgres://user:password@host:port/db?...),
// applies pending schema migrations and returns it ready for use. Its errors
// name the server and what failed in one sentence, never the password.
func Open(ctx context.Context, url string) (*DB, error) {
	cfg, err := parseURL(url)
	if err != nil {
		return nil, err
	}
	where := describeServer(&cfg.ConnConfig.Config)
	if _, ok := cfg.ConnConfig.RuntimeParams["application_name"]; !ok {
		cfg.ConnConfig.RuntimeParams["application_name"] = "widagent"
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = connectTimeout
	}
	if !hasParam(url, "pool_max_conns") {
		cfg.MaxConns = int32(max(8, 2*runtime.GOMAXPROCS(0)))
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, connectError(where, &cfg.ConnConfig.Config, url, err)
	}
	listen := cfg.ConnConfig.Copy()
	listen.RuntimeParams["application_name"] = listenerApplicationName
	db := &DB{pool: pool, listen: listen, listenRetry: listenRetryMin, listenCheck: defaultListenCheck}
	// The pool connects lazily: a ping makes a wrong URL fail the start
	// rather than the first request.
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, connectError(where, &cfg.ConnConfig.Config, url, err)
	}
	if err := migrate(ctx, pool); err != nil {
		pool.Close()
		return nil, fmt.Errorf("migrating the PostgreSQL store at %s: %s", where, redact(err.Error(), url))
	}
	return db, nil
}

// Close closes every connection.
func (db *DB) Close() error {
	db.listenMu.Lock()
	db.closed = true
	stop, done := db.stopListen, db.listenDone
	db.listenMu.Unlock()
	if stop != nil {
		stop()
		<-done
	}
	db.pool.Close()
	return nil
}

// writeTx runs fn in one transaction, committing if fn returns nil, and
// runs it again when PostgreSQL aborted it to resolve a deadlock or a
// serialization failure: fn must therefore only touch the database and
// variables it resets itself.
func (db *DB) writeTx(ctx context.Context, fn func(tx pgx.Tx) error) error {
	for attempt := 1; ; attempt++ {
		err := pgx.BeginFunc(ctx, db.pool, fn)
		if err == nil {
			return nil
		}
		if attempt < maxTxAttempts && isRetryable(err) && ctx.Err() == nil {
			continue
		}
		return unreachable(err)
	}
}

// unreachable marks err with store.ErrUnavailable when it says the
// database server could not be reached or ended the connection (SQLSTATE
// class 08, an administrator or crash shutdown, a server or database not
// accepting connections, or no server answering), so that callers answer "try
// again" rather than "internal error". Other errors pass unchanged.
func unreachable(err error) error {
	if err == nil || errors.Is(err, store.ErrUnavailable) {
		return err
	}
	c := sqlState(err)
	var ce *pgconn.ConnectError
	var ne net.Error
	switch {
	// A failed connect is the database being out of reach whatever the
	// server said, e.g. 55000 for a database not accepting connections.
	case errors.As(err, &ce),
		strings.HasPrefix(c, "08"), c == codeAdminShutdown, c == codeCrashShutdown, c == codeCannotConnectNow,
		c == "" && (errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || pgconn.SafeToRetry(err)):
		return fmt.Errorf("%w: %w", store.ErrUnavailable, err)
	}
	return err
}

// sqlState returns err's SQLSTATE code, or "" when it did not come from the server.
func sqlState(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

func isRetryable(err error) bool {
	c := sqlState(err)
	return c == codeDeadlockDetected || c == codeSerializationFailure
}
