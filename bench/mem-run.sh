#!/usr/bin/env bash
# Memory investigation driver (bench-only): bench/soak.ts with bench/mem-probe.mjs preloaded into
# the server's isolates, and timed triggers: forced full GCs (gc-N), heap snapshots (snap-N), and
# glibc malloc_stats()/malloc_trim(0) in the engine process through gdb (its stderr → serve.log).
#
#   bench/mem-run.sh OUTDIR DURATION_MIN [extra soak flags…]
# e.g. flock /tmp/sluice-heavy.lock bench/mem-run.sh /tmp/mem-a 13
#      MEM_RUN_SNAPSHOTS=0 flock /tmp/sluice-heavy.lock bench/mem-run.sh /tmp/mem-b 8 --malloc-mmap-threshold 131072
# (MEM_RUN_SNAPSHOTS=0: no heap snapshots — writing one mallocs ~100–250 MiB that glibc then keeps.)
set -u
OUT=$1; MIN=$2; shift 2
mkdir -p "$OUT/probe"
HERE=$(cd "$(dirname "$0")/.." && pwd)
cd "$HERE"
export MEM_PROBE_DIR="$OUT/probe"
export MEM_PROBE_EVERY_MS=10000
export NODE_OPTIONS="${NODE_OPTIONS:-} --import file://$HERE/bench/mem-probe.mjs"
node --import tsx bench/soak.ts --rate 2500 --fraction 1 --duration "${MIN}m" --sample 30s --max-memory 1GiB --keep --out "$OUT/soak.json" "$@" >"$OUT/soak.out" 2>"$OUT/soak.err" &
SOAK=$!
echo "soak pid $SOAK" >"$OUT/driver.log"
log() { echo "$(date +%T) t=$(( $(date +%s) - START ))s $*" >>"$OUT/driver.log"; }
START=$(date +%s)
until grep -q '^soak: offering' "$OUT/soak.out" 2>/dev/null; do
  kill -0 $SOAK 2>/dev/null || { echo "soak exited early" >>"$OUT/driver.log"; exit 1; }
  sleep 1
done
START=$(date +%s)
log "load started"
enginePid() { ls "$OUT/probe" | sed -n 's/^mem-engine-main-\([0-9]*\)-0\.jsonl$/\1/p' | tail -1; }
maps() { # brk / other anonymous / all anonymous of the engine process, MiB
  awk '/^[0-9a-f]+-[0-9a-f]+ /{heap=($6=="[heap]")} /^Anonymous:/{a+=$2; if(heap) h+=$2} END{printf "brk %.1f MiB, anon %.1f MiB\n", h/1024, a/1024}' "/proc/$1/smaps"
}
mstats() { # $1 label, $2 extra gdb command or ""
  local p; p=$(enginePid)
  log "$1 before: $(maps "$p")"
  echo "=== $(date +%T) $1 (pid $p)" >>"$OUT/malloc-stats.marks"
  if [ -n "${2:-}" ]; then
    timeout 120 gdb -p "$p" -batch -nx -ex 'call (void)malloc_stats()' -ex "$2" -ex 'call (void)malloc_stats()' >>"$OUT/gdb.log" 2>&1
  else
    timeout 120 gdb -p "$p" -batch -nx -ex 'call (void)malloc_stats()' >>"$OUT/gdb.log" 2>&1
  fi
  log "$1 after: $(maps "$p")"
}
at() { local now; now=$(( $(date +%s) - START )); [ "$1" -gt "$now" ] && sleep $(( $1 - now )); }
END=$(( MIN * 60 ))
at 110; mstats "stats-1a"
at 120; touch "$MEM_PROBE_DIR/gc-1"; log gc-1
at 140; mstats "stats-1b (after gc-1)"
[ "${MEM_RUN_SNAPSHOTS:-1}" = 1 ] && { at 150; touch "$MEM_PROBE_DIR/snap-1"; log snap-1; }
G2=$(( END * 45 / 100 )); at $G2; touch "$MEM_PROBE_DIR/gc-2"; log gc-2
G3=$(( END * 70 / 100 )); at $G3; touch "$MEM_PROBE_DIR/gc-3"; log gc-3
at $(( END - 100 )); mstats "stats-4a"
at $(( END - 90 )); touch "$MEM_PROBE_DIR/gc-4"; log gc-4
at $(( END - 70 )); mstats "stats-4b (after gc-4) + malloc_trim" 'call (int)malloc_trim(0)'
[ "${MEM_RUN_SNAPSHOTS:-1}" = 1 ] && { at $(( END - 50 )); touch "$MEM_PROBE_DIR/snap-2"; log snap-2; }
wait $SOAK
log "soak exit $?"
