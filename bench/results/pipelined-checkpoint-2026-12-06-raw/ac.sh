# Variant c (encode synchronously right after the cut; batches overlap only the commit's I/O) vs serial (a), same build.
cd /work/main
W=dist/engine/shard-worker.js
for i in 4 5 6; do
  for v in c a; do
    if [ $v = a ]; then sed -i 's/            return { detached: committed };/            return await committed;/' $W; else sed -i 's/            return await committed;/            return { detached: committed };/' $W; fi
    n=$i; [ $v = c ] && n=$((i-3))
    flock /tmp/sluice-heavy.lock node bin/sluice.js bench --protocols http,arrow-ws --duration 20s --rates 0.5 --worker-scale none --user-scale none --out /work/notes/pipe/$v$n.json > /work/notes/pipe/$v$n.log 2>&1
    echo "$v$n done $(date)"
  done
done
sed -i 's/            return await committed;/            return { detached: committed };/' $W
