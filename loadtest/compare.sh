#!/usr/bin/env bash
# Runs the same scenarios on ssehub and on Nchan (nginx + libnginx-mod-nchan), one server at a
# time on fresh processes, and writes loadtest/results/<name>.md (table, exact commands, machine)
# plus loadtest/results/<name>.svg (latency percentiles, server CPU per delivery).
# Every case runs on ssehub-1w (ssehub --workers 1, which leaves the tool a core of its own) and
# nchan-2w (2 nginx workers, the reference setup); the fan-out cases also on ssehub-2w (ssehub's
# default here, one worker per core), nchan-1w, and floor: the tool's write-only server, the least
# a server doing nothing else costs per delivery on this machine. The 10 000-subscriber case also
# runs floor-coalescing, the same server writing each subscriber all it has waiting at once: where
# one write per event falls behind, it is the floor of a hub that coalesces.
# The cluster case is ssehub only (Nchan has no multi-node mode here): 3 ssehub nodes sharing one
# redis-server, subscribers and publishers spread over the nodes, CPU of every node and of Redis.
#
# Usage: loadtest/compare.sh [--name NAME] [--scale FRACTION] [--only CASE[,CASE...]] [--repeat N]
#   --scale 0.1   a reduced run (subscribers, channels and events times 0.1) to check the script
#   --only        run only these cases: idle, fanout5k, fanout10k, channels1k, storm, churn, cluster
#   --repeat N    N rounds of each case (but cluster), every server once per round, to show the spread
# Environment: THREADS (subscriber threads of the tool, default 1), KEEP_WORK=1 keeps the temp dir,
# HUB=PATH measures that ssehub binary instead of this checkout's release build (e.g. target/pgo/release/ssehub).
#
# It installs nothing: without nginx and the nchan module it says what to install and stops (unless
# only cluster runs); without redis-server it says what to install and skips the cluster case.
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=loadtest/lib.sh
source loadtest/lib.sh
NAME="nchan-vs-ssehub"
SCALE=1
REPEAT=1
CASES="idle,fanout5k,fanout10k,channels1k,storm,churn,cluster"
ONLY="$CASES"
while [ $# -gt 0 ]; do
  case "$1" in
    --name) NAME="$2"; shift 2 ;;
    --scale) SCALE="$2"; shift 2 ;;
    --only) ONLY="$2"; shift 2 ;;
    --repeat) REPEAT="$2"; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
case "$REPEAT" in ''|*[!0-9]*|0) echo "--repeat needs a whole number of rounds, at least 1" >&2; exit 2 ;; esac
THREADS="${THREADS:-1}"
NCHAN_MODULE=/usr/lib/nginx/modules/ngx_nchan_module.so
CLUSTER_NODES=3
# Every case runs on these; the fan-out cases also on the other worker counts and on the floor.
BASE_SERVERS="ssehub-1w nchan-2w"
FANOUT_SERVERS="ssehub-1w ssehub-2w nchan-2w nchan-1w floor"

wanted() { case ",$ONLY," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
for one in ${ONLY//,/ }; do
  case ",$CASES," in *",$one,"*) ;; *) echo "unknown case: $one (cases: $CASES)" >&2; exit 2 ;; esac
done
NCHAN_WANTED=0
for one in idle fanout5k fanout10k channels1k storm churn; do
  if wanted "$one"; then NCHAN_WANTED=1; fi
done

if [ "$NCHAN_WANTED" = 1 ] && { ! command -v nginx >/dev/null || [ ! -f "$NCHAN_MODULE" ]; }; then
  echo "nginx with the Nchan module is missing; install it with:" >&2
  echo "  apt-get install -y nginx libnginx-mod-nchan" >&2
  exit 2
fi
command -v curl >/dev/null || { echo "curl is missing: apt-get install -y curl" >&2; exit 2; }

echo "== building ssehub and the load tool (release)"
cargo build --release -p ssehub -p ssehub-loadtest
LT="$PWD/target/release/ssehub-loadtest"
choose_hub

OUT="loadtest/results/$NAME"
mkdir -p "$OUT"
rm -f "$OUT"/*.json
WORK="$(mktemp -d /tmp/ssehub-compare.XXXXXX)"
COMMANDS="$WORK/commands.sh"
SERVER_PID=""
CLUSTER_PIDS=() # redis-server first, then the nodes
REPORTS=()
SKIPPED=()
NCHAN_RAN=0
CLUSTER_RAN=0

# stop_pid PID: SIGTERM, up to 10 s to exit, then SIGKILL.
stop_pid() {
  if [ -n "$1" ] && kill -0 "$1" 2>/dev/null; then
    kill -TERM "$1" 2>/dev/null || true
    for _ in $(seq 1 100); do
      kill -0 "$1" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
  fi
}
stop_server() {
  stop_pid "$SERVER_PID"
  SERVER_PID=""
}
# The nodes first, Redis last.
stop_cluster() {
  local i
  for ((i = ${#CLUSTER_PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${CLUSTER_PIDS[$i]}"; done
  CLUSTER_PIDS=()
}
cleanup() {
  stop_server
  stop_cluster
  if [ "${KEEP_WORK:-0}" = 1 ]; then echo "work dir kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# record [--bg] CMD...: appends the command, quoted, to the commands file (paths relative).
record() {
  local bg=""
  if [ "$1" = --bg ]; then bg=" &"; shift; fi
  { printf '%q ' "$@" | sed -e "s|$PWD/||g" -e 's/ $//'; echo "$bg"; } >>"$COMMANDS"
}

# start_server ssehub-<N>w|nchan-<N>w|floor|floor-coalescing: sets PORT, SERVER_PID, SUB_URL,
# PUB_URL. ssehub-<N>w is ssehub --workers N; nchan-<N>w is Nchan with N nginx worker processes;
# floor is the tool's write-only reference server (one thread, no history: fan-out cases only),
# floor-coalescing the same with --coalesce.
start_server() {
  PORT="$("$LT" free-port)"
  local workers="${1##*-}"
  workers="${workers%w}"
  case "$1" in
    ssehub-*)
      local cmd="$HUB --listen 127.0.0.1:$PORT --max-connections 19000 --history-size 1000 --workers $workers"
      echo "$cmd &" >>"$COMMANDS"
      $cmd >"$WORK/ssehub.log" 2>&1 &
      SERVER_PID=$!
      SUB_URL="http://127.0.0.1:$PORT/events/{channel}"
      PUB_URL="http://127.0.0.1:$PORT/publish/{channel}"
      ;;
    nchan-*)
      local dir="$WORK/nginx-$PORT"
      mkdir -p "$dir"
      local subst="s|@PORT@|$PORT|g; s|@DIR@|$dir|g; s|^worker_processes .*;|worker_processes $workers;|"
      sed -e "$subst" loadtest/nchan/nginx.conf >"$dir/nginx.conf"
      echo "sed -e '$subst' loadtest/nchan/nginx.conf > $dir/nginx.conf" >>"$COMMANDS"
      echo "nginx -c $dir/nginx.conf -p $dir &" >>"$COMMANDS"
      nginx -c "$dir/nginx.conf" -p "$dir" >"$dir/stdout.log" 2>&1 &
      SERVER_PID=$!
      SUB_URL="http://127.0.0.1:$PORT/sub/{channel}"
      PUB_URL="http://127.0.0.1:$PORT/pub/{channel}"
      ;;
    floor | floor-coalescing)
      local cmd="$LT floor-server --listen 127.0.0.1:$PORT"
      if [ "$1" = floor-coalescing ]; then cmd="$cmd --coalesce"; fi
      echo "$cmd &" >>"$COMMANDS"
      $cmd >"$WORK/floor.log" 2>&1 &
      SERVER_PID=$!
      SUB_URL="http://127.0.0.1:$PORT/sub/{channel}"
      PUB_URL="http://127.0.0.1:$PORT/pub/{channel}"
      ;;
  esac
  wait_port "$PORT"
}

scaled() { awk -v n="$1" -v s="$SCALE" -v min="${2:-1}" 'BEGIN { v = int(n * s + 0.5); if (v < min) v = min; print v }'; }

# measure JSON TOOL ARGS...: records the command, runs it with --json JSON and keeps the report.
measure() {
  local json="$1"
  shift
  local cmd=("$@" --json "$json")
  record "${cmd[@]}"
  # Exit code 3 means "measured, but not exact": the table shows it.
  if "${cmd[@]}" || [ $? -eq 3 ]; then
    REPORTS+=("$json")
  else
    echo "(the tool failed: no report for $json)" >&2
  fi
}

# run_case CASE SCENARIO ARGS...: the scenario on each server of SERVERS in turn, each freshly
# started; REPEAT rounds of that, named CASE-run1, CASE-run2... when there are several.
run_case() {
  local case="$1" scenario="$2" round name
  shift 2
  for ((round = 1; round <= REPEAT; round++)); do
    name="$case"
    if [ "$REPEAT" -gt 1 ]; then name="$case-run$round"; fi
    for server in $SERVERS; do
      start_server "$server"
      echo "== $name on $server"
      measure "$OUT/${name}__${server}.json" "$LT" "$scenario" --label "$server" \
        --sub-url "$SUB_URL" --pub-url "$PUB_URL" --server-pid "$SERVER_PID" --threads "$THREADS" "$@"
      stop_server
      echo >>"$COMMANDS"
    done
  done
  NCHAN_RAN=1
}

# run_cluster CASE ARGS...: one redis-server and CLUSTER_NODES ssehub nodes sharing it, the tool's
# cluster scenario with subscribers round-robin over the nodes and channel c published through
# node c % CLUSTER_NODES; server pids = every node and Redis, so CPU is reported per process.
# ssehub only: Nchan has no equivalent here.
run_cluster() {
  local case="$1"
  shift
  if ! command -v redis-server >/dev/null; then
    echo "== $case skipped: redis-server is missing; install it with: apt-get install -y redis-server" >&2
    SKIPPED+=("$case (redis-server missing: apt-get install -y redis-server)")
    return 0
  fi
  local redis_port
  redis_port="$("$LT" free-port)"
  local redis=(redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no)
  record --bg "${redis[@]}"
  "${redis[@]}" >"$WORK/redis.log" 2>&1 &
  local redis_pid=$!
  CLUSTER_PIDS+=("$redis_pid")
  echo "# redis-server: pid $redis_pid, port $redis_port" >>"$COMMANDS"
  wait_redis "$redis_port"
  local urls=() pids=() k port
  for ((k = 1; k <= CLUSTER_NODES; k++)); do
    port="$("$LT" free-port)"
    local node=("$HUB" --listen "127.0.0.1:$port" --redis-url "redis://127.0.0.1:$redis_port"
      --max-connections 19000 --history-size 1000 --workers 1)
    record --bg "${node[@]}"
    "${node[@]}" >"$WORK/node$k.log" 2>&1 &
    CLUSTER_PIDS+=("$!")
    pids+=("$!")
    echo "# node $k: pid $!, port $port" >>"$COMMANDS"
    wait_port "$port"
    urls+=(--sub-url "http://127.0.0.1:$port/events/{channel}" --pub-url "http://127.0.0.1:$port/publish/{channel}")
  done
  echo "== $case on $CLUSTER_NODES ssehub nodes + redis-server"
  measure "$OUT/${case}__ssehub-1w.json" "$LT" cluster --label ssehub-1w "${urls[@]}" \
    --server-pid "$(IFS=,; echo "${pids[*]},$redis_pid")" --threads "$THREADS" "$@"
  stop_cluster
  echo >>"$COMMANDS"
  CLUSTER_RAN=1
}

{
  echo "# ulimit -n: $(ulimit -n); THREADS=$THREADS; scale $SCALE"
  echo "cargo build --release -p ssehub -p ssehub-loadtest"
} >"$COMMANDS"

if wanted idle; then
  n=$(scaled 15000); c=$(scaled 100)
  SERVERS="$BASE_SERVERS" run_case "idle-${n}x${c}" idle -n "$n" -c "$c" --hold 5
fi
if wanted fanout5k; then
  n=$(scaled 5000); m=$(scaled 400 40)
  SERVERS="$FANOUT_SERVERS" run_case "fanout-${n}x1-20eps" fanout -n "$n" -c 1 -r 20 -m "$m"
fi
if wanted fanout10k; then
  n=$(scaled 10000); m=$(scaled 400 40)
  SERVERS="$FANOUT_SERVERS floor-coalescing" run_case "fanout-${n}x1-20eps" fanout -n "$n" -c 1 -r 20 -m "$m"
fi
if wanted channels1k; then
  c=$(scaled 1000); r=$(scaled 1000); m=$(scaled 20000 100)
  SERVERS="$FANOUT_SERVERS" run_case "channels-${c}x10-${r}eps" fanout -n "$((c * 10))" -c "$c" -r "$r" -m "$m"
fi
if wanted storm; then
  n=$(scaled 5000); c=$(scaled 50)
  SERVERS="$BASE_SERVERS" run_case "replay-storm-${n}x100" replay-storm -n "$n" -c "$c" -k 100
fi
if wanted churn; then
  n=$(scaled 1000 100); c=$(scaled 10 2); x=$(scaled 200 20)
  SERVERS="$BASE_SERVERS" run_case "churn-${n}x${c}-100eps-${x}conn-per-s" churn -n "$n" -c "$c" -r 100 --duration 10 --churn "$x" --lifetime-ms 1000
fi
if wanted cluster; then
  # Issue 4, target 5: Redis mode, 3 nodes + 1 Redis, 1 000 events/s, per-node CPU.
  n=$(scaled 300 30); m=$(scaled 10000 1000)
  run_cluster "cluster-${CLUSTER_NODES}nodes+redis-${n}x10-1000eps" -n "$n" -c 10 -r 1000 -m "$m"
fi

for skipped in "${SKIPPED[@]}"; do echo "skipped: $skipped" >&2; done
if [ ${#REPORTS[@]} -eq 0 ]; then
  echo "== nothing was measured: no report written" >&2
  rmdir "$OUT" 2>/dev/null || true
  exit 0
fi

HUB_VERSION="ssehub $(git rev-parse --short HEAD 2>/dev/null || echo '?')$HUB_BUILD"
if [ "$NCHAN_RAN" = 1 ]; then
  NOTE="$HUB_VERSION vs Nchan ($(dpkg-query -W -f='${Version}' libnginx-mod-nchan 2>/dev/null || echo '?'), nginx $(nginx -v 2>&1 | sed 's|.*/||')), ${THREADS} tool subscriber thread(s) + 1 publisher thread, 100-byte payloads, scale $SCALE. Each case runs on freshly started servers, one server at a time.

Servers: \`ssehub-1w\` is ssehub \`--workers 1\`, which leaves the load tool a core of its own; \`ssehub-2w\` is \`--workers 2\`, ssehub's default on this 2-core machine (one worker per core). \`nchan-2w\` is Nchan with 2 nginx workers (the issue's reference setup), \`nchan-1w\` with 1. \`floor\` is \`ssehub-loadtest floor-server\`: one thread that writes each event to each subscriber with one \`write\`, with no history, ids beyond a counter, limits or heartbeats. It is not a hub; its figures are what a delivery costs here when a server does nothing else, with this tool on the same cores. \`floor-coalescing\` (10 000-subscriber case only) is the same server with \`--coalesce\`: it answers the publish at once and writes each subscriber, in rounds, every event it has not had in one \`write\`, as ssehub does, so it keeps up where \`floor\` falls behind."
else
  NOTE="$HUB_VERSION, ${THREADS} tool subscriber thread(s) + 1 publisher thread, 100-byte payloads, scale $SCALE."
fi
if [ "$CLUSTER_RAN" = 1 ]; then
  NOTE="$NOTE

The cluster case runs on ssehub only (Nchan has no multi-node mode here, so there is no Nchan row): $CLUSTER_NODES ssehub nodes in Redis mode (\`--redis-url\`, \`--max-connections 19000\`, \`--workers 1\`) sharing one $(redis-server --version | sed -e 's/ sha=.*//' -e 's/Redis server v=/redis-server /') (\`--save '' --appendonly no\`), all on this machine with the tool. Subscribers are spread round-robin over the nodes and channel c is published through node c % $CLUSTER_NODES, so two thirds of each channel's subscribers read it on another node than the one it was published through. Its server CPU is every node plus Redis (per process below the table). Its latency runs from the scheduled send, before the publish request, to arrival: an upper bound of accept→deliver."
fi
"$LT" report --name "$NAME" --out-dir loadtest/results --commands "$COMMANDS" --note "$NOTE" "${REPORTS[@]}"
echo "== done: loadtest/results/$NAME.md"
