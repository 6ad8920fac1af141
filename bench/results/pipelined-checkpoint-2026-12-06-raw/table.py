import json,glob,os,sys
here=os.path.dirname(os.path.abspath(__file__))
labels=dict(a='serial (a)', b='pipelined (b)', c='pipelined, no yields (c)')
rows={}
for f in sorted(glob.glob(os.path.join(here,'[abc][0-9].json'))):
    v=os.path.basename(f)[0]; d=json.load(open(f))
    for r in d['runs']:
        rows.setdefault((r['protocol'],r['kind']),{}).setdefault(v,[]).append(r)
J=lambda xs,fn,fmt: ' / '.join(fmt.format(fn(r)) for r in xs)
print('| protocol | load | variant | shard commit mean s | cut mean s | ack→silver p99 s | acked K ev/s | in silver K ev/s | server µs / acked event | peak RSS MiB | client p99 ms |')
print('|---|---|---|---|---|---|---|---|---|---|---|')
for (p,k),vs in sorted(rows.items()):
    kind={'max':'max','light':'light loop','rate':'50 %'}[k]
    for v in sorted(vs):
        xs=vs[v]
        cols=[p,kind,labels[v],
          J(xs,lambda r:r['server']['shardCommitMeanS'],'{:.2f}'),
          J(xs,lambda r:r['server']['shardCutMeanS'],'{:.2f}'),
          J(xs,lambda r:r['ackToSilverS']['p99'],'{:.1f}'),
          J(xs,lambda r:r['ackedPerSec']/1000,'{:.1f}'),
          J(xs,lambda r:r['silverPerSec']/1000,'{:.1f}'),
          J(xs,lambda r:1e6*r['serverCores']/r['ackedPerSec'],'{:.1f}'),
          J(xs,lambda r:r['peakRssBytes']/2**20,'{:.0f}'),
          J(xs,lambda r:r['latencyMs']['p99'],'{:.0f}')]
        print('| '+' | '.join(cols)+' |')
