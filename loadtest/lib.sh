# shellcheck shell=bash
# Shell helpers shared by compare.sh, callgrind.sh and pgo.sh (sourced, not run).

# wait_port PORT [TRIES]: until an HTTP server answers on 127.0.0.1:PORT, trying every 0.1 s
# (100 tries, 10 s, unless TRIES says otherwise).
wait_port() {
  for _ in $(seq 1 "${2:-100}"); do
    if curl -s -o /dev/null --max-time 5 "http://127.0.0.1:$1/"; then return 0; fi
    sleep 0.1
  done
  echo "server on port $1 did not start" >&2
  return 1
}

# wait_redis PORT: until redis-server answers on 127.0.0.1:PORT (10 s at most).
wait_redis() {
  for _ in $(seq 1 100); do
    if command -v redis-cli >/dev/null; then
      if [ "$(redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null)" = PONG ]; then return 0; fi
    elif (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  echo "redis-server on port $1 did not start" >&2
  return 1
}

# choose_hub: sets HUB, the ssehub binary to measure, and HUB_BUILD, what the report says of it.
# HUB=PATH in the environment picks another build (e.g. loadtest/pgo.sh's); by default it is this
# checkout's release build.
# shellcheck disable=SC2034 # HUB_BUILD is read by the scripts that source this.
choose_hub() {
  HUB_BUILD=""
  if [ -n "${HUB:-}" ]; then
    HUB="$(realpath "$HUB")"
    HUB_BUILD=" (binary ${HUB#"$PWD"/})"
  else
    HUB="$PWD/target/release/ssehub"
  fi
}
