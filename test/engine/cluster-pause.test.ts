/**
 * A paused engine node (SIGSTOP: a long GC pause, a frozen VM) on a REAL 3-node JetStream cluster:
 * its leases go overdue while it sleeps; when it wakes (SIGCONT), the fence refuses whatever it was
 * committing, it gives its shards up and takes them again — restored from the lake, not from its
 * own disk. Every acknowledged event must still be in silver exactly once. Skipped only when
 * nats-server is missing.
 */
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { delay, engineNode, FROM_SOURCES, natsBed, until, view } from '../helpers/engine-node.js';
import { silverCounts } from '../helpers/lake.js';
import { explainMissing } from '../helpers/missing-events.js';
import { natsServerPath } from '../helpers/nats-cluster.js';
import { expectExactlyOnce, serveWith, stop, Traffic, userEnv } from '../helpers/served.js';

const SHARDS = 4;

const describeNats = natsServerPath() === undefined ? describe.skip : describe;

describeNats('a paused engine node (SIGSTOP longer than its lease) on JetStream', () => {
  const bed = natsBed('sluice-pause-');
  const children = bed.children;

  it('wakes up fenced, retakes its shards from the lake: every acknowledged event once in silver', async () => {
    const c = bed.nats();
    const dir = bed.dir();
    const lake = join(dir, 'lake');
    const e1 = await engineNode(dir, ['--log', c.urls.join(','), '--data', join(dir, 'e1', 'data'), '--lake', lake, '--shards', String(SHARDS), '--workers', '1', '--flush-interval', '500ms', '--allowed-lateness', '10m', '--lease-ttl', '4s', '--node-id', 'e1']);
    children.push(e1);
    const i1 = await serveWith(FROM_SOURCES, dir, ['--role', 'ingest', '--log', c.urls.join(','), '--data', join(dir, 'i1', 'data'), '--shards', String(SHARDS)], userEnv({}));
    children.push(i1);
    await until('e1 to own every shard', async () => (await view(e1)).shards.length === SHARDS, 60_000);

    const traffic = new Traffic();
    const load = traffic.run(i1.url, 'p', delay(20_000));
    // The engine node itself frozen past its lease: on waking, its renewal timer finds the leases overdue.
    await delay(2000);
    process.kill(e1.pid, 'SIGSTOP');
    await delay(6000);
    process.kill(e1.pid, 'SIGCONT');
    // Two of three NATS servers frozen: no quorum, so no renewal (and no append) succeeds, while the
    // engine goes on checkpointing what it read into the lake — until the fence refuses a publish.
    await delay(3000);
    c.signal(1, 'SIGSTOP');
    c.signal(2, 'SIGSTOP');
    await delay(6000);
    c.signal(1, 'SIGCONT');
    c.signal(2, 'SIGCONT');
    await load;

    let missing: string[] = [];
    await until('silver to hold every acknowledged event', async () => {
      const counts = await silverCounts(lake);
      missing = [...traffic.acked].filter((id) => !counts.has(id));
      return missing.length === 0;
    }, 90_000).catch(async (err: Error) => {
      const where = await explainMissing({ lake, missing, servers: c.urls, shards: SHARDS });
      throw new Error(`${err.message}: ${missing.length} of ${traffic.acked.size} acknowledged ids not in silver (${missing.slice(0, 8).join(', ')})\n${where}\n--- e1\n${e1.stderr().slice(-12000)}`);
    });
    expect(await stop(i1, 'SIGTERM'), i1.stderr().slice(-6000)).toBe(0);
    expect(await stop(e1, 'SIGTERM'), e1.stderr().slice(-12000)).toBe(0);
    expectExactlyOnce(await silverCounts(lake), traffic);
    expect(e1.stderr()).toContain('took over shard');
  }, 300_000);
});
