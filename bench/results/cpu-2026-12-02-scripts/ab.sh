#!/bin/bash
# ab.sh <load> <secs> <rounds> <label>=<checkout>|<flags> ...  — interleaved rounds, rotating order
load=$1; secs=$2; rounds=$3; shift 3
variants=("$@")
n=${#variants[@]}
for r in $(seq 1 $rounds); do
  for k in $(seq 0 $((n-1))); do
    v=${variants[$(( (k + r) % n ))]}
    label=${v%%=*}; rest=${v#*=}; checkout=${rest%%|*}; flags=${rest#*|}; [ "$flags" = "$rest" ] && flags=""
    out=$(node /tmp/cpu/run.mjs $checkout $load $secs $flags 2>/dev/null)
    echo "{\"label\":\"$label\",\"round\":$r,\"r\":$out}"
  done
done
