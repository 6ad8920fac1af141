import json,glob
rows={}
for f in sorted(glob.glob(__import__('os').path.join(__import__('os').path.dirname(__file__) or '.', '[ab][0-9].json'))):
    v=__import__('os').path.basename(f)[0]; d=json.load(open(f))
    for r in d['runs']:
        rows.setdefault((r['protocol'],r['kind']),{}).setdefault(v,[]).append(r)
J=lambda xs,fn,fmt: ' / '.join(fmt.format(fn(r)) for r in xs)
for (p,k),vs in sorted(rows.items()):
    kind={'max':'max','light':'light loop','rate':'50 %'}[k]
    for v in 'ab':
        xs=vs[v]; label='32 MiB' if v=='a' else '8 MiB'
        cols=[p,kind,label,
          J(xs,lambda r:r['server']['checkpointMeanS'],'{:.2f}'),
          J(xs,lambda r:r['ackToSilverS']['p99'],'{:.1f}'),
          J(xs,lambda r:r['ackedPerSec']/1000,'{:.1f}'),
          J(xs,lambda r:r['silverPerSec']/1000,'{:.1f}'),
          J(xs,lambda r:1e6*r['serverCores']/r['ackedPerSec'],'{:.1f}'),
          J(xs,lambda r:r['peakRssBytes']/2**20,'{:.0f}'),
          J(xs,lambda r:r['latencyMs']['p99'],'{:.0f}')]
        print('| '+' | '.join(cols)+' |')
