package protocol

import "bytes"

// Encoder encodes frames. It is not safe for concurrent use.
type Encoder struct {
	out output
	w   writer
}

// NewEncoder returns an Encoder.
func NewEncoder() *Encoder {
	enc := &Encoder{}
	enc.w = newWriter(&enc.out)
	return enc
}

// Request encodes req as one frame; the slice is valid until the next call.
func (enc *Encoder) Request(req *Request) ([]byte, error) {
	enc.start()
	encodeFields(&enc.w, requestFields[:], req)
	return enc.finish()
}

// Response encodes resp as one frame; the slice is valid until the next call.
func (enc *Encoder) Response(resp *Response) ([]byte, error) {
	enc.start()
	resp.encode(&enc.w)
	return enc.finish()
}

// start begins a frame with room for its length prefix.
func (enc *Encoder) start() {
	enc.out.b = append(enc.out.b[:0], 0, 0, 0, 0)
	enc.w.err = nil
}

// finish fills in the length prefix and returns the frame.
func (enc *Encoder) finish() ([]byte, error) {
	if enc.w.err != nil {
		return nil, enc.w.err
	}
	b := enc.out.b
	n := len(b) - HeaderSize
	b[0], b[1], b[2], b[3] = byte(n>>24), byte(n>>16), byte(n>>8), byte(n)
	return b, nil
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
	// Borrow makes DecodeRequest return a request's Key and Value as the
	// payload's own bytes instead of copies: no allocation for either, but
	// they are valid only while the payload is neither changed nor reused.
	// A caller that keeps the request longer takes it over with
	// Request.Own, or keeps the payload with it. Every other field is a
	// copy, as without Borrow.
	Borrow bool

	in bytes.Reader
	rd reader
}

// NewDecoder returns a Decoder.
func NewDecoder() *Decoder {
	dec := &Decoder{}
	dec.rd = newReader(&dec.in)
	return dec
}

// start begins reading payload.
func (dec *Decoder) start(payload []byte) *reader {
	dec.rd.reset(payload)
	dec.rd.maxBatch = dec.MaxBatch
	dec.rd.borrow = dec.Borrow
	return &dec.rd
}

// end checks that the payload held one value and nothing after it.
func (dec *Decoder) end(what string) error {
	if dec.rd.err != nil {
		return dec.rd.err
	}
	if n := dec.in.Len(); n != 0 {
		return malformed("%d bytes after the %s", n, what)
	}
	return nil
}

// DecodeRequest decodes one request payload into req. Byte slices and
// strings in req are fresh copies, not aliases of payload, unless Borrow is
// set (then Key and Value alias it).
func (dec *Decoder) DecodeRequest(payload []byte, req *Request) error {
	*req = Request{}
	decodeFields(dec.start(payload), requestFields[:], req)
	return dec.end("request map")
}

// DecodeResponse decodes one response payload into resp; resp.Op must name
// the request's op so the result is decoded into the right field (find it
// by ResponseID first).
func (dec *Decoder) DecodeResponse(payload []byte, resp *Response) error {
	*resp = Response{Op: resp.Op}
	resp.decode(dec.start(payload))
	return dec.end("response map")
}

// ResponseID returns the id of a response payload without decoding the rest.
func (dec *Decoder) ResponseID(payload []byte) (uint64, error) {
	id, ok, err := dec.scanID(payload, false)
	switch {
	case err != nil:
		return 0, err
	case !ok:
		return 0, malformed("response has no id")
	}
	return id, nil
}

// Scan checks that payload is exactly one msgpack map (values nested at
// most a few levels deep) and returns its "id" when it has a non-negative
// integer one.
// The server uses it to tell a well-formed request with a bad field (which
// it answers and survives) from a malformed frame (which closes the
// connection).
func (dec *Decoder) Scan(payload []byte) (id uint64, err error) {
	id, _, err = dec.scanID(payload, true)
	if err != nil {
		return 0, err
	}
	return id, nil
}

// scanID walks the top level of payload, a map, for its "id" (see
// reader.id). With whole it reads the map to its end and refuses bytes
// after it, and the last id wins; without, it stops at the first id.
func (dec *Decoder) scanID(payload []byte, whole bool) (id uint64, found bool, err error) {
	rd := dec.start(payload)
	n := rd.mapLen()
	for i := 0; i < n && rd.err == nil; i++ {
		if string(rd.key()) != "id" {
			rd.skip()
			continue
		}
		if v, ok := rd.id(); ok {
			id, found = v, true
			if !whole {
				break
			}
		}
	}
	if !whole || rd.err != nil {
		return id, found, rd.err
	}
	return id, found, dec.end("map")
}
