# kvsidecar — build, run and test. `make help` lists the targets.

GO        ?= go
NPM       ?= npm
SOCKET    ?= $(CURDIR)/var/kv.sock
DATA_DIR  ?= $(CURDIR)/var/data
METRICS   ?= 127.0.0.1:9477
GOFLAGS_TEST ?= -race -count=1 -timeout 20m
# VERSION is what `kvsidecar --version` prints; without git it stays "dev".
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
DOCKER    ?= docker
IMAGE     ?= kvsidecar/kvsidecar:$(VERSION)
EXAMPLE_IMAGE ?= kvsidecar/kv-test-function:$(VERSION)

.PHONY: help build run test test-go test-node vet bench bench-embedded bench-go node-deps image image-example clean

help:
	@echo "make build   build bin/kvsidecar, bin/kvbench, bin/kvctl"
	@echo "make run     build and start the daemon on the embedded store under ./var (project 'dev')"
	@echo "make test    vet, Go tests with -race (PostgreSQL included), Node.js tests"
	@echo "make bench   load test: the daemon on a fresh PostgreSQL database vs the naive baseline and Redis (kvbench; BENCH_DSN, BENCH_ARGS)"
	@echo "make bench-embedded  load test: the daemon on the embedded store vs Redis (kvbench; BENCH_ARGS)"
	@echo "make bench-go  Go micro-benchmarks of the protocol and stores"
	@echo "make image   build the container image $(IMAGE) (deploy/docker/Dockerfile; VERSION, IMAGE)"
	@echo "make image-example  build the demo function's image $(EXAMPLE_IMAGE) (EXAMPLE_IMAGE)"
	@echo "make clean   remove bin/ and var/"

# build makes static binaries (no cgo), as the container image does, so
# that what make run and make bench measure is what ships: a binary linked
# with cgo keeps ~10 MiB more of itself resident.
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-X main.version=$(VERSION)" -o bin/kvsidecar ./cmd/kvsidecar
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/kvbench ./cmd/kvbench
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/kvctl ./cmd/kvctl

run: build
	@mkdir -p $(dir $(SOCKET)) $(DATA_DIR)
	@echo "kvsidecar: socket $(SOCKET)  (project 'dev', data in $(DATA_DIR), metrics on http://$(METRICS)/metrics)"
	@echo "try it:    KV_SOCKET=$(SOCKET) go run ./examples/quickstart"
	@exec bin/kvsidecar --socket $(SOCKET) --data-dir $(DATA_DIR) --project dev \
		--log-format console --metrics-addr $(METRICS)

vet:
	$(GO) vet ./...

test: vet test-go test-node

test-go:
	$(GO) test $(GOFLAGS_TEST) ./...

node-deps:
	cd client/node && $(NPM) ci --no-audit --no-fund
	cd examples/kv-test-function && $(NPM) ci --no-audit --no-fund

test-node: build node-deps
	cd client/node && KVSIDECAR_BIN=$(CURDIR)/bin/kvsidecar $(NPM) test
	cd examples/kv-test-function && KVSIDECAR_BIN=$(CURDIR)/bin/kvsidecar $(NPM) test

# bench builds the daemon and kvbench, starts a durable Redis on a temporary
# Unix socket, runs the daemon on a fresh database of BENCH_DSN's server and
# kvbench against it, the naive baseline and Redis; bench-embedded does the
# same with the daemon on the embedded store (no baseline). Both pass
# BENCH_ARGS on to kvbench; see cmd/kvbench/bench.sh for the knobs and
# docs/PERFORMANCE.md for the results.
bench:
	GO=$(GO) BENCH_STORE=postgres bash cmd/kvbench/bench.sh

bench-embedded:
	GO=$(GO) BENCH_STORE=embedded bash cmd/kvbench/bench.sh

bench-go:
	$(GO) test -run '^$$' -bench . -benchmem ./protocol/ ./store/...

# image builds the container image with the Dockerfile's static build; the
# version is stamped into the binaries (kvsidecar --version).
image:
	$(DOCKER) build -f deploy/docker/Dockerfile --build-arg VERSION=$(VERSION) -t $(IMAGE) .

# image-example builds the image of examples/kv-test-function that the
# example manifests in deploy/k8s run.
image-example:
	$(DOCKER) build -f deploy/docker/kv-test-function.Dockerfile -t $(EXAMPLE_IMAGE) .

clean:
	rm -rf bin var
