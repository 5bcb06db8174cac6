package protocol

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/vmihailenco/msgpack/v5"
	"github.com/vmihailenco/msgpack/v5/msgpcode"
)

// maxDepth bounds the nesting of values a decoder will skip. Nothing in the
// protocol nests deeper than 3; the bound keeps a hostile frame of nested
// arrays from driving the decoder into deep recursion.
const maxDepth = 16

// errBadFrame marks decode failures; the server answers them with
// CodeBadFrame (unreadable frame) or CodeBadRequest (wrong field type).
var errBadFrame = errors.New("malformed frame")

// IsMalformed reports whether err came from decoding a malformed frame.
func IsMalformed(err error) bool { return errors.Is(err, errBadFrame) }

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errBadFrame}, args...)...)
}

// Decoder decodes frame payloads. It is not safe for concurrent use; keep
// one per connection.
type Decoder struct {
	// MaxBatch, when > 0, bounds the keys and items arrays of a request:
	// a longer one is refused before anything is allocated for it. One
	// byte of frame can hold one item, which takes tens of bytes in memory,
	// so without the bound a frame of max_frame bytes could pin many times
	// its size.
	MaxBatch int

	r       bytes.Reader
	d       *msgpack.Decoder
	scratch [32]byte
}

// NewDecoder returns a Decoder.
func NewDecoder() *Decoder {
	dec := &Decoder{}
	dec.d = msgpack.NewDecoder(&dec.r)
	return dec
}

func (dec *Decoder) reset(payload []byte) {
	dec.r.Reset(payload)
	dec.d.Reset(&dec.r)
}

// DecodeRequest decodes one request payload into req. Byte slices in req
// are fresh copies, not aliases of payload.
func (dec *Decoder) DecodeRequest(payload []byte, req *Request) error {
	*req = Request{}
	dec.reset(payload)
	if err := req.decode(&reader{d: dec.d, buf: &dec.scratch, maxBatch: dec.MaxBatch}); err != nil {
		return err
	}
	if dec.r.Len() != 0 {
		return malformed("%d bytes after the request map", dec.r.Len())
	}
	return nil
}

// DecodeResponse decodes one response payload into resp; resp.Op must name
// the request's op so the result is decoded into the right field (find it
// by ResponseID first).
func (dec *Decoder) DecodeResponse(payload []byte, resp *Response) error {
	op := resp.Op
	*resp = Response{Op: op}
	dec.reset(payload)
	if err := resp.decode(&reader{d: dec.d, buf: &dec.scratch}); err != nil {
		return err
	}
	if dec.r.Len() != 0 {
		return malformed("%d bytes after the response map", dec.r.Len())
	}
	return nil
}

// ResponseID returns the id of a response payload without decoding the rest.
func (dec *Decoder) ResponseID(payload []byte) (uint64, error) {
	dec.reset(payload)
	d := dec.d
	n, err := dec.mapLen()
	if err != nil {
		return 0, err
	}
	for i := 0; i < n; i++ {
		k, err := d.DecodeString()
		if err != nil {
			return 0, malformed("map key: %v", err)
		}
		if k == "id" {
			id, err := d.DecodeUint64()
			if err != nil {
				return 0, malformed("id: %v", err)
			}
			return id, nil
		}
		if err := skip(d, 0); err != nil {
			return 0, err
		}
	}
	return 0, malformed("response has no id")
}

func (dec *Decoder) mapLen() (int, error) {
	n, err := dec.d.DecodeMapLen()
	if err != nil {
		return 0, malformed("not a map: %v", err)
	}
	return n, nil
}

// Encoder encodes frames. It is not safe for concurrent use.
type Encoder struct {
	buf bytes.Buffer
	e   *msgpack.Encoder
}

// NewEncoder returns an Encoder.
func NewEncoder() *Encoder {
	enc := &Encoder{}
	enc.e = msgpack.NewEncoder(&enc.buf)
	return enc
}

// frame encodes v as one frame (length prefix and payload). The returned
// slice is valid until the next call.
func (enc *Encoder) frame(v msgpack.CustomEncoder) ([]byte, error) {
	enc.buf.Reset()
	enc.buf.Write([]byte{0, 0, 0, 0})
	if err := v.EncodeMsgpack(enc.e); err != nil {
		return nil, err
	}
	b := enc.buf.Bytes()
	n := len(b) - HeaderSize
	b[0], b[1], b[2], b[3] = byte(n>>24), byte(n>>16), byte(n>>8), byte(n)
	return b, nil
}

// Request encodes req as one frame; the slice is valid until the next call.
func (enc *Encoder) Request(req *Request) ([]byte, error) { return enc.frame(req) }

// Response encodes resp as one frame; the slice is valid until the next call.
func (enc *Encoder) Response(resp *Response) ([]byte, error) { return enc.frame(resp) }

var (
	_ msgpack.CustomEncoder = (*Request)(nil)
	_ msgpack.CustomEncoder = (*Response)(nil)
)

// EncodeMsgpack writes the request as a map holding only the fields its op
// uses (and id, op).
func (r *Request) EncodeMsgpack(e *msgpack.Encoder) error {
	n := 2
	has := func(ok bool) bool {
		if ok {
			n++
		}
		return ok
	}
	hasKey := has(r.Key != "")
	hasValue := has(r.Op == OpSet)
	hasTTL := has(r.TTL != 0)
	hasKeys := has(r.Keys != nil || r.Op == OpGetMany || r.Op == OpHasMany || r.Op == OpDeleteMany)
	hasItems := has(r.Items != nil || r.Op == OpSetMany)
	hasPrefix := has(r.Prefix != "")
	hasCursor := has(r.Cursor != "")
	hasLimit := has(r.Limit != 0)
	hasValues := has(r.Values)
	hasDelta := has(r.Op == OpIncr)
	hasTimeout := has(r.Timeout != 0)
	hasVersion := has(r.Op == OpHello)
	hasClient := has(r.Client != "")

	w := writer{e: e}
	w.mapLen(n)
	w.str("id")
	w.uint(r.ID)
	w.str("op")
	w.str(r.Op.String())
	if hasKey {
		w.str("key")
		w.str(r.Key)
	}
	if hasValue {
		w.str("value")
		w.bytes(r.Value)
	}
	if hasTTL {
		w.str("ttl")
		w.int(r.TTL)
	}
	if hasKeys {
		w.str("keys")
		w.arrayLen(len(r.Keys))
		for _, k := range r.Keys {
			w.str(k)
		}
	}
	if hasItems {
		w.str("items")
		w.arrayLen(len(r.Items))
		for _, it := range r.Items {
			if it.TTL != 0 {
				w.mapLen(3)
			} else {
				w.mapLen(2)
			}
			w.str("key")
			w.str(it.Key)
			w.str("value")
			w.bytes(it.Value)
			if it.TTL != 0 {
				w.str("ttl")
				w.int(it.TTL)
			}
		}
	}
	if hasPrefix {
		w.str("prefix")
		w.str(r.Prefix)
	}
	if hasCursor {
		w.str("cursor")
		w.str(r.Cursor)
	}
	if hasLimit {
		w.str("limit")
		w.int(r.Limit)
	}
	if hasValues {
		w.str("values")
		w.bool(true)
	}
	if hasDelta {
		w.str("delta")
		w.int(r.Delta)
	}
	if hasTimeout {
		w.str("timeout")
		w.int(r.Timeout)
	}
	if hasVersion {
		w.str("version")
		w.int(r.Version)
	}
	if hasClient {
		w.str("client")
		w.str(r.Client)
	}
	return w.err
}

// decode reads a request map. Unknown keys are skipped so that the
// protocol can grow; a known key of the wrong type is an error.
func (r *Request) decode(rd *reader) error {
	n := rd.mapLen()
	for i := 0; i < n && rd.err == nil; i++ {
		switch string(rd.key()) {
		case "id":
			r.ID = rd.uint("id")
		case "op":
			r.Op, r.UnknownOp = rd.op()
		case "key":
			r.Key = rd.str("key")
		case "value":
			r.Value = rd.bytes("value")
		case "ttl":
			r.TTL = rd.int("ttl")
		case "keys":
			m := rd.batchLen("keys")
			if m >= 0 {
				r.Keys = make([]string, m)
				for j := range r.Keys {
					r.Keys[j] = rd.str("keys[]")
				}
			}
		case "items":
			m := rd.batchLen("items")
			if m >= 0 {
				r.Items = make([]Item, m)
				for j := range r.Items {
					rd.item(&r.Items[j])
				}
			}
		case "prefix":
			r.Prefix = rd.str("prefix")
		case "cursor":
			r.Cursor = rd.str("cursor")
		case "limit":
			r.Limit = rd.int("limit")
		case "values":
			r.Values = rd.bool("values")
		case "delta":
			r.Delta = rd.int("delta")
		case "timeout":
			r.Timeout = rd.int("timeout")
		case "version":
			r.Version = rd.int("version")
		case "client":
			r.Client = rd.str("client")
		default:
			rd.skip()
		}
	}
	return rd.err
}

// EncodeMsgpack writes the response: id, then error or result.
func (r *Response) EncodeMsgpack(e *msgpack.Encoder) error {
	w := writer{e: e}
	w.mapLen(2)
	w.str("id")
	w.uint(r.ID)
	if r.Err != nil {
		w.str("error")
		w.mapLen(2)
		w.str("code")
		w.str(string(r.Err.Code))
		w.str("message")
		w.str(r.Err.Message)
		return w.err
	}
	w.str("result")
	switch r.Op {
	case OpGet:
		if r.Found {
			w.bytes(r.Value)
		} else {
			w.nil()
		}
	case OpHas, OpDelete:
		w.bool(r.Found || r.Bool)
	case OpClear, OpIncr:
		w.int(r.Int)
	case OpGetMany:
		w.arrayLen(len(r.Values))
		for _, v := range r.Values {
			if v == nil {
				w.nil()
			} else {
				w.bytes(v)
			}
		}
	case OpHasMany, OpDeleteMany:
		w.arrayLen(len(r.Bools))
		for _, b := range r.Bools {
			w.bool(b)
		}
	case OpList:
		l := &r.List
		n := 2
		if l.Values != nil {
			n = 3
		}
		w.mapLen(n)
		w.str("keys")
		w.arrayLen(len(l.Keys))
		for _, k := range l.Keys {
			w.str(k)
		}
		if l.Values != nil {
			w.str("values")
			w.arrayLen(len(l.Values))
			for _, v := range l.Values {
				w.bytes(v)
			}
		}
		w.str("cursor")
		if l.Cursor == "" {
			w.nil()
		} else {
			w.str(l.Cursor)
		}
	case OpUsage:
		w.mapLen(3)
		w.str("bytes")
		w.int(r.Usage.Bytes)
		w.str("entries")
		w.int(r.Usage.Entries)
		w.str("quota")
		w.int(r.Usage.Quota)
	case OpHello:
		h := &r.Hello
		w.mapLen(4)
		w.str("version")
		w.int(h.Version)
		w.str("server")
		w.str(h.Server)
		w.str("project")
		w.str(h.Project)
		w.str("limits")
		w.mapLen(5)
		w.str("max_key")
		w.int(h.Limits.MaxKey)
		w.str("max_value")
		w.int(h.Limits.MaxValue)
		w.str("max_frame")
		w.int(h.Limits.MaxFrame)
		w.str("max_inflight")
		w.int(h.Limits.MaxInflight)
		w.str("max_batch")
		w.int(h.Limits.MaxBatch)
	default: // ping, set, setMany
		w.nil()
	}
	return w.err
}

// decode reads a response map. r.Op must be set to the request's op.
func (r *Response) decode(rd *reader) error {
	n := rd.mapLen()
	for i := 0; i < n && rd.err == nil; i++ {
		switch string(rd.key()) {
		case "id":
			r.ID = rd.uint("id")
		case "error":
			r.Err = rd.errorMap()
		case "result":
			rd.result(r)
		default:
			rd.skip()
		}
	}
	return rd.err
}

// writer wraps an encoder and keeps the first error, so encoding code reads
// as a list of fields.
type writer struct {
	e   *msgpack.Encoder
	err error
}

func (w *writer) do(err error) {
	if w.err == nil {
		w.err = err
	}
}
func (w *writer) mapLen(n int)   { w.do(w.e.EncodeMapLen(n)) }
func (w *writer) arrayLen(n int) { w.do(w.e.EncodeArrayLen(n)) }
func (w *writer) str(s string)   { w.do(w.e.EncodeString(s)) }
func (w *writer) uint(n uint64)  { w.do(w.e.EncodeUint(n)) }
func (w *writer) int(n int64)    { w.do(w.e.EncodeInt(n)) }
func (w *writer) bool(b bool)    { w.do(w.e.EncodeBool(b)) }
func (w *writer) nil()           { w.do(w.e.EncodeNil()) }
func (w *writer) bytes(b []byte) {
	if b == nil {
		b = []byte{}
	}
	w.do(w.e.EncodeBytes(b))
}

// reader wraps a decoder, keeps the first error and names the field that
// failed, so decoding code reads as a list of fields.
type reader struct {
	d   *msgpack.Decoder
	err error
	buf *[32]byte // scratch space for map keys and op names

	maxBatch int // bound of batchLen; 0: none
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

// key reads a map key. Keys are compared, not kept, so when the frame is
// in memory (always, in this package) the key is read into a small buffer
// instead of a new string: the decoder's hot path allocates nothing for it.
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

// shortStr reads a str of up to len(rd.buf) bytes into rd.buf when the
// decoder reads from a bytes.Reader, and falls back to DecodeString.
func (rd *reader) shortStr() ([]byte, error) {
	br, ok := rd.d.Buffered().(*bytes.Reader)
	if !ok {
		s, err := rd.d.DecodeString()
		return []byte(s), err
	}
	n, err := rd.d.DecodeBytesLen()
	if err != nil {
		return nil, err
	}
	if n < 0 {
		return nil, errors.New("nil where a string was expected")
	}
	if rd.buf == nil {
		rd.buf = new([32]byte)
	}
	if n > br.Len() {
		// Refuse before allocating: the header may claim up to 4 GiB.
		return nil, fmt.Errorf("str of %d bytes in a frame with %d bytes left", n, br.Len())
	}
	if n > len(rd.buf) {
		s := make([]byte, n)
		_, err := io.ReadFull(br, s)
		return s, err
	}
	_, err = io.ReadFull(br, rd.buf[:n])
	return rd.buf[:n], err
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

func (rd *reader) str(field string) string {
	if rd.err != nil {
		return ""
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

func (rd *reader) uint(field string) uint64 {
	if rd.err != nil {
		return 0
	}
	c, err := rd.d.PeekCode()
	if err == nil && (msgpcode.IsFixedNum(c) && int8(c) < 0 || c == msgpcode.Int8 || c == msgpcode.Int16 || c == msgpcode.Int32 || c == msgpcode.Int64) {
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

func (rd *reader) int(field string) int64 {
	if rd.err != nil {
		return 0
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

// arrayLen returns the length of an array, -1 for nil. A length larger than
// the bytes left in the frame is refused before anything is allocated.
func (rd *reader) arrayLen(field string) int {
	if rd.err != nil {
		return -1
	}
	n, err := rd.d.DecodeArrayLen()
	if err != nil {
		rd.fail(field, err)
		return -1
	}
	if n > rd.remaining() {
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

// remaining is how many bytes the frame has left; each array element takes
// at least one.
func (rd *reader) remaining() int {
	if br, ok := rd.d.Buffered().(*bytes.Reader); ok {
		return br.Len()
	}
	return 1 << 30
}

func (rd *reader) skip() {
	if rd.err == nil {
		if err := skip(rd.d, 0); err != nil {
			rd.err = err
		}
	}
}

func (rd *reader) item(it *Item) {
	n := rd.mapLen()
	for i := 0; i < n && rd.err == nil; i++ {
		switch string(rd.key()) {
		case "key":
			it.Key = rd.str("items[].key")
		case "value":
			it.Value = rd.bytes("items[].value")
		case "ttl":
			it.TTL = rd.int("items[].ttl")
		default:
			rd.skip()
		}
	}
}

func (rd *reader) errorMap() *Error {
	e := &Error{}
	n := rd.mapLen()
	for i := 0; i < n && rd.err == nil; i++ {
		switch string(rd.key()) {
		case "code":
			e.Code = Code(rd.str("error.code"))
		case "message":
			e.Message = rd.str("error.message")
		default:
			rd.skip()
		}
	}
	if !e.Code.Known() {
		e.Code = CodeInternal
	}
	return e
}

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

func (rd *reader) result(r *Response) {
	switch r.Op {
	case OpGet:
		if !rd.isNil() {
			r.Value = rd.bytes("result")
			r.Found = rd.err == nil
		}
	case OpHas:
		r.Found = rd.bool("result")
	case OpDelete:
		r.Bool = rd.bool("result")
	case OpClear, OpIncr:
		r.Int = rd.int("result")
	case OpGetMany:
		m := rd.arrayLen("result")
		if m >= 0 {
			r.Values = make([][]byte, m)
			for j := range r.Values {
				if !rd.isNil() {
					r.Values[j] = rd.bytes("result[]")
				}
			}
		}
	case OpHasMany, OpDeleteMany:
		m := rd.arrayLen("result")
		if m >= 0 {
			r.Bools = make([]bool, m)
			for j := range r.Bools {
				r.Bools[j] = rd.bool("result[]")
			}
		}
	case OpList:
		n := rd.mapLen()
		for i := 0; i < n && rd.err == nil; i++ {
			switch string(rd.key()) {
			case "keys":
				m := rd.arrayLen("result.keys")
				if m >= 0 {
					r.List.Keys = make([]string, m)
					for j := range r.List.Keys {
						r.List.Keys[j] = rd.str("result.keys[]")
					}
				}
			case "values":
				m := rd.arrayLen("result.values")
				if m >= 0 {
					r.List.Values = make([][]byte, m)
					for j := range r.List.Values {
						r.List.Values[j] = rd.bytes("result.values[]")
					}
				}
			case "cursor":
				if !rd.isNil() {
					r.List.Cursor = rd.str("result.cursor")
				}
			default:
				rd.skip()
			}
		}
	case OpUsage:
		n := rd.mapLen()
		for i := 0; i < n && rd.err == nil; i++ {
			switch string(rd.key()) {
			case "bytes":
				r.Usage.Bytes = rd.int("result.bytes")
			case "entries":
				r.Usage.Entries = rd.int("result.entries")
			case "quota":
				r.Usage.Quota = rd.int("result.quota")
			default:
				rd.skip()
			}
		}
	case OpHello:
		h := &r.Hello
		n := rd.mapLen()
		for i := 0; i < n && rd.err == nil; i++ {
			switch string(rd.key()) {
			case "version":
				h.Version = rd.int("result.version")
			case "server":
				h.Server = rd.str("result.server")
			case "project":
				h.Project = rd.str("result.project")
			case "limits":
				m := rd.mapLen()
				for j := 0; j < m && rd.err == nil; j++ {
					switch string(rd.key()) {
					case "max_key":
						h.Limits.MaxKey = rd.int("limits.max_key")
					case "max_value":
						h.Limits.MaxValue = rd.int("limits.max_value")
					case "max_frame":
						h.Limits.MaxFrame = rd.int("limits.max_frame")
					case "max_inflight":
						h.Limits.MaxInflight = rd.int("limits.max_inflight")
					case "max_batch":
						h.Limits.MaxBatch = rd.int("limits.max_batch")
					default:
						rd.skip()
					}
				}
			default:
				rd.skip()
			}
		}
	default:
		rd.skip()
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

// Scan checks that payload is exactly one msgpack map (values nested at
// most a few levels deep) and returns its "id" when it has an unsigned one.
// The server uses it to tell a well-formed request with a bad field (which
// it answers and survives) from a malformed frame (which closes the
// connection).
func (dec *Decoder) Scan(payload []byte) (id uint64, err error) {
	dec.reset(payload)
	d := dec.d
	n, err := dec.mapLen()
	if err != nil {
		return 0, err
	}
	for i := 0; i < n; i++ {
		k, err := d.DecodeString()
		if err != nil {
			return 0, malformed("map key is not a string: %v", err)
		}
		if k == "id" {
			c, err := d.PeekCode()
			if err == nil && (msgpcode.IsFixedNum(c) && int8(c) >= 0 || c >= msgpcode.Uint8 && c <= msgpcode.Uint64) {
				if id, err = d.DecodeUint64(); err != nil {
					return 0, malformed("id: %v", err)
				}
				continue
			}
		}
		if err := skip(d, 0); err != nil {
			return 0, err
		}
	}
	if dec.r.Len() != 0 {
		return 0, malformed("%d bytes after the map", dec.r.Len())
	}
	return id, nil
}
