package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"iter"
	"reflect"
	"sync"
	"time"

	"github.com/kvsidecar/kvsidecar/protocol"
)

// Ping checks that the daemon answers.
func (c *Client) Ping(ctx context.Context) error {
	req := protocol.Request{Op: protocol.OpPing}
	cl, err := c.do(ctx, &req)
	if err != nil {
		return opError(req.Op, "", err)
	}
	putCall(cl)
	return nil
}

// Set stores v, encoded as JSON, under key. ttl 0 means no expiry; a
// positive ttl is rounded up to whole milliseconds. An existing entry is
// replaced, its TTL included.
func (c *Client) Set(ctx context.Context, key string, v any, ttl time.Duration) error {
	jb := getJSONBuffer()
	defer putJSONBuffer(jb)
	b, err := jb.marshal(v)
	if err != nil {
		return opError(protocol.OpSet, key, fmt.Errorf("encode value: %w", err))
	}
	return c.SetBytes(ctx, key, b, ttl)
}

// SetBytes stores value under key as it is. Values that other client
// libraries read should be JSON text, as Set writes.
func (c *Client) SetBytes(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	req := protocol.Request{Op: protocol.OpSet, Key: key, Value: value}
	err := c.checkKey(key)
	if err == nil {
		err = c.checkValue(value)
	}
	if err == nil {
		req.TTL, err = ttlMillis(ttl)
	}
	if err != nil {
		return opError(req.Op, key, err)
	}
	cl, err := c.do(ctx, &req)
	if err != nil {
		return opError(req.Op, key, err)
	}
	putCall(cl)
	return nil
}

// Get decodes the JSON value of key into v, as json.Unmarshal does, and
// reports whether the key exists. v is left untouched when it does not.
func (c *Client) Get(ctx context.Context, key string, v any) (found bool, err error) {
	b, found, err := c.GetBytes(ctx, key)
	if err != nil || !found {
		return found, err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return true, opError(protocol.OpGet, key, fmt.Errorf("decode value: %w", err))
	}
	return true, nil
}

// GetBytes returns the value of key as it is stored, and whether the key
// exists.
func (c *Client) GetBytes(ctx context.Context, key string) (value []byte, found bool, err error) {
	if err := c.checkKey(key); err != nil {
		return nil, false, opError(protocol.OpGet, key, err)
	}
	req := protocol.Request{Op: protocol.OpGet, Key: key}
	cl, err := c.do(ctx, &req)
	if err != nil {
		return nil, false, opError(req.Op, key, err)
	}
	value, found = cl.resp.Value, cl.resp.Found
	putCall(cl)
	return value, found, nil
}

// Delete removes key and reports whether it existed.
func (c *Client) Delete(ctx context.Context, key string) (existed bool, err error) {
	if err := c.checkKey(key); err != nil {
		return false, opError(protocol.OpDelete, key, err)
	}
	req := protocol.Request{Op: protocol.OpDelete, Key: key}
	cl, err := c.do(ctx, &req)
	if err != nil {
		return false, opError(req.Op, key, err)
	}
	existed = cl.resp.Bool
	putCall(cl)
	return existed, nil
}

// Has reports whether key exists.
func (c *Client) Has(ctx context.Context, key string) (bool, error) {
	if err := c.checkKey(key); err != nil {
		return false, opError(protocol.OpHas, key, err)
	}
	req := protocol.Request{Op: protocol.OpHas, Key: key}
	cl, err := c.do(ctx, &req)
	if err != nil {
		return false, opError(req.Op, key, err)
	}
	found := cl.resp.Found
	putCall(cl)
	return found, nil
}

// Clear removes every entry of the project and returns how many it removed.
func (c *Client) Clear(ctx context.Context) (removed int64, err error) {
	req := protocol.Request{Op: protocol.OpClear}
	cl, err := c.do(ctx, &req)
	if err != nil {
		return 0, opError(req.Op, "", err)
	}
	removed = cl.resp.Int
	putCall(cl)
	return removed, nil
}

// Incr atomically adds delta (which may be negative or 0) to the integer
// stored under key and returns the new value. A missing key counts as 0 and
// is created with ttl (0: no expiry); an existing key keeps its expiry. The
// value is stored as a JSON integer, so Get into an int64 reads it. A value
// that is not a JSON integer fails with ErrNotInteger, a result outside the
// int64 range with ErrOverflow.
func (c *Client) Incr(ctx context.Context, key string, delta int64, ttl time.Duration) (int64, error) {
	req := protocol.Request{Op: protocol.OpIncr, Key: key, Delta: delta}
	err := c.checkKey(key)
	if err == nil {
		req.TTL, err = ttlMillis(ttl)
	}
	if err != nil {
		return 0, opError(req.Op, key, err)
	}
	cl, err := c.do(ctx, &req)
	if err != nil {
		return 0, opError(req.Op, key, err)
	}
	n := cl.resp.Int
	putCall(cl)
	return n, nil
}

// Item is one entry of SetMany: Value is encoded as JSON.
type Item struct {
	Key   string
	Value any
	TTL   time.Duration // 0: no expiry
}

// BytesItem is one entry of SetManyBytes: Value is stored as it is.
type BytesItem struct {
	Key   string
	Value []byte
	TTL   time.Duration // 0: no expiry
}

// GetMany decodes the JSON values of keys into dst, which must point to a
// slice; the slice is replaced by one of len(keys) elements, the value of
// keys[i] in element i. found[i] reports whether keys[i] exists; the
// element of a missing key is the zero value. At most Limits().MaxBatch
// keys.
func (c *Client) GetMany(ctx context.Context, keys []string, dst any) (found []bool, err error) {
	rv := reflect.ValueOf(dst)
	if rv.Kind() != reflect.Pointer || rv.IsNil() || rv.Elem().Kind() != reflect.Slice {
		return nil, manyError(protocol.OpGetMany, len(keys), fmt.Errorf("dst must be a non-nil pointer to a slice, not %T", dst))
	}
	values, err := c.GetManyBytes(ctx, keys)
	if err != nil {
		return nil, err
	}
	s := reflect.MakeSlice(rv.Elem().Type(), len(keys), len(keys))
	found = make([]bool, len(keys))
	for i, b := range values {
		if b == nil {
			continue
		}
		found[i] = true
		if err := json.Unmarshal(b, s.Index(i).Addr().Interface()); err != nil {
			return nil, opError(protocol.OpGetMany, keys[i], fmt.Errorf("decode value: %w", err))
		}
	}
	rv.Elem().Set(s)
	return found, nil
}

// GetManyBytes returns the values of keys, in order, as they are stored;
// the element of a missing key is nil (a present empty value is a non-nil
// empty slice). At most Limits().MaxBatch keys.
func (c *Client) GetManyBytes(ctx context.Context, keys []string) ([][]byte, error) {
	req := protocol.Request{Op: protocol.OpGetMany, Keys: nonNil(keys)}
	cl, err := c.doMany(ctx, &req)
	if err != nil {
		return nil, err
	}
	values := cl.resp.Values
	putCall(cl)
	return values, nil
}

// SetMany stores every item, its value encoded as JSON, atomically: all are
// written or, on any error, none. A key given twice takes the later item.
// At most Limits().MaxBatch items.
func (c *Client) SetMany(ctx context.Context, items []Item) error {
	jb := getJSONBuffer()
	defer putJSONBuffer(jb)
	ends := make([]int, len(items))
	for i, it := range items {
		if err := jb.enc.Encode(it.Value); err != nil {
			return opError(protocol.OpSetMany, it.Key, fmt.Errorf("encode value: %w", err))
		}
		jb.buf.Truncate(jb.buf.Len() - 1) // Encode ends each value with a newline
		ends[i] = jb.buf.Len()
	}
	all := jb.buf.Bytes()
	raw := make([]BytesItem, len(items))
	start := 0
	for i, it := range items {
		raw[i] = BytesItem{Key: it.Key, Value: all[start:ends[i]:ends[i]], TTL: it.TTL}
		start = ends[i]
	}
	return c.SetManyBytes(ctx, raw)
}

// SetManyBytes is SetMany with values stored as they are.
func (c *Client) SetManyBytes(ctx context.Context, items []BytesItem) error {
	req := protocol.Request{Op: protocol.OpSetMany, Items: make([]protocol.Item, len(items))}
	for i, it := range items {
		err := c.checkKey(it.Key)
		if err == nil {
			err = c.checkValue(it.Value)
		}
		var ttl int64
		if err == nil {
			ttl, err = ttlMillis(it.TTL)
		}
		if err != nil {
			return opError(req.Op, it.Key, err)
		}
		req.Items[i] = protocol.Item{Key: it.Key, Value: it.Value, TTL: ttl}
	}
	cl, err := c.doMany(ctx, &req)
	if err != nil {
		return err
	}
	putCall(cl)
	return nil
}

// DeleteMany removes keys and reports, per key in order, whether it
// existed. At most Limits().MaxBatch keys.
func (c *Client) DeleteMany(ctx context.Context, keys []string) (existed []bool, err error) {
	req := protocol.Request{Op: protocol.OpDeleteMany, Keys: nonNil(keys)}
	cl, err := c.doMany(ctx, &req)
	if err != nil {
		return nil, err
	}
	existed = cl.resp.Bools
	putCall(cl)
	return existed, nil
}

// HasMany reports, per key in order, whether it exists. At most
// Limits().MaxBatch keys.
func (c *Client) HasMany(ctx context.Context, keys []string) ([]bool, error) {
	req := protocol.Request{Op: protocol.OpHasMany, Keys: nonNil(keys)}
	cl, err := c.doMany(ctx, &req)
	if err != nil {
		return nil, err
	}
	found := cl.resp.Bools
	putCall(cl)
	return found, nil
}

// doMany checks and sends a *Many request; errors are wrapped with the op.
func (c *Client) doMany(ctx context.Context, req *protocol.Request) (*call, error) {
	n := len(req.Keys) + len(req.Items)
	for _, k := range req.Keys {
		if err := c.checkKey(k); err != nil {
			return nil, opError(req.Op, k, err)
		}
	}
	if lim := c.Limits().MaxBatch; lim > 0 && int64(n) > lim {
		return nil, manyError(req.Op, n, newError(protocol.CodeBadRequest, "too many keys: %d, the limit is %d", n, lim))
	}
	cl, err := c.do(ctx, req)
	if err != nil {
		return nil, manyError(req.Op, n, err)
	}
	return cl, nil
}

func manyError(op protocol.Op, n int, err error) error {
	return fmt.Errorf("kv %s of %d keys: %w", op, n, err)
}

// nonNil makes an absent key list an empty one: the daemon tells a missing
// field from an empty list.
func nonNil(keys []string) []string {
	if keys == nil {
		return []string{}
	}
	return keys
}

// ListOptions select a page of List.
type ListOptions struct {
	// Prefix selects keys that start with it; "" selects every key.
	Prefix string
	// Cursor is the Cursor of the previous page; "" asks for the first.
	Cursor string
	// Limit is the most keys of one page: 0 means the daemon's default
	// (100), and it is capped at Limits().MaxBatch.
	Limit int
	// Values asks for the values too.
	Values bool
}

// ListPage is one page of List.
type ListPage struct {
	Keys []string
	// Values holds the value of Keys[i] in Values[i], as stored; nil unless
	// ListOptions.Values was set.
	Values [][]byte
	// Cursor fetches the next page when set as ListOptions.Cursor; "" means
	// this was the last page.
	Cursor string
}

// List returns a page of the project's keys that start with opts.Prefix, in
// ascending byte order. Keys written between pages appear if they sort after
// the cursor.
func (c *Client) List(ctx context.Context, opts ListOptions) (ListPage, error) {
	req := protocol.Request{
		Op:     protocol.OpList,
		Prefix: opts.Prefix,
		Cursor: opts.Cursor,
		Limit:  int64(opts.Limit),
		Values: opts.Values,
	}
	cl, err := c.do(ctx, &req)
	if err != nil {
		return ListPage{}, opError(req.Op, opts.Prefix, err)
	}
	page := ListPage{Keys: cl.resp.List.Keys, Values: cl.resp.List.Values, Cursor: cl.resp.List.Cursor}
	putCall(cl)
	return page, nil
}

// Entry is one entry of Scan.
type Entry struct {
	Key   string
	Value []byte // as stored; nil unless values were asked for
}

// Decode decodes the entry's JSON value into v, as json.Unmarshal does.
func (e Entry) Decode(v any) error { return json.Unmarshal(e.Value, v) }

// Scan iterates over the entries List returns, from opts.Cursor to the last
// page, fetching pages of opts.Limit as it goes. An error is yielded once,
// and ends the iteration.
//
//	for e, err := range c.Scan(ctx, client.ListOptions{Prefix: "user:"}) {
//		if err != nil {
//			return err
//		}
//		fmt.Println(e.Key)
//	}
func (c *Client) Scan(ctx context.Context, opts ListOptions) iter.Seq2[Entry, error] {
	return func(yield func(Entry, error) bool) {
		for {
			page, err := c.List(ctx, opts)
			if err != nil {
				yield(Entry{}, err)
				return
			}
			for i, k := range page.Keys {
				e := Entry{Key: k}
				if i < len(page.Values) {
					e.Value = page.Values[i]
				}
				if !yield(e, nil) {
					return
				}
			}
			if page.Cursor == "" {
				return
			}
			opts.Cursor = page.Cursor
		}
	}
}

// Usage is the project's storage use.
type Usage struct {
	Bytes   int64 // sum of len(key)+len(value) over the entries: what the quota is checked against
	Entries int64 // number of entries
	Quota   int64 // the project's quota in bytes
}

// Usage returns the project's storage use and quota.
func (c *Client) Usage(ctx context.Context) (Usage, error) {
	req := protocol.Request{Op: protocol.OpUsage}
	cl, err := c.do(ctx, &req)
	if err != nil {
		return Usage{}, opError(req.Op, "", err)
	}
	u := Usage(cl.resp.Usage)
	putCall(cl)
	return u, nil
}

// checkKey refuses a key the daemon would refuse for its size. The daemon
// checks too (and checks everything else: empty keys, UTF-8); checking here
// keeps a huge key from costing a round trip, or a frame the daemon would
// answer by closing the connection.
func (c *Client) checkKey(key string) error {
	if lim := c.Limits().MaxKey; lim > 0 && int64(len(key)) > lim {
		return newError(protocol.CodeKeyTooLarge, "key too large: key is %d bytes, the limit is %d bytes", len(key), lim)
	}
	return nil
}

// checkValue refuses a value the daemon would refuse for its size, for the
// reasons of checkKey.
func (c *Client) checkValue(value []byte) error {
	if lim := c.Limits().MaxValue; lim > 0 && int64(len(value)) > lim {
		return newError(protocol.CodeValueTooLarge, "value too large: value is %d bytes, the limit is %d bytes", len(value), lim)
	}
	return nil
}

// ttlMillis converts a TTL to the protocol's milliseconds, rounding up so
// that a positive TTL never becomes 0 (no expiry).
func ttlMillis(ttl time.Duration) (int64, error) {
	if ttl < 0 {
		return 0, newError(protocol.CodeBadRequest, "bad request: negative ttl %v", ttl)
	}
	return int64((ttl + time.Millisecond - 1) / time.Millisecond), nil
}

// jsonBuffer encodes values without escaping <, > and & (other clients
// store JSON text as JSON.stringify writes it), reusing its buffer.
type jsonBuffer struct {
	buf bytes.Buffer
	enc *json.Encoder
}

var jsonPool = sync.Pool{New: func() any {
	jb := &jsonBuffer{}
	jb.enc = json.NewEncoder(&jb.buf)
	jb.enc.SetEscapeHTML(false)
	return jb
}}

func getJSONBuffer() *jsonBuffer { return jsonPool.Get().(*jsonBuffer) }

func putJSONBuffer(jb *jsonBuffer) {
	if jb.buf.Cap() <= maxIdleBuffer {
		jb.buf.Reset()
		jsonPool.Put(jb)
	}
}

// marshal returns the JSON encoding of v, valid until the buffer is reused.
func (jb *jsonBuffer) marshal(v any) ([]byte, error) {
	jb.buf.Reset()
	if err := jb.enc.Encode(v); err != nil {
		return nil, err
	}
	b := jb.buf.Bytes()
	return b[:len(b)-1], nil // Encode ends the value with a newline
}
