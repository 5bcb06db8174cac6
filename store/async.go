package store

import (
	"fmt"
	"time"
)

// OpKind is the kind of an Op.
type OpKind uint8

// The single-key operations Async.Do takes. Each keeps the semantics of the
// Store method it names.
const (
	OpGet    OpKind = iota + 1 // GetVersioned: fills Value, Version, Found
	OpHas                      // Has: fills Found
	OpSet                      // SetIf with Key, Value, TTL, Cond: fills Version
	OpDelete                   // DeleteIf with Key, Cond: fills Found (whether it existed)
)

// Op is one single-key operation submitted through Async.Do, and, once its
// Done is called, its outcome. The caller owns the Op: it may reuse it after
// Done has been called, and not before.
type Op struct {
	Kind    OpKind
	Project string
	// Key is read until Done and not after: its bytes may be the caller's
	// buffer, which it reuses once Done has been called (the daemon's
	// connections pass a view of the request's frame). A store that keeps
	// the key longer keeps a copy. The same holds for an OpSet's Value.
	Key string
	// Value is, for OpSet, the value to store; the store may read it until
	// Done. For OpGet, Done finds the value read in it: it may point into
	// the store's own memory and is valid only while Done runs, so Done must
	// copy or encode it before it returns and not keep it.
	Value []byte
	TTL   time.Duration // OpSet; 0 means no expiry
	Cond  Cond          // OpSet, OpDelete; the zero Cond always holds

	// Deadline is when the caller stops waiting. An op whose deadline has
	// passed when the store takes it up is not applied, and fails with
	// ErrUnavailable. The zero Deadline means none. A store takes no timer
	// per op for it: the deadline is checked when work is taken, and a
	// round trip already under way is bounded by the store's own timeouts.
	Deadline time.Time

	// Done is called exactly once per Do, with the outcome below filled in:
	// possibly before Do returns, on Do's goroutine, or later on one of the
	// store's own goroutines. It must be quick and must not block, and it
	// must not call Do. A Done that panics on a store's goroutine, or on
	// Do's within a batch the store applies there, is logged and costs no
	// other op its answer; otherwise on Do's goroutine the panic is the
	// caller's.
	Done func(*Op)

	// The outcome.
	Found   bool   // OpGet, OpHas: the key is live; OpDelete: it existed
	Version uint64 // OpGet: the entry's version; OpSet: the version written
	Err     error  // as the Store method would return it
}

// Async is implemented by stores that take single-key operations without a
// goroutine waiting on each, so a caller (the daemon's connection) can hand
// over every request of one read round at once and be called back as each
// is answered.
//
// Do takes ops without a goroutine waiting on each. A store may answer
// some before Do returns, on Do's goroutine — the embedded store its reads,
// PostgreSQL the reads of a Do that finds its reader idle — which costs
// Do's caller that work's time, bounded by the ops' deadlines or the
// store's own timeouts. Each op's Done is called exactly once, also when the store is closed (ErrClosed) or busy
// (ErrBusy). Ops given in one Do may be applied in any order and in
// different batches: a caller that needs two ops on one key applied in
// order submits the second after the first's Done. Every op is validated
// as the Store method would (its project, key, value and TTL).
type Async interface {
	Do(ops []*Op)
}

// FinishWrite gives a write op (OpSet, OpDelete) its outcome and calls its
// Done, for a backend: err is the write's error, nil on success; then
// version is the version an OpSet wrote, and existed whether an OpDelete
// found its key.
func (op *Op) FinishWrite(err error, version uint64, existed bool) {
	op.Err = err
	if err == nil {
		switch op.Kind {
		case OpSet:
			op.Version = version
		case OpDelete:
			op.Found = existed
		}
	}
	op.Done(op)
}

// CheckOp validates the key and value of op as the Store method of its
// kind would, and its kind; the project is the backend's to check. A Do
// calls it for every op before queueing any.
func (l Limits) CheckOp(op *Op) error {
	switch op.Kind {
	case OpGet, OpHas, OpDelete:
		return l.CheckKey(op.Key)
	case OpSet:
		return l.CheckSet(op.Key, op.Value, op.TTL)
	}
	return fmt.Errorf("%w: unknown operation kind %d", ErrBadArgument, op.Kind)
}
