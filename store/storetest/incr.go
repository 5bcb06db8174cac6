package storetest

import (
	"math"
	"strconv"
	"testing"
	"time"

	"github.com/kvsidecar/kvsidecar/store"
)

func testIncr(t *testing.T, h Harness) {
	t.Run("Arithmetic", func(t *testing.T) {
		for _, tc := range []struct {
			name  string
			start string // "" means the key does not exist
			delta int64
			want  int64
		}{
			{"missing key counts as zero", "", 1, 1},
			{"missing key, negative delta", "", -3, -3},
			{"missing key, zero delta", "", 0, 0},
			{"existing", "5", 3, 8},
			{"negative delta", "5", -7, -2},
			{"negative value", "-2", 2, 0},
			{"large", "1000000000000", 1, 1000000000001},
			{"up to the maximum", "9223372036854775806", 1, math.MaxInt64},
			{"down to the minimum", "-9223372036854775807", -1, math.MinInt64},
		} {
			t.Run(tc.name, func(t *testing.T) {
				f := open(t, h, Options{})
				if tc.start != "" {
					f.set("p", "n", tc.start, 0)
				}
				if got := f.incr("p", "n", tc.delta, 0); got != tc.want {
					t.Fatalf("Incr = %d, want %d", got, tc.want)
				}
				// The stored value is the JSON integer, so get returns a number.
				want := strconv.FormatInt(tc.want, 10)
				f.wantValue("p", "n", want)
				f.wantBytes("p", size("n", want))
			})
		}
	})

	t.Run("NotInteger", func(t *testing.T) {
		f := open(t, h, Options{})
		values := []string{
			"abc", "1.5", "1e3", "01", "+5", " 5", "5 ", "", `"5"`, "true", "null", "{}", "[1]", "-",
			"9223372036854775808", "-9223372036854775809",
		}
		for i, v := range values {
			k := "k" + strconv.Itoa(i)
			f.set("p", k, v, 0)
			_, err := f.s.Incr(f.ctx, "p", k, 1, 0)
			wantErr(t, "Incr of "+strconv.Quote(v), err, store.ErrNotInteger)
			f.wantValue("p", k, v)
		}
	})

	t.Run("Overflow", func(t *testing.T) {
		f := open(t, h, Options{})
		maxStr := strconv.FormatInt(math.MaxInt64, 10)
		minStr := strconv.FormatInt(math.MinInt64, 10)
		f.set("p", "max", maxStr, 0)
		f.set("p", "min", minStr, 0)
		_, err := f.s.Incr(f.ctx, "p", "max", 1, 0)
		wantErr(t, "Incr of MaxInt64 by 1", err, store.ErrOverflow)
		_, err = f.s.Incr(f.ctx, "p", "min", -1, 0)
		wantErr(t, "Incr of MinInt64 by -1", err, store.ErrOverflow)
		f.wantValue("p", "max", maxStr)
		f.wantValue("p", "min", minStr)
	})

	t.Run("WorksOnSetNumbers", func(t *testing.T) {
		f := open(t, h, Options{})
		f.set("p", "n", "41", 0) // what a client's set(k, 41) stores
		if n := f.incr("p", "n", 1, 0); n != 42 {
			t.Fatalf("Incr = %d, want 42", n)
		}
	})

	t.Run("TTLOnCreate", func(t *testing.T) {
		f := open(t, h, Options{})
		f.parallelIfReal()
		f.set("p", "plain", "10", 0)
		if n := f.incr("p", "window", 1, f.ttl); n != 1 {
			t.Fatalf("first Incr = %d, want 1", n)
		}
		// An existing key keeps its expiry, whatever TTL later calls pass:
		// a rate-limit window does not slide with every hit.
		f.sleep(f.ttl / 2)
		if n := f.incr("p", "window", 1, 10*f.ttl); n != 2 {
			t.Fatalf("second Incr = %d, want 2", n)
		}
		if n := f.incr("p", "plain", 1, f.ttl); n != 11 {
			t.Fatalf("Incr of a key without TTL = %d, want 11", n)
		}
		f.sleep(f.ttl/2 + expireSlack(f))

		f.wantMissing("p", "window")
		if n := f.incr("p", "window", 1, 0); n != 1 {
			t.Fatalf("Incr of an expired key = %d, want 1 (counting from 0)", n)
		}
		f.expire()
		f.wantValue("p", "window", "1") // recreated without TTL
		f.wantValue("p", "plain", "11") // it had no expiry and got none
	})

	t.Run("RespectsQuota", func(t *testing.T) {
		f := open(t, h, Options{DefaultQuota: quota})
		f.set("p", "a", value(96), 0) // 97 bytes
		f.incr("p", "n", 9, 0)        // "n" "9": 99 bytes
		f.incr("p", "n", 1, 0)        // "n" "10": 100 bytes
		_, err := f.s.Incr(f.ctx, "p", "n", 90, 0)
		wantQuotaErr(t, "Incr from 10 to 100 at full quota", err)
		f.wantValue("p", "n", "10")
		f.incr("p", "n", -1, 0) // shrinking is always allowed
		f.wantBytes("p", 99)
	})
}

// expireSlack is how far past an expiry the suite waits before it expects
// the entry gone.
func expireSlack(f *fixture) time.Duration {
	if f.realClock() {
		return realSlack
	}
	return time.Millisecond
}
