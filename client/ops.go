package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"reflect"
	"sync"
	"time"

	"github.com/kvsidecar/kvsidecar/protocol"
)

// Ping checks that the daemon answers.
func (c *Client) Ping(ctx context.Context) error {
	cl := newCall(protocol.OpPing)
	defer putCall(cl)
	if err := c.do(ctx, cl); err != nil {
		return opError(protocol.OpPing, "", err)
	}
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
	ms, err := c.checkSet(key, value, ttl)
	if err != nil {
		return opError(protocol.OpSet, key, err)
	}
	cl := newCall(protocol.OpSet)
	defer putCall(cl)
	cl.req.Key, cl.req.Value, cl.req.TTL = key, value, ms
	if err := c.do(ctx, cl); err != nil {
		return opError(protocol.OpSet, key, err)
	}
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
	cl, err := c.keyCall(ctx, protocol.OpGet, key)
	if err != nil {
		return nil, false, err
	}
	defer putCall(cl)
	return cl.resp.Value, cl.resp.Found, nil
}

// Delete removes key and reports whether it existed.
func (c *Client) Delete(ctx context.Context, key string) (existed bool, err error) {
	cl, err := c.keyCall(ctx, protocol.OpDelete, key)
	if err != nil {
		return false, err
	}
	defer putCall(cl)
	return cl.resp.Bool, nil
}

// Has reports whether key exists.
func (c *Client) Has(ctx context.Context, key string) (bool, error) {
	cl, err := c.keyCall(ctx, protocol.OpHas, key)
	if err != nil {
		return false, err
	}
	defer putCall(cl)
	return cl.resp.Found, nil
}

// keyCall runs an op whose only argument is key. On success the caller
// reads the response and puts the call back.
func (c *Client) keyCall(ctx context.Context, op protocol.Op, key string) (*call, error) {
	if err := c.checkKey(key); err != nil {
		return nil, opError(op, key, err)
	}
	cl := newCall(op)
	cl.req.Key = key
	if err := c.do(ctx, cl); err != nil {
		putCall(cl)
		return nil, opError(op, key, err)
	}
	return cl, nil
}

// Clear removes every entry of the project and returns how many it removed.
func (c *Client) Clear(ctx context.Context) (removed int64, err error) {
	cl := newCall(protocol.OpClear)
	defer putCall(cl)
	if err := c.do(ctx, cl); err != nil {
		return 0, opError(protocol.OpClear, "", err)
	}
	return cl.resp.Int, nil
}

// Incr atomically adds delta (which may be negative or 0) to the integer
// stored under key and returns the new value. A missing key counts as 0 and
// is created with ttl (0: no expiry); an existing key keeps its expiry. The
// value is stored as a JSON integer, so Get into an int64 reads it. A value
// that is not a JSON integer fails with ErrNotInteger, a result outside the
// int64 range with ErrOverflow.
func (c *Client) Incr(ctx context.Context, key string, delta int64, ttl time.Duration) (int64, error) {
	ms, err := c.checkSet(key, nil, ttl)
	if err != nil {
		return 0, opError(protocol.OpIncr, key, err)
	}
	cl := newCall(protocol.OpIncr)
	defer putCall(cl)
	cl.req.Key, cl.req.Delta, cl.req.TTL = key, delta, ms
	if err := c.do(ctx, cl); err != nil {
		return 0, opError(protocol.OpIncr, key, err)
	}
	return cl.resp.Int, nil
}

// Item is one entry of SetMany: Value is encoded as JSON.
type Item struct {
	Key   string
	Value any
	TTL   time.Duration // 0: no expiry
	// If is the item's condition (IfVersion, IfAbsent); the zero Cond is
	// none. One failing condition fails the whole SetMany with ErrConflict.
	If Cond
}

// BytesItem is one entry of SetManyBytes: Value is stored as it is.
type BytesItem struct {
	Key   string
	Value []byte
	TTL   time.Duration // 0: no expiry
	If    Cond          // as Item.If
}

// GetMany decodes the JSON values of keys into dst, which must point to a
// slice; the slice is replaced by one of len(keys) elements, the value of
// keys[i] in element i. found[i] reports whether keys[i] exists; the
// element of a missing key is the zero value. Any number of keys: see
// GetManyBytes.
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
// empty slice). Any number of keys: more than Limits().MaxBatch are sent as
// several requests, and a request whose values the daemon refuses as over
// its Limits().MaxResponse is split in two and sent again, so the values
// may come from more than one moment (as they would from several calls).
func (c *Client) GetManyBytes(ctx context.Context, keys []string) ([][]byte, error) {
	if batch := int(c.Limits().MaxBatch); batch > 0 && len(keys) > batch {
		values := make([][]byte, len(keys))
		err := parallel(len(keys), batch, func(from, to int) error {
			part, err := c.getManyBytes(ctx, keys[from:to])
			copy(values[from:to], part)
			return err
		})
		if err != nil {
			return nil, err
		}
		return values, nil
	}
	return c.getManyBytes(ctx, keys)
}

// getManyBytes is one getMany request, split in halves while the daemon
// answers response_too_large.
func (c *Client) getManyBytes(ctx context.Context, keys []string) ([][]byte, error) {
	cl, err := c.keysCall(ctx, protocol.OpGetMany, keys)
	if errors.Is(err, ErrResponseTooLarge) && len(keys) > 1 {
		values := make([][]byte, len(keys))
		err := parallel(len(keys), (len(keys)+1)/2, func(from, to int) error {
			part, err := c.getManyBytes(ctx, keys[from:to])
			copy(values[from:to], part)
			return err
		})
		if err != nil {
			return nil, err
		}
		return values, nil
	}
	if err != nil {
		return nil, err
	}
	defer putCall(cl)
	return cl.resp.Values, nil
}

// parallel runs fn on the runs [from, to) of size (the last may be
// shorter) covering 0..n, concurrently (the calls share the connection's
// pipeline), and returns the first error.
func parallel(n, size int, fn func(from, to int) error) error {
	var wg sync.WaitGroup
	errs := make([]error, (n+size-1)/size)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = fn(i*size, min((i+1)*size, n))
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// SetMany stores every item, its value encoded as JSON, atomically: all are
// written or, on any error, none — a failed item condition (Item.If)
// included, which fails with ErrConflict naming every failing key. A key
// given twice takes the later item.
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
		raw[i] = BytesItem{Key: it.Key, Value: all[start:ends[i]:ends[i]], TTL: it.TTL, If: it.If}
		start = ends[i]
	}
	return c.SetManyBytes(ctx, raw)
}

// SetManyBytes is SetMany with values stored as they are.
func (c *Client) SetManyBytes(ctx context.Context, items []BytesItem) error {
	op := protocol.OpSetMany
	if err := c.checkBatch(len(items)); err != nil {
		return manyError(op, len(items), err)
	}
	pitems := make([]protocol.Item, len(items))
	for i, it := range items {
		ms, err := c.checkSet(it.Key, it.Value, it.TTL)
		if err != nil {
			return opError(op, it.Key, err)
		}
		pitems[i] = protocol.Item{Key: it.Key, Value: it.Value, TTL: ms}
		it.If.apply(&pitems[i].HasIfVersion, &pitems[i].IfVersion)
	}
	cl := newCall(op)
	defer putCall(cl)
	cl.req.Items = pitems
	if err := c.do(ctx, cl); err != nil {
		return manyError(op, len(items), err)
	}
	return nil
}

// DeleteMany removes keys and reports, per key in order, whether it
// existed. At most Limits().MaxBatch keys.
func (c *Client) DeleteMany(ctx context.Context, keys []string) (existed []bool, err error) {
	cl, err := c.keysCall(ctx, protocol.OpDeleteMany, keys)
	if err != nil {
		return nil, err
	}
	defer putCall(cl)
	return cl.resp.Bools, nil
}

// HasMany reports, per key in order, whether it exists. At most
// Limits().MaxBatch keys.
func (c *Client) HasMany(ctx context.Context, keys []string) ([]bool, error) {
	cl, err := c.keysCall(ctx, protocol.OpHasMany, keys)
	if err != nil {
		return nil, err
	}
	defer putCall(cl)
	return cl.resp.Bools, nil
}

// keysCall runs an op whose only argument is a list of keys. On success the
// caller reads the response and puts the call back.
func (c *Client) keysCall(ctx context.Context, op protocol.Op, keys []string) (*call, error) {
	if err := c.checkBatch(len(keys)); err != nil {
		return nil, manyError(op, len(keys), err)
	}
	for _, k := range keys {
		if err := c.checkKey(k); err != nil {
			return nil, opError(op, k, err)
		}
	}
	cl := newCall(op)
	// The daemon tells an absent key list from an empty one.
	cl.req.Keys = keys
	if keys == nil {
		cl.req.Keys = []string{}
	}
	if err := c.do(ctx, cl); err != nil {
		putCall(cl)
		return nil, manyError(op, len(keys), err)
	}
	return cl, nil
}

func manyError(op protocol.Op, n int, err error) error {
	return fmt.Errorf("kv %s of %d keys: %w", op, n, err)
}

// ListOptions select a page of List.
type ListOptions struct {
	// Prefix selects keys that start with it; "" selects every key.
	Prefix string
	// Cursor is the Cursor of the previous page; "" asks for the first.
	Cursor string
	// Limit is the most keys of one page: 0 means the daemon's default
	// (100), and it is capped at Limits().MaxBatch. A page with values ends
	// early, with a Cursor, where it would exceed Limits().MaxResponse.
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
	// this was the last page (a page shorter than the limit may not be).
	Cursor string
}

// List returns a page of the project's keys that start with opts.Prefix, in
// ascending byte order. Keys written between pages appear if they sort after
// the cursor.
func (c *Client) List(ctx context.Context, opts ListOptions) (ListPage, error) {
	cl := newCall(protocol.OpList)
	defer putCall(cl)
	cl.req.Prefix, cl.req.Cursor, cl.req.Limit, cl.req.Values = opts.Prefix, opts.Cursor, int64(opts.Limit), opts.Values
	if err := c.do(ctx, cl); err != nil {
		return ListPage{}, opError(protocol.OpList, opts.Prefix, err)
	}
	l := &cl.resp.List
	return ListPage{Keys: l.Keys, Values: l.Values, Cursor: l.Cursor}, nil
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
	cl := newCall(protocol.OpUsage)
	defer putCall(cl)
	if err := c.do(ctx, cl); err != nil {
		return Usage{}, opError(protocol.OpUsage, "", err)
	}
	return Usage(cl.resp.Usage), nil
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

// checkSet checks the arguments of a write and returns its TTL in
// milliseconds.
func (c *Client) checkSet(key string, value []byte, ttl time.Duration) (int64, error) {
	if err := c.checkKey(key); err != nil {
		return 0, err
	}
	if err := c.checkValue(value); err != nil {
		return 0, err
	}
	return ttlMillis(ttl)
}

// checkBatch refuses a batch larger than the daemon accepts.
func (c *Client) checkBatch(n int) error {
	if lim := c.Limits().MaxBatch; lim > 0 && int64(n) > lim {
		return newError(protocol.CodeBadRequest, "too many keys: %d, the limit is %d", n, lim)
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
