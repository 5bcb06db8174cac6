package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/kvsidecar/kvsidecar/client"
)

// target is what a run drives: the daemon, or the naive baseline.
type target interface {
	// name is how the target appears in progress lines and errors.
	name() string
	// set writes value under key.
	set(ctx context.Context, key string, value []byte) error
	// get reads key and reports whether it was found.
	get(ctx context.Context, key string) (bool, error)
}

// daemonTarget drives the daemon through one or more clients; caller i of a
// run uses clients[i % len(clients)].
type daemonTarget struct {
	clients []*client.Client
}

// daemonCaller is one caller's view of the daemon: its client.
type daemonCaller struct{ c *client.Client }

func (daemonCaller) name() string { return "daemon" }

func (d daemonCaller) set(ctx context.Context, key string, value []byte) error {
	return d.c.SetBytes(ctx, key, value, 0)
}

func (d daemonCaller) get(ctx context.Context, key string) (bool, error) {
	_, found, err := d.c.GetBytes(ctx, key)
	return found, err
}

// caller returns the target of caller i.
func (d *daemonTarget) caller(i int) target { return daemonCaller{d.clients[i%len(d.clients)]} }

// dialDaemon dials n clients.
func dialDaemon(ctx context.Context, socket string, n int) (*daemonTarget, error) {
	d := &daemonTarget{}
	for range n {
		c, err := client.DialOptions(ctx, client.Options{Socket: socket, ClientName: "kvbench"})
		if err != nil {
			d.close()
			return nil, err
		}
		d.clients = append(d.clients, c)
	}
	return d, nil
}

func (d *daemonTarget) close() {
	for _, c := range d.clients {
		c.Close()
	}
}

// populate writes value under every key, in batches the daemon accepts.
func (d *daemonTarget) populate(ctx context.Context, keys []string, value []byte) error {
	c := d.clients[0]
	n := batchSize(c.Limits().MaxBatch)
	items := make([]client.BytesItem, 0, n)
	for chunk := range chunks(keys, n) {
		items = items[:0]
		for _, k := range chunk {
			items = append(items, client.BytesItem{Key: k, Value: value})
		}
		if err := c.SetManyBytes(ctx, items); err != nil {
			return err
		}
	}
	return nil
}

// remove deletes keys.
func (d *daemonTarget) remove(ctx context.Context, keys []string) error {
	c := d.clients[0]
	for chunk := range chunks(keys, batchSize(c.Limits().MaxBatch)) {
		if _, err := c.DeleteMany(ctx, chunk); err != nil {
			return err
		}
	}
	return nil
}

// batchSize is the number of keys per *Many call: the daemon's limit, or a
// thousand, which keeps each frame small, when the limit is larger or unset.
func batchSize(limit int64) int {
	if limit <= 0 || limit > 1000 {
		return 1000
	}
	return int(limit)
}

// chunks yields s in slices of at most n elements.
func chunks[T any](s []T, n int) func(yield func([]T) bool) {
	return func(yield func([]T) bool) {
		for len(s) > 0 {
			k := min(n, len(s))
			if !yield(s[:k]) {
				return
			}
			s = s[k:]
		}
	}
}

// The baseline's statements: the naive design, one statement per request,
// on the daemon's schema. Keys are bytea there.
const (
	sqlBaselineSet = `INSERT INTO kv_entries (project, key, value, expires_at)
VALUES ($1, $2, $3, NULL)
ON CONFLICT (project, key) DO UPDATE SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at`
	sqlBaselineGet = `SELECT value FROM kv_entries
WHERE project = $1 AND key = $2 AND (expires_at IS NULL OR expires_at > now())`
	sqlBaselinePopulate = `INSERT INTO kv_entries (project, key, value, expires_at)
SELECT $1, k, $3, NULL FROM unnest($2::bytea[]) AS k
ON CONFLICT (project, key) DO UPDATE SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at`
	sqlBaselineRemove = `DELETE FROM kv_entries WHERE project = $1`
	sqlSchemaCheck    = `SELECT to_regclass('kv_entries') IS NOT NULL`
)

// baseline is the naive design on the daemon's database: a pgx pool, each
// request one statement (prepared once per connection, pgx's default).
type baseline struct {
	pool    *pgxpool.Pool
	project string
}

// openBaseline opens a pool of exactly size connections, all connected
// before it returns so that no run measures connection setup, and checks
// that the daemon's schema is there.
func openBaseline(ctx context.Context, dsn, project string, size int) (*baseline, error) {
	pcfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("DSN: %w", err)
	}
	pcfg.MaxConns, pcfg.MinConns = int32(size), int32(size)
	if pcfg.ConnConfig.RuntimeParams["application_name"] == "" {
		pcfg.ConnConfig.RuntimeParams["application_name"] = "kvbench-baseline"
	}
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, err
	}
	b := &baseline{pool: pool, project: project}
	// Acquire every connection at once: each is opened now.
	conns := make([]*pgxpool.Conn, 0, size)
	defer func() {
		for _, c := range conns {
			c.Release()
		}
	}()
	for range size {
		c, err := pool.Acquire(ctx)
		if err != nil {
			pool.Close()
			return nil, fmt.Errorf("open %d connections: %w", size, err)
		}
		conns = append(conns, c)
	}
	var ok bool
	if err := conns[0].QueryRow(ctx, sqlSchemaCheck).Scan(&ok); err != nil {
		pool.Close()
		return nil, err
	}
	if !ok {
		pool.Close()
		return nil, errors.New("the database has no kv_entries table: give the DSN of the daemon's database (the daemon creates the schema when it starts)")
	}
	return b, nil
}

func (b *baseline) close() { b.pool.Close() }

func (b *baseline) name() string { return "baseline" }

func (b *baseline) set(ctx context.Context, key string, value []byte) error {
	_, err := b.pool.Exec(ctx, sqlBaselineSet, b.project, []byte(key), value)
	return err
}

func (b *baseline) get(ctx context.Context, key string) (bool, error) {
	var v []byte
	err := b.pool.QueryRow(ctx, sqlBaselineGet, b.project, []byte(key)).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}

// populate writes value under every key of the baseline's project.
func (b *baseline) populate(ctx context.Context, keys []string, value []byte) error {
	for chunk := range chunks(keys, 1000) {
		bk := make([][]byte, len(chunk))
		for i, k := range chunk {
			bk[i] = []byte(k)
		}
		if _, err := b.pool.Exec(ctx, sqlBaselinePopulate, b.project, bk, value); err != nil {
			return err
		}
	}
	return nil
}

// remove deletes every row of the baseline's project.
func (b *baseline) remove(ctx context.Context) error {
	_, err := b.pool.Exec(ctx, sqlBaselineRemove, b.project)
	return err
}
