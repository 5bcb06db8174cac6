package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/kvsidecar/kvsidecar/client"
	"github.com/kvsidecar/kvsidecar/internal/daemon"
	"github.com/kvsidecar/kvsidecar/sidecar"
)

// TestMain starts one daemon for the examples, which cannot start their own,
// and points $KV_SOCKET at it as a deployment would. Tests start their own
// daemons with sidecartest.
//
// With $KVSIDECAR_BENCH_DAEMON set, the test binary is instead the daemon
// of the benchmarks (see benchDaemon), so that its CPU is not counted as
// the client's.
func TestMain(m *testing.M) {
	if dir := os.Getenv(benchDaemonEnv); dir != "" {
		os.Exit(serveBenchDaemon(dir))
	}
	os.Exit(runWithDaemon(m))
}

func runWithDaemon(m *testing.M) int {
	dir, err := os.MkdirTemp("", "kvexample")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ctx, stop := context.WithCancel(context.Background())
	d, err := daemon.New(ctx, daemon.Config{
		Server:  sidecar.Config{Socket: filepath.Join(dir, "kv.sock")},
		DataDir: filepath.Join(dir, "data"),
		Project: "shop",
	}, zap.NewNop())
	if err != nil {
		log.Fatalf("start the examples' daemon: %v", err)
	}
	stopped := make(chan error, 1)
	go func() { stopped <- d.Run(ctx, nil) }()
	os.Setenv(client.SocketEnv, d.Socket())
	code := m.Run()
	stop()
	if err := <-stopped; err != nil {
		log.Printf("the examples' daemon stopped with: %v", err)
	}
	return code
}

func Example() {
	ctx := context.Background()
	c, err := client.Dial(ctx, "") // $KV_SOCKET, else /run/kvsidecar/kv.sock
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	fmt.Println("project:", c.Project())

	type User struct {
		Name string `json:"name"`
	}
	if err := c.Set(ctx, "user:123", User{Name: "John"}, time.Hour); err != nil {
		log.Fatal(err)
	}
	var u User
	found, err := c.Get(ctx, "user:123", &u)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(found, u.Name)

	// A rate limiter's counter: atomic, and gone a minute after it was created.
	for range 2 {
		n, err := c.Incr(ctx, "requests:ip:10.0.0.1", 1, time.Minute)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println("requests:", n)
	}

	existed, err := c.DeleteMany(ctx, []string{"user:123", "requests:ip:10.0.0.1", "nothing"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("existed:", existed)
	// Output:
	// project: shop
	// true John
	// requests: 1
	// requests: 2
	// existed: [true true false]
}

func Example_errors() {
	ctx := context.Background()
	c, err := client.Dial(ctx, "")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	if err := c.Set(ctx, "greeting", "hello", 0); err != nil {
		log.Fatal(err)
	}
	_, err = c.Incr(ctx, "greeting", 1, 0)
	switch {
	case errors.Is(err, client.ErrNotInteger):
		fmt.Println("not a counter")
	case errors.Is(err, client.ErrUnavailable):
		fmt.Println("daemon unavailable; a write's outcome may be unknown")
	case err != nil:
		log.Fatal(err)
	}
	if _, err := c.Delete(ctx, "greeting"); err != nil {
		log.Fatal(err)
	}
	// Output:
	// not a counter
}

func ExampleClient_Scan() {
	ctx := context.Background()
	c, err := client.Dial(ctx, "")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	err = c.SetMany(ctx, []client.Item{
		{Key: "cart:2", Value: []string{"pen"}},
		{Key: "cart:1", Value: []string{"book", "lamp"}},
		{Key: "order:1", Value: 42},
	})
	if err != nil {
		log.Fatal(err)
	}
	for e, err := range c.Scan(ctx, client.ListOptions{Prefix: "cart:", Values: true}) {
		if err != nil {
			log.Fatal(err)
		}
		var items []string
		if err := e.Decode(&items); err != nil {
			log.Fatal(err)
		}
		fmt.Println(e.Key, items)
	}
	if _, err := c.DeleteMany(ctx, []string{"cart:1", "cart:2", "order:1"}); err != nil {
		log.Fatal(err)
	}
	// Output:
	// cart:1 [book lamp]
	// cart:2 [pen]
}
