package protocol

import (
	"errors"
	"fmt"
)

// Code is an error code carried in an error response. The set is closed:
// a server sends only these, and a client that meets another treats it as
// CodeInternal. Each is documented in PROTOCOL.md.
type Code string

// Error codes.
const (
	// Frame level: the connection is closed after the error frame.
	CodeBadFrame           Code = "bad_frame"           // the frame is not one msgpack map, or is truncated
	CodeFrameTooLarge      Code = "frame_too_large"     // the length prefix exceeds the server's max frame
	CodeUnsupportedVersion Code = "unsupported_version" // the hello names a version the server does not speak
	CodeForbidden          Code = "forbidden"           // the caller maps to no project, or to the system project, or (after a reload) no longer to its connection's

	// Request level: the connection stays usable.
	CodeBadRequest       Code = "bad_request"        // a field is missing, of the wrong type or out of range
	CodeUnknownOp        Code = "unknown_op"         // the op is not one this server knows
	CodeKeyTooLarge      Code = "key_too_large"      // a key exceeds the max key size
	CodeValueTooLarge    Code = "value_too_large"    // a value exceeds the max value size
	CodeQuotaExceeded    Code = "quota_exceeded"     // the write would push the project above its quota
	CodeNotInteger       Code = "not_integer"        // incr on a value that is not a JSON integer
	CodeOverflow         Code = "overflow"           // incr would leave the 64-bit signed range
	CodeConflict         Code = "conflict"           // a write's if_version condition failed; nothing was written
	CodeUnavailable      Code = "unavailable"        // the store cannot be reached, or the daemon is stopping
	CodeBusy             Code = "busy"               // the daemon's write queue stayed full until the deadline, or (at connect) it has no room for another connection
	CodeResponseTooLarge Code = "response_too_large" // the response would exceed the announced max_response
	CodeInternal         Code = "internal"           // a bug or an unexpected failure; details are in the daemon's log
)

// Codes lists every code, in the order of PROTOCOL.md.
var Codes = []Code{
	CodeBadFrame, CodeFrameTooLarge, CodeUnsupportedVersion, CodeForbidden,
	CodeBadRequest, CodeUnknownOp, CodeKeyTooLarge, CodeValueTooLarge,
	CodeQuotaExceeded, CodeNotInteger, CodeOverflow, CodeConflict, CodeUnavailable, CodeBusy, CodeResponseTooLarge, CodeInternal,
}

// Known reports whether c is one of the documented codes.
func (c Code) Known() bool {
	for _, k := range Codes {
		if c == k {
			return true
		}
	}
	return false
}

// Error is the error of a response: a code for programs and a message for
// people. It matches another *Error with errors.Is when the codes are equal,
// so callers can write errors.Is(err, &protocol.Error{Code: CodeBusy}).
type Error struct {
	Code    Code
	Message string
	// Keys lists, for CodeConflict, every key whose condition failed, in
	// the order of the request; nil otherwise.
	Keys []string
}

func (e *Error) Error() string {
	if e.Message == "" {
		return string(e.Code)
	}
	return e.Message
}

// Is matches errors of the same code.
func (e *Error) Is(target error) bool {
	var t *Error
	if !errors.As(target, &t) {
		return false
	}
	return t.Code == e.Code
}

// Errorf-free constructors keep the hot path free of fmt.

// NewError returns an *Error with the given code and message.
func NewError(code Code, msg string) *Error { return &Error{Code: code, Message: msg} }

// Frame-level read errors returned by ReadFrame.
var (
	// ErrFrameTooLarge is returned when a length prefix exceeds the maximum.
	ErrFrameTooLarge = errors.New("frame too large")
	// ErrTruncated is returned when the stream ends inside a frame.
	ErrTruncated = errors.New("truncated frame")
)

// errBadFrame marks decode failures; the server answers them with
// CodeBadFrame (unreadable frame) or CodeBadRequest (wrong field type).
var errBadFrame = errors.New("malformed frame")

// IsMalformed reports whether err came from decoding a malformed frame.
func IsMalformed(err error) bool { return errors.Is(err, errBadFrame) }

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errBadFrame}, args...)...)
}
