import json,glob,os,sys
d0=os.path.dirname(os.path.abspath(__file__))
labels={'a':'5 s (default)','b':'3 s','c':'2 s'}
rows={}
for f in sorted(glob.glob(os.path.join(d0,'[abc][0-9].json'))):
    v=os.path.basename(f)[0]; d=json.load(open(f))
    for r in d['runs']:
        rows.setdefault((r['protocol'],r['kind']),{}).setdefault(v,[]).append(r)
J=lambda xs,fn,fmt: ' / '.join(fmt.format(fn(r)) for r in xs)
for (p,k),vs in sorted(rows.items()):
    kind={'max':'max','light':'light loop','rate':'50 %'}[k]
    for v in sorted(vs):
        xs=vs[v]
        cols=[p,kind,labels[v],
          J(xs,lambda r:r['server']['refused503'],'{}'),
          J(xs,lambda r:r['server']['checkpointMeanS'],'{:.2f}'),
          J(xs,lambda r:r['ackToSilverS']['p99'],'{:.1f}'),
          J(xs,lambda r:r['ackedPerSec']/1000,'{:.1f}'),
          J(xs,lambda r:r['processedPerSec']/1000,'{:.1f}'),
          J(xs,lambda r:r['silverPerSec']/1000,'{:.1f}'),
          J(xs,lambda r:1e6*r['serverCores']/r['ackedPerSec'],'{:.1f}'),
          J(xs,lambda r:r['latencyMs']['p99'],'{:.0f}')]
        print('| '+' | '.join(cols)+' |')
