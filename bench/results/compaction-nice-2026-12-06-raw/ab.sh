# 2x-overload Segment soak: compaction thread at the engine's niceness (a: dist patched not to set it) vs nice 15 (b).
cd /work/main
W=dist/engine/compaction-worker.js
for v in a b; do
  if [ $v = a ]; then sed -i 's/^    setPriority(job.nice);/    void 0; \/\/ setPriority(job.nice);/' $W; else sed -i 's/^    void 0; \/\/ setPriority(job.nice);/    setPriority(job.nice);/' $W; fi
  grep -n "job.nice" $W
  flock /tmp/sluice-heavy.lock node --import tsx bench/soak.ts --find 60s --overload 2 --duration 3m --sample 10s --protocol http --users 100000 --flush-interval 5s --out /work/notes/cnice/$v.json > /work/notes/cnice/$v.log 2>&1
  echo "$v done $(date)"
done
sed -i 's/^    void 0; \/\/ setPriority(job.nice);/    setPriority(job.nice);/' $W
