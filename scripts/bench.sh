#!/usr/bin/env bash
# scripts/bench.sh — wsfleet against the Node.js article's stack, on this machine, in one run.
#
# For each server in turn (wsfleet with one worker per core, then the Node peer in
# scripts/peers/node-cluster-ws: cluster + ws, relay through the primary, then the uWebSockets
# peer in scripts/peers/uws: uWS.js, one App per thread, its C++ pub/sub), it starts a FRESH
# server for every measurement (so one test's heap growth or killed worker cannot colour the
# next), drives it with the same `wsfleet bench` command, stops it, and at the end prints ONE
# markdown table with a wsfleet ÷ peer ratio per row. The table goes to
# bench-results/bench-YYYYmmdd-HHMMSS.md, the raw `wsfleet bench --json` output to the
# matching .jsonl (one line per measurement: {"server","test",...,"result":{...}}), and the
# servers' own logs to the matching -logs/ directory.
#
# Rows:
#   echo        msgs/s and server CPU µs/msg          (/echo, BENCH_ECHO_CONNS conns, 64 B)
#   fanout max  deliveries/s, server CPU µs/delivery,  (/ws, BENCH_FANOUT_SUBS subscribers,
#               lost/dup/out-of-order                  256 B, --rate max)
#   fanout 20   p99 latency                            (same, --rate 20)
#   idle        RSS per connection                     (BENCH_IDLE_CONNS, default 19,000)
#   rooms       deliveries/s, server CPU µs/delivery,  (BENCH_ROOMS rooms × BENCH_ROOMS_MEMBERS,
#               p50/p99 latency, lost/dup/order        every member publishing 1/s, 64 B)
#   bigroom     connects+joins/s into ONE room, RSS    (BENCH_BIGROOM_CONNS, default 19,900;
#               per connection after the joins         bounded by BENCH_BIGROOM_MAX_TIME s)
#               Presence as each server does it for a big room: wsfleet one coalesced count a
#               second per member above its threshold; the Node peers a notice per join to
#               every member (N², as the article's code); the uWebSockets peer with
#               PEER_PRESENCE=0 (no notices: what a uWS app built for 20,000-viewer rooms does;
#               with notices it is N² too and managed ~120 joins/s here). The table says so.
#   fanout-json / fanout-deflate   deliveries/s, server CPU µs/delivery, bytes on the wire per
#               delivery: 1 KiB chat-like JSON, --rate max, BENCH_FANOUT_SUBS subscribers,
#               without and with permessage-deflate offered by every client (the Node peer
#               with ws's perMessageDeflate on: PEER_DEFLATE=1)
#   echo-deflate   msgs/s and server CPU µs/msg, 1 KiB chat-like JSON, compressed both ways
#   idle-deflate   RSS per connection with permessage-deflate negotiated
#   churn       connection failures per kind at BENCH_CHURN_RATE/s while, in the middle of
#               the run, the master/primary gets SIGHUP (rolling restart; the article's stack
#               has none, the peer adds one shaped like wsfleet's) / one worker of either
#               server is killed with SIGKILL (the Node primary forks a new one on 'exit');
#               n/a for the uWebSockets peer (one process: nothing to restart or kill).
# `--server-pid` is always the master/primary pid: the tool sums CPU and RSS over the tree.
#
# Knobs (environment):
#   BENCH_DURATION=10     seconds per timed measurement
#   BENCH_QUICK=1         ~1-minute smoke run with small numbers (the defaults below shrink)
#   BENCH_SERVERS="wsfleet node node-plain uws"   which servers, in order (node: the peer with
#                         its fan-out corked; node-plain: PEER_CORK=0, one ws.send() per member
#                         as the article writes it; uws: uWebSockets, left out of the default
#                         when its npm package cannot be installed or loaded here)
#   BENCH_TESTS="echo fanout-max fanout-20 idle churn-sighup churn-kill9 rooms bigroom
#               fanout-json fanout-deflate echo-deflate idle-deflate"   which rows
#   BENCH_WORKERS=$(nproc)         workers per server
#   BENCH_ECHO_CONNS=50  BENCH_FANOUT_SUBS=2000  BENCH_IDLE_CONNS=19000  BENCH_IDLE_HOLD=5
#   BENCH_IDLE_RAMP=5    BENCH_CHURN_RATE=500    BENCH_CHURN_DURATION=$BENCH_DURATION
#   BENCH_ROOMS=2500     BENCH_ROOMS_MEMBERS=4   BENCH_BIGROOM_CONNS=19900  BENCH_BIGROOM_MAX_TIME=60
#   BENCH_OUT_DIR=bench-results    BENCH_NO_BUILD=1 (skip cargo build; use target/release/wsfleet)
#   BENCH_WSFLEET=path    another wsfleet binary (implies no build)
#   BENCH_NODE_EXTRA / BENCH_WSFLEET_EXTRA: extra server arguments
#
# Safety: everything is on 127.0.0.1; every load is bounded in count and time (each bench
# command also runs under `timeout`); the script stops by itself; a trap kills every server
# it started (master/primary and its workers) on any exit, Ctrl-C included.
#
# Caveat printed with the results: the load generator runs on the same machine and competes
# with the server for the same cores, so absolute numbers are a floor; the ratio is the point.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PEER_DIR="$ROOT/scripts/peers/node-cluster-ws"
UWS_DIR="$ROOT/scripts/peers/uws"
WSFLEET="${BENCH_WSFLEET:-$ROOT/target/release/wsfleet}"

# ---- parameters ---------------------------------------------------------------------------
QUICK="${BENCH_QUICK:-0}"
if [[ "$QUICK" == 1 ]]; then
  # Smoke run: every row still measured, with small numbers, about a minute in all.
  D_DURATION=2 D_ECHO_CONNS=10 D_FANOUT_SUBS=200 D_IDLE_CONNS=500 D_IDLE_HOLD=1 D_IDLE_RAMP=1
  D_CHURN_RATE=100 D_CHURN_DURATION=4 D_ROOMS=100 D_BIGROOM_CONNS=1000 D_BIGROOM_MAX_TIME=20
else
  D_DURATION=10 D_ECHO_CONNS=50 D_FANOUT_SUBS=2000 D_IDLE_CONNS=19000 D_IDLE_HOLD=5 D_IDLE_RAMP=5
  D_CHURN_RATE=500 D_CHURN_DURATION="" D_ROOMS=2500 D_BIGROOM_CONNS=19900 D_BIGROOM_MAX_TIME=60
fi
DURATION="${BENCH_DURATION:-$D_DURATION}"
ECHO_CONNS="${BENCH_ECHO_CONNS:-$D_ECHO_CONNS}"
ECHO_SIZE=64
FANOUT_SUBS="${BENCH_FANOUT_SUBS:-$D_FANOUT_SUBS}"
FANOUT_SIZE=256
FANOUT_SLOW_RATE=20
IDLE_CONNS="${BENCH_IDLE_CONNS:-$D_IDLE_CONNS}"
IDLE_HOLD="${BENCH_IDLE_HOLD:-$D_IDLE_HOLD}"
IDLE_RAMP="${BENCH_IDLE_RAMP:-$D_IDLE_RAMP}"
CHURN_RATE="${BENCH_CHURN_RATE:-$D_CHURN_RATE}"
CHURN_DURATION="${BENCH_CHURN_DURATION:-${D_CHURN_DURATION:-$DURATION}}"
ROOMS="${BENCH_ROOMS:-$D_ROOMS}"
ROOMS_MEMBERS="${BENCH_ROOMS_MEMBERS:-4}"
ROOMS_RATE=1
ROOMS_SIZE=64
BIGROOM_CONNS="${BENCH_BIGROOM_CONNS:-$D_BIGROOM_CONNS}"
BIGROOM_MAX_TIME="${BENCH_BIGROOM_MAX_TIME:-$D_BIGROOM_MAX_TIME}"
SERVERS="${BENCH_SERVERS:-wsfleet node node-plain uws}"
TESTS="${BENCH_TESTS:-echo fanout-max fanout-20 idle churn-sighup churn-kill9 rooms bigroom fanout-json fanout-deflate echo-deflate idle-deflate}"
WORKERS="${BENCH_WORKERS:-$(nproc)}"
OUT_DIR="${BENCH_OUT_DIR:-$ROOT/bench-results}"
STAMP="$(date +%Y%m%d-%H%M%S)"
MD="$OUT_DIR/bench-$STAMP.md"
JSONL="$OUT_DIR/bench-$STAMP.jsonl"
LOGS="$OUT_DIR/bench-$STAMP-logs"

for v in DURATION ECHO_CONNS FANOUT_SUBS IDLE_CONNS IDLE_HOLD IDLE_RAMP CHURN_RATE CHURN_DURATION WORKERS \
  ROOMS ROOMS_MEMBERS BIGROOM_CONNS BIGROOM_MAX_TIME; do
  [[ "${!v}" =~ ^[0-9]+$ && "${!v}" -gt 0 ]] || { echo "bench.sh: $v must be a positive integer (got '${!v}')" >&2; exit 2; }
done
# Keep the run bounded even if someone passes silly numbers.
(( DURATION <= 300 && CHURN_DURATION <= 300 && BIGROOM_MAX_TIME <= 300 && IDLE_CONNS <= 60000 \
  && BIGROOM_CONNS <= 60000 && ROOMS * ROOMS_MEMBERS <= 60000 && FANOUT_SUBS <= 20000 )) \
  || { echo "bench.sh: refusing durations > 300 s or more than 60,000 connections" >&2; exit 2; }

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

# ---- cleanup: every server this script started dies with it --------------------------------
declare -a STARTED=()   # master/primary pids we started
SERVER_PID="" SERVER_PORT="" SERVER_LOG=""

# Children (workers) of a pid, one per line; empty if none.
children_of() { pgrep -P "$1" 2>/dev/null || true; }

# Stops one server tree: SIGTERM to the master/primary (both drain their workers), then
# SIGKILL to whatever of that tree is still there after 10 s.
stop_tree() {
  local pid="$1" kids k i
  kids="$(children_of "$pid")"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  # Workers recorded before the stop that outlived their master (they are ours: we only
  # recorded children of a pid we started a moment ago).
  for k in $kids; do kill -KILL "$k" 2>/dev/null || true; done
}

cleanup() {
  local p
  for p in "${STARTED[@]}"; do stop_tree "$p"; done
  STARTED=()
  [[ -n "${CHURN_BG:-}" ]] && kill -TERM "$CHURN_BG" 2>/dev/null || true
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

# ---- prerequisites (installed by the script itself) ----------------------------------------
command -v python3 >/dev/null || { echo "bench.sh: python3 is needed to read the JSON" >&2; exit 1; }
command -v node >/dev/null || { echo "bench.sh: node is needed for the peer" >&2; exit 1; }
command -v pgrep >/dev/null || { echo "bench.sh: pgrep (procps) is needed to find worker pids" >&2; exit 1; }

if [[ "${BENCH_NO_BUILD:-0}" != 1 && -z "${BENCH_WSFLEET:-}" ]]; then
  log "cargo build --release (no-op when up to date)"
  (cd "$ROOT" && cargo build --release --quiet)
fi
[[ -x "$WSFLEET" ]] || { echo "bench.sh: $WSFLEET missing" >&2; exit 1; }
for sub in serve bench; do
  "$WSFLEET" "$sub" --help >/dev/null 2>&1 || { echo "bench.sh: this wsfleet has no '$sub' subcommand yet" >&2; exit 1; }
done
if [[ " $SERVERS " == *" node "* && ! -d "$PEER_DIR/node_modules/ws" ]]; then
  log "npm install in $PEER_DIR"
  (cd "$PEER_DIR" && npm install --no-package-lock --no-audit --no-fund --loglevel=error)
fi
# The uWebSockets peer: one npm package with prebuilt binaries, no dependencies and no install
# script (installed with --ignore-scripts all the same); glibc-compat.js lets its binary load
# on a glibc older than the one it was linked against (see that file). Left out of the
# default server list when that fails; an error when BENCH_SERVERS asks for it.
if [[ " $SERVERS " == *" uws "* ]]; then
  uws_ok=1
  if [[ ! -d "$UWS_DIR/node_modules/@btc-vision/uwebsockets.js" ]]; then
    log "npm install in $UWS_DIR"
    (cd "$UWS_DIR" && npm install --no-package-lock --ignore-scripts --no-audit --no-fund --loglevel=error) || uws_ok=0
  fi
  ((uws_ok)) && { node "$UWS_DIR/glibc-compat.js" || uws_ok=0; }
  if ((!uws_ok)); then
    [[ -n "${BENCH_SERVERS:-}" ]] && { echo "bench.sh: the uws peer cannot be installed or loaded here" >&2; exit 1; }
    log "the uws peer cannot be installed or loaded here: leaving it out"
    SERVERS="${SERVERS/ uws/}"
  fi
fi

# 19,000 idle connections need ~19,000 descriptors in the load generator: raise the soft limit
# to the hard one (children inherit it).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
nofile="$(ulimit -n)"
most=$(( IDLE_CONNS > BIGROOM_CONNS ? IDLE_CONNS : BIGROOM_CONNS ))
(( ROOMS * ROOMS_MEMBERS > most )) && most=$(( ROOMS * ROOMS_MEMBERS ))
if [[ "$nofile" =~ ^[0-9]+$ ]] && (( nofile < most + 500 )); then
  log "warning: open-file limit $(ulimit -n) is below $most+500; the idle, rooms or bigroom row may fall short"
fi

mkdir -p "$OUT_DIR" "$LOGS"
: >"$JSONL"

# ---- starting a server ----------------------------------------------------------------------
# start_server NAME TAG: starts a fresh server, waits for its ready line (30 s at most), sets
# SERVER_PID (master/primary) and SERVER_PORT.
start_server() {
  local name="$1" tag="$2" line="" i
  SERVER_LOG="$LOGS/$name-$tag"
  case "$name" in
    wsfleet)
      local run_dir="$LOGS/$name-$tag.run"
      mkdir -p "$run_dir"
      # shellcheck disable=SC2086
      # A 1 s drain keeps stopping quick between rows (no row measures a graceful stop).
      "$WSFLEET" serve --listen 127.0.0.1:0 --workers "$WORKERS" --run-dir "$run_dir" --drain-timeout 1 --admin 127.0.0.1:0 ${BENCH_WSFLEET_EXTRA:-} \
        >"$SERVER_LOG.out" 2>"$SERVER_LOG.err" &
      ;;
    node | node-plain)
      # node-plain: the article's code as written, one ws.send() per member (no cork).
      local cork=1
      [[ "$name" == node-plain ]] && cork=0
      # shellcheck disable=SC2086
      # The *-deflate rows turn ws's perMessageDeflate on.
      local deflate=0
      [[ "$tag" == *deflate* ]] && deflate=1
      PEER_DEFLATE="$deflate" PEER_CORK="$cork" node "$PEER_DIR/server.js" --host 127.0.0.1 --port 0 --workers "$WORKERS" ${BENCH_NODE_EXTRA:-} \
        >"$SERVER_LOG.out" 2>"$SERVER_LOG.err" &
      ;;
    uws)
      # The bigroom row: no join notices (see the header), so the peer is measured as a uWS
      # app for big rooms would be written, not as an N² notice storm.
      local presence=1
      [[ "$tag" == bigroom ]] && presence=0
      PEER_PRESENCE="$presence" node "$UWS_DIR/server.js" --host 127.0.0.1 --port 0 --workers "$WORKERS" \
        >"$SERVER_LOG.out" 2>"$SERVER_LOG.err" &
      ;;
    *) echo "bench.sh: unknown server '$name'" >&2; exit 2 ;;
  esac
  SERVER_PID=$!
  STARTED+=("$SERVER_PID")
  for ((i = 0; i < 300; i++)); do
    line="$(grep -m1 -E '^(wsfleet|peer) ready listen=' "$SERVER_LOG.out" 2>/dev/null || true)"
    [[ -n "$line" ]] && break
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
  done
  if [[ -z "$line" ]]; then
    log "$name did not become ready; stderr tail:"
    tail -n 20 "$SERVER_LOG.err" >&2 || true
    return 1
  fi
  SERVER_PORT="$(sed -E 's/.* listen=[^ ]*:([0-9]+).*/\1/' <<<"$line")"
  [[ "$SERVER_PORT" =~ ^[0-9]+$ ]] || { log "cannot read the port from: $line"; return 1; }
  log "$name ready: pid $SERVER_PID port $SERVER_PORT ($line)"
}

stop_server() {
  local p rest=()
  stop_tree "$SERVER_PID"
  for p in "${STARTED[@]}"; do [[ "$p" == "$SERVER_PID" ]] || rest+=("$p"); done
  STARTED=("${rest[@]+"${rest[@]}"}")
  SERVER_PID=""
}

# record NAME TEST EXTRA_JSON OUTFILE: appends one line to the .jsonl with the tool's JSON
# (the last JSON object in its stdout) or an error.
record() {
  python3 - "$1" "$2" "$3" "$4" "$JSONL" <<'PY'
import json, sys
name, test, extra, outfile, jsonl = sys.argv[1:6]
text = open(outfile, encoding="utf-8", errors="replace").read()
result = None
try:
    result = json.loads(text)
except ValueError:
    # Not one document: take the last line that is a JSON object.
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                result = json.loads(line)
                break
            except ValueError:
                pass
row = {"server": name, "test": test}
row.update(json.loads(extra))
if isinstance(result, dict):
    row["result"] = result
else:
    row["error"] = "no JSON from wsfleet bench (see logs)"
with open(jsonl, "a", encoding="utf-8") as f:
    f.write(json.dumps(row) + "\n")
PY
}

# run_bench NAME TEST EXTRA_JSON TIMEOUT_S ARGS...: one `wsfleet bench` run against SERVER_PID.
run_bench() {
  local name="$1" test="$2" extra="$3" limit="$4"; shift 4
  local out="$LOGS/$name-$test.bench.out"
  log "$name $test: wsfleet bench $*"
  local rc=0
  timeout --kill-after=5 "$limit" "$WSFLEET" bench "$@" --json --server-pid "$SERVER_PID" \
    >"$out" 2>"$LOGS/$name-$test.bench.err" || rc=$?
  if ((rc != 0)); then
    log "$name $test: wsfleet bench failed (exit $rc; 124 = timed out); stderr tail:"
    tail -n 5 "$LOGS/$name-$test.bench.err" >&2 || true
  fi
  record "$name" "$test" "$extra" "$out"
}

# A worker pid of the running server (a child of the master/primary), preferring one whose
# command line says "worker" when the master has other children.
pick_worker() {
  local k first=""
  for k in $(children_of "$SERVER_PID"); do
    [[ -z "$first" ]] && first="$k"
    if tr '\0' ' ' <"/proc/$k/cmdline" 2>/dev/null | grep -q worker; then echo "$k"; return; fi
  done
  echo "$first"
}

# churn NAME TEST ACTION: churn at CHURN_RATE for CHURN_DURATION s; halfway through, ACTION
# (sighup | kill9) hits the server. The action taken is recorded with the result.
churn() {
  local name="$1" test="$2" action="$3" victim="" out
  out="$LOGS/$name-$test.bench.out"
  log "$name $test: wsfleet bench churn --rate $CHURN_RATE --duration $CHURN_DURATION, $action halfway"
  timeout --kill-after=5 $((CHURN_DURATION + 60)) "$WSFLEET" bench churn \
    --url "ws://127.0.0.1:$SERVER_PORT/ws" --rate "$CHURN_RATE" --duration "$CHURN_DURATION" --room 'churn-{i}' \
    --json --server-pid "$SERVER_PID" >"$out" 2>"$LOGS/$name-$test.bench.err" &
  CHURN_BG=$!
  sleep "$(python3 -c "print($CHURN_DURATION / 2)")"
  case "$action" in
    sighup)
      victim="$SERVER_PID"
      log "$name: SIGHUP to master $victim (rolling restart)"
      kill -HUP "$victim" 2>/dev/null || log "SIGHUP failed"
      ;;
    kill9)
      victim="$(pick_worker)"
      if [[ -n "$victim" ]]; then
        log "$name: SIGKILL to worker $victim"
        kill -KILL "$victim" 2>/dev/null || log "kill -9 failed"
      else
        log "$name: no worker pid found under $SERVER_PID"
      fi
      ;;
  esac
  wait "$CHURN_BG" || log "$name $test: wsfleet bench churn exited non-zero"
  CHURN_BG=""
  # Did the server heal? (workers back to the full count; informational)
  sleep 1
  local kids
  kids="$(children_of "$SERVER_PID" | wc -l)"
  record "$name" "$test" "{\"action\": \"$action\", \"victim\": \"$victim\", \"workers_after\": $kids}" "$out"
}

# want TEST: is TEST among BENCH_TESTS?
want() { [[ " $TESTS " == *" $1 "* ]]; }

# ---- the run --------------------------------------------------------------------------------
log "servers: $SERVERS; workers: $WORKERS; duration ${DURATION}s; results: $MD"
for name in $SERVERS; do
  url="ws://127.0.0.1"

  if want echo && start_server "$name" echo; then
    run_bench "$name" echo '{}' $((DURATION + 60)) echo --url "$url:$SERVER_PORT/echo" \
      --conns "$ECHO_CONNS" --size "$ECHO_SIZE" --duration "$DURATION"
    stop_server
  elif want echo; then record "$name" echo '{}' /dev/null; stop_server; fi

  if want fanout-max && start_server "$name" fanout-max; then
    run_bench "$name" fanout-max '{}' $((DURATION + 120)) fanout --url "$url:$SERVER_PORT/ws" \
      --subs "$FANOUT_SUBS" --room bench-max --rate max --size "$FANOUT_SIZE" --duration "$DURATION"
    stop_server
  elif want fanout-max; then record "$name" fanout-max '{}' /dev/null; stop_server; fi

  if want fanout-20 && start_server "$name" fanout-20; then
    run_bench "$name" fanout-20 '{}' $((DURATION + 120)) fanout --url "$url:$SERVER_PORT/ws" \
      --subs "$FANOUT_SUBS" --room bench-20 --rate "$FANOUT_SLOW_RATE" --size "$FANOUT_SIZE" --duration "$DURATION"
    stop_server
  elif want fanout-20; then record "$name" fanout-20 '{}' /dev/null; stop_server; fi

  # Compression: 1 KiB chat-like JSON, plain, then with every client offering
  # permessage-deflate (as browsers do); bytes on the wire per delivery from the tool.
  for t in fanout-json fanout-deflate; do
    deflate_flag=()
    [[ "$t" == fanout-deflate ]] && deflate_flag=(--deflate)
    if want "$t" && start_server "$name" "$t"; then
      run_bench "$name" "$t" '{}' $((DURATION + 120)) fanout --url "$url:$SERVER_PORT/ws" \
        --subs "$FANOUT_SUBS" --room "bench-$t" --rate max --payload json --size 1024 \
        --duration "$DURATION" "${deflate_flag[@]}"
      stop_server
    elif want "$t"; then record "$name" "$t" '{}' /dev/null; stop_server; fi
  done

  if want echo-deflate && start_server "$name" echo-deflate; then
    run_bench "$name" echo-deflate '{}' $((DURATION + 60)) echo --url "$url:$SERVER_PORT/echo" \
      --conns "$ECHO_CONNS" --payload json --size 1024 --duration "$DURATION" --deflate
    stop_server
  elif want echo-deflate; then record "$name" echo-deflate '{}' /dev/null; stop_server; fi

  if want idle-deflate && start_server "$name" idle-deflate; then
    run_bench "$name" idle-deflate '{}' $((IDLE_RAMP + IDLE_HOLD + 120)) idle --url "$url:$SERVER_PORT/ws" \
      --conns "$IDLE_CONNS" --hold "$IDLE_HOLD" --ramp "$IDLE_RAMP" --room 'idle-{i}' --deflate
    stop_server
  elif want idle-deflate; then record "$name" idle-deflate '{}' /dev/null; stop_server; fi

  # Idle: every connection joins its own room ('{i}' = its index). One shared room would make
  # each server send ~N²/2 presence frames (180 million at 19,000), measuring presence, not
  # idle memory. Fanout above deliberately uses one room: the join-time presence storm
  # (2,000²/2 frames) happens before the timed phase. Churn below also uses a room per attempt.
  if want idle && start_server "$name" idle; then
    run_bench "$name" idle '{}' $((IDLE_RAMP + IDLE_HOLD + 120)) idle --url "$url:$SERVER_PORT/ws" \
      --conns "$IDLE_CONNS" --hold "$IDLE_HOLD" --ramp "$IDLE_RAMP" --room 'idle-{i}'
    stop_server
  elif want idle; then record "$name" idle '{}' /dev/null; stop_server; fi

  # Churn under a rolling restart (SIGHUP to the master/primary). The article's stack has
  # none; the peer implements one the way wsfleet does (new worker first, old one drains).
  # The uWebSockets peer is one process with threads: it has no rolling restart and no
  # worker process to kill, so its churn rows would measure nothing; they show n/a.
  if want churn-sighup && [[ "$name" != uws ]] && start_server "$name" churn-sighup; then
    churn "$name" churn-sighup sighup
    stop_server
  elif want churn-sighup && [[ "$name" != uws ]]; then record "$name" churn-sighup '{}' /dev/null; stop_server; fi

  if want churn-kill9 && [[ "$name" != uws ]] && start_server "$name" churn-kill9; then
    churn "$name" churn-kill9 kill9
    stop_server
  elif want churn-kill9 && [[ "$name" != uws ]]; then record "$name" churn-kill9 '{}' /dev/null; stop_server; fi

  # Everyday chat: many small rooms, every member publishing once a second; each member
  # also receives its own messages (a member of its room), so deliveries = publishes × members.
  if want rooms && start_server "$name" rooms; then
    run_bench "$name" rooms '{}' $((DURATION + 240)) rooms --url "$url:$SERVER_PORT/ws" \
      --rooms "$ROOMS" --members "$ROOMS_MEMBERS" --rate "$ROOMS_RATE" --size "$ROOMS_SIZE" --duration "$DURATION"
    stop_server
  elif want rooms; then record "$name" rooms '{}' /dev/null; stop_server; fi

  # One big room: every client joins the SAME room (presence as each server sends it, the uws
  # peer without notices, see the header); joins/s from the first connect to the last joined,
  # then RSS per connection. --max-time bounds it: a server slower than that reports how many
  # joined within it.
  bigroom_extra='{}'
  [[ "$name" == uws ]] && bigroom_extra='{"peer_presence": 0}'
  if want bigroom && start_server "$name" bigroom; then
    run_bench "$name" bigroom "$bigroom_extra" $((BIGROOM_MAX_TIME + 120)) join --url "$url:$SERVER_PORT/ws" \
      --conns "$BIGROOM_CONNS" --room live --hold 2 --max-time "$BIGROOM_MAX_TIME"
    stop_server
  elif want bigroom; then record "$name" bigroom '{}' /dev/null; stop_server; fi
done

# ---- the table ------------------------------------------------------------------------------
python3 - "$JSONL" "$MD" <<PY
import json, os, platform, subprocess, sys
jsonl, md = sys.argv[1], sys.argv[2]
rows = [json.loads(l) for l in open(jsonl, encoding="utf-8") if l.strip()]
res = {(r["server"], r["test"]): r for r in rows}
servers = "$SERVERS".split()
base = servers[0]
peers = servers[1:]
names = {"wsfleet": "wsfleet", "node": "node cluster+ws (corked)", "node-plain": "node cluster+ws (plain send)", "uws": "uWebSockets (uWS.js)"}

def get(server, test, *path):
    r = res.get((server, test), {}).get("result")
    for p in path:
        if not isinstance(r, dict):
            return None
        r = r.get(p)
    return r if isinstance(r, (int, float)) and not isinstance(r, bool) else None

def num(x, digits=None):
    if x is None:
        return None
    if isinstance(x, int) or (isinstance(x, float) and x.is_integer() and abs(x) >= 1000):
        return f"{int(x):,}"
    if digits is None:
        digits = 0 if abs(x) >= 100 else (1 if abs(x) >= 10 else 2)
    return f"{x:,.{digits}f}"

def churn_cell(server, test):
    r = res.get((server, test))
    if r is None:
        return "n/a"
    x = r.get("result")
    if not isinstance(x, dict):
        return "error"
    f = x.get("failures") or {}
    kinds = ", ".join(f"{k} {v}" for k, v in f.items() if v)
    fmt = lambda v: f"{v:,}" if isinstance(v, int) else "?"
    return f"{fmt(x.get('failed'))} of {fmt(x.get('attempted'))}" + (f" ({kinds})" if kinds else "")

def fanout_errs(server, test="fanout-max"):
    vals = [get(server, test, k) for k in ("lost", "duplicated", "out_of_order")]
    if all(v is None for v in vals):
        return None
    return " / ".join("?" if v is None else f"{v:,}" for v in vals)

# (label, better, value-fn, ratio-fn or None)
def bigroom_joined(server):
    r = res.get((server, "bigroom"))
    if r is None:
        return None
    x = r.get("result")
    if not isinstance(x, dict):
        return "error"
    cell = f"{x.get('joined', 0):,} of {x.get('conns', 0):,}"
    return cell + (f" (--max-time {x.get('max_time_s', 0):g} s ran out)" if x.get("timed_out") else "")

def metric(test, *path, scale=1.0):
    def f(s):
        v = get(s, test, *path)
        return None if v is None else (v if scale == 1.0 else v * scale)
    return f

table = [
    (f"echo msgs/s ({$ECHO_CONNS} conns, {$ECHO_SIZE} B)", "higher", metric("echo", "msgs_per_s")),
    ("echo server CPU µs/msg", "lower", metric("echo", "server_cpu_us_per_unit")),
    ("echo RTT p99 ms", "lower", metric("echo", "rtt_us", "p99", scale=1e-3)),
    (f"fanout deliveries/s (rate max, {$FANOUT_SUBS:,} subs, {$FANOUT_SIZE} B)", "higher", metric("fanout-max", "deliveries_per_s")),
    ("fanout server CPU µs/delivery", "lower", metric("fanout-max", "server_cpu_us_per_unit")),
    ("fanout lost / dup / out-of-order (rate max)", "zero", fanout_errs),
    # Error frames the publisher got (the servers' 1,000 requests/s per-connection limit:
    # with few subscribers a max-rate publisher can outrun it; deliveries count only
    # accepted publishes).
    ("fanout publishes refused (rate max)", "zero", metric("fanout-max", "errors")),
    (f"fanout latency p99 ms (rate {$FANOUT_SLOW_RATE}/s, {$FANOUT_SUBS:,} subs)", "lower", metric("fanout-20", "latency_us", "p99", scale=1e-3)),
    ("fanout latency p50 ms (same run)", "lower", metric("fanout-20", "latency_us", "p50", scale=1e-3)),
    (f"idle RSS per connection, KiB ({$IDLE_CONNS:,} conns)", "lower", metric("idle", "server_rss_per_conn_bytes", scale=1/1024)),
    ("idle connections reached", "higher", metric("idle", "connected")),
    ("server RSS at rest, MiB (before the idle connections)", "lower", metric("idle", "server_rss_bytes_before", scale=1/1048576)),
    (f"churn failures, rolling restart (SIGHUP) at {$CHURN_RATE}/s", "lower", lambda s: churn_cell(s, "churn-sighup")),
    (f"churn failures, kill -9 one worker at {$CHURN_RATE}/s", "lower", lambda s: churn_cell(s, "churn-kill9")),
    (f"rooms deliveries/s ({$ROOMS:,} rooms × {$ROOMS_MEMBERS}, each member {$ROOMS_RATE}/s, {$ROOMS_SIZE} B)", "higher", metric("rooms", "deliveries_per_s")),
    ("rooms server CPU µs/delivery", "lower", metric("rooms", "server_cpu_us_per_unit")),
    ("rooms latency p99 ms", "lower", metric("rooms", "latency_us", "p99", scale=1e-3)),
    ("rooms latency p50 ms", "lower", metric("rooms", "latency_us", "p50", scale=1e-3)),
    ("rooms lost / dup / out-of-order", "zero", lambda s: fanout_errs(s, "rooms")),
    (f"fanout deliveries/s, 1 KiB JSON, plain (rate max, {$FANOUT_SUBS:,} subs)", "higher", metric("fanout-json", "deliveries_per_s")),
    ("fanout server CPU µs/delivery, 1 KiB JSON, plain", "lower", metric("fanout-json", "server_cpu_us_per_unit")),
    ("fanout bytes on the wire per delivery, 1 KiB JSON, plain", "lower", metric("fanout-json", "wire_bytes_per_delivery")),
    ("fanout deliveries/s, 1 KiB JSON, permessage-deflate", "higher", metric("fanout-deflate", "deliveries_per_s")),
    ("fanout server CPU µs/delivery, 1 KiB JSON, permessage-deflate", "lower", metric("fanout-deflate", "server_cpu_us_per_unit")),
    ("fanout bytes on the wire per delivery, 1 KiB JSON, permessage-deflate", "lower", metric("fanout-deflate", "wire_bytes_per_delivery")),
    ("fanout connections that negotiated permessage-deflate", "higher", metric("fanout-deflate", "deflate_negotiated")),
    ("fanout lost / dup / out-of-order, permessage-deflate", "zero", lambda s: fanout_errs(s, "fanout-deflate")),
    (f"echo msgs/s, 1 KiB JSON compressed both ways ({$ECHO_CONNS} conns)", "higher", metric("echo-deflate", "msgs_per_s")),
    ("echo server CPU µs/msg, 1 KiB JSON compressed both ways", "lower", metric("echo-deflate", "server_cpu_us_per_unit")),
    (f"idle RSS per connection, KiB, permessage-deflate negotiated ({$IDLE_CONNS:,} conns)", "lower", metric("idle-deflate", "server_rss_per_conn_bytes", scale=1/1024)),
    (f"bigroom connects+joins/s ({$BIGROOM_CONNS:,} clients, one room{'; uWebSockets without join notices' if 'uws' in servers else ''})", "higher", metric("bigroom", "joins_per_s")),
    ("bigroom clients joined", "higher", bigroom_joined),
    ("bigroom server CPU µs/join", "lower", metric("bigroom", "server_cpu_us_per_unit")),
    ("bigroom RSS per connection, KiB (after the joins)", "lower", metric("bigroom", "server_rss_per_conn_bytes", scale=1/1024)),
]

head = ["metric (better)"] + [names.get(s, s) for s in servers] + [f"{names[base]} ÷ {names.get(p, p)}" for p in peers]
lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
for label, better, fn in table:
    vals = [fn(s) for s in servers]
    cells = []
    for v in vals:
        cells.append("n/a" if v is None else (v if isinstance(v, str) else num(v)))
    if all(c == "n/a" for c in cells):
        continue  # a row not measured in this run (BENCH_TESTS); failures are listed below
    ratios = []
    for i, p in enumerate(peers, 1):
        a, b = vals[0], vals[i]
        if "bigroom clients" in label:
            a, b = get(base, "bigroom", "joined"), get(p, "bigroom", "joined")
        if "churn" in label:
            t = "churn-sighup" if "SIGHUP" in label else "churn-kill9"
            a, b = get(base, t, "failed"), get(p, t, "failed")
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b != 0:
            ratios.append(f"{a / b:,.2f}×")
        else:
            ratios.append("—")
    lines.append(f"| {label} ({better}) | " + " | ".join(cells + ratios) + " |")

errors = [f"- {r['server']} {r['test']}: {r['error']}" for r in rows if "error" in r]
kills = [f"- {r['server']} {r['test']}: {r.get('action')} → pid {r.get('victim') or '?'}; workers afterwards: {r.get('workers_after')}" for r in rows if r.get("action")]

def sh(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:
        return "?"

cpu = "?"
try:
    for l in open("/proc/cpuinfo"):
        if l.startswith("model name"):
            cpu = l.split(":", 1)[1].strip(); break
except OSError:
    pass
ws_ver = "?"
uws_ver = "?"
try:
    uws_ver = json.load(open(os.path.join("$UWS_DIR", "node_modules", "@btc-vision", "uwebsockets.js", "package.json")))["version"]
except Exception:
    pass
try:
    ws_ver = json.load(open(os.path.join("$PEER_DIR", "node_modules", "ws", "package.json")))["version"]
except Exception:
    pass
out = [
    f"# wsfleet vs the Node.js article's stack — $STAMP",
    "",
    f"Machine: {os.cpu_count()} CPUs ({cpu}), Linux {platform.release()}; load generator on the same machine, "
    "competing for the same cores (absolute figures are a floor; compare the ratio).",
    f"wsfleet {sh('git', '-C', '$ROOT', 'rev-parse', '--short', 'HEAD')} with $WORKERS workers; "
    f"node {sh('node', '--version')} + ws {ws_ver}, cluster with $WORKERS workers (scripts/peers/node-cluster-ws); "
    f"uWS.js {uws_ver} with $WORKERS threads (scripts/peers/uws).",
    f"Durations ${DURATION}s (churn ${CHURN_DURATION}s), quick=$QUICK. A fresh server for every row. "
    "Server CPU and RSS are summed over the master/primary and its workers.",
    "",
] + lines + [""]
if "uws" in servers and any(r["test"] == "bigroom" for r in rows):
    out += ["bigroom presence: wsfleet sends join notices up to its threshold (64), then at most one count "
            "per --presence-interval (1 s) to every member, spaced so a room's counts cost at most 2,000 frames "
            "a second; the Node peers a notice per join to every member; the uWebSockets peer runs "
            "with PEER_PRESENCE=0 (no notices, as a uWS app built for big rooms would).", ""]
if "uws" in servers and any(r["test"].startswith("churn") for r in rows):
    out += ["churn: the uWebSockets peer is one process (an acceptor thread and worker threads): no rolling "
            "restart, no worker process to kill, so its churn rows are n/a.", ""]
if kills:
    out += ["Churn disruptions:"] + kills + [""]
if errors:
    out += ["Measurements that produced no result:"] + errors + [""]
out += [f"Raw JSON: {os.path.basename(jsonl)}; logs: {os.path.basename(jsonl)[:-6]}-logs/"]
text = "\n".join(out) + "\n"
open(md, "w", encoding="utf-8").write(text)
print(text)
PY
log "wrote $MD and $JSONL"
