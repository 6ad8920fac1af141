# A/B of pipelined checkpoints on one compiled tree (commit b9c4040):
# a = dist/engine/shard-worker.js patched to answer a checkpoint only after its commit, holding the
#     shard's chain (the serial behaviour before b9c4040), b = as built (pipelined).
cd /work/main
W=dist/engine/shard-worker.js
for i in 1 2 3; do
  for v in a b; do
    if [ $v = a ]; then sed -i 's/            return { detached: committed };/            return await committed;/' $W; else sed -i 's/            return await committed;/            return { detached: committed };/' $W; fi
    grep -c "detached: committed" $W
    flock /tmp/sluice-heavy.lock node bin/sluice.js bench --protocols http,arrow-ws --duration 20s --rates 0.5 --worker-scale none --user-scale none --out /work/notes/pipe/$v$i.json > /work/notes/pipe/$v$i.log 2>&1
    echo "$v$i done $(date)"
  done
done
sed -i 's/            return await committed;/            return { detached: committed };/' $W
