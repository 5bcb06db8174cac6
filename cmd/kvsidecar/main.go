// Command kvsidecar is the key-value daemon that runs next to function
// processes. See --help, and the README for how to deploy it. How the
// daemon is put together is package internal/daemon.
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

	"github.com/kvsidecar/kvsidecar/internal/daemon"
)

// version is the daemon's version, stamped at build time with
// -ldflags "-X main.version=...".
var version = "dev"

func main() {
	os.Exit(run())
}

// run is the daemon's one exit point: 0 after an orderly stop (or --help,
// --version), 2 for bad settings, 1 when the daemon cannot start or fails.
func run() int {
	cfg, err := daemon.LoadConfig(os.Args[1:], os.LookupEnv, os.Stdout) // --help to stdout
	switch {
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, daemon.ErrVersion):
		fmt.Println("kvsidecar", version)
		return 0
	case err != nil:
		fmt.Fprintf(os.Stderr, "kvsidecar: %v\n", err)
		return 2
	}
	log, err := daemon.NewLogger(cfg.LogLevel, cfg.LogFormat)
	if err != nil {
		fmt.Fprintf(os.Stderr, "kvsidecar: %v\n", err)
		return 2
	}
	defer log.Sync()
	log = log.With(zap.String("version", version))

	// SIGTERM and SIGINT cancel ctx, whose cause names the signal; SIGHUP
	// goes straight to the daemon's reload actor. Once ctx is cancelled the
	// two signals get their default action back: while the stop waits for
	// requests in flight (up to --shutdown-timeout), a second one ends the
	// process at once. Acknowledged writes are committed already.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	context.AfterFunc(ctx, stop)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	d, err := daemon.New(ctx, cfg, log)
	if err != nil {
		log.Error("kvsidecar cannot start", zap.Error(err))
		return 1
	}
	if err := d.Run(ctx, hup); err != nil {
		log.Error("kvsidecar failed", zap.Error(err))
		return 1
	}
	return 0
}
