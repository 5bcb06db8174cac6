package postgres

import (
	"context"
	"testing"
	"time"
	"unsafe"

	"github.com/kvsidecar/kvsidecar/store"
	"github.com/kvsidecar/kvsidecar/store/postgres/pgtest"
)

// TestDoReadKeyReusedAfterDone: once an op's Done has run the op is its
// caller's again, and the daemon reads the next frame into the buffer its
// key is a view of. A read of the same key by another op of the same round
// (another connection asking for a hot key) must still get that key's
// value, not another key's.
func TestDoReadKeyReusedAfterDone(t *testing.T) {
	dsn := testSchema(t, pgtest.Database(t))
	s := openStore(t, testConfig(dsn))
	ctx := context.Background()
	for k, v := range map[string]string{"a": "value of a", "k": "value of k"} {
		if err := s.Set(ctx, "p", k, []byte(v), 0); err != nil {
			t.Fatal(err)
		}
	}
	// Each op's key lives in a buffer of its own, as in a frame.
	frames := [][]byte{[]byte("a"), []byte("k"), []byte("k")}
	got := make([]string, len(frames))
	var ops []*store.Op
	for i, f := range frames {
		op := &store.Op{Kind: store.OpGet, Project: "p", Key: unsafe.String(&f[0], len(f)), Deadline: time.Now().Add(time.Minute)}
		op.Done = func(o *store.Op) {
			if o.Err != nil {
				t.Errorf("get %d: %v", i, o.Err)
			}
			got[i] = string(o.Value)
			// The caller's buffer takes the next frame.
			copy(f, "z")
		}
		ops = append(ops, op)
	}
	s.Do(ops)
	want := []string{"value of a", "value of k", "value of k"}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("get %d: %q; want %q", i, got[i], want[i])
		}
	}
}
