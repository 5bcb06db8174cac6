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

// orderKeys returns the keys a request must be ordered on, and whether it is
// a barrier.
func orderKeys(req *protocol.Request) ([]string, bool) {
	switch req.Op {
	case protocol.OpGet, protocol.OpSet, protocol.OpDelete, protocol.OpHas, protocol.OpIncr:
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
	var err error
	switch req.Op {
	case protocol.OpPing:
	case protocol.OpGet:
		resp.Value, resp.Found, err = st.Get(ctx, project, req.Key)
	case protocol.OpHas:
		resp.Found, err = st.Has(ctx, project, req.Key)
	case protocol.OpSet:
		var ttl time.Duration
		if ttl, err = ttlOf("ttl", req.TTL); err == nil {
			err = st.Set(ctx, project, req.Key, req.Value, ttl)
		}
	case protocol.OpDelete:
		resp.Bool, err = st.Delete(ctx, project, req.Key)
	case protocol.OpClear:
		resp.Int, err = st.Clear(ctx, project)
	case protocol.OpGetMany:
		resp.Values, err = st.GetMany(ctx, project, req.Keys)
	case protocol.OpHasMany:
		resp.Bools, err = st.HasMany(ctx, project, req.Keys)
	case protocol.OpDeleteMany:
		resp.Bools, err = st.DeleteMany(ctx, project, req.Keys)
	case protocol.OpSetMany:
		items := make([]store.Item, len(req.Items))
		for i, it := range req.Items {
			items[i] = store.Item{Key: it.Key, Value: it.Value}
			if items[i].TTL, err = ttlOf(fmt.Sprintf("items[%d].ttl", i), it.TTL); err != nil {
				return err
			}
		}
		err = st.SetMany(ctx, project, items)
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
		err = protocol.NewError(protocol.CodeUnknownOp, fmt.Sprintf("unknown op %q", req.UnknownOp))
	}
	return err
}

func (s *Server) list(ctx context.Context, project string, req *protocol.Request, resp *protocol.Response) error {
	limit := req.Limit
	switch {
	case limit < 0:
		return protocol.NewError(protocol.CodeBadRequest, fmt.Sprintf("limit %d is negative", limit))
	case limit == 0:
		limit = DefaultListLimit
	case limit > store.MaxListLimit:
		limit = store.MaxListLimit
	}
	page, err := s.store.List(ctx, project, store.ListOptions{
		Prefix: req.Prefix,
		After:  req.Cursor,
		Limit:  int(limit),
		Values: req.Values,
	})
	if err != nil {
		return err
	}
	l := &resp.List
	l.Keys = make([]string, len(page.Entries))
	if req.Values {
		l.Values = make([][]byte, len(page.Entries))
	}
	for i, e := range page.Entries {
		l.Keys[i] = e.Key
		if req.Values {
			l.Values[i] = e.Value
		}
	}
	if page.More && len(page.Entries) > 0 {
		l.Cursor = page.Entries[len(page.Entries)-1].Key
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
