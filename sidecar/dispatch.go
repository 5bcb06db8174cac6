package sidecar

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/kvsidecar/kvsidecar/protocol"
	"github.com/kvsidecar/kvsidecar/store"
)

// maxTTLMillis is the largest TTL that fits in a time.Duration (~292 years).
const maxTTLMillis = math.MaxInt64 / int64(time.Millisecond)

func ttlOf(field string, ms int64) (time.Duration, error) {
	if ms > maxTTLMillis {
		return 0, protocol.NewError(protocol.CodeBadRequest, fmt.Sprintf("%s %d ms is too large: the limit is %d ms", field, ms, maxTTLMillis))
	}
	return time.Duration(ms) * time.Millisecond, nil
}

// condOf is the store condition of a request's if_version.
func condOf(has bool, version uint64) store.Cond {
	if !has {
		return store.Cond{}
	}
	return store.IfVersion(version)
}

// ceilMillis is a remaining TTL in whole milliseconds, rounded up so that a
// live key never reports 0 ("no expiry").
func ceilMillis(d time.Duration) int64 {
	ms := int64(d / time.Millisecond)
	if d%time.Millisecond != 0 {
		ms++
	}
	return ms
}

// orderKeys returns the keys a request must be ordered on, and whether it is
// a barrier.
func orderKeys(req *protocol.Request) ([]string, bool) {
	switch req.Op {
	case protocol.OpGet, protocol.OpSet, protocol.OpDelete, protocol.OpHas, protocol.OpIncr,
		protocol.OpTTL, protocol.OpExpire:
		return []string{req.Key}, false
	case protocol.OpGetMany, protocol.OpDeleteMany, protocol.OpHasMany:
		return req.Keys, false
	case protocol.OpSetMany:
		keys := make([]string, len(req.Items))
		for i, it := range req.Items {
			keys[i] = it.Key
		}
		return keys, false
	case protocol.OpClear:
		return nil, true
	}
	return nil, false
}

// execute runs one request against the store for project and fills resp.
func (s *Server) execute(ctx context.Context, project string, req *protocol.Request, resp *protocol.Response) error {
	st := s.store
	if req.Timeout < 0 {
		return protocol.NewError(protocol.CodeBadRequest, fmt.Sprintf("timeout %d ms is negative", req.Timeout))
	}
	var err error
	switch req.Op {
	case protocol.OpPing:
	case protocol.OpGet:
		var v store.Versioned
		v, resp.Found, err = st.GetVersioned(ctx, project, req.Key)
		resp.Value, resp.Version = v.Value, v.Version
	case protocol.OpHas:
		resp.Found, err = st.Has(ctx, project, req.Key)
	case protocol.OpSet:
		var ttl time.Duration
		if ttl, err = ttlOf("ttl", req.TTL); err == nil {
			resp.Version, err = st.SetIf(ctx, project, req.Key, req.Value, ttl, condOf(req.HasIfVersion, req.IfVersion))
		}
	case protocol.OpDelete:
		resp.Bool, err = st.DeleteIf(ctx, project, req.Key, condOf(req.HasIfVersion, req.IfVersion))
	case protocol.OpTTL:
		var ttl time.Duration
		if ttl, resp.Found, err = st.TTL(ctx, project, req.Key); err == nil && resp.Found {
			resp.Int = ceilMillis(ttl)
		}
	case protocol.OpExpire:
		var ttl time.Duration
		if ttl, err = ttlOf("ttl", req.TTL); err == nil {
			resp.Version, resp.Bool, err = st.Expire(ctx, project, req.Key, ttl)
		}
	case protocol.OpClear:
		resp.Int, err = st.Clear(ctx, project)
	case protocol.OpGetMany:
		var vs []store.Versioned
		if vs, err = s.getMany(ctx, project, req.Keys); err == nil {
			resp.Values = make([][]byte, len(vs))
			resp.Versions = make([]uint64, len(vs))
			for i, v := range vs {
				resp.Values[i], resp.Versions[i] = v.Value, v.Version
			}
		}
	case protocol.OpHasMany:
		resp.Bools, err = st.HasMany(ctx, project, req.Keys)
	case protocol.OpDeleteMany:
		resp.Bools, err = st.DeleteMany(ctx, project, req.Keys)
	case protocol.OpSetMany:
		items := make([]store.Item, len(req.Items))
		for i, it := range req.Items {
			items[i] = store.Item{Key: it.Key, Value: it.Value, Cond: condOf(it.HasIfVersion, it.IfVersion)}
			if items[i].TTL, err = ttlOf(fmt.Sprintf("items[%d].ttl", i), it.TTL); err != nil {
				return err
			}
		}
		resp.Versions, err = st.SetManyIf(ctx, project, items)
	case protocol.OpIncr:
		var ttl time.Duration
		if ttl, err = ttlOf("ttl", req.TTL); err == nil {
			resp.Int, err = st.Incr(ctx, project, req.Key, req.Delta, ttl)
		}
	case protocol.OpList:
		err = s.list(ctx, project, req, resp)
	case protocol.OpUsage:
		var u store.Usage
		if u, err = st.Usage(ctx, project); err == nil {
			resp.Usage = protocol.UsageResult{Bytes: u.Bytes, Entries: u.Entries, Quota: u.Quota}
		}
	case protocol.OpHello:
		err = protocol.NewError(protocol.CodeBadRequest, "hello may be sent only once, as the first request")
	default:
		if req.UnknownOp == "" {
			return protocol.NewError(protocol.CodeBadRequest, "the request has no op")
		}
		err = protocol.NewError(protocol.CodeUnknownOp, fmt.Sprintf("unknown op %q", req.UnknownOp))
	}
	return err
}

// Memory accounting of responses. The figures are what a response holds in
// the daemon's memory beyond its keys' and values' bytes, rounded up: a
// slice or string header per entry (24 bytes) and its msgpack header (at
// most 5), and for the whole response its struct and map keys. They are
// also upper bounds of the encoded size, so a response accounted within
// MaxResponseBytes is encoded within it.
const (
	entryOverhead    = 48
	responseOverhead = 512
	// requestOverhead is what a request holds while it runs, beyond its
	// frame and its response: its goroutine's stack, the decoded request,
	// its ordering ticket and contexts. Measured at about 3 KiB each with
	// a hundred thousand requests waiting behind one key; without it in
	// the budget, requests that wait cost the daemon more than twice what
	// they were charged.
	requestOverhead = 4 << 10
)

// smallResponse is what the response of a request that returns no keys or
// values may hold: an error message names at most one key.
func (s *Server) smallResponse() int64 {
	return responseOverhead + int64(s.cfg.Limits.MaxKeyBytes)
}

// responseReserve is the most the response to req may hold while it is
// produced, the decoded request's own entries included. It is reserved
// before the request runs, so that whatever peers ask, the responses fit in
// the budgets. getMany and list read the store in slices and may hold, for
// a moment, a full response and the slice being read: twice
// MaxResponseBytes. A response is held once: when the write loop has
// encoded it, its values are dropped and the encoding takes their place.
func (s *Server) responseReserve(req *protocol.Request) int64 {
	l := s.cfg.Limits
	small := s.smallResponse()
	ceiling := 2 * int64(s.cfg.MaxResponseBytes)
	switch req.Op {
	case protocol.OpGet:
		return small + int64(l.MaxValueBytes)
	case protocol.OpGetMany:
		return small + min(int64(len(req.Keys))*(int64(l.MaxValueBytes)+entryOverhead), ceiling)
	case protocol.OpHasMany, protocol.OpDeleteMany:
		return small + int64(len(req.Keys))*entryOverhead
	case protocol.OpSetMany:
		return small + int64(len(req.Items))*entryOverhead
	case protocol.OpList:
		return small + min(int64(s.listLimit(req.Limit))*s.listEntryMax(req.Values), ceiling)
	}
	return small
}

// responseSize is what resp holds, by the same measure as responseReserve.
func (s *Server) responseSize(resp *protocol.Response) int64 {
	n := int64(responseOverhead)
	if resp.Err != nil {
		return n + int64(len(resp.Err.Message))
	}
	n += int64(len(resp.Value))
	for _, v := range resp.Values {
		n += int64(len(v)) + entryOverhead
	}
	n += int64(len(resp.Bools)) * entryOverhead
	for _, k := range resp.List.Keys {
		n += int64(len(k)) + entryOverhead
	}
	for _, v := range resp.List.Values {
		n += int64(len(v)) + entryOverhead
	}
	return n + int64(len(resp.List.Cursor))
}

// responseBudget is how many bytes of keys and values (with their
// entryOverhead) one response may carry.
func (s *Server) responseBudget() int64 {
	return int64(s.cfg.MaxResponseBytes) - responseOverhead
}

// getMany reads keys in slices small enough that a slice of the largest
// values fits in one response, and fails with response_too_large once the
// values found exceed the response limit. The daemon thus holds at most one
// response and one slice for it, whatever the keys' values are. When the
// project's whole data fits in one response (smallProject), one slice is
// the whole request.
func (s *Server) getMany(ctx context.Context, project string, keys []string) ([]store.Versioned, error) {
	// Checked here so that an error names the key's index in the request,
	// not in its slice.
	if err := s.cfg.Limits.CheckKeys(keys); err != nil {
		return nil, err
	}
	budget := s.responseBudget()
	slice := max(1, int(budget/(int64(s.cfg.Limits.MaxValueBytes)+entryOverhead)))
	if len(keys) > slice && s.smallProject(ctx, project, len(keys)) {
		slice = len(keys)
	}
	if len(keys) <= slice {
		values, err := s.store.GetManyVersioned(ctx, project, keys)
		if err == nil && s.valuesSize(values) > budget {
			return nil, s.tooLarge(len(keys))
		}
		return values, err
	}
	values := make([]store.Versioned, 0, len(keys))
	var size int64
	for i := 0; i < len(keys); i += slice {
		part, err := s.store.GetManyVersioned(ctx, project, keys[i:min(i+slice, len(keys))])
		if err != nil {
			return nil, err
		}
		if size += s.valuesSize(part); size > budget {
			return nil, s.tooLarge(len(keys))
		}
		values = append(values, part...)
	}
	return values, nil
}

// smallProject reports whether everything project stores, with the entry
// overhead of n entries, fits in one response: then no read of n of its
// entries can exceed the response budget, and it need not be sliced. (A
// write committed meanwhile can add to it; the result is still checked
// against the budget.) Asking costs one usage read, which is cheaper than
// reading a large request one largest value at a time.
func (s *Server) smallProject(ctx context.Context, project string, n int) bool {
	u, err := s.store.Usage(ctx, project)
	return err == nil && u.Bytes+int64(n)*2*entryOverhead <= s.responseBudget()
}

// valuesSize is what values count in a response; a version (8 bytes in
// memory, at most 9 encoded) fits in its entry's entryOverhead.
func (s *Server) valuesSize(values []store.Versioned) int64 {
	var n int64
	for _, v := range values {
		n += int64(len(v.Value)) + entryOverhead
	}
	return n
}

func (s *Server) tooLarge(keys int) error {
	return protocol.NewError(protocol.CodeResponseTooLarge, fmt.Sprintf(
		"response too large: the values of these %d keys exceed the response limit of %d bytes (max_response); ask for fewer keys at once",
		keys, s.cfg.MaxResponseBytes))
}

// listLimit is the page size of a list request's limit.
func (s *Server) listLimit(limit int64) int64 {
	switch {
	case limit <= 0:
		return DefaultListLimit
	case limit > store.MaxListLimit:
		return store.MaxListLimit
	}
	return limit
}

// listEntryMax is the most one list entry may hold.
func (s *Server) listEntryMax(values bool) int64 {
	n := int64(s.cfg.Limits.MaxKeyBytes) + entryOverhead
	if values {
		n += int64(s.cfg.Limits.MaxValueBytes) + entryOverhead
	}
	return n
}

// list answers a page of keys (and values), read from the store in slices
// small enough that a slice of the largest entries fits in one response. A
// page that would exceed the response limit ends early, with a cursor, so
// the caller reads on from there; it holds at least one entry.
func (s *Server) list(ctx context.Context, project string, req *protocol.Request, resp *protocol.Response) error {
	if req.Limit < 0 {
		return protocol.NewError(protocol.CodeBadRequest, fmt.Sprintf("limit %d is negative", req.Limit))
	}
	limit := s.listLimit(req.Limit)
	budget := s.responseBudget()
	perEntry := s.listEntryMax(req.Values)
	l := &resp.List
	l.Keys = []string{}
	l.Versions = []uint64{}
	if req.Values {
		l.Values = [][]byte{}
	}
	after := req.Cursor
	var size int64
	if limit*perEntry > budget && s.smallProject(ctx, project, int(limit)) {
		// Every entry fits: read the page at once.
		perEntry = 1
	}
	for remaining := limit; remaining > 0; {
		n := min(remaining, max(1, (budget-size)/perEntry))
		page, err := s.store.List(ctx, project, store.ListOptions{
			Prefix: req.Prefix,
			After:  after,
			Limit:  int(n),
			Values: req.Values,
		})
		if err != nil {
			return err
		}
		for _, e := range page.Entries {
			es := int64(len(e.Key)) + entryOverhead
			if req.Values {
				es += int64(len(e.Value)) + entryOverhead
			}
			if size+es > budget && len(l.Keys) > 0 {
				// Full: end the page before this entry.
				l.Cursor = l.Keys[len(l.Keys)-1]
				return nil
			}
			size += es
			l.Keys = append(l.Keys, e.Key)
			l.Versions = append(l.Versions, e.Version)
			if req.Values {
				l.Values = append(l.Values, e.Value)
			}
		}
		remaining -= int64(len(page.Entries))
		if !page.More || len(page.Entries) == 0 {
			return nil
		}
		after = page.Entries[len(page.Entries)-1].Key
		if remaining == 0 {
			l.Cursor = after
		}
	}
	return nil
}

// errorFor turns an error of the store (or of the daemon) into the error a
// client receives. Unexpected errors are reported as internal without their
// text, which may hold details of the deployment; the caller logs them.
func errorFor(err error) (perr *protocol.Error, unexpected bool) {
	if errors.As(err, &perr) {
		return perr, false
	}
	var conflict *store.ConflictError
	if errors.As(err, &conflict) {
		return &protocol.Error{Code: protocol.CodeConflict, Message: err.Error(), Keys: conflict.Keys()}, false
	}
	code := protocol.CodeInternal
	switch {
	case errors.Is(err, store.ErrKeyTooLarge):
		code = protocol.CodeKeyTooLarge
	case errors.Is(err, store.ErrValueTooLarge):
		code = protocol.CodeValueTooLarge
	case errors.Is(err, store.ErrQuotaExceeded):
		code = protocol.CodeQuotaExceeded
	case errors.Is(err, store.ErrNotInteger):
		code = protocol.CodeNotInteger
	case errors.Is(err, store.ErrOverflow):
		code = protocol.CodeOverflow
	case errors.Is(err, store.ErrEmptyKey), errors.Is(err, store.ErrInvalidKey),
		errors.Is(err, store.ErrNegativeTTL), errors.Is(err, store.ErrTooManyItems),
		errors.Is(err, store.ErrBadArgument):
		code = protocol.CodeBadRequest
	case errors.Is(err, store.ErrBusy):
		code = protocol.CodeBusy
	case errors.Is(err, store.ErrUnavailable), errors.Is(err, store.ErrClosed):
		code = protocol.CodeUnavailable
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return protocol.NewError(protocol.CodeUnavailable, "the store did not answer within the request's timeout"), false
	}
	if code == protocol.CodeInternal {
		return protocol.NewError(code, "internal error; the daemon's log has the details"), true
	}
	return protocol.NewError(code, err.Error()), false
}
