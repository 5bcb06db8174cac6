// Command quickstart stores and reads a value through a running kvsidecar:
//
//	make run                                         # in one terminal
//	KV_SOCKET=$PWD/var/kv.sock go run ./examples/quickstart   # in another
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/kvsidecar/kvsidecar/client"
)

type User struct {
	Name string `json:"name"`
	Age  int    `json:"age"`
}

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	c, err := client.Dial(ctx, "") // "" means $KV_SOCKET, else /run/kvsidecar/kv.sock
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	if err := c.Set(ctx, "user:123", User{Name: "John", Age: 30}, time.Hour); err != nil {
		if errors.Is(err, client.ErrQuotaExceeded) {
			log.Fatal("storage quota exceeded: ", err)
		}
		log.Fatal(err)
	}
	var u User
	found, err := c.Get(ctx, "user:123", &u)
	if err != nil {
		log.Fatal(err)
	}
	hits, err := c.Incr(ctx, "hits", 1, 0)
	if err != nil {
		log.Fatal(err)
	}
	usage, err := c.Usage(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("project %s: found=%v user=%+v hits=%d, %d of %d bytes used\n",
		c.Project(), found, u, hits, usage.Bytes, usage.Quota)
}
