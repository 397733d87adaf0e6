#!/usr/bin/env bash
# Runs the same scenarios on ssehub and on Nchan (nginx + libnginx-mod-nchan), one server at a
# time on fresh processes, and writes loadtest/results/<name>.md (table, exact commands, machine)
# plus loadtest/results/<name>.svg (latency percentiles, server CPU per delivery).
#
# Usage: loadtest/compare.sh [--name NAME] [--scale FRACTION] [--only CASE[,CASE...]]
#   --scale 0.1   a reduced run (subscribers, channels and events times 0.1) to check the script
#   --only        run only these cases: idle, fanout5k, fanout10k, channels1k, storm
# Environment: THREADS (subscriber threads of the tool, default 1), KEEP_WORK=1 keeps the temp dir.
#
# It installs nothing: without nginx and the nchan module it says what to install and stops.
set -euo pipefail

cd "$(dirname "$0")/.."
NAME="nchan-vs-ssehub"
SCALE=1
ONLY="idle,fanout5k,fanout10k,channels1k,storm"
while [ $# -gt 0 ]; do
  case "$1" in
    --name) NAME="$2"; shift 2 ;;
    --scale) SCALE="$2"; shift 2 ;;
    --only) ONLY="$2"; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
THREADS="${THREADS:-1}"
NCHAN_MODULE=/usr/lib/nginx/modules/ngx_nchan_module.so

if ! command -v nginx >/dev/null || [ ! -f "$NCHAN_MODULE" ]; then
  echo "nginx with the Nchan module is missing; install it with:" >&2
  echo "  apt-get install -y nginx libnginx-mod-nchan" >&2
  exit 2
fi
command -v curl >/dev/null || { echo "curl is missing: apt-get install -y curl" >&2; exit 2; }

echo "== building ssehub and the load tool (release)"
cargo build --release -p ssehub -p ssehub-loadtest
LT="$PWD/target/release/ssehub-loadtest"
HUB="$PWD/target/release/ssehub"

OUT="loadtest/results/$NAME"
mkdir -p "$OUT"
rm -f "$OUT"/*.json
WORK="$(mktemp -d /tmp/ssehub-compare.XXXXXX)"
COMMANDS="$WORK/commands.sh"
SERVER_PID=""
REPORTS=()

stop_server() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do
      kill -0 "$SERVER_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  SERVER_PID=""
}
cleanup() {
  stop_server
  if [ "${KEEP_WORK:-0}" = 1 ]; then echo "work dir kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

wait_port() {
  for _ in $(seq 1 100); do
    if curl -s -o /dev/null "http://127.0.0.1:$1/"; then return 0; fi
    sleep 0.1
  done
  echo "server on port $1 did not start" >&2
  return 1
}

# start_server ssehub|nchan: sets PORT, SERVER_PID, SUB_URL, PUB_URL
start_server() {
  PORT="$("$LT" free-port)"
  case "$1" in
    ssehub)
      local cmd="$HUB --listen 127.0.0.1:$PORT --max-connections 19000 --history-size 1000"
      echo "$cmd &" >>"$COMMANDS"
      $cmd >"$WORK/ssehub.log" 2>&1 &
      SERVER_PID=$!
      SUB_URL="http://127.0.0.1:$PORT/events/{channel}"
      PUB_URL="http://127.0.0.1:$PORT/publish/{channel}"
      ;;
    nchan)
      local dir="$WORK/nginx-$PORT"
      mkdir -p "$dir"
      sed -e "s|@PORT@|$PORT|g" -e "s|@DIR@|$dir|g" loadtest/nchan/nginx.conf >"$dir/nginx.conf"
      echo "sed -e 's|@PORT@|$PORT|g' -e 's|@DIR@|$dir|g' loadtest/nchan/nginx.conf > $dir/nginx.conf" >>"$COMMANDS"
      echo "nginx -c $dir/nginx.conf -p $dir &" >>"$COMMANDS"
      nginx -c "$dir/nginx.conf" -p "$dir" >"$dir/stdout.log" 2>&1 &
      SERVER_PID=$!
      SUB_URL="http://127.0.0.1:$PORT/sub/{channel}"
      PUB_URL="http://127.0.0.1:$PORT/pub/{channel}"
      ;;
  esac
  wait_port "$PORT"
}

scaled() { awk -v n="$1" -v s="$SCALE" -v min="${2:-1}" 'BEGIN { v = int(n * s + 0.5); if (v < min) v = min; print v }'; }

# run_case CASE SCENARIO ARGS...: the scenario on a fresh ssehub, then on a fresh Nchan.
run_case() {
  local case="$1" scenario="$2"
  shift 2
  for server in ssehub nchan; do
    start_server "$server"
    echo "== $case on $server"
    local cmd=("$LT" "$scenario" --label "$server" --sub-url "$SUB_URL" --pub-url "$PUB_URL"
      --server-pid "$SERVER_PID" --threads "$THREADS" --json "$OUT/${case}__${server}.json" "$@")
    printf '%q ' "${cmd[@]}" | sed "s|$PWD/||g" >>"$COMMANDS"
    echo >>"$COMMANDS"
    # Exit code 3 means "measured, but not exact": the table shows it.
    if "${cmd[@]}" || [ $? -eq 3 ]; then
      REPORTS+=("$OUT/${case}__${server}.json")
    else
      echo "(the tool failed on $case / $server: no report)" >&2
    fi
    stop_server
    echo >>"$COMMANDS"
  done
}

wanted() { case ",$ONLY," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }

{
  echo "# ulimit -n: $(ulimit -n); THREADS=$THREADS; scale $SCALE"
  echo "cargo build --release -p ssehub -p ssehub-loadtest"
} >"$COMMANDS"

if wanted idle; then
  n=$(scaled 15000); c=$(scaled 100)
  run_case "idle-${n}x${c}" idle -n "$n" -c "$c" --hold 5
fi
if wanted fanout5k; then
  n=$(scaled 5000); m=$(scaled 400 40)
  run_case "fanout-${n}x1-20eps" fanout -n "$n" -c 1 -r 20 -m "$m"
fi
if wanted fanout10k; then
  n=$(scaled 10000); m=$(scaled 400 40)
  run_case "fanout-${n}x1-20eps" fanout -n "$n" -c 1 -r 20 -m "$m"
fi
if wanted channels1k; then
  c=$(scaled 1000); r=$(scaled 1000); m=$(scaled 20000 100)
  run_case "channels-${c}x10-${r}eps" fanout -n "$((c * 10))" -c "$c" -r "$r" -m "$m"
fi
if wanted storm; then
  n=$(scaled 5000); c=$(scaled 50)
  run_case "replay-storm-${n}x100" replay-storm -n "$n" -c "$c" -k 100
fi

NOTE="ssehub $(git rev-parse --short HEAD 2>/dev/null || echo '?') vs Nchan ($(dpkg-query -W -f='${Version}' libnginx-mod-nchan 2>/dev/null || echo '?'), nginx $(nginx -v 2>&1 | sed 's|.*/||')), 2 nginx workers, ${THREADS} tool subscriber thread(s) + 1 publisher thread, 100-byte payloads, scale $SCALE. Each case runs on freshly started servers, one server at a time."
"$LT" report --name "$NAME" --out-dir loadtest/results --commands "$COMMANDS" --note "$NOTE" "${REPORTS[@]}"
echo "== done: loadtest/results/$NAME.md"
