#!/usr/bin/env bash
# Builds ssehub with profile-guided optimisation (PGO): an instrumented build runs a training load
# from the load tool on 127.0.0.1, and the release build then uses that profile to lay out and
# inline the hot paths. Measured here: a fifth fewer user-space instructions and, on average, 8 to
# 11 % less server CPU per delivery at light load (loadtest/results/pgo-experiment.md). Optional:
# `cargo build --release` stays the normal build.
#
# Training covers HTTP/1.1 in memory (many channels with few subscribers, one channel with many,
# a replay storm, churn) and, when redis-server is installed, one node in Redis mode. Code that the
# training never runs (TLS, HTTP/2, the demo page) is compiled as cold: smaller, maybe slower.
#
# Usage: loadtest/pgo.sh [--out DIR]   (default DIR: target/pgo, relative to the checkout; the
# binary is DIR/release/ssehub)
# Needs rustup's llvm-tools component for llvm-profdata; it adds it when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=loadtest/lib.sh
source loadtest/lib.sh

OUT_DIR="target/pgo"
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT_DIR="$2"; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
case "$OUT_DIR" in /*) ;; *) OUT_DIR="$PWD/$OUT_DIR" ;; esac

sysroot="$(rustc --print sysroot)"
host="$(rustc -vV | sed -n 's/^host: //p')"
profdata="$sysroot/lib/rustlib/$host/bin/llvm-profdata"
if [ ! -x "$profdata" ]; then
  echo "== adding rustup's llvm-tools component (for llvm-profdata)"
  rustup component add llvm-tools
fi
command -v curl >/dev/null || { echo "curl is missing: apt-get install -y curl" >&2; exit 2; }

WORK="$(mktemp -d /tmp/ssehub-pgo.XXXXXX)"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "== building the load tool, and ssehub instrumented"
cargo build --release -p ssehub-loadtest
LT="$PWD/target/release/ssehub-loadtest"
# Build scripts run instrumented too: their profiles go to build-profiles, the hub's (below) to
# profiles, and only the hub's are merged.
RUSTFLAGS="-Cprofile-generate=$WORK/build-profiles" \
  cargo build --release -p ssehub --target-dir "$OUT_DIR-instrumented"
TRAINEE="$OUT_DIR-instrumented/release/ssehub"

# train [HUB ARGS...]: one instrumented hub, the training load, then SIGINT so that it writes its
# profile on the way out.
train() {
  local port
  port="$("$LT" free-port)"
  LLVM_PROFILE_FILE="$WORK/profiles/ssehub-%p.profraw" \
    "$TRAINEE" --listen "127.0.0.1:$port" --max-connections 19000 --workers 1 "$@" >>"$WORK/hub.log" 2>&1 &
  local hub=$!
  PIDS+=("$hub")
  wait_port "$port"
  local urls=(--sub-url "http://127.0.0.1:$port/events/{channel}" --pub-url "http://127.0.0.1:$port/publish/{channel}")
  "$LT" fanout "${urls[@]}" -n 5000 -c 500 -r 1000 -m 5000
  "$LT" fanout "${urls[@]}" -n 5000 -c 1 -r 20 -m 100
  "$LT" replay-storm "${urls[@]}" -n 2000 -c 20 -k 100
  "$LT" churn "${urls[@]}" -n 500 -c 10 -r 100 --duration 5 --churn 100 --lifetime-ms 1000
  kill -INT "$hub"
  wait "$hub"
}

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
echo "== training: in memory"
train
if command -v redis-server >/dev/null; then
  redis_port="$("$LT" free-port)"
  redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no >"$WORK/redis.log" 2>&1 &
  PIDS+=("$!")
  wait_redis "$redis_port"
  echo "== training: Redis mode"
  train --redis-url "redis://127.0.0.1:$redis_port"
else
  echo "== redis-server is missing (apt-get install -y redis-server): Redis mode is not trained" >&2
fi

"$profdata" merge -o "$WORK/ssehub.profdata" "$WORK"/profiles/ssehub-*.profraw
echo "== building ssehub with the profile"
RUSTFLAGS="-Cprofile-use=$WORK/ssehub.profdata" cargo build --release -p ssehub --target-dir "$OUT_DIR"
echo "== done: $OUT_DIR/release/ssehub"
