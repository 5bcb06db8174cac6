package postgres

import (
	"context"
	"strconv"
	"testing"

	"github.com/kvsidecar/kvsidecar/store/postgres/pgtest"
)

// TestClearFirstInBatch puts a Clear at the head of a batch, before any
// statement of the transaction has been sent, followed by writes to the
// cleared project and to another one, and checks that the usage rows still
// match what the table holds.
func TestClearFirstInBatch(t *testing.T) {
	dsn := testSchema(t, pgtest.Database(t))
	ctx := context.Background()
	s := openStore(t, testConfig(dsn))
	for i := range 10 {
		if err := s.Set(ctx, "p", "k"+strconv.Itoa(i), make([]byte, 100), 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.SetQuota(ctx, "p", 1100); err != nil {
		t.Fatal(err)
	}
	other := "q"
	for i := 0; partition(other, len(s.writeQs)) != partition("p", len(s.writeQs)); i++ {
		other = "q" + strconv.Itoa(i)
	}
	// The stalled batch is the stall's own Set; what is queued next forms
	// the batch under test, Clear first.
	st := newStall(t, s, dsn, "p")
	var cleared int64
	var clearErr, setErr, otherErr error
	st.queue(func() { cleared, clearErr = s.Clear(ctx, "p") })
	st.queue(func() { setErr = s.Set(ctx, "p", "after", make([]byte, 500), 0) })
	st.queue(func() { otherErr = s.Set(ctx, other, "k", []byte("v"), 0) })
	st.release()

	if clearErr != nil || cleared != 11 {
		t.Errorf("Clear = %d, %v; want 11 entries removed", cleared, clearErr)
	}
	if setErr != nil {
		t.Errorf("Set after Clear: %v (the project is empty, 505 bytes fit in 1100)", setErr)
	}
	if otherErr != nil {
		t.Errorf("Set on the other project: %v", otherErr)
	}
	conn := dbConn(t, dsn)
	checkUsageMatchesRows(t, conn, "p")
	checkUsageMatchesRows(t, conn, other)
	u, err := s.Usage(ctx, "p")
	if err != nil || u.Bytes != 505 || u.Entries != 1 {
		t.Errorf("Usage(p) = %+v, %v; want 505 bytes in 1 entry", u, err)
	}
}
