cd /work/main
for i in 1 2 3; do
  for v in a b; do
    if [ $v = a ]; then arg=""; else arg="--serve-arg=--max-lag=3s"; fi
    flock /tmp/sluice-heavy.lock node bin/sluice.js bench --protocols http,arrow-ws --duration 20s --rates 0.5 --worker-scale none --user-scale none $arg --out /work/notes/lag/$v$i.json > /work/notes/lag/$v$i.log 2>&1
    echo "$v$i done $(date)"
  done
done
flock /tmp/sluice-heavy.lock node bin/sluice.js bench --protocols http,arrow-ws --duration 20s --rates 0.5 --worker-scale none --user-scale none --serve-arg=--max-lag=2s --out /work/notes/lag/c1.json > /work/notes/lag/c1.log 2>&1
echo "c1 done $(date)"
