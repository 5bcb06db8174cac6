package client

import (
	"errors"
	"fmt"

	"github.com/kvsidecar/kvsidecar/protocol"
)

// Errors a call can return, matched with errors.Is. Each code sentinel is a
// *protocol.Error, which matches any *protocol.Error of the same code, so an
// error response of the daemon matches the sentinel of its code while its
// message stays the daemon's (for example "quota exceeded: ..."). The same
// sentinels match the errors the client raises itself before sending (a key
// or value over the daemon's limits).
var (
	// Request errors: the call failed, the connection stays usable.

	// ErrBadRequest: an argument is wrong (empty key, negative TTL, too many
	// keys in one batch, invalid UTF-8 in a key).
	ErrBadRequest = &protocol.Error{Code: protocol.CodeBadRequest, Message: "bad request"}
	// ErrUnknownOp: the daemon does not know the operation (it is older
	// than this client).
	ErrUnknownOp = &protocol.Error{Code: protocol.CodeUnknownOp, Message: "unknown operation"}
	// ErrKeyTooLarge: a key is longer than Limits().MaxKey bytes.
	ErrKeyTooLarge = &protocol.Error{Code: protocol.CodeKeyTooLarge, Message: "key too large"}
	// ErrValueTooLarge: a value is longer than Limits().MaxValue bytes.
	ErrValueTooLarge = &protocol.Error{Code: protocol.CodeValueTooLarge, Message: "value too large"}
	// ErrQuotaExceeded: the write would push the project above its quota;
	// nothing was written. The message contains "quota exceeded".
	ErrQuotaExceeded = &protocol.Error{Code: protocol.CodeQuotaExceeded, Message: "quota exceeded"}
	// ErrNotInteger: Incr on a value that is not a JSON integer.
	ErrNotInteger = &protocol.Error{Code: protocol.CodeNotInteger, Message: "not an integer"}
	// ErrOverflow: Incr would leave the signed 64-bit range.
	ErrOverflow = &protocol.Error{Code: protocol.CodeOverflow, Message: "integer overflow"}
	// ErrConflict: a conditional write (SetIf, DeleteIf, a SetMany item
	// with a condition, Update after its last attempt) found the key
	// changed; nothing was written. ConflictKeys(err) lists the keys.
	ErrConflict = &protocol.Error{Code: protocol.CodeConflict, Message: "conflict"}
	// ErrBusy: the daemon's write queue stayed full; nothing was written.
	// Retry later. At Dial: the daemon, or the caller's project, has as
	// many connections open as it allows.
	ErrBusy = &protocol.Error{Code: protocol.CodeBusy, Message: "daemon busy"}
	// ErrResponseTooLarge: the answer would exceed the daemon's announced
	// Limits().MaxResponse bytes. GetMany splits its keys and asks again
	// by itself, so callers meet it only where no split can help.
	ErrResponseTooLarge = &protocol.Error{Code: protocol.CodeResponseTooLarge, Message: "response too large"}
	// ErrInternal: an unexpected failure in the daemon (details are in its
	// log), or a response this client could not read.
	ErrInternal = &protocol.Error{Code: protocol.CodeInternal, Message: "internal error"}

	// ErrUnavailable: the daemon cannot be reached, its store cannot be
	// reached, or the connection broke while the call was in flight. In the
	// last case a write may or may not have been applied. The next call
	// dials again.
	ErrUnavailable = &protocol.Error{Code: protocol.CodeUnavailable, Message: "kvsidecar unavailable"}

	// Connection errors: the daemon closes the connection after sending
	// them. At Dial they are returned as they are; for calls in flight they
	// come wrapped in an error that also matches ErrUnavailable.

	// ErrForbidden: the caller's credentials map to no project, or to the
	// system project.
	ErrForbidden = &protocol.Error{Code: protocol.CodeForbidden, Message: "forbidden"}
	// ErrUnsupportedVersion: the daemon does not speak this client's
	// protocol version.
	ErrUnsupportedVersion = &protocol.Error{Code: protocol.CodeUnsupportedVersion, Message: "unsupported protocol version"}
	// ErrBadFrame: the daemon could not read a frame this client sent.
	ErrBadFrame = &protocol.Error{Code: protocol.CodeBadFrame, Message: "bad frame"}
	// ErrFrameTooLarge: a request would exceed Limits().MaxFrame bytes. The
	// client refuses it before sending (the daemon would close the
	// connection), so only the refused call fails.
	ErrFrameTooLarge = &protocol.Error{Code: protocol.CodeFrameTooLarge, Message: "frame too large"}

	// ErrClosed: the client was closed. Calls in flight when Close was
	// called fail with it too; a write among them may or may not have been
	// applied.
	ErrClosed = errors.New("kvsidecar client is closed")
)

// newError returns an error of the given code whose message names the
// problem; the client raises these itself, before sending.
func newError(code protocol.Code, format string, args ...any) error {
	return &protocol.Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// lostError is the error of calls in flight when a connection breaks.
func lostError(socket string, cause error) error {
	return fmt.Errorf("%w: connection to %s lost, the outcome of a write in flight is unknown: %w", ErrUnavailable, socket, cause)
}

// opError names the operation (and key) an error belongs to.
func opError(op protocol.Op, key string, err error) error {
	if key == "" {
		return fmt.Errorf("kv %s: %w", op, err)
	}
	return fmt.Errorf("kv %s %q: %w", op, key, err)
}
