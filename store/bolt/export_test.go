package bolt

import "go.etcd.io/bbolt"

// WithBoltOptions returns cfg with tune applied to the bbolt options Open
// uses, for the benchmarks that compare them.
func WithBoltOptions(cfg Config, tune func(*bbolt.Options)) Config {
	cfg.tune = tune
	return cfg
}
