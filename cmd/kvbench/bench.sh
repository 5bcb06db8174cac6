#!/usr/bin/env bash
# The standard benchmarks (make bench, make bench-embedded): builds the daemon
# and kvbench, starts a durable Redis (appendfsync always) on a Unix socket in
# a temporary directory, starts the daemon (on a fresh PostgreSQL database, or
# on the embedded store with BENCH_STORE=embedded) with a uid map, runs
# kvbench against the daemon, the naive baseline (PostgreSQL only) and Redis,
# then stops everything and drops the database, whatever happened in between.
#
# Environment (all optional):
#   BENCH_STORE        postgres (make bench) or embedded (make bench-embedded)
#   BENCH_DSN          PostgreSQL server to use, as a DSN of any database on
#                      it; the benchmark's own database is created next to it
#                      (default postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable)
#   BENCH_CONCURRENCY  callers per run (default 1,64)
#   BENCH_WORKLOADS    workloads (default set,get,mixed,noisy as root, else
#                      set,get,mixed: the noisy workload's flood runs as
#                      another uid)
#   BENCH_DURATION     measured time of each run (default 4s)
#   BENCH_WARMUP       warmup of each run (default 1s)
#   BENCH_FLOOD_UID    uid of the noisy workload's flood (default 65534)
#   BENCH_FLOOD_PROJECT its project in the daemon's uid map (default bench-flood)
#   BENCH_REDIS        0: do not start Redis (default 1; skipped with a note
#                      when redis-server is not installed)
#   BENCH_PPROF        1: serve the daemon's pprof on 127.0.0.1:$BENCH_METRICS_PORT
#                      while it runs, e.g. to take a CPU profile of a run:
#                      go tool pprof 'http://127.0.0.1:9478/debug/pprof/profile?seconds=10'
#   BENCH_METRICS_PORT port of /metrics (and pprof) with BENCH_PPROF=1 (default 9478)
#   BENCH_ARGS         more kvbench flags, e.g. "--clients 4 --json out.json"
#   BENCH_DAEMON_ARGS  more kvsidecar flags, e.g. "--max-inflight 256"
#   BENCH_DAEMON_ENV   NAME=VALUE assignments added to the daemon's environment,
#                      separated by spaces, e.g. "GOMAXPROCS=1 GODEBUG=gctrace=1"
set -euo pipefail
cd "$(dirname "$0")/../.."

GO=${GO:-go}
BENCH_STORE=${BENCH_STORE:-postgres}
BENCH_DSN=${BENCH_DSN:-postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable}
BENCH_CONCURRENCY=${BENCH_CONCURRENCY:-1,64}
BENCH_FLOOD_UID=${BENCH_FLOOD_UID:-65534}
BENCH_FLOOD_PROJECT=${BENCH_FLOOD_PROJECT:-bench-flood}
BENCH_REDIS=${BENCH_REDIS:-1}
if [[ -z ${BENCH_WORKLOADS:-} ]]; then
	if [[ $(id -u) == 0 ]]; then
		BENCH_WORKLOADS=set,get,mixed,noisy
	else
		BENCH_WORKLOADS=set,get,mixed
		echo "bench: not root, so no noisy workload (its flood must run as another uid)" >&2
	fi
fi
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

case $BENCH_STORE in
postgres)
	command -v psql >/dev/null || { echo "bench: psql not found (install the PostgreSQL client)" >&2; exit 1; }
	;;
embedded) ;;
*) echo "bench: BENCH_STORE=$BENCH_STORE: want postgres or embedded" >&2; exit 2 ;;
esac
if [[ $BENCH_REDIS == 1 ]] && ! command -v redis-server >/dev/null; then
	echo "bench: redis-server not found, so no Redis runs (install redis-server, or BENCH_REDIS=0 to silence this)" >&2
	BENCH_REDIS=0
fi

echo "bench: building bin/kvsidecar and bin/kvbench from $(git describe --always --dirty 2>/dev/null || echo 'an unknown commit')"
# Static, as the container image builds them (and make build): the daemon's
# RSS below is then the shipped binary's.
CGO_ENABLED=0 $GO build -trimpath -o bin/kvsidecar ./cmd/kvsidecar
CGO_ENABLED=0 $GO build -trimpath -o bin/kvbench ./cmd/kvbench

tmp=$(mktemp -d "${TMPDIR:-/tmp}/kvbench.XXXXXX")
# The noisy workload's flood runs as another uid and must reach the socket.
chmod 755 "$tmp"
db="kvbench_$(date +%s)_$$"
dsn=$(dsn_with_db "$BENCH_DSN" "$db")
daemon=""
redis=""
created=""

cleanup() {
	local status=$?
	if [[ -n $daemon ]] && kill -0 "$daemon" 2>/dev/null; then
		kill -TERM "$daemon" 2>/dev/null || true
		wait "$daemon" 2>/dev/null || true
	fi
	if [[ -n $redis ]] && kill -0 "$redis" 2>/dev/null; then
		kill -TERM "$redis" 2>/dev/null || true
		wait "$redis" 2>/dev/null || true
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

# wait_socket PID PATH WHAT: wait until PATH is a socket, while PID lives.
wait_socket() {
	local pid=$1 path=$2 what=$3
	for _ in $(seq 1 100); do
		[[ -S $path ]] && return 0
		kill -0 "$pid" 2>/dev/null || { echo "bench: $what exited at start" >&2; exit 1; }
		sleep 0.1
	done
	echo "bench: $what did not open its socket within 10s" >&2
	exit 1
}

kvbench_args=()
if [[ $BENCH_REDIS == 1 ]]; then
	# Durable like the daemon: every write is fsync-ed before it is
	# answered. No TCP port, no snapshots; its files in its own directory.
	mkdir -m 700 "$tmp/redis"
	redis-server --port 0 --unixsocket "$tmp/redis/redis.sock" --unixsocketperm 700 \
		--dir "$tmp/redis" --appendonly yes --appendfsync always --save "" \
		--logfile "$tmp/redis/redis.log" &
	redis=$!
	wait_socket "$redis" "$tmp/redis/redis.sock" redis-server
	echo "bench: redis-server $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p') on $tmp/redis/redis.sock (appendfsync always)"
	kvbench_args+=(--redis "unix://$tmp/redis/redis.sock")
fi

store_args=()
if [[ $BENCH_STORE == postgres ]]; then
	if ! psql "$BENCH_DSN" -qX -v ON_ERROR_STOP=1 -c "CREATE DATABASE $db" >/dev/null; then
		echo "bench: cannot create a database on $BENCH_DSN (is PostgreSQL running? set BENCH_DSN)" >&2
		exit 1
	fi
	created=1
	echo "bench: database $db created"
	store_args=(--postgres "$dsn")
	kvbench_args+=(--baseline "$dsn")
else
	store_args=(--data-dir "$tmp/data")
	echo "bench: embedded store in $tmp/data"
fi

# kvbench's uid is project "bench"; the noisy workload's flood runs as
# BENCH_FLOOD_UID, project BENCH_FLOOD_PROJECT.
{
	echo "$(id -u) bench"
	[[ $(id -u) == "$BENCH_FLOOD_UID" ]] || echo "$BENCH_FLOOD_UID $BENCH_FLOOD_PROJECT"
} >"$tmp/uids"

metrics_args=(--metrics-addr "")
if [[ $BENCH_PPROF == 1 ]]; then
	metrics_args=(--metrics-addr "127.0.0.1:$BENCH_METRICS_PORT" --pprof)
	echo "bench: daemon pprof on http://127.0.0.1:$BENCH_METRICS_PORT/debug/pprof/"
fi
daemon_env=()
# shellcheck disable=SC2206 # BENCH_DAEMON_ENV is a list of NAME=VALUE words
[[ -n ${BENCH_DAEMON_ENV:-} ]] && daemon_env=(${BENCH_DAEMON_ENV})
for assignment in "${daemon_env[@]}"; do
	[[ $assignment == [A-Za-z_]*=* ]] || { echo "bench: BENCH_DAEMON_ENV: $assignment is not NAME=VALUE" >&2; exit 2; }
done
[[ ${#daemon_env[@]} -gt 0 ]] && echo "bench: daemon environment: ${daemon_env[*]}"
# shellcheck disable=SC2086 # BENCH_DAEMON_ARGS is a list of flags
env "${daemon_env[@]}" bin/kvsidecar --socket "$tmp/kv.sock" "${store_args[@]}" --uid-map "$tmp/uids" \
	--log-level warn "${metrics_args[@]}" ${BENCH_DAEMON_ARGS:-} &
daemon=$!
# The daemon creates its socket once the store is open (and the schema
# migrated).
wait_socket "$daemon" "$tmp/kv.sock" "the daemon"

# shellcheck disable=SC2086 # BENCH_ARGS is a list of flags
bin/kvbench --socket "$tmp/kv.sock" "${kvbench_args[@]}" \
	--workloads "$BENCH_WORKLOADS" --concurrency "$BENCH_CONCURRENCY" \
	--duration "$BENCH_DURATION" --warmup "$BENCH_WARMUP" --flood-uid "$BENCH_FLOOD_UID" ${BENCH_ARGS:-}
