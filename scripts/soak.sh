#!/usr/bin/env bash
# Soak: a release fleet under a mixed load for SOAK_MINUTES (default 30): echo, a room
# fan-out, connection churn, slow readers (clients that join the fan-out room and stop
# reading), and `wsfleet reload` every minute. Every SOAK_SAMPLE seconds it records the
# RSS and open fds of the master and each worker (from /proc) in a CSV, and at the end
# prints start/peak/end per process kind and the fleet log's errors.
#
# Exits non-zero if the fleet died or logged an ERROR. Stops everything it started, also
# on Ctrl-C. Needs bash, python3 (the slow-reader client, the summary) and cargo.
#
#   SOAK_MINUTES=3 scripts/soak.sh
#
# Environment:
#   SOAK_MINUTES   length of the load (default 30)
#   SOAK_SAMPLE    seconds between samples (default 5)
#   SOAK_WORKERS   workers (default 2)
#   SOAK_SLOW      slow-reader clients (default 20)
#   SOAK_OUT       directory for the CSV and logs (default: a new /tmp/wsfleet-soak-*)
#   WSFLEET        binary to soak (default: target/release/wsfleet, built first)
set -euo pipefail

cd "$(dirname "$0")/.."
MINUTES=${SOAK_MINUTES:-30}
SAMPLE=${SOAK_SAMPLE:-5}
WORKERS=${SOAK_WORKERS:-2}
SLOW=${SOAK_SLOW:-20}
OUT=${SOAK_OUT:-$(mktemp -d /tmp/wsfleet-soak-XXXXXX)}
mkdir -p "$OUT"
if [[ -z "${WSFLEET:-}" ]]; then
  cargo build --release --locked --quiet
  WSFLEET=target/release/wsfleet
fi

RUN=$(mktemp -d /tmp/wss-XXXXXX)   # short: the control socket path must fit 107 bytes
LOG=$OUT/fleet.log
CSV=$OUT/samples.csv
PIDS=()          # load generators to stop at the end
MASTER=

cleanup() {
  for p in "${PIDS[@]}"; do kill -- "-$p" 2>/dev/null || true; done
  if [[ -n "$MASTER" ]] && kill -0 "$MASTER" 2>/dev/null; then
    "$WSFLEET" stop --now --control "$RUN/control.sock" >/dev/null 2>&1 || kill -- "-$MASTER" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$MASTER" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$MASTER" 2>/dev/null || true
  fi
  rm -rf "$RUN"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The fleet, in its own process group so that cleanup reaches every worker.
setsid "$WSFLEET" serve --listen 127.0.0.1:0 --workers "$WORKERS" --admin off \
  --run-dir "$RUN" >"$OUT/ready.txt" 2>"$LOG" &
MASTER=$!
for _ in $(seq 300); do
  [[ -s "$OUT/ready.txt" ]] && break
  kill -0 "$MASTER" 2>/dev/null || { echo "soak: the fleet did not start:"; cat "$LOG"; exit 1; }
  sleep 0.1
done
ADDR=$(grep -o 'listen=[^ ]*' "$OUT/ready.txt" | head -1 | cut -d= -f2)
[[ -n "$ADDR" ]] || { echo "soak: no ready line"; cat "$LOG"; exit 1; }
echo "soak: fleet pid $MASTER on $ADDR for $MINUTES min; output in $OUT"

# Samples: one before the load (the idle baseline), then every SOAK_SAMPLE seconds.
echo "sample,elapsed_s,kind,pid,rss_kb,fds" >"$CSV"
START=$(date +%s)
SEQ=0
sample() {
  local now=$(( $(date +%s) - START )) pid kind rss fds
  SEQ=$((SEQ + 1))
  for pid in "$MASTER" $(ps -o pid= --ppid "$MASTER" 2>/dev/null || true); do
    kind=worker
    if [[ $pid == "$MASTER" ]]; then kind=master; fi
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
    fds=$( (ls "/proc/$pid/fd" 2>/dev/null || true) | wc -l)
    if [[ -n "$rss" ]]; then echo "$SEQ,$now,$kind,$pid,$rss,$fds" >>"$CSV"; fi
  done
}
sample

END=$(( $(date +%s) + MINUTES * 60 ))

# Runs "$@" again and again until the end time, in its own process group.
repeat() {
  local name=$1; shift
  setsid bash -c '
    end=$1; log=$2; shift 2
    while (( $(date +%s) < end )); do "$@" >>"$log" 2>&1 || echo "exit $?" >>"$log"; done
  ' _ "$END" "$OUT/$name.log" "$@" &
  PIDS+=($!)
}

LEG=50  # seconds per load-generator run; they restart until the end
repeat echo "$WSFLEET" bench echo --url "ws://$ADDR/echo" --conns 50 --duration "$LEG" --threads 1
repeat fanout "$WSFLEET" bench fanout --url "ws://$ADDR/ws" --room soak --subs 200 --rate 50 \
  --size 1024 --duration "$LEG" --threads 1
repeat churn "$WSFLEET" bench churn --url "ws://$ADDR/ws" --rate 50 --duration "$LEG" --threads 1

# Slow readers: each joins a room of its own and publishes 32 KB into it ten times a
# second (about 320 KB/s echoed back to it) while never reading, so its outbox overflows
# and the server closes it (1013); it notices when its next write fails, and reconnects.
setsid python3 - "$ADDR" "$SLOW" "$END" >"$OUT/slow.log" 2>&1 <<'PY' &
import base64, json, os, socket, struct, sys, threading, time
host, port = sys.argv[1].rsplit(":", 1)
n, end = int(sys.argv[2]), int(sys.argv[3])
stats = {"connects": 0, "failures": 0, "closed_by_server": 0}
lock = threading.Lock()

def report():  # running totals, one line per finished connection (the last line counts)
    with lock:
        print(f"slow readers: {stats['connects']} connections, {stats['closed_by_server']} "
              f"closed by the server while not reading, {stats['failures']} failures", flush=True)

def frame(text):  # a masked client text frame (payloads < 64 KiB)
    payload = text.encode()
    mask = os.urandom(4)
    if len(payload) < 126:
        head = bytes([0x81, 0x80 | len(payload)])
    else:
        head = bytes([0x81, 0x80 | 126]) + struct.pack("!H", len(payload))
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))

def slow_client(i):
    room = f"slow-{i}"
    publish = frame(json.dumps({"type": "publish", "room": room, "data": "x" * 32768}))
    while time.time() < end:
        try:
            s = socket.create_connection((host, int(port)), timeout=5)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            key = base64.b64encode(os.urandom(16)).decode()
            s.sendall((f"GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
                       f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                       "Sec-WebSocket-Version: 13\r\n\r\n").encode())
            if not s.recv(12).startswith(b"HTTP/1.1 101"):
                raise OSError("upgrade refused")
            s.sendall(frame(json.dumps({"type": "join", "room": room})))
            stats["connects"] += 1
        except OSError:
            stats["failures"] += 1
            report()
            time.sleep(1)
            continue
        try:
            until = min(end, time.time() + 60)
            while time.time() < until:  # and never read
                s.sendall(publish)
                time.sleep(0.1)
        except OSError:
            stats["closed_by_server"] += 1
        s.close()
        report()

threads = [threading.Thread(target=slow_client, args=(i,), daemon=True) for i in range(n)]
for t in threads: t.start()
for t in threads: t.join()
report()
PY
PIDS+=($!)

NEXT_RELOAD=$(( $(date +%s) + 60 ))
DIED=0
RELOADS=0
RELOAD_FAILS=0
while (( $(date +%s) < END )); do
  if ! kill -0 "$MASTER" 2>/dev/null; then DIED=1; break; fi
  sample
  if (( $(date +%s) >= NEXT_RELOAD )); then
    NEXT_RELOAD=$(( NEXT_RELOAD + 60 ))
    if "$WSFLEET" reload --control "$RUN/control.sock" >>"$OUT/reload.log" 2>&1; then
      RELOADS=$((RELOADS + 1))
    else
      RELOAD_FAILS=$((RELOAD_FAILS + 1))
    fi
  fi
  sleep "$SAMPLE"
done
# Let the load generators finish their current run, then one idle sample.
for p in "${PIDS[@]}"; do kill -- "-$p" 2>/dev/null || true; done
sleep "$SAMPLE"
if kill -0 "$MASTER" 2>/dev/null; then sample; else DIED=1; fi

python3 - "$CSV" <<'PY'
import csv, sys
from collections import defaultdict
rows = list(csv.DictReader(open(sys.argv[1])))
by_time = defaultdict(lambda: defaultdict(lambda: [0, 0, 0]))  # sample -> kind -> [rss, fds, n]
elapsed = {}
for r in rows:
    elapsed[int(r["sample"])] = int(r["elapsed_s"])
    agg = by_time[int(r["sample"])][r["kind"]]
    agg[0] += int(r["rss_kb"]); agg[1] += int(r["fds"]); agg[2] += 1
times = sorted(by_time)
print(f"samples: {len(times)} over {elapsed[times[-1]] - elapsed[times[0]] if times else 0} s"
      " (start: before the load; end: after it, idle)")
print(f"{'kind':8} {'':5} {'RSS start':>10} {'peak':>10} {'end':>10}   {'fds start':>9} {'peak':>5} {'end':>5}")
for kind in ("master", "worker"):
    series = [(t, by_time[t][kind]) for t in times if kind in by_time[t]]
    if not series: continue
    rss = [a[0] for _, a in series]; fds = [a[1] for _, a in series]
    label = "(sum)" if kind == "worker" else ""
    print(f"{kind:8} {label:5} {rss[0]/1024:8.1f}MB {max(rss)/1024:8.1f}MB {rss[-1]/1024:8.1f}MB"
          f"   {fds[0]:9} {max(fds):5} {fds[-1]:5}")
PY
echo "reloads: $RELOADS ok, $RELOAD_FAILS failed"
tail -n1 "$OUT/slow.log" 2>/dev/null || true
for f in echo fanout churn; do
  echo "bench $f: $(grep -c '^exit ' "$OUT/$f.log" 2>/dev/null || true) failed runs ($OUT/$f.log)"
done
ERRORS=$(grep -c ' ERROR ' "$LOG" || true)
WARNS=$(grep -c ' WARN ' "$LOG" || true)
echo "fleet log: $ERRORS ERROR, $WARNS WARN lines ($LOG)"
grep ' ERROR ' "$LOG" | head -5 || true
if (( DIED )); then echo "soak: FAILED: the fleet died"; exit 1; fi
if (( ERRORS > 0 )); then echo "soak: FAILED: the fleet logged errors"; exit 1; fi
echo "soak: OK"
