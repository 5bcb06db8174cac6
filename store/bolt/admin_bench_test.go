package bolt_test

import (
	"testing"

	"github.com/kvsidecar/kvsidecar/store/bolt"
	"github.com/kvsidecar/kvsidecar/store/storetest"
)

// BenchmarkAdmin: the admin's reads of a project of 100k entries.
func BenchmarkAdmin(b *testing.B) {
	storetest.BenchmarkAdmin(b, open(b, bolt.Config{SweepInterval: -1}))
}
