// Package export reads and writes the export document of a project: one
// JSON document, streamed entry by entry in both directions, so that a
// project of any size goes through in memory bounded by its largest entry.
//
// The document is
//
//	{"format":"kvsidecar-export","version":1,"project":"…","exported_at":"RFC 3339",
//	 "entries":[{"key":"…","value":<JSON>,"expires_at":"RFC 3339"|null}, …]}
//
// A value that is not JSON (or whose bytes a JSON parser would not give back
// as they are: surrounding whitespace, invalid UTF-8) is written as
// "value_base64" instead of "value", so every value round-trips byte for
// byte. Expiries are absolute instants, written with the precision the store
// keeps (milliseconds or microseconds).
//
// The reader also takes a plain JSON object, {"key": value, …}: what a
// person writes by hand. Each member becomes an entry without expiry whose
// value is the member's JSON text.
package export

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
	"unicode/utf8"

	"github.com/kvsidecar/kvsidecar/store"
)

// Format and Version identify the export document.
const (
	Format  = "kvsidecar-export"
	Version = 1
)

// Header is what an export document says about itself.
type Header struct {
	Project    string
	ExportedAt time.Time
}

// Writer writes an export document. Close ends it; a document whose Close
// was never called is invalid JSON, so a reader notices a truncated export.
type Writer struct {
	w       *bufio.Writer
	entries int
	err     error
}

// NewWriter starts a document on w.
func NewWriter(w io.Writer, h Header) (*Writer, error) {
	ew := &Writer{w: bufio.NewWriterSize(w, 64<<10)}
	project, err := json.Marshal(h.Project)
	if err != nil {
		return nil, fmt.Errorf("encode project name: %w", err)
	}
	fmt.Fprintf(ew.w, `{"format":%q,"version":%d,"project":%s,"exported_at":%q,"entries":[`,
		Format, Version, project, h.ExportedAt.UTC().Format(time.RFC3339Nano))
	return ew, nil
}

// Write appends one entry.
func (w *Writer) Write(e store.Entry) error {
	if w.err != nil {
		return w.err
	}
	key, err := json.Marshal(e.Key)
	if err != nil {
		return fmt.Errorf("encode key %q: %w", e.Key, err)
	}
	if w.entries > 0 {
		w.w.WriteByte(',')
	}
	w.w.WriteString("\n{\"key\":")
	w.w.Write(key)
	if IsJSON(e.Value) {
		w.w.WriteString(`,"value":`)
		w.w.Write(e.Value)
	} else {
		w.w.WriteString(`,"value_base64":"`)
		enc := base64.NewEncoder(base64.StdEncoding, w.w)
		enc.Write(e.Value)
		enc.Close()
		w.w.WriteByte('"')
	}
	if e.Expires.IsZero() {
		w.w.WriteString(`,"expires_at":null}`)
	} else {
		fmt.Fprintf(w.w, `,"expires_at":%q}`, e.Expires.UTC().Format(time.RFC3339Nano))
	}
	w.entries++
	// bufio keeps the first write error and returns it from every later
	// call; a cheap zero-length write surfaces it now.
	if _, err := w.w.Write(nil); err != nil {
		w.err = fmt.Errorf("write export: %w", err)
	}
	return w.err
}

// Close ends the document and flushes it.
func (w *Writer) Close() error {
	if w.err != nil {
		return w.err
	}
	w.w.WriteString("\n]}\n")
	if err := w.w.Flush(); err != nil {
		return fmt.Errorf("write export: %w", err)
	}
	return nil
}

// IsJSON reports whether value is written as JSON: valid JSON, valid UTF-8,
// and without the surrounding whitespace a parser would drop.
func IsJSON(value []byte) bool {
	return len(value) > 0 && len(bytes.TrimSpace(value)) == len(value) && utf8.Valid(value) && json.Valid(value)
}

// Reader reads an export document or a plain object, entry by entry.
type Reader struct {
	in     *boundedReader
	dec    *json.Decoder
	plain  bool
	header Header
	n      int // entries returned so far
	done   bool
	// pending is the first member of a plain object, read while telling
	// the two forms apart.
	pending *store.Entry
}

// ErrFormat is matched (errors.Is) by every error about the document's
// content, as opposed to reading it.
var ErrFormat = errors.New("not a valid import document")

// NewReader starts reading a document from r. maxEntryBytes bounds the
// bytes of one entry as written in the document (an entry larger than that
// is an error instead of a buffer that grows without bound); 0 means no
// bound.
func NewReader(r io.Reader, maxEntryBytes int64) (*Reader, error) {
	in := &boundedReader{r: r, max: maxEntryBytes}
	rd := &Reader{in: in, dec: json.NewDecoder(in)}
	rd.dec.DisallowUnknownFields()
	if err := rd.start(); err != nil {
		return nil, err
	}
	return rd, nil
}

func formatErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrFormat, fmt.Sprintf(format, args...))
}

// readErr turns a decoding error into one that says where it happened. A
// failure of the underlying reader is passed on as it is; anything else is
// about the content and matches ErrFormat.
func (r *Reader) readErr(what string, err error) error {
	var rerr *readError
	if errors.As(err, &rerr) {
		return fmt.Errorf("%s: %w", what, rerr.err)
	}
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return formatErr("%s: %v (near byte %d)", what, err, r.dec.InputOffset())
}

func (r *Reader) start() error {
	r.in.mark()
	tok, err := r.dec.Token()
	if err != nil {
		return r.readErr("read the document's start", err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return formatErr("the document must be a JSON object (an export or {\"key\": value, …}), it starts with %v", tok)
	}
	if !r.dec.More() {
		r.plain = true // {}: an empty plain object
		return nil
	}
	name, err := r.memberName()
	if err != nil {
		return err
	}
	var raw json.RawMessage
	if err := r.dec.Decode(&raw); err != nil {
		return r.readErr(fmt.Sprintf("read member %q", name), err)
	}
	var format string
	if name == "format" && json.Unmarshal(raw, &format) == nil && format == Format {
		return r.readHeader()
	}
	r.plain = true
	r.pending = &store.Entry{Key: name, Value: trimmed(raw)}
	return nil
}

// memberName reads the name of the next member of an object.
func (r *Reader) memberName() (string, error) {
	tok, err := r.dec.Token()
	if err != nil {
		return "", r.readErr("read a member name", err)
	}
	name, ok := tok.(string)
	if !ok {
		return "", formatErr("expected a member name, found %v", tok)
	}
	return name, nil
}

// readHeader reads the export's members up to its entries array.
func (r *Reader) readHeader() error {
	for r.dec.More() {
		name, err := r.memberName()
		if err != nil {
			return err
		}
		switch name {
		case "version":
			var v int
			if err := r.dec.Decode(&v); err != nil {
				return r.readErr("read version", err)
			}
			if v != Version {
				return formatErr("version %d, this build reads version %d", v, Version)
			}
		case "project":
			if err := r.dec.Decode(&r.header.Project); err != nil {
				return r.readErr("read project", err)
			}
		case "exported_at":
			var s string
			if err := r.dec.Decode(&s); err != nil {
				return r.readErr("read exported_at", err)
			}
			t, err := time.Parse(time.RFC3339Nano, s)
			if err != nil {
				return formatErr("exported_at %q is not an RFC 3339 time", s)
			}
			r.header.ExportedAt = t
		case "entries":
			tok, err := r.dec.Token()
			if err != nil {
				return r.readErr("read entries", err)
			}
			if d, ok := tok.(json.Delim); !ok || d != '[' {
				return formatErr("entries must be an array, found %v", tok)
			}
			return nil
		default:
			return formatErr("unknown member %q in an export document", name)
		}
	}
	return formatErr("the export document has no entries array")
}

// Header returns what an export document says about itself, and false for
// a plain object.
func (r *Reader) Header() (Header, bool) { return r.header, !r.plain }

// Entries returns how many entries Next has returned.
func (r *Reader) Entries() int { return r.n }

// docEntry is one entry of an export document as written.
type docEntry struct {
	Key         *string         `json:"key"`
	Value       json.RawMessage `json:"value"`
	ValueBase64 *string         `json:"value_base64"`
	ExpiresAt   *string         `json:"expires_at"`
}

// Next returns the next entry, or io.EOF after the last one (and after
// checking that the document ends properly). Errors about the content
// match ErrFormat and name the entry.
func (r *Reader) Next() (store.Entry, error) {
	if r.done {
		return store.Entry{}, io.EOF
	}
	r.in.mark()
	if r.pending != nil {
		e := *r.pending
		r.pending = nil
		r.n++
		return e, nil
	}
	if !r.dec.More() {
		if err := r.finish(); err != nil {
			return store.Entry{}, err
		}
		r.done = true
		return store.Entry{}, io.EOF
	}
	what := fmt.Sprintf("entry %d", r.n+1)
	var e store.Entry
	if r.plain {
		name, err := r.memberName()
		if err != nil {
			return store.Entry{}, fmt.Errorf("%s: %w", what, err)
		}
		var raw json.RawMessage
		if err := r.dec.Decode(&raw); err != nil {
			return store.Entry{}, r.readErr(fmt.Sprintf("%s (%q)", what, name), err)
		}
		e = store.Entry{Key: name, Value: trimmed(raw)}
	} else {
		var d docEntry
		if err := r.dec.Decode(&d); err != nil {
			return store.Entry{}, r.readErr(what, err)
		}
		var err error
		if e, err = d.entry(); err != nil {
			return store.Entry{}, fmt.Errorf("%w: %s: %v", ErrFormat, what, err)
		}
	}
	r.n++
	return e, nil
}

func (d docEntry) entry() (store.Entry, error) {
	if d.Key == nil {
		return store.Entry{}, errors.New(`no "key"`)
	}
	e := store.Entry{Key: *d.Key}
	switch {
	case d.Value != nil && d.ValueBase64 != nil:
		return store.Entry{}, fmt.Errorf(`key %q has both "value" and "value_base64"`, e.Key)
	case d.Value != nil:
		e.Value = trimmed(d.Value)
	case d.ValueBase64 != nil:
		v, err := base64.StdEncoding.DecodeString(*d.ValueBase64)
		if err != nil {
			return store.Entry{}, fmt.Errorf("key %q: value_base64 is not base64: %v", e.Key, err)
		}
		e.Value = v
	default:
		return store.Entry{}, fmt.Errorf(`key %q has no "value" or "value_base64"`, e.Key)
	}
	if d.ExpiresAt != nil {
		t, err := time.Parse(time.RFC3339Nano, *d.ExpiresAt)
		if err != nil {
			return store.Entry{}, fmt.Errorf("key %q: expires_at %q is not an RFC 3339 time", e.Key, *d.ExpiresAt)
		}
		e.Expires = t
	}
	return e, nil
}

// finish reads what follows the entries: the end of the array and of the
// export object (or of the plain object), then nothing but whitespace.
func (r *Reader) finish() error {
	if !r.plain {
		if _, err := r.dec.Token(); err != nil { // ]
			return r.readErr("read the end of entries", err)
		}
		if r.dec.More() {
			name, err := r.memberName()
			if err != nil {
				return err
			}
			return formatErr("member %q after entries: an export ends with its entries", name)
		}
	}
	if _, err := r.dec.Token(); err != nil { // }
		return r.readErr("read the end of the document", err)
	}
	if tok, err := r.dec.Token(); err != io.EOF {
		if err != nil {
			return r.readErr("read past the document", err)
		}
		return formatErr("data after the end of the document: %v", tok)
	}
	return nil
}

// trimmed copies a raw JSON value without the whitespace around it.
func trimmed(raw json.RawMessage) []byte {
	return bytes.Clone(bytes.TrimSpace(raw))
}

// errEntryTooLarge is the bound of NewReader's maxEntryBytes.
var errEntryTooLarge = errors.New("entry too large")

// readError wraps errors of the underlying reader, to tell them from the
// decoder's errors about the content.
type readError struct{ err error }

func (e *readError) Error() string { return e.err.Error() }
func (e *readError) Unwrap() error { return e.err }

// boundedReader fails once more than max bytes have been read since the
// last mark: the decoder buffers the value it decodes, so this bounds its
// buffer to about one entry.
type boundedReader struct {
	r     io.Reader
	max   int64
	since int64
}

func (b *boundedReader) mark() { b.since = 0 }

func (b *boundedReader) Read(p []byte) (int, error) {
	if b.max > 0 && b.since > b.max {
		return 0, fmt.Errorf("%w: more than %d bytes", errEntryTooLarge, b.max)
	}
	n, err := b.r.Read(p)
	b.since += int64(n)
	if err != nil && err != io.EOF {
		err = &readError{err}
	}
	return n, err
}
