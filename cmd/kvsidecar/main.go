// Command kvsidecar is the key-value daemon that runs next to function
// processes. See --help, and the README for how to deploy it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"go.uber.org/zap"

	"github.com/kvsidecar/kvsidecar/sidecar"
)

func main() {
	os.Exit(run())
}

func run() int {
	cfg, err := sidecar.LoadConfig(os.Args[1:], os.Getenv, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "kvsidecar: %v\n", err)
		return 2
	}
	log, err := sidecar.NewLogger(cfg.LogLevel, cfg.LogFormat)
	if err != nil {
		fmt.Fprintf(os.Stderr, "kvsidecar: %v\n", err)
		return 2
	}
	defer log.Sync()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	reload := make(chan struct{})
	done := make(chan struct{})
	defer close(done)
	go func() {
		for {
			select {
			case <-hup:
				select {
				case reload <- struct{}{}:
				case <-done:
					return
				}
			case <-done:
				return
			}
		}
	}()

	if err := sidecar.Run(ctx, cfg, log, reload); err != nil {
		log.Error("kvsidecar failed", zap.Error(err))
		return 1
	}
	return 0
}
