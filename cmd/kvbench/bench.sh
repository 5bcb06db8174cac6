#!/usr/bin/env bash
# The standard benchmark (make bench): builds the daemon and kvbench, creates
# a fresh PostgreSQL database, starts the daemon on it, runs kvbench with the
# naive baseline on the same database, then stops the daemon and drops the
# database, whatever happened in between.
#
# Environment (all optional):
#   BENCH_DSN          PostgreSQL server to use, as a DSN of any database on
#                      it; the benchmark's own database is created next to it
#                      (default postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable)
#   BENCH_CONCURRENCY  callers per run (default 1,64)
#   BENCH_WORKLOADS    workloads (default set,get,mixed)
#   BENCH_DURATION     measured time of each run (default 4s)
#   BENCH_WARMUP       warmup of each run (default 1s)
#   BENCH_PPROF        1: serve the daemon's pprof on 127.0.0.1:$BENCH_METRICS_PORT
#                      while it runs, e.g. to take a CPU profile of a run:
#                      go tool pprof 'http://127.0.0.1:9478/debug/pprof/profile?seconds=10'
#   BENCH_METRICS_PORT port of /metrics (and pprof) with BENCH_PPROF=1 (default 9478)
#   BENCH_ARGS         more kvbench flags, e.g. "--clients 4"
set -euo pipefail
cd "$(dirname "$0")/../.."

GO=${GO:-go}
BENCH_DSN=${BENCH_DSN:-postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable}
BENCH_CONCURRENCY=${BENCH_CONCURRENCY:-1,64}
BENCH_WORKLOADS=${BENCH_WORKLOADS:-set,get,mixed}
BENCH_DURATION=${BENCH_DURATION:-4s}
BENCH_WARMUP=${BENCH_WARMUP:-1s}
BENCH_PPROF=${BENCH_PPROF:-0}
BENCH_METRICS_PORT=${BENCH_METRICS_PORT:-9478}

# dsn_with_db DSN DB: DSN with its database replaced by DB, for URL and
# key=value DSNs alike.
dsn_with_db() {
	local dsn=$1 db=$2
	case $dsn in
	postgres://* | postgresql://*)
		local query="" base=$dsn
		if [[ $dsn == *\?* ]]; then
			query="?${dsn#*\?}"
			base=${dsn%%\?*}
		fi
		local scheme=${base%%://*} rest=${base#*://}
		echo "${scheme}://${rest%%/*}/${db}${query}"
		;;
	*) echo "$dsn dbname=$db" ;;
	esac
}

for tool in psql; do
	command -v "$tool" >/dev/null || { echo "bench: $tool not found (install the PostgreSQL client)" >&2; exit 1; }
done

echo "bench: building bin/kvsidecar and bin/kvbench from $(git describe --always --dirty 2>/dev/null || echo 'an unknown commit')"
$GO build -o bin/kvsidecar ./cmd/kvsidecar
$GO build -o bin/kvbench ./cmd/kvbench

tmp=$(mktemp -d "${TMPDIR:-/tmp}/kvbench.XXXXXX")
db="kvbench_$(date +%s)_$$"
dsn=$(dsn_with_db "$BENCH_DSN" "$db")
daemon=""
created=""

cleanup() {
	local status=$?
	if [[ -n $daemon ]] && kill -0 "$daemon" 2>/dev/null; then
		kill -TERM "$daemon" 2>/dev/null || true
		wait "$daemon" 2>/dev/null || true
	fi
	if [[ -n $created ]]; then
		psql "$BENCH_DSN" -qX -v ON_ERROR_STOP=1 -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null ||
			echo "bench: could not drop database $db; drop it by hand" >&2
	fi
	rm -rf "$tmp"
	exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if ! psql "$BENCH_DSN" -qX -v ON_ERROR_STOP=1 -c "CREATE DATABASE $db" >/dev/null; then
	echo "bench: cannot create a database on $BENCH_DSN (is PostgreSQL running? set BENCH_DSN)" >&2
	exit 1
fi
created=1
echo "bench: database $db created"

metrics_args=(--metrics-addr "")
if [[ $BENCH_PPROF == 1 ]]; then
	metrics_args=(--metrics-addr "127.0.0.1:$BENCH_METRICS_PORT" --pprof)
	echo "bench: daemon pprof on http://127.0.0.1:$BENCH_METRICS_PORT/debug/pprof/"
fi
bin/kvsidecar --socket "$tmp/kv.sock" --postgres "$dsn" --project bench \
	--log-level warn "${metrics_args[@]}" &
daemon=$!

# The daemon creates its socket once the store is open and the schema
# migrated.
for _ in $(seq 1 100); do
	[[ -S $tmp/kv.sock ]] && break
	kill -0 "$daemon" 2>/dev/null || { echo "bench: the daemon exited at start" >&2; exit 1; }
	sleep 0.1
done
[[ -S $tmp/kv.sock ]] || { echo "bench: the daemon did not open its socket within 10s" >&2; exit 1; }

# shellcheck disable=SC2086 # BENCH_ARGS is a list of flags
bin/kvbench --socket "$tmp/kv.sock" --baseline "$dsn" \
	--workloads "$BENCH_WORKLOADS" --concurrency "$BENCH_CONCURRENCY" \
	--duration "$BENCH_DURATION" --warmup "$BENCH_WARMUP" ${BENCH_ARGS:-}
