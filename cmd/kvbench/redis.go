package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// redisTarget is the peer a user would pick instead of kvsidecar: Redis,
// driven through go-redis with the same keys, values and callers as the
// daemon. Like the baseline, it has a pool of exactly one connection per
// caller, all opened before the run; each request is one command (SET
// without expiry, GET).
type redisTarget struct {
	rdb *redis.Client
}

// parseRedisURL parses --redis: unix:///path/to/redis.sock, or a
// redis://host:port URL (Redis's CPU is then measured only when the
// server is local and reachable over a Unix socket: see redisPeerPID).
func parseRedisURL(url string) (*redis.Options, error) {
	opts, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("--redis %q: %w (want unix:///path/to/redis.sock or redis://host:port)", url, err)
	}
	return opts, nil
}

// openRedis opens a pool of exactly size connections to the server of
// url, each connected and answering PING before it returns.
func openRedis(ctx context.Context, url string, size int) (*redisTarget, error) {
	opts, err := parseRedisURL(url)
	if err != nil {
		return nil, err
	}
	opts.PoolSize, opts.MinIdleConns, opts.MaxIdleConns = size, size, size
	// Every caller calls as fast as answers come: the pool never waits
	// for a connection, and none is dialled during a run.
	opts.PoolTimeout = DefaultOpTimeout
	// No CLIENT SETINFO on connect: a command the server may not know,
	// and nothing the benchmark needs.
	opts.DisableIdentity = true
	// The operations carry the run's deadline; go-redis ignores a
	// context's deadline unless told.
	opts.ContextTimeoutEnabled = true
	r := &redisTarget{rdb: redis.NewClient(opts)}
	// Hold size connections at once, so that each is opened now.
	conns := make([]*redis.Conn, 0, size)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range size {
		c := r.rdb.Conn()
		conns = append(conns, c)
		if err := c.Ping(ctx).Err(); err != nil {
			r.close()
			return nil, fmt.Errorf("open %d connections to %s: %w", size, opts.Addr, err)
		}
	}
	return r, nil
}

func (r *redisTarget) close() { r.rdb.Close() }

func (r *redisTarget) name() string { return "redis" }

func (r *redisTarget) set(ctx context.Context, key string, value []byte) error {
	return r.rdb.Set(ctx, key, value, 0).Err()
}

func (r *redisTarget) get(ctx context.Context, key string) (bool, error) {
	err := r.rdb.Get(ctx, key).Err()
	if errors.Is(err, redis.Nil) {
		return false, nil
	}
	return err == nil, err
}

// populate writes value under every key, a thousand keys per MSET.
func (r *redisTarget) populate(ctx context.Context, keys []string, value []byte) error {
	args := make([]any, 0, 2000)
	for chunk := range chunks(keys, 1000) {
		args = args[:0]
		for _, k := range chunk {
			args = append(args, k, value)
		}
		if err := r.rdb.MSet(ctx, args...).Err(); err != nil {
			return err
		}
	}
	return nil
}

// remove deletes keys.
func (r *redisTarget) remove(ctx context.Context, keys []string) error {
	for chunk := range chunks(keys, 1000) {
		if err := r.rdb.Del(ctx, chunk...).Err(); err != nil {
			return err
		}
	}
	return nil
}

// redisPeerPID returns the pid of the Redis server of url, from the
// kernel (SO_PEERCRED), or an error saying why it cannot be had: only a
// Unix socket tells.
func redisPeerPID(ctx context.Context, url string) (int, error) {
	opts, err := parseRedisURL(url)
	if err != nil {
		return 0, err
	}
	if opts.Network != "unix" {
		return 0, fmt.Errorf("%s is not a Unix socket", url)
	}
	return peerPID(ctx, opts.Addr)
}
