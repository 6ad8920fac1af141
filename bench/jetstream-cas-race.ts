/**
 * Measures whether the server serializes JetStream's compare-and-set headers between two
 * clients racing on one subject — the question behind "one writer per shard" and behind KV
 * leases (docs/SCALE-OUT.md). On a 3-node R3 loopback cluster, `--rounds` times each:
 *
 *   subject CAS: two clients publish to one subject at the same instant, both expecting the
 *              subject's last sequence (> 0) — what the first, dense-offset JetStreamLog did;
 *              counts rounds in which both succeeded (one offset would be stored twice).
 *   log:       two JetStreamLogs (two writers, offsets = stream sequences, no CAS) append to one
 *              shard at the same instant; counts rounds in which they got the same offset or the
 *              subject does not hold both records (expected 0).
 *   kv create: two clients `create` one fresh KV key at once (expected last subject seq 0);
 *              counts rounds in which both succeeded.
 *   kv update: two clients `update` one key from the same revision (expected seq > 0);
 *              counts rounds in which both succeeded.
 *
 *   node --import tsx bench/jetstream-cas-race.ts [--rounds 200] [--json]
 *
 * Not a timed test: the outcome depends on the server version (measured on Debian's 2.9.10).
 */
import { benchArgs } from './args.js';
import { connect } from '@nats-io/transport-node';
import { Kvm } from '@nats-io/kv';
import { JetStreamLogs } from '../log/jetstream-log.js';
import { startNatsCluster } from '../test/helpers/nats-cluster.js';

const { values } = benchArgs(import.meta.url, { options: { rounds: { type: 'string', default: '200' }, json: { type: 'boolean', default: false } } });
const rounds = Number(values.rounds);

const cluster = await startNatsCluster({ nodes: 3 });
const result = { server: '', rounds, subjectCasBoth: 0, logDuplicateOffsetRounds: 0, kvCreateBoth: 0, kvUpdateBoth: 0 };
try {
  const opts = { servers: cluster.urls, stream: 'RACE', subjectPrefix: 'race', replicas: 3 };
  const a = await JetStreamLogs.connect({ ...opts, servers: [cluster.urls[0]!], writerId: 'A' });
  const b = await JetStreamLogs.connect({ ...opts, servers: [cluster.urls[1]!], writerId: 'B' });
  result.server = a.nc.info?.version ?? '';
  for (let r = 0; r < rounds; r++) {
    const subject = `race.events.s${r % 1000}`;
    const first = await a.js.publish(subject, new Uint8Array(8)); // both then expect its sequence
    const cas = await Promise.allSettled([a.js.publish(subject, new Uint8Array(8), { expect: { lastSubjectSequence: first.seq } }), b.js.publish(subject, new Uint8Array(8), { expect: { lastSubjectSequence: first.seq } })]);
    if (cas.every((x) => x.status === 'fulfilled')) result.subjectCasBoth++;
    await a.jsm.streams.purge('RACE', { filter: subject });
    const [la, lb] = [await a.open(r % 1000), await b.open(r % 1000)];
    const [oa, ob] = await Promise.allSettled([la.append(new Uint8Array(8)), lb.append(new Uint8Array(8))]);
    const stored = (await a.jsm.streams.info('RACE', { subjects_filter: subject })).state.subjects?.[subject] ?? 0;
    if (oa.status !== 'fulfilled' || ob.status !== 'fulfilled' || oa.value === ob.value || stored !== 2) result.logDuplicateOffsetRounds++;
    await a.jsm.streams.purge('RACE', { filter: subject });
  }
  await a.close();
  await b.close();

  const ca = await connect({ servers: cluster.urls[0] });
  const cb = await connect({ servers: cluster.urls[1] });
  const kva = await new Kvm(ca).create('RACE_KV', { replicas: 3, history: 1 });
  const kvb = await new Kvm(cb).open('RACE_KV');
  for (let r = 0; r < rounds; r++) {
    const c = await Promise.allSettled([kva.create(`c${r}`, 'a'), kvb.create(`c${r}`, 'b')]);
    if (c.every((x) => x.status === 'fulfilled')) result.kvCreateBoth++;
    const rev = await kva.put(`u${r}`, 'x');
    const u = await Promise.allSettled([kva.update(`u${r}`, 'a', rev), kvb.update(`u${r}`, 'b', rev)]);
    if (u.every((x) => x.status === 'fulfilled')) result.kvUpdateBoth++;
  }
  await ca.close();
  await cb.close();
} finally {
  await cluster.stop();
}
if (values.json) console.log(JSON.stringify(result));
else {
  console.log(`nats-server ${result.server}, R3 on loopback, ${rounds} rounds each:`);
  console.log(`  subject CAS (expected last subject seq > 0): both succeeded in ${result.subjectCasBoth} rounds`);
  console.log(`  log (offset = stream sequence): same offset or a record missing in ${result.logDuplicateOffsetRounds} rounds`);
  console.log(`  kv create (expected seq 0): both succeeded in ${result.kvCreateBoth} rounds`);
  console.log(`  kv update (same revision, expected seq > 0): both succeeded in ${result.kvUpdateBoth} rounds`);
}
