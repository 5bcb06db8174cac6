package bolt_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/kvsidecar/kvsidecar/store"
	"github.com/kvsidecar/kvsidecar/store/bolt"
)

// benchValue is about the size of a small JSON object, the typical value.
var benchValue = bytes.Repeat([]byte("x"), 100)

// BenchmarkSetParallel measures durable sets from concurrent callers, the
// load group commit exists for. Run with -cpu or -benchtime to vary it; the
// writes/commit metric shows how many sets share one fsync, cpu-µs/op the
// process's CPU time (user and system, getrusage) per set: the committer's
// work, bbolt's and the callers', kernel time of the fsyncs included.
func BenchmarkSetParallel(b *testing.B) {
	benchSets(b, bolt.Config{}, 10000, "")
}

// BenchmarkSetParallelOptions compares bbolt's options under the load of
// BenchmarkSetParallel, on a new file of 10,000 keys and on a file of a
// million keys written beforehand (where the freelist and the tree's depth
// weigh more). Each sub-benchmark runs on its own file; alternate them with
// -count to see through the noise of a shared machine.
func BenchmarkSetParallelOptions(b *testing.B) {
	options := []struct {
		name string
		tune func(*bbolt.Options)
	}{
		{"default", nil},
		{"NoFreelistSync", func(o *bbolt.Options) { o.NoFreelistSync = true }},
		{"hashmap", func(o *bbolt.Options) { o.FreelistType = bbolt.FreelistMapType }},
		{"NoFreelistSync+hashmap", func(o *bbolt.Options) {
			o.NoFreelistSync = true
			o.FreelistType = bbolt.FreelistMapType
		}},
		{"page16k", func(o *bbolt.Options) { o.PageSize = 16 << 10 }},
		{"InitialMmap1G", func(o *bbolt.Options) { o.InitialMmapSize = 1 << 30 }},
		{"NoGrowSync", func(o *bbolt.Options) { o.NoGrowSync = true }},
	}
	for _, keys := range []int{10000, 1000000} {
		b.Run("keys="+strconv.Itoa(keys), func(b *testing.B) {
			// The file of a million keys is written once, then copied
			// for each sub-benchmark (the page size is the file's: the
			// 16 KiB one starts from a new file).
			template := ""
			if keys > 10000 {
				template = filepath.Join(b.TempDir(), "template.db")
				preload(b, template, keys)
			}
			for _, o := range options {
				b.Run(o.name, func(b *testing.B) {
					from := template
					if o.name == "page16k" {
						from = ""
					}
					benchSets(b, bolt.WithBoltOptions(bolt.Config{}, o.tune), keys, from)
				})
			}
		})
	}
}

// benchSets runs durable sets of benchValue from 32 callers per CPU, over
// keys keys, on a store opened with cfg on a copy of the file template (a
// new file if template is "").
func benchSets(b *testing.B, cfg bolt.Config, keys int, template string) {
	var commits, writes atomic.Int64
	cfg.SweepInterval = -1
	cfg.ObserveBatch = func(n int) {
		commits.Add(1)
		writes.Add(int64(n))
	}
	if template != "" {
		cfg.Path = filepath.Join(b.TempDir(), "kv.db")
		copyFile(b, template, cfg.Path)
	}
	s := open(b, cfg)
	ctx := context.Background()
	var next atomic.Int64
	b.SetParallelism(32) // 32 callers per CPU: many clients, few cores
	b.ReportAllocs()
	b.ResetTimer()
	start := cpuTime(b)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			k := "key:" + strconv.FormatInt(next.Add(1)%int64(keys), 10)
			if err := s.Set(ctx, "bench", k, benchValue, 0); err != nil {
				b.Error(err)
				return
			}
		}
	})
	cpu := cpuTime(b) - start
	b.StopTimer()
	b.ReportMetric(float64(cpu.Nanoseconds())/1e3/float64(b.N), "cpu-µs/op")
	if c := commits.Load(); c > 0 {
		b.ReportMetric(float64(writes.Load())/float64(c), "writes/commit")
	}
}

// preload writes a store file at path holding keys keys of project
// "bench", written in SetMany calls of 1000.
func preload(b *testing.B, path string, keys int) {
	b.Helper()
	s, err := bolt.Open(context.Background(), bolt.Config{Path: path, SweepInterval: -1, DiskReserve: -1})
	if err != nil {
		b.Fatal(err)
	}
	items := make([]store.Item, 1000)
	for i := 0; i < keys; i += len(items) {
		for j := range items {
			items[j] = store.Item{Key: "key:" + strconv.Itoa(i+j), Value: benchValue}
		}
		if err := s.SetMany(context.Background(), "bench", items); err != nil {
			b.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
}

// copyFile copies the file from to the new file to, synced, so that the
// benchmark's fsyncs do not wait for the copy's writeback.
func copyFile(b *testing.B, from, to string) {
	b.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		b.Fatal(err)
	}
	f, err := os.OpenFile(to, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		b.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		b.Fatal(err)
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime(b *testing.B) time.Duration {
	b.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatalf("getrusage: %v", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkGet measures concurrent strongly consistent reads of existing
// keys.
func BenchmarkGet(b *testing.B) {
	s := open(b, bolt.Config{SweepInterval: -1})
	ctx := context.Background()
	const keys = 10000
	for i := 0; i < keys; i += 1000 {
		items := make([]store.Item, 0, 1000)
		for j := i; j < i+1000; j++ {
			items = append(items, store.Item{Key: "key:" + strconv.Itoa(j), Value: benchValue})
		}
		if err := s.SetMany(ctx, "bench", items); err != nil {
			b.Fatal(err)
		}
	}
	var next atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			k := "key:" + strconv.FormatInt(next.Add(1)%keys, 10)
			if _, found, err := s.Get(ctx, "bench", k); err != nil || !found {
				b.Errorf("Get(%s) = %v, %v", k, found, err)
				return
			}
		}
	})
}

// BenchmarkOpenLarge measures Open and Close of a file of a million keys
// of 100-byte values: with the freelist on disk (bbolt's default), Open reads it;
// without (NoFreelistSync), Open rebuilds it by walking every page of the
// file.
func BenchmarkOpenLarge(b *testing.B) {
	template := filepath.Join(b.TempDir(), "template.db")
	preload(b, template, 1000000)
	for _, o := range []struct {
		name string
		tune func(*bbolt.Options)
	}{
		{"default", nil},
		{"NoFreelistSync", func(o *bbolt.Options) { o.NoFreelistSync = true }},
	} {
		b.Run(o.name, func(b *testing.B) {
			cfg := bolt.WithBoltOptions(bolt.Config{Path: filepath.Join(b.TempDir(), "kv.db"), SweepInterval: -1, DiskReserve: -1}, o.tune)
			copyFile(b, template, cfg.Path)
			// One write, so that the file is in the option's form:
			// without NoFreelistSync its meta page names a freelist,
			// with it, none.
			s, err := bolt.Open(context.Background(), cfg)
			if err != nil {
				b.Fatal(err)
			}
			if err := s.Set(context.Background(), "bench", "key:0", benchValue, 0); err != nil {
				b.Fatal(err)
			}
			if err := s.Close(); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for range b.N {
				s, err := bolt.Open(context.Background(), cfg)
				if err != nil {
					b.Fatal(err)
				}
				if err := s.Close(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
