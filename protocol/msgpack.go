package protocol

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"unsafe"

	"github.com/vmihailenco/msgpack/v5"
	"github.com/vmihailenco/msgpack/v5/msgpcode"
)

// This file holds the msgpack primitives the request and response codecs
// are written in: tables of map fields, and a writer and a reader that keep
// the first error, so that a message's encoding reads as a list of its
// fields.

// maxDepth bounds the nesting of values a decoder will skip. Nothing in the
// protocol nests deeper than 3; the bound keeps a hostile frame of nested
// arrays from driving the decoder into deep recursion.
const maxDepth = 16

// shortStrSize is the longest map key or op name read without allocating.
// Every name the protocol defines is shorter.
const shortStrSize = 32

// A mapField is one entry of a message map: its name on the wire, when the
// encoder writes it, and how its value is written and read. The encoder and
// the decoder of a message both walk one table of fields, so a field of the
// protocol is defined in exactly one place.
type mapField[M any] struct {
	name string
	// sent reports whether the encoder writes the field for m; nil means
	// always. A field that is not sent decodes as its zero value.
	sent   func(m *M) bool
	encode func(w *writer, m *M)
	// decode reads the field's value into m.
	decode func(rd *reader, m *M)
}

// encodeFields writes m as a map of the fields that are sent, in table
// order. It asks each field once whether it is sent, writing as it goes, and
// fills in the map's length at the end.
func encodeFields[M any](w *writer, fields []mapField[M], m *M) {
	at := len(w.out.b)
	w.out.b = append(w.out.b, msgpcode.FixedMapLow) // the length is filled in below
	n := 0
	for i := range fields {
		if f := &fields[i]; f.sent == nil || f.sent(m) {
			w.str(f.name)
			f.encode(w, m)
			n++
		}
	}
	w.patchMapLen(at, n)
}

// decodeFields reads a map into m, in whatever order its keys come. Unknown
// keys are skipped so that the protocol can grow; a known key of the wrong
// type is an error, whether or not the op uses it; a known key whose value
// is nil is absent (PROTOCOL.md §2).
func decodeFields[M any](rd *reader, fields []mapField[M], m *M) {
	n := rd.mapLen()
	for i := 0; i < n && rd.err == nil; i++ {
		if f := lookupField(fields, rd.key()); f != nil && !rd.isNil() {
			f.decode(rd, m)
		} else if f == nil {
			rd.skip()
		}
	}
}

func lookupField[M any](fields []mapField[M], name []byte) *mapField[M] {
	for i := range fields {
		if fields[i].name == string(name) {
			return &fields[i]
		}
	}
	return nil
}

// output is the frame being encoded. The msgpack encoder appends to it
// through Write and WriteByte; the writer's fast paths append to it
// directly.
type output struct{ b []byte }

func (o *output) Write(p []byte) (int, error) { o.b = append(o.b, p...); return len(p), nil }
func (o *output) WriteByte(c byte) error      { o.b = append(o.b, c); return nil }

// writer writes msgpack values to out and keeps the first error. The
// shortest forms of headers, strs and bins (all a message of this protocol
// has but its integers) it writes itself, byte for byte as the encoder
// would, which saves a frame a dozen calls through the encoder's
// interfaces.
type writer struct {
	e   *msgpack.Encoder // writes to out
	out *output
	err error
}

func newWriter(out *output) writer {
	return writer{e: msgpack.NewEncoder(out), out: out}
}

func (w *writer) do(err error) {
	if w.err == nil {
		w.err = err
	}
}

func (w *writer) mapLen(n int) {
	if uint(n) < 16 {
		w.out.b = append(w.out.b, msgpcode.FixedMapLow|byte(n))
		return
	}
	w.do(w.e.EncodeMapLen(n))
}

// patchMapLen sets the header of the map that starts at offset at of the
// output, written as an empty fixmap, to n entries: in place for a fixmap,
// or by moving the entries two bytes on for a map16 (n < 16 for every map
// of this version, so that path is the cold one).
func (w *writer) patchMapLen(at, n int) {
	b := w.out.b
	if n < 16 {
		b[at] = msgpcode.FixedMapLow | byte(n)
		return
	}
	b = append(b, 0, 0)
	copy(b[at+3:], b[at+1:len(b)-2])
	b[at], b[at+1], b[at+2] = msgpcode.Map16, byte(n>>8), byte(n)
	w.out.b = b
}

func (w *writer) arrayLen(n int) {
	if uint(n) < 16 {
		w.out.b = append(w.out.b, msgpcode.FixedArrayLow|byte(n))
		return
	}
	w.do(w.e.EncodeArrayLen(n))
}

func (w *writer) str(s string) {
	if len(s) < 32 {
		w.out.b = append(append(w.out.b, msgpcode.FixedStrLow|byte(len(s))), s...)
		return
	}
	w.do(w.e.EncodeString(s))
}

// bytes writes a bin; nil is written as an empty one.
func (w *writer) bytes(b []byte) {
	if len(b) < 256 {
		w.out.b = append(append(w.out.b, msgpcode.Bin8, byte(len(b))), b...)
		return
	}
	w.do(w.e.EncodeBytes(b))
}

func (w *writer) uint(n uint64) { w.do(w.e.EncodeUint(n)) }

func (w *writer) uints(ns []uint64) {
	w.arrayLen(len(ns))
	for _, n := range ns {
		w.uint(n)
	}
}
func (w *writer) int(n int64) { w.do(w.e.EncodeInt(n)) }
func (w *writer) bool(b bool) { w.do(w.e.EncodeBool(b)) }
func (w *writer) nil()        { w.do(w.e.EncodeNil()) }

// reader wraps a decoder reading one payload held in memory, keeps the
// first error and names the field that failed.
type reader struct {
	in  *bytes.Reader // the payload; d reads from it
	d   *msgpack.Decoder
	err error
	buf [shortStrSize]byte // map keys and op names

	maxBatch int // bound of batchLen; 0: none

	// With borrow, heldStr and heldBytes return the payload's own bytes
	// (Decoder.Borrow).
	borrow  bool
	payload []byte
}

func newReader(in *bytes.Reader) reader {
	return reader{in: in, d: msgpack.NewDecoder(in)}
}

// reset starts reading payload.
func (rd *reader) reset(payload []byte) {
	rd.payload = payload
	rd.in.Reset(payload)
	rd.d.Reset(rd.in)
	rd.err = nil
}

func (rd *reader) fail(field string, err error) {
	if rd.err == nil {
		rd.err = malformed("field %q: %v", field, err)
	}
}

func (rd *reader) mapLen() int {
	if rd.err != nil {
		return 0
	}
	n, err := rd.d.DecodeMapLen()
	if err != nil {
		rd.err = malformed("expected a map: %v", err)
		return 0
	}
	if n < 0 {
		rd.err = malformed("expected a map, got nil")
		return 0
	}
	return n
}

// key reads a map key. Keys are compared, not kept, so the key is read
// into a small buffer instead of a new string: the decoder's hot path
// allocates nothing for it. The slice is valid until the next key.
func (rd *reader) key() []byte {
	if rd.err != nil {
		return nil
	}
	b, err := rd.shortStr()
	if err != nil {
		rd.err = malformed("map key is not a string: %v", err)
		return nil
	}
	return b
}

// shortStr reads a str, into rd.buf when it fits. A fixstr (shorter than
// 32 bytes: every name of the protocol) is read straight from the payload.
func (rd *reader) shortStr() ([]byte, error) {
	if c, err := rd.in.ReadByte(); err == nil && c&0xe0 == msgpcode.FixedStrLow {
		n := int(c & 0x1f)
		if n > rd.in.Len() {
			return nil, fmt.Errorf("str of %d bytes in a frame with %d bytes left", n, rd.in.Len())
		}
		b := rd.buf[:n]
		rd.in.Read(b) // cannot fail: the bytes are there
		return b, nil
	} else if err == nil {
		rd.in.UnreadByte()
	}
	n, err := rd.d.DecodeBytesLen()
	if err != nil {
		return nil, err
	}
	if n < 0 {
		return nil, errors.New("nil where a string was expected")
	}
	if n > rd.in.Len() {
		// Refuse before allocating: the header may claim up to 4 GiB.
		return nil, fmt.Errorf("str of %d bytes in a frame with %d bytes left", n, rd.in.Len())
	}
	b := rd.buf[:]
	if n > len(b) {
		b = make([]byte, n)
	}
	_, err = io.ReadFull(rd.in, b[:n])
	return b[:n], err
}

// op reads an op name; an unknown name is returned as a string.
func (rd *reader) op() (Op, string) {
	if rd.err != nil {
		return OpInvalid, ""
	}
	b, err := rd.shortStr()
	if err != nil {
		rd.fail("op", err)
		return OpInvalid, ""
	}
	if op := ParseOp(string(b)); op != OpInvalid {
		return op, ""
	}
	return OpInvalid, string(b)
}

// str reads a str. A fixstr that the frame holds whole (most keys) is read
// straight from the payload; anything else goes through the decoder.
func (rd *reader) str(field string) string {
	if rd.err != nil {
		return ""
	}
	if c, err := rd.in.ReadByte(); err == nil {
		if n := int(c & 0x1f); c&0xe0 == msgpcode.FixedStrLow && n <= rd.in.Len() {
			b := rd.buf[:n]
			rd.in.Read(b) // cannot fail: the bytes are there
			return string(b)
		}
		rd.in.UnreadByte()
		if c == msgpcode.Bin8 || c == msgpcode.Bin16 || c == msgpcode.Bin32 {
			rd.fail(field, errors.New("want a str, got a bin"))
			return ""
		}
	}
	s, err := rd.d.DecodeString()
	if err != nil {
		rd.fail(field, err)
	}
	return s
}

// bytes reads a bin. A str is refused: values are bytes, and a client that
// sends text where bytes belong has a bug worth reporting.
func (rd *reader) bytes(field string) []byte {
	if rd.err != nil {
		return nil
	}
	if c, err := rd.d.PeekCode(); err == nil && c != msgpcode.Bin8 && c != msgpcode.Bin16 && c != msgpcode.Bin32 {
		rd.fail(field, fmt.Errorf("want a bin (byte string), got msgpack type 0x%02x", c))
		return nil
	}
	b, err := rd.d.DecodeBytes()
	if err != nil {
		rd.fail(field, err)
		return nil
	}
	if b == nil {
		b = []byte{}
	}
	return b
}

// heldStr reads a str as str does, but with the reader's borrow set it
// returns the payload's own bytes as the string, without a copy: valid
// only while the payload is unchanged (Decoder.Borrow).
func (rd *reader) heldStr(field string) string {
	if rd.err == nil && rd.borrow {
		if b, ok := rd.view(msgpcode.Str8, msgpcode.Str16, msgpcode.Str32, true); ok {
			return unsafe.String(unsafe.SliceData(b), len(b))
		}
	}
	return rd.str(field)
}

// heldBytes reads a bin as bytes does, but with the reader's borrow set it
// returns a slice of the payload itself (Decoder.Borrow).
func (rd *reader) heldBytes(field string) []byte {
	if rd.err == nil && rd.borrow {
		if b, ok := rd.view(msgpcode.Bin8, msgpcode.Bin16, msgpcode.Bin32, false); ok {
			return b
		}
	}
	return rd.bytes(field)
}

// view reads, in place, a value whose header is one of the codes given (a
// fixstr too, with fix): it returns the value's bytes within the payload,
// capped there, and moves past it. Anything else — another type, a
// length beyond the payload — is left unread, ok false, for the copying
// read to report.
func (rd *reader) view(code8, code16, code32 byte, fix bool) (b []byte, ok bool) {
	p := rd.payload[len(rd.payload)-rd.in.Len():]
	if len(p) == 0 {
		return nil, false
	}
	var n, hdr int
	switch c := p[0]; {
	case fix && c&0xe0 == msgpcode.FixedStrLow:
		n, hdr = int(c&0x1f), 1
	case c == code8 && len(p) >= 2:
		n, hdr = int(p[1]), 2
	case c == code16 && len(p) >= 3:
		n, hdr = int(binary.BigEndian.Uint16(p[1:])), 3
	case c == code32 && len(p) >= 5:
		n, hdr = int(binary.BigEndian.Uint32(p[1:])), 5
	default:
		return nil, false
	}
	if n > len(p)-hdr {
		return nil, false
	}
	rd.in.Seek(int64(hdr+n), io.SeekCurrent) // cannot fail: the bytes are there
	return p[hdr : hdr+n : hdr+n], true
}

// isSigned reports whether c starts a signed integer encoding (which may
// still hold a non-negative number).
func isSigned(c byte) bool {
	return msgpcode.IsFixedNum(c) && int8(c) < 0 || c == msgpcode.Int8 || c == msgpcode.Int16 || c == msgpcode.Int32 || c == msgpcode.Int64
}

// isUnsigned reports whether c starts an unsigned integer encoding.
func isUnsigned(c byte) bool {
	return msgpcode.IsFixedNum(c) && int8(c) >= 0 || c >= msgpcode.Uint8 && c <= msgpcode.Uint64
}

// uint reads a non-negative integer in any integer encoding.
func (rd *reader) uint(field string) uint64 {
	if rd.err != nil {
		return 0
	}
	c, err := rd.d.PeekCode()
	if err == nil && isSigned(c) {
		var n int64
		if n, err = rd.d.DecodeInt64(); err == nil && n < 0 {
			err = fmt.Errorf("negative %d", n)
		}
		if err != nil {
			rd.fail(field, err)
		}
		return uint64(n)
	}
	n, err := rd.d.DecodeUint64()
	if err != nil {
		rd.fail(field, err)
	}
	return n
}

// uints reads an array of unsigned integers (nil for a nil array).
func (rd *reader) uints(field string) []uint64 {
	m := rd.arrayLen(field)
	if m < 0 {
		return nil
	}
	ns := make([]uint64, m)
	for j := range ns {
		ns[j] = rd.uint(field + "[]")
	}
	return ns
}

func (rd *reader) int(field string) int64 {
	if rd.err != nil {
		return 0
	}
	if c, err := rd.d.PeekCode(); err == nil && c == msgpcode.Uint64 {
		// DecodeInt64 would wrap a uint64 above 2^63-1 to a negative number.
		u, err := rd.d.DecodeUint64()
		if err == nil && u > math.MaxInt64 {
			err = fmt.Errorf("%d is out of range: the largest accepted integer is %d", u, int64(math.MaxInt64))
		}
		if err != nil {
			rd.fail(field, err)
			return 0
		}
		return int64(u)
	}
	n, err := rd.d.DecodeInt64()
	if err != nil {
		rd.fail(field, err)
	}
	return n
}

func (rd *reader) bool(field string) bool {
	if rd.err != nil {
		return false
	}
	b, err := rd.d.DecodeBool()
	if err != nil {
		rd.fail(field, err)
	}
	return b
}

// isNil consumes a nil and reports whether the next value was one.
func (rd *reader) isNil() bool {
	if rd.err != nil {
		return false
	}
	c, err := rd.d.PeekCode()
	if err != nil {
		rd.err = malformed("result: %v", err)
		return false
	}
	if c == msgpcode.Nil {
		rd.err = rd.d.DecodeNil()
		return true
	}
	return false
}

// id reads the value of an "id" key, which counts only when it is a
// non-negative integer (in any integer encoding); any other value is
// skipped and ok is false.
func (rd *reader) id() (id uint64, ok bool) {
	if rd.err != nil {
		return 0, false
	}
	c, err := rd.d.PeekCode()
	switch {
	case err != nil:
		rd.err = malformed("id: %v", err)
	case isUnsigned(c):
		id, err = rd.d.DecodeUint64()
		if err != nil {
			rd.fail("id", err)
		}
		return id, err == nil
	case isSigned(c):
		n, err := rd.d.DecodeInt64()
		if err != nil {
			rd.fail("id", err)
		}
		return uint64(n), err == nil && n >= 0
	default:
		rd.skip()
	}
	return 0, false
}

// arrayLen returns the length of an array, -1 for nil. A length larger than
// the bytes left in the frame is refused before anything is allocated: each
// element takes at least one byte.
func (rd *reader) arrayLen(field string) int {
	if rd.err != nil {
		return -1
	}
	n, err := rd.d.DecodeArrayLen()
	if err != nil {
		rd.fail(field, err)
		return -1
	}
	if n > rd.in.Len() {
		rd.fail(field, fmt.Errorf("array of %d elements in a frame of fewer bytes", n))
		return -1
	}
	return n
}

// batchLen is arrayLen for a request's keys or items, bounded by maxBatch.
func (rd *reader) batchLen(field string) int {
	n := rd.arrayLen(field)
	if rd.maxBatch > 0 && n > rd.maxBatch {
		rd.fail(field, fmt.Errorf("too many %s: %d, the limit is %d", field, n, rd.maxBatch))
		return -1
	}
	return n
}

// skip skips one value of any type.
func (rd *reader) skip() {
	if rd.err == nil {
		rd.err = skip(rd.d, 0)
	}
}

// skip skips one value, refusing to descend deeper than maxDepth.
func skip(d *msgpack.Decoder, depth int) error {
	if depth > maxDepth {
		return malformed("values nested deeper than %d levels", maxDepth)
	}
	c, err := d.PeekCode()
	if err != nil {
		return malformed("%v", err)
	}
	switch {
	case msgpcode.IsFixedArray(c) || c == msgpcode.Array16 || c == msgpcode.Array32:
		n, err := d.DecodeArrayLen()
		if err != nil {
			return malformed("%v", err)
		}
		for i := 0; i < n; i++ {
			if err := skip(d, depth+1); err != nil {
				return err
			}
		}
		return nil
	case msgpcode.IsFixedMap(c) || c == msgpcode.Map16 || c == msgpcode.Map32:
		n, err := d.DecodeMapLen()
		if err != nil {
			return malformed("%v", err)
		}
		for i := 0; i < 2*n; i++ {
			if err := skip(d, depth+1); err != nil {
				return err
			}
		}
		return nil
	}
	if err := d.Skip(); err != nil {
		return malformed("%v", err)
	}
	return nil
}
