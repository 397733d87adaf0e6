#!/usr/bin/env bash
# User-space instructions per delivery of ssehub, of Nchan and of the floor (the tool's write-only
# reference server), counted by valgrind's callgrind.
# Counts are repeatable on this noisy shared machine (seconds are not), so they compare commits
# and servers stably; kernel work (the TCP send path, most of the CPU here) is not counted, so
# they complement compare.sh's CPU seconds instead of replacing them.
#
# Each server runs under callgrind twice (ssehub and the floor as one process each; Nchan as nginx
# with one worker, every process counted): a fan-out of M1 and then of M2 events to N subscribers
# over C channels (one by default). Fixed costs (start, connects, shutdown) cancel out in
# (Ir(M2) - Ir(M1)) / (N/C * (M2 - M1)).
#
# Usage: loadtest/callgrind.sh [--name NAME] [--only ssehub,nchan,floor] [-n SUBS] [-c CHANNELS] [-r RATE]
#                             [--m1 EVENTS] [--m2 EVENTS]
# With C channels the N subscribers are spread evenly and each event goes to one channel, so an
# event makes N/C deliveries; the report gives instructions per event too (the publish's share).
# HUB=PATH counts that ssehub binary instead of this checkout's release build.
# Needs valgrind (apt-get install -y valgrind), and nginx + libnginx-mod-nchan for Nchan.
# Writes loadtest/results/<NAME>.md (default name: callgrind).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=loadtest/lib.sh
source loadtest/lib.sh

NAME=callgrind
ONLY="ssehub,nchan,floor"
SUBS=200
CHANNELS=1
M1=40
M2=120
RATE=10
while [ $# -gt 0 ]; do
  case "$1" in
    --name) NAME="$2"; shift 2 ;;
    --only) ONLY="$2"; shift 2 ;;
    -n) SUBS="$2"; shift 2 ;;
    -c) CHANNELS="$2"; shift 2 ;;
    -r) RATE="$2"; shift 2 ;;
    --m1) M1="$2"; shift 2 ;;
    --m2) M2="$2"; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
[ "$M2" -gt "$M1" ] || { echo "--m2 must be larger than --m1" >&2; exit 2; }
if [ "$CHANNELS" -lt 1 ] || [ $((SUBS % CHANNELS)) -ne 0 ]; then
  echo "-n must be a multiple of -c (subscribers spread evenly)" >&2
  exit 2
fi
command -v valgrind >/dev/null || { echo "valgrind is missing: apt-get install -y valgrind" >&2; exit 2; }
command -v curl >/dev/null || { echo "curl is missing: apt-get install -y curl" >&2; exit 2; }

echo "== building ssehub and the load tool (release)"
cargo build --release -p ssehub -p ssehub-loadtest
LT="$PWD/target/release/ssehub-loadtest"
choose_hub
WORK="$(mktemp -d /tmp/ssehub-callgrind.XXXXXX)"
SERVER_PID=""
cleanup() {
  if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# measure SERVER EVENTS: prints the program's total instruction count (Ir) for a fan-out of
# EVENTS events to SUBS subscribers.
measure() {
  local server="$1" events="$2" port out
  port="$("$LT" free-port)"
  # nginx's worker runs as another user (nobody): its output goes where it may write.
  chmod 711 "$WORK" && mkdir -p "$WORK/out" && chmod 1777 "$WORK/out"
  out="$WORK/out/$server-$events.callgrind"
  # %p: one file per process (nginx's master and worker).
  local grind=(valgrind --tool=callgrind --callgrind-out-file="$out.%p")
  case "$server" in
    ssehub)
      "${grind[@]}" "$HUB" --listen "127.0.0.1:$port" --max-connections 19000 >"$WORK/log" 2>&1 &
      SERVER_PID=$!
      SUB_URL="http://127.0.0.1:$port/events/{channel}"
      PUB_URL="http://127.0.0.1:$port/publish/{channel}"
      ;;
    nchan)
      local dir="$WORK/nginx-$port"
      mkdir -p "$dir"
      # One worker: Nchan in nginx's single-process mode (master_process off) crashed or
      # stopped delivering under valgrind here.
      sed -e "s|@PORT@|$port|g" -e "s|@DIR@|$dir|g" -e 's|^worker_processes 2;|worker_processes 1;|' \
        loadtest/nchan/nginx.conf >"$dir/nginx.conf"
      "${grind[@]}" nginx -c "$dir/nginx.conf" -p "$dir" >"$WORK/log" 2>&1 &
      SERVER_PID=$!
      SUB_URL="http://127.0.0.1:$port/sub/{channel}"
      PUB_URL="http://127.0.0.1:$port/pub/{channel}"
      ;;
    floor)
      "${grind[@]}" "$LT" floor-server --listen "127.0.0.1:$port" >"$WORK/log" 2>&1 &
      SERVER_PID=$!
      SUB_URL="http://127.0.0.1:$port/events/{channel}"
      PUB_URL="http://127.0.0.1:$port/publish/{channel}"
      ;;
    *) echo "unknown server: $server (ssehub, nchan or floor)" >&2; return 1 ;;
  esac
  # Programs start slowly under valgrind: up to 60 s.
  wait_port "$port" 600
  # Bounded: a server that stops answering under valgrind must not hang the script.
  if ! timeout 300 "$LT" fanout --label "$server" --sub-url "$SUB_URL" --pub-url "$PUB_URL" \
    --server-pid "$SERVER_PID" -n "$SUBS" -c "$CHANNELS" -r "$RATE" -m "$events" >"$WORK/run" 2>&1; then
    cat "$WORK/run" >&2
    echo "the fan-out on $server was not exact: no count" >&2
    return 1
  fi
  kill -TERM "$SERVER_PID"
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
  local total=0 file ir
  for file in "$out".*; do
    ir="$(callgrind_annotate "$file" 2>/dev/null |
      awk '/PROGRAM TOTALS/ && !seen { gsub(",", "", $1); print $1; seen = 1 }')"
    total=$((total + ${ir:-0}))
  done
  echo "$total"
}

ROWS=()
PER_EVENT=$((SUBS / CHANNELS))
DELIVERIES=$((PER_EVENT * (M2 - M1)))
for server in ${ONLY//,/ }; do
  echo "== $server: $SUBS subscribers over $CHANNELS channel(s), $M1 then $M2 events at $RATE/s, under callgrind"
  ir1="$(measure "$server" "$M1")"
  ir2="$(measure "$server" "$M2")"
  per=$(awk -v a="$ir1" -v b="$ir2" -v d="$DELIVERIES" 'BEGIN { printf "%.0f", (b - a) / d }')
  per_event=$(awk -v a="$ir1" -v b="$ir2" -v e="$((M2 - M1))" 'BEGIN { printf "%.0f", (b - a) / e }')
  echo "$server: Ir $ir1 ($M1 events), $ir2 ($M2 events): $per instructions per delivery, $per_event per event"
  ROWS+=("| $server | $ir1 | $ir2 | $DELIVERIES | $per | $per_event |")
done

HUB_VERSION="ssehub $(git rev-parse --short HEAD 2>/dev/null || echo '?')$HUB_BUILD"
{
  echo "# User-space instructions per delivery (callgrind): $NAME"
  echo
  echo "$HUB_VERSION; Nchan $(dpkg-query -W -f='${Version}' libnginx-mod-nchan 2>/dev/null || echo '?') in nginx with one worker (master and worker counted); floor: \`ssehub-loadtest floor-server\`, one thread that writes each event to each subscriber and does nothing else; $(valgrind --version)."
  echo "Fan-out to $SUBS subscribers over $CHANNELS channel(s) ($PER_EVENT per event) at $RATE events/s, 100-byte payloads, every run exact."
  echo "Instructions per delivery = (Ir($M2 events) - Ir($M1 events)) / ($PER_EVENT × ($M2 - $M1)): start, connects"
  echo "and shutdown cancel out. User space only: the kernel's TCP work per delivery is not counted."
  echo
  echo "| server | Ir, $M1 events | Ir, $M2 events | deliveries between | instructions per delivery | per event |"
  echo "|---|---|---|---|---|---|"
  printf '%s\n' "${ROWS[@]}"
  echo
  echo "Reproduce: \`loadtest/callgrind.sh --name $NAME -n $SUBS -c $CHANNELS -r $RATE --m1 $M1 --m2 $M2\`"
} >"loadtest/results/$NAME.md"
echo "== wrote loadtest/results/$NAME.md"
