package postgres

import (
	"testing"

	"github.com/kvsidecar/kvsidecar/store/postgres/pgtest"
	"github.com/kvsidecar/kvsidecar/store/storetest"
)

// BenchmarkAdmin: the admin's reads of a project of 100k entries.
func BenchmarkAdmin(b *testing.B) {
	storetest.BenchmarkAdmin(b, openStore(b, testConfig(pgtest.Database(b))))
}
