cd /work/main
set_chunk() { sed -i "27s/encodeChunkBytes: .*,/encodeChunkBytes: $1,/" dist/engine/options.js; grep -n "encodeChunkBytes:" dist/engine/options.js | head -1; }
for i in 1 2 3; do
  for v in a b; do
    if [ $v = a ]; then set_chunk "32 * 1024 * 1024"; else set_chunk "8 * 1024 * 1024"; fi
    flock /tmp/sluice-heavy.lock node bin/sluice.js bench --protocols http,arrow-ws --duration 20s --rates 0.5 --worker-scale none --user-scale none --out /work/notes/chunk/$v$i.json > /work/notes/chunk/$v$i.log 2>&1
    echo "$v$i done $(date)"
  done
done
set_chunk "32 * 1024 * 1024"
