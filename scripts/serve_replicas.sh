#!/usr/bin/env bash
# Serve attention-viz from several Streamlit processes behind HAProxy, with sticky sessions.
#
# Usage: scripts/serve_replicas.sh          (or: make serve-replicas REPLICAS=N)
#
# Settings, from the environment:
#   REPLICAS=2          how many `streamlit run app.py` processes
#   PORT=8501           where students connect (HAProxy)
#   ADDRESS=localhost   the address HAProxy listens on (0.0.0.0: the whole network)
#   REPLICA_PORT        the first replica's port (default PORT+1); replica i gets REPLICA_PORT+i-1
#   REPLICA_ADDRESS=127.0.0.1   where the replicas listen (only HAProxy needs to reach them)
#   RUN_DIR             folder for the filled-in config and the stats socket (default: a new
#                       temporary folder, removed on exit)
# Several machines:
#   BALANCER=off        on an app host: start only the replicas (with REPLICA_ADDRESS=0.0.0.0)
#   SERVERS="10.0.0.11:8502 10.0.0.12:8502"   on the front host: replicas on other hosts for
#                       HAProxy, besides this machine's own (REPLICAS=0: none of its own)
#
# Each replica is started like `make app` (headless, no file watcher, the same environment),
# and HAProxy only starts once every local replica answers /_stcore/health. A replica that dies
# is started again after a few seconds; its students are already on another replica by then.
# Ctrl-C (or SIGTERM) stops HAProxy and every replica.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

REPLICAS=${REPLICAS:-2}
PORT=${PORT:-8501}
ADDRESS=${ADDRESS:-localhost}
REPLICA_PORT=${REPLICA_PORT:-$((PORT + 1))}
REPLICA_ADDRESS=${REPLICA_ADDRESS:-127.0.0.1}
BALANCER=${BALANCER:-on}
read -r -a REMOTE <<<"${SERVERS:-}"
TEMPLATE=deploy/haproxy.cfg.in
STREAMLIT=.venv/bin/streamlit
HEALTH_TIMEOUT_S=120
RESTART_DELAY_S=3

# The same environment as `make app` (the Makefile exports these; set here too for direct runs).
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}
export TRANSFORMERS_OFFLINE=${TRANSFORMERS_OFFLINE:-1}
export MALLOC_MMAP_THRESHOLD_=${MALLOC_MMAP_THRESHOLD_:-1048576}

say() { printf '==> %s\n' "$*"; }
die() { printf 'serve-replicas: error: %s\n' "$*" >&2; exit 1; }

[[ "$REPLICAS" =~ ^[0-9]+$ ]] || die "REPLICAS must be a whole number, got '$REPLICAS'"
[[ "$BALANCER" == on || "$BALANCER" == off ]] || die "BALANCER must be on or off, got '$BALANCER'"
if [[ "$BALANCER" == off ]]; then
    ((REPLICAS > 0)) || die "BALANCER=off needs REPLICAS of at least 1"
    ((${#REMOTE[@]} == 0)) || die "SERVERS are for the load balancer; with BALANCER=off there is none"
fi
((REPLICAS + ${#REMOTE[@]} > 0)) || die "nothing to serve: REPLICAS=0 and no SERVERS"
for server in "${REMOTE[@]}"; do
    [[ "$server" =~ ^[A-Za-z0-9.:_-]+:[0-9]+$ ]] || die "SERVERS takes host:port words, got '$server'"
done
[[ "$PORT" =~ ^[0-9]+$ && "$REPLICA_PORT" =~ ^[0-9]+$ ]] || die "PORT and REPLICA_PORT must be port numbers"
((PORT < REPLICA_PORT || PORT >= REPLICA_PORT + REPLICAS)) ||
    die "PORT $PORT is one of the replicas' ports ($REPLICA_PORT..$((REPLICA_PORT + REPLICAS - 1)))"
((REPLICA_PORT + REPLICAS - 1 <= 65535)) || die "the replicas' ports go past 65535"
[[ -x "$STREAMLIT" ]] || die "$STREAMLIT is missing: run 'make setup' (or 'make serve-replicas')"
HAPROXY=$(command -v haproxy || true)
[[ -n "$HAPROXY" ]] || HAPROXY=/usr/sbin/haproxy
[[ "$BALANCER" == off || -x "$HAPROXY" ]] || die "haproxy is missing: run 'bash scripts/setup.sh --replicas' as root, or
  apt-get install haproxy"

own_run_dir=0
if [[ -z "${RUN_DIR:-}" ]]; then
    RUN_DIR=$(mktemp -d -t attention-viz-replicas.XXXXXX)
    own_run_dir=1
fi
mkdir -p "$RUN_DIR"
CONFIG="$RUN_DIR/haproxy.cfg"
SOCKET="$RUN_DIR/haproxy.sock"

replica_pids=()
haproxy_pid=""
stopping=0

port_of() { echo $((REPLICA_PORT + $1 - 1)); }

# Stop every process this script started: TERM, then KILL whatever is left after 10 s.
cleanup() {
    local code=$?
    trap - EXIT INT TERM
    stopping=1
    local pids=() pid
    [[ -n "$haproxy_pid" ]] && pids+=("$haproxy_pid")
    for pid in "${replica_pids[@]}"; do [[ -n "$pid" ]] && pids+=("$pid"); done
    if ((${#pids[@]})); then
        say "stopping${haproxy_pid:+ HAProxy and} the replicas"
        kill -TERM "${pids[@]}" 2>/dev/null || true
        # Up to 10 s to stop (a process that has exited but is not yet reaped counts as stopped).
        for _ in $(seq 100); do
            ps -o stat= -p "$(IFS=,; echo "${pids[*]}")" 2>/dev/null | grep -qv '^Z' || break
            sleep 0.1
        done
        kill -KILL "${pids[@]}" 2>/dev/null || true
        wait 2>/dev/null || true
    fi
    rm -f "$CONFIG" "$SOCKET"
    ((own_run_dir)) && rm -rf "$RUN_DIR"
    exit "$code"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Start replica $1 in the background; its output goes to this terminal, each line marked [rN].
start_replica() {
    local i=$1 port
    port=$(port_of "$i")
    # The same flags as `make app`; the printed URL names the load balancer's port. The filter
    # ignores Ctrl-C and stops when the replica closes its output: a replica that loses its
    # output while it shuts down (broken pipe) hangs instead of stopping.
    "$STREAMLIT" run app.py \
        --server.port "$port" --server.address "$REPLICA_ADDRESS" \
        --server.headless true --browser.serverPort "$PORT" \
        > >(trap '' INT TERM && exec sed -u "s/^/[r$i] /") 2>&1 &
    replica_pids[i]=$!
}

healthy() {
    curl --silent --fail --max-time 2 "http://$1/_stcore/health" 2>/dev/null | grep -qx ok
}

# An address to reach a replica at from this machine (0.0.0.0 listens everywhere).
reach() { [[ "$REPLICA_ADDRESS" == "0.0.0.0" ]] && echo 127.0.0.1 || echo "$REPLICA_ADDRESS"; }

wait_healthy() {
    local i=$1 port start=$SECONDS
    port=$(port_of "$i")
    until healthy "$(reach):$port"; do
        kill -0 "${replica_pids[i]}" 2>/dev/null || die "replica r$i (port $port) exited; see its output above"
        ((SECONDS - start < HEALTH_TIMEOUT_S)) || die "replica r$i (port $port) not healthy after ${HEALTH_TIMEOUT_S} s"
        sleep 0.2
    done
}

# Start again, after a pause, every replica that has exited.
supervise_replicas() {
    for i in $(seq "$REPLICAS"); do
        pid=${replica_pids[i]}
        if ! kill -0 "$pid" 2>/dev/null; then
            code=0
            wait "$pid" 2>/dev/null || code=$?
            say "replica r$i (port $(port_of "$i")) exited with code $code; its students go on with the other replicas; restarting it in ${RESTART_DELAY_S} s"
            sleep "$RESTART_DELAY_S" &
            wait $! || true
            ((stopping)) || start_replica "$i"
        fi
    done
}

# --- the replicas --------------------------------------------------------------
if ((REPLICAS > 0)); then
    say "starting $REPLICAS replicas on ports $REPLICA_PORT..$(port_of "$REPLICAS") ($REPLICA_ADDRESS)"
    for i in $(seq "$REPLICAS"); do start_replica "$i"; done
    for i in $(seq "$REPLICAS"); do wait_healthy "$i"; done
    say "all $REPLICAS replicas are healthy"
fi

if [[ "$BALANCER" == off ]]; then
    [[ "$REPLICA_ADDRESS" == 127.* || "$REPLICA_ADDRESS" == localhost ]] &&
        say "note: the replicas listen on $REPLICA_ADDRESS only; other hosts need REPLICA_ADDRESS=0.0.0.0"
    say "ready: $REPLICAS replicas on $REPLICA_ADDRESS:$REPLICA_PORT..$(port_of "$REPLICAS"), for a HAProxy elsewhere (SERVERS there). Ctrl-C stops."
    while true; do
        supervise_replicas
        sleep 1 &
        wait $! || true
    done
fi

# --- the load balancer ---------------------------------------------------------
lb_host=$ADDRESS
[[ "$ADDRESS" == "localhost" || "$ADDRESS" == "0.0.0.0" ]] && lb_host=127.0.0.1
bind="$([[ "$ADDRESS" == "localhost" ]] && echo 127.0.0.1 || echo "$ADDRESS"):$PORT"
servers=""
for i in $(seq "$REPLICAS"); do
    servers+="    server r$i $(reach):$(port_of "$i") cookie r$i"$'\n'
done
for i in "${!REMOTE[@]}"; do
    servers+="    server s$((i + 1)) ${REMOTE[i]} cookie s$((i + 1))"$'\n'
done
template=$(<"$TEMPLATE")
template=${template//@BIND@/$bind}
template=${template//@STATS_SOCKET@/$SOCKET}
template=${template//@SERVERS@/$servers}
printf '%s\n' "$template" >"$CONFIG"
"$HAPROXY" -c -q -f "$CONFIG" || die "HAProxy refused $CONFIG (made from $TEMPLATE)"

# -db: stay in the foreground (no daemon), so this script supervises it.
"$HAPROXY" -db -f "$CONFIG" &
haproxy_pid=$!
start=$SECONDS
# Any answer will do: replicas on other hosts may come up later (HAProxy checks them itself).
until curl --silent --max-time 2 --output /dev/null "http://$lb_host:$PORT/_stcore/health"; do
    kill -0 "$haproxy_pid" 2>/dev/null || die "HAProxy exited (is port $PORT in use?)"
    ((SECONDS - start < 30)) || die "HAProxy does not answer on port $PORT"
    sleep 0.2
done
shown=$ADDRESS
[[ "$ADDRESS" == "0.0.0.0" ]] && shown="<this machine's address>"
say "ready: open http://$shown:$PORT ($((REPLICAS + ${#REMOTE[@]})) replicas behind HAProxy; config $CONFIG). Ctrl-C stops."

# --- supervise -----------------------------------------------------------------
while true; do
    if ! kill -0 "$haproxy_pid" 2>/dev/null; then
        code=0
        wait "$haproxy_pid" || code=$?
        haproxy_pid=""
        die "HAProxy exited with code $code"
    fi
    supervise_replicas
    # A background sleep, so that Ctrl-C and TERM are handled at once.
    sleep 1 &
    wait $! || true
done
