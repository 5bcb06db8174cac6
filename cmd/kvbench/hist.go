package main

import (
	"math/bits"
	"time"
)

// histogram counts latencies in log-linear buckets, as HdrHistogram does:
// values below 2*subBuckets nanoseconds get a bucket each, and every power
// of two above that is split into subBuckets equal buckets. A bucket is
// then at most 1/subBuckets of its values wide, so a percentile read from it
// is within 1.6% of the exact one (0.8% for the bucket's midpoint, which is
// what percentile returns), whatever the number of samples. Its size is
// fixed: recording never allocates, and one histogram per caller costs
// about 18 KiB (histBuckets counters) however long the run.
type histogram struct {
	counts [histBuckets]uint64
	total  uint64
	max    time.Duration
}

const (
	// subBucketBits sets the precision: 2^6 = 64 buckets per power of two.
	subBucketBits = 6
	subBuckets    = 1 << subBucketBits
	// histMaxBits covers latencies up to 2^40 ns (about 18 minutes), far
	// beyond any request timeout; larger values land in the last bucket.
	histMaxBits = 40
	histBuckets = 2*subBuckets + (histMaxBits-subBucketBits-1)*subBuckets
)

// bucketOf returns the bucket of a latency of v nanoseconds.
func bucketOf(v uint64) int {
	if v < 2*subBuckets {
		return int(v)
	}
	// shift >= 1: the top subBucketBits+1 bits of v, from 2*subBuckets/2
	// to 2*subBuckets-1, pick the bucket within its power of two.
	shift := bits.Len64(v) - subBucketBits - 1
	i := 2*subBuckets + (shift-1)*subBuckets + int(v>>shift) - subBuckets
	return min(i, histBuckets-1)
}

// bucketRange returns the smallest and largest value of bucket i.
func bucketRange(i int) (lo, hi uint64) {
	if i < 2*subBuckets {
		return uint64(i), uint64(i)
	}
	shift := (i-2*subBuckets)/subBuckets + 1
	top := uint64((i-2*subBuckets)%subBuckets + subBuckets)
	return top << shift, (top+1)<<shift - 1
}

// record adds one latency. Negative durations count as 0.
func (h *histogram) record(d time.Duration) {
	v := uint64(max(d, 0))
	h.counts[bucketOf(v)]++
	h.total++
	h.max = max(h.max, d)
}

// merge adds the counts of o to h.
func (h *histogram) merge(o *histogram) {
	for i, n := range o.counts {
		h.counts[i] += n
	}
	h.total += o.total
	h.max = max(h.max, o.max)
}

// percentile returns the latency below or at which q (0 < q <= 1) of the
// recorded latencies fall: the midpoint of the bucket holding the sample of
// rank ceil(q*total), clamped to the largest latency recorded. It returns 0
// when nothing was recorded.
func (h *histogram) percentile(q float64) time.Duration {
	if h.total == 0 {
		return 0
	}
	rank := uint64(q * float64(h.total))
	if float64(rank) < q*float64(h.total) {
		rank++ // ceil
	}
	rank = min(max(rank, 1), h.total)
	var seen uint64
	for i, n := range h.counts {
		seen += n
		if seen >= rank {
			lo, hi := bucketRange(i)
			return min(time.Duration(lo+(hi-lo)/2), h.max)
		}
	}
	return h.max
}
