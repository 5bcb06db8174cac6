package postgres

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Retrying after a lost connection.
//
// PostgreSQL ends a pooled connection when an operator terminates its
// backend (pg_terminate_backend), the server restarts, or a proxy drops it;
// the pool learns of it only at the connection's next use, which fails. A
// call that failed so gets one transparent retry, on a connection checked
// first, when running it again cannot do anything twice:
//
//   - reads (Get, Has, GetMany, HasMany, List, Usage) always;
//   - SetQuota and SetDefaultQuota, which set a value, always;
//   - a write batch (Set, SetMany, Delete, DeleteMany, Clear) only when it
//     is known that nothing of it was committed: the connection failed
//     before the round trip that holds the commit was sent (or nothing of
//     it was written), or the server's answer to a statement before the
//     commit was the frame that says it is ending the connection (57P01
//     and the like). The server runs a round trip's statements in order, so
//     it never reached the commit. A connection that just breaks (EOF, a
//     reset) before the commit's answer leaves the outcome unknown: a
//     server that crashes right after committing sends nothing more;
//   - never Incr, whose retry would add twice if the first attempt did
//     commit, nor a write whose outcome is unknown: they fail with
//     store.ErrUnavailable as before.

// connLost reports whether err means the connection was lost or ended by
// the server, rather than a statement refused or a deadline reached.
func connLost(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || pgconn.Timeout(err) {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "57P01", "57P02", "57P03": // admin_shutdown (terminated), crash_shutdown, cannot_connect_now
			return true
		}
		return false
	}
	return pgconn.SafeToRetry(err) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// readLost reports whether a read round's err means its connection is
// gone, so that the reads may run again on another: connLost, or any FATAL
// frame — a server ends a session with one for more reasons than
// connLost's (idle_session_timeout's 57P05, a proxy's own), and a read the
// reader's kept connection could not answer is safe to run again.
func readLost(err error) bool {
	if connLost(err) {
		return true
	}
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (strings.EqualFold(pgErr.SeverityUnlocalized, "FATAL") ||
		(pgErr.SeverityUnlocalized == "" && strings.EqualFold(pgErr.Severity, "FATAL")))
}

// uncommitted marks the error of a write batch that is known not to have
// been committed.
type uncommitted struct{ err error }

func (e *uncommitted) Error() string { return e.err.Error() }
func (e *uncommitted) Unwrap() error { return e.err }

// notCommitted wraps err, if any, as known not committed.
func notCommitted(err error) error {
	if err == nil {
		return nil
	}
	return &uncommitted{err}
}

// retryableWrite reports whether a write batch that failed with err may be
// run again: its connection was lost and nothing of it was committed.
func retryableWrite(err error) bool {
	var u *uncommitted
	return errors.As(err, &u) && connLost(err)
}

// terminated reports whether err is the server's frame saying it ends the
// connection, as the answer to a statement.
func terminated(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && connLost(pgErr)
}

// roundWatch records which statement of a round trip failed, and how.
type roundWatch struct {
	reached  int // statements whose answer was read
	failedAt int // index of the statement whose answer was an error; -1 if none
	err      error
}

// watch wraps the callbacks of b's statements (pgx calls them in order,
// and stops at the first error) to record where the round trip failed.
func watch(b *pgx.Batch) *roundWatch {
	w := &roundWatch{failedAt: -1}
	for i, qq := range b.QueuedQueries {
		fn := qq.Fn
		qq.Fn = func(br pgx.BatchResults) error {
			w.reached++
			var err error
			if fn != nil {
				err = fn(br)
			} else {
				_, err = br.Exec()
			}
			if err != nil && w.failedAt < 0 {
				w.failedAt, w.err = i, err
			}
			return err
		}
	}
	return w
}

// endedBefore reports whether the round trip, failed with err, ended with
// the server ending the connection before it answered anything (pgx may
// meet the frame while it prepares the statements, or sends them), or in
// its answer to one of the first n statements: it ran none from that one
// on.
func (w *roundWatch) endedBefore(n int, err error) bool {
	if w.reached == 0 {
		return terminated(err)
	}
	return w.failedAt >= 0 && w.failedAt < n && terminated(w.err)
}

// liveConn acquires a connection for a retry, checking each it is handed
// (a 1 ms read, only on this path): when the server ended every pooled
// connection at once, the retry must not take another dead one.
func (s *Store) liveConn(ctx context.Context) (*pgxpool.Conn, error) {
	for range s.cfg.MaxConns + 1 {
		conn, err := s.pool.Acquire(ctx)
		if err != nil {
			return nil, err
		}
		if err := conn.Conn().PgConn().CheckConn(); err == nil {
			return conn, nil
		}
		conn.Release() // closed by the failed check: the pool drops it
	}
	return s.pool.Acquire(ctx) // every check failed: let this attempt report why
}

// acquire returns a connection: any from the pool, or a checked one for a
// retry.
func (s *Store) acquire(ctx context.Context, retry bool) (*pgxpool.Conn, error) {
	if retry {
		return s.liveConn(ctx)
	}
	return s.pool.Acquire(ctx)
}

// querier is what the calls outside the queues run their statements on:
// the pool, or a connection checked for a retry.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

// twice runs fn on the pool and, if that failed on a lost connection, once
// more on a checked connection. Only for calls that are safe to run twice:
// reads, and writes that set a value.
func (s *Store) twice(ctx context.Context, fn func(q querier) error) error {
	err := fn(s.pool)
	if !connLost(err) {
		return err
	}
	conn, cerr := s.liveConn(ctx)
	if cerr != nil {
		return err
	}
	defer conn.Release()
	return fn(conn)
}
