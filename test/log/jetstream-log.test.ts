/**
 * JetStreamLog against a REAL 3-node JetStream cluster on loopback (nats-server processes with
 * routes, one store dir each): the shared ShardLog conformance suite, Msg-Id de-duplication of a
 * retried publish, two writers racing on the same shards, kill -9 of a server (the stream leader) in the
 * middle of appends, truncation (also across a kill -9 of a replica). Skipped only when nats-server is not installed (.ci/run installs it).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect } from '@nats-io/transport-node';
import { AckPolicy, DeliverPolicy, jetstreamManager, type JetStreamPublishOptions, type JsMsg, type PubAck } from '@nats-io/jetstream';
import { CHUNK_HEADER, JetStreamLogs, parseNatsLog, parseNatsLogUrl, shardSubject, validateJetStreamLogOptions, versionAtLeast, type JetStreamLog, type JetStreamLogOptions } from '../../log/jetstream-log.js';
import type { ShardLog } from '../../log/log.js';
import { natsServerPath, startNatsCluster, type NatsCluster } from '../helpers/nats-cluster.js';
import { describeLogConformance, payload, readAll, type LogPlace } from './log-conformance.js';

const natsServer = natsServerPath();
if (natsServer === undefined) {
  console.warn('test/log/jetstream-log.test.ts: SKIPPED — nats-server is not installed (apt-get install -y nats-server; .ci/run does it)');
}
const describeNats = natsServer === undefined ? describe.skip : describe;

let cluster: NatsCluster | undefined;
let streams = 0;
/** A fresh stream per test: tests never see each other's records. */
const freshStream = () => `T${process.pid}_${++streams}`;

/** Each test's stream has its own subjects (streams may not overlap): prefix `t<n>.sluice`. */
const prefixOf = (stream: string) => `t${stream.split('_').at(-1)}.sluice`;

function options(stream: string, extra: Partial<JetStreamLogOptions> = {}): JetStreamLogOptions {
  return { servers: cluster!.urls, stream, subjectPrefix: prefixOf(stream), replicas: 3, appendTimeoutMs: 60_000, publishTimeoutMs: 2_000, ...extra };
}

async function deleteStream(stream: string): Promise<void> {
  const nc = await connect({ servers: cluster!.urls.filter((_, i) => cluster!.running(i)) });
  try {
    await (await jetstreamManager(nc)).streams.delete(stream).catch(() => undefined);
  } finally {
    await nc.close();
  }
}

/** Brings node `killed` (if any) back and waits for the cluster's meta leader. */
async function restartIfKilled(killed: number | undefined): Promise<void> {
  if (killed === undefined || cluster!.running(killed)) return;
  await cluster!.restart(killed);
  await cluster!.waitForMetaLeader();
}

/** Byte equality of big payloads (vitest's deep equality is slow on megabytes). */
const sameBytes = (a: Uint8Array, b: Uint8Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));

/**
 * Reads from `from` until the first record is `first` (bounded: 100 tries, 100 ms apart). A purge
 * is replicated: a read's consumer on a follower may still see purged records (real ones, right
 * offsets) for a moment after the purge returned.
 */
async function readSettled(log: Pick<ShardLog, 'read'>, from: number, first: number): Promise<Array<{ offset: number; payload: Uint8Array }>> {
  let all = await readAll(log, from);
  for (let i = 0; i < 100 && all[0]?.offset !== first; i++) {
    await new Promise((r) => setTimeout(r, 100));
    all = await readAll(log, from);
  }
  return all;
}

/** Messages stored on the subject (what a consumer could ever read). */
async function storedOnSubject(logs: JetStreamLogs, subject: string): Promise<number> {
  const info = await logs.jsm.streams.info(logs.options.stream, { subjects_filter: subject });
  return info.state.subjects?.[subject] ?? 0;
}

/** A writer whose records' last chunk (`1/2`) waits until `release()`: a big record stays half written meanwhile. */
async function gatedWriter(stream: string): Promise<{ logs: JetStreamLogs; release: () => void }> {
  let release: () => void = () => undefined;
  const gate = new Promise<void>((r) => (release = r));
  let logs: JetStreamLogs | undefined;
  const publish = async (subject: string, data: Uint8Array, o: Partial<JetStreamPublishOptions>) => {
    if (o.headers?.get(CHUNK_HEADER) === '1/2') await gate;
    return logs!.js.publish(subject, data, o);
  };
  logs = await JetStreamLogs.connect(options(stream, { publish }));
  return { logs, release };
}

/**
 * Begins a big (two-chunk) record on a gated writer's log and returns once its first chunk is
 * stored (bounded wait: on a loaded machine that took more than 5 s once, which broke the setup,
 * not the log); `append` resolves to the record's offset after the gate's release.
 */
async function beginBigRecord(logs: JetStreamLogs, log: JetStreamLog): Promise<{ big: Uint8Array; append: Promise<number> }> {
  const big = payload(1, Math.floor(logs.maxPayload * 1.5));
  const append = log.append(big);
  for (let i = 0; i < 600 && (await storedOnSubject(logs, log.subject)) < 2; i++) await new Promise((r) => setTimeout(r, 50));
  return { big, append };
}

describeNats('JetStreamLog on a 3-node cluster', () => {
  beforeAll(async () => {
    cluster = await startNatsCluster({ nodes: 3 });
  }, 60_000);
  afterAll(async () => {
    await cluster?.stop();
  });

  describeLogConformance({
    name: 'JetStreamLog (R3)',
    async place(): Promise<LogPlace> {
      const stream = freshStream();
      const opened: JetStreamLogs[] = [];
      return {
        async open() {
          // A new connection and writer id each time: a reopen is a new process.
          const logs = await JetStreamLogs.connect(options(stream, { truncateGraceMs: 0 }));
          opened.push(logs);
          return logs.open(3);
        },
        async cleanup() {
          for (const l of opened) await l.close();
          await deleteStream(stream);
        },
      };
    },
  });

  it('every node of a stream uses the shard count it was first opened with: another is refused (shards_mismatch); a stream deleted and created again starts over', async () => {
    const stream = freshStream();
    const first = await JetStreamLogs.connect(options(stream));
    const opened = [first];
    const connect = async () => {
      const l = await JetStreamLogs.connect(options(stream));
      opened.push(l);
      return l;
    };
    try {
      await first.openAll(3);
      await expect((await connect()).openAll(4)).rejects.toMatchObject({ code: 'shards_mismatch', message: expect.stringMatching(/used with 3 shards, not 4/) });
      await expect((await connect()).openAll(2)).rejects.toMatchObject({ code: 'shards_mismatch' });
      expect((await (await connect()).openAll(3)).shards).toHaveLength(3);
      for (const l of opened.splice(0)) await l.close();
      await deleteStream(stream);
      // A new stream of the same name: the old record is stale, the first opener records anew.
      expect((await (await connect()).openAll(4)).shards).toHaveLength(4);
      await expect((await connect()).openAll(3)).rejects.toMatchObject({ code: 'shards_mismatch', message: expect.stringMatching(/used with 4 shards, not 3/) });
    } finally {
      for (const l of opened) await l.close();
      await deleteStream(stream);
    }
  }, 60_000);

  // One of the three is the meta leader: until a new one is elected, JetStream's API requests (the
  // manager's first, account info) time out. A node started then exited with "no usable JetStream".
  it('connects right after kill -9 of any node, the meta leader too: its first requests are retried like the stream\'s', async () => {
    const stream = freshStream();
    const took: string[] = [];
    try {
      await (await JetStreamLogs.connect(options(stream))).close();
      for (let i = 0; i < 3; i++) {
        await cluster!.kill(i);
        const started = performance.now();
        try {
          const logs = await JetStreamLogs.connect(options(stream, { servers: cluster!.urls.filter((_, j) => j !== i), appendTimeoutMs: 30_000 }));
          await logs.close();
          took.push(`node ${i}: ${Math.round(performance.now() - started)} ms`);
        } finally {
          await restartIfKilled(i);
        }
      }
    } finally {
      console.log(`connect after kill -9: ${took.join(', ')}`);
      await deleteStream(stream);
    }
    expect(took).toHaveLength(3);
  }, 120_000);

  it('creates the stream R3 with per-shard subjects and the DLQ subject; a record\'s offset is its stream sequence', async () => {
    const stream = freshStream();
    const logs = await JetStreamLogs.connect(options(stream));
    try {
      const { shards, dlq } = await logs.openAll(3);
      expect(shards.every((l) => l.denseOffsets === false)).toBe(true);
      const info = await logs.jsm.streams.info(stream);
      expect(info.config.num_replicas).toBe(3);
      expect(info.config.subjects).toEqual([`${prefixOf(stream)}.events.*`, `${prefixOf(stream)}.dlq`]);
      expect(info.cluster?.replicas?.length).toBe(2);
      // Interleaved appends: shard s's record of round i is stream sequence 3i + s + 1.
      for (let i = 0; i < 4; i++) {
        for (const l of shards) expect(await l.append(payload(i * 10 + l.shard))).toBe(3 * i + l.shard + 1);
      }
      expect(await dlq.append(payload(99))).toBe(13);
      for (const l of shards) {
        const all = await readAll(l);
        expect(all.map((r) => r.offset)).toEqual([0, 1, 2, 3].map((i) => 3 * i + l.shard + 1));
        all.forEach((r, i) => expect(r.payload).toEqual(payload(i * 10 + l.shard)));
        expect(l.durableNextOffset).toBe(3 * 3 + l.shard + 2);
      }
      expect((await readAll(dlq)).map((r) => r.payload)).toEqual([payload(99)]);
      expect(dlq.subject).toBe(`${prefixOf(stream)}.dlq`);
    } finally {
      await logs.close();
      await deleteStream(stream);
    }
  });

  it('a retried publish whose PubAck was lost is stored once (same Nats-Msg-Id)', async () => {
    const stream = freshStream();
    let setup: JetStreamLogs | undefined;
    let calls = 0;
    const acks: PubAck[] = [];
    // The real publish; on the 2nd append its first attempt's PubAck is "lost" (the append sees a timeout and retries).
    const publish = async (subject: string, data: Uint8Array, o: Partial<JetStreamPublishOptions>) => {
      calls++;
      const ack = await setup!.js.publish(subject, data, o);
      acks.push(ack);
      if (calls === 2) throw Object.assign(new Error('TIMEOUT: injected lost PubAck'), { code: 'TIMEOUT' });
      return ack;
    };
    const logs = (setup = await JetStreamLogs.connect(options(stream, { publish })));
    try {
      const log = await logs.open(0);
      const offsets = [await log.append(payload(0)), await log.append(payload(1)), await log.append(payload(2))];
      expect(calls).toBe(4);
      // Attempt 2 of record 1 is answered "duplicate" with attempt 1's sequence.
      expect(acks.map((a) => a.duplicate)).toEqual([false, false, true, false]);
      expect(acks[2]!.seq).toBe(acks[1]!.seq);
      expect(offsets).toEqual([acks[0]!.seq, acks[1]!.seq, acks[3]!.seq]);
      expect(await storedOnSubject(logs, log.subject)).toBe(3);
      const all = await readAll(log);
      expect(all.map((r) => r.offset)).toEqual(offsets);
      all.forEach((r, i) => expect(r.payload).toEqual(payload(i)));
      // The same message published again by hand (same Msg-Id) is still not stored twice.
      const stored = await logs.jsm.streams.getMessage(stream, { seq: offsets[1]! });
      const again = await logs.js.publish(log.subject, payload(1), { msgID: stored!.header.get('Nats-Msg-Id') });
      expect(again).toMatchObject({ duplicate: true, seq: offsets[1] });
      expect(await storedOnSubject(logs, log.subject)).toBe(3);
    } finally {
      await logs.close();
      await deleteStream(stream);
    }
  });

  it('two writers on different nodes append concurrently to the same shards (with lost PubAcks): nothing lost, nothing stored twice, one total order', async () => {
    const c = cluster!;
    const stream = freshStream();
    let lostEvery = 0;
    let aPublishes = 0;
    let setupA: JetStreamLogs | undefined;
    // Writer A loses every 7th PubAck after the record was stored: its retry must be stored once.
    const publishA = async (subject: string, data: Uint8Array, o: Partial<JetStreamPublishOptions>) => {
      const ack = await setupA!.js.publish(subject, data, o);
      if (++aPublishes % 7 === 0) {
        lostEvery++;
        throw Object.assign(new Error('TIMEOUT: injected lost PubAck'), { code: 'TIMEOUT' });
      }
      return ack;
    };
    const a = (setupA = await JetStreamLogs.connect(options(stream, { servers: [c.urls[0]!], writerId: 'ingestA', publish: publishA })));
    const b = await JetStreamLogs.connect(options(stream, { servers: [c.urls[1]!], writerId: 'ingestB' }));
    const r = await JetStreamLogs.connect(options(stream, { servers: [c.urls[2]!] }));
    try {
      const shards = 3;
      const perWriter = 120;
      const [la, lb] = [(await a.openAll(shards)).shards, (await b.openAll(shards)).shards];
      const tag = (w: number, s: number, i: number) => payload(w * 1_000_000 + s * 1000 + i, 48);
      // Every shard gets both writers' appends at the same time, several in flight per writer.
      const acked: Array<Map<number, Uint8Array>> = Array.from({ length: shards }, () => new Map());
      const write = async (w: number, logs: typeof la, s: number) => {
        for (let i = 0; i < perWriter; i += 4) {
          const batch = [0, 1, 2, 3].map((k) => tag(w, s, i + k));
          const offsets = await Promise.all(batch.map((p) => logs[s]!.append(p)));
          offsets.forEach((o, k) => {
            expect(acked[s]!.has(o)).toBe(false); // two appends never share an offset
            acked[s]!.set(o, batch[k]!);
          });
        }
      };
      await Promise.all(Array.from({ length: shards }, (_, s) => [write(1, la, s), write(2, lb, s)]).flat());
      expect(lostEvery).toBeGreaterThan(10);
      for (let s = 0; s < shards; s++) {
        expect(acked[s]!.size).toBe(2 * perWriter);
        expect(await storedOnSubject(a, la[s]!.subject)).toBe(2 * perWriter); // nothing stored twice
        const reader = await r.open(s);
        expect(reader.durableNextOffset).toBe(Math.max(...acked[s]!.keys()) + 1);
        const all = await readAll(reader);
        // Exactly the acknowledged records, each at the offset its append resolved with, in stream order.
        expect(all.map((x) => x.offset)).toEqual([...acked[s]!.keys()].sort((x, y) => x - y));
        for (const x of all) expect(x.payload).toEqual(acked[s]!.get(x.offset));
        // Both writers interleave on the subject (they did race).
        const writers = all.map((x) => new DataView(x.payload.buffer).getUint32(0, true) >= 2_000_000);
        expect(writers.some((w, i) => i > 0 && w !== writers[i - 1])).toBe(true);
      }
    } finally {
      await a.close();
      await b.close();
      await r.close();
      await deleteStream(stream);
    }
  });

  it('kill -9 of the stream leader mid-appends: appends still ack (R3 quorum), nothing acked is lost or stored twice', async () => {
    const c = cluster!;
    const stream = freshStream();
    const logs = await JetStreamLogs.connect(options(stream));
    let killed: number | undefined;
    try {
      const { shards } = await logs.openAll(4);
      const info = await logs.jsm.streams.info(stream);
      killed = Number(info.cluster!.leader!.slice(1)) - 1; // server names are n1…n3
      const perShard = 150;
      const acked: Array<Map<number, number>> = shards.map(() => new Map());
      let total = 0;
      let killedAt = -1;
      const writers = shards.map(async (log, s) => {
        for (let i = 0; i < perShard; i++) {
          const offset = await log.append(payload(s * 10_000 + i, 512));
          acked[s]!.set(offset, i);
          total++;
          if (total === 100 && killedAt < 0) {
            killedAt = total;
            await c.kill(killed!);
          }
        }
      });
      await Promise.all(writers);
      expect(killedAt).toBe(100);
      expect(c.running(killed)).toBe(false);
      // Every append acked; each shard holds exactly its acked records, in offset order, byte-exact.
      for (const log of shards) {
        const mine = acked[log.shard]!;
        expect(mine.size).toBe(perShard);
        const all = await readAll(log);
        expect(all.map((r) => r.offset)).toEqual([...mine.keys()].sort((x, y) => x - y));
        expect(all.map((r) => mine.get(r.offset))).toEqual(Array.from({ length: perShard }, (_, i) => i)); // call order
        all.forEach((r) => expect(r.payload).toEqual(payload(log.shard * 10_000 + mine.get(r.offset)!, 512)));
        expect(await storedOnSubject(logs, log.subject)).toBe(perShard);
      }
      const after = await logs.jsm.streams.info(stream);
      expect(after.cluster!.leader).not.toBe(`n${killed + 1}`);
      // The killed node comes back with its store and catches up; a fresh reader sees the same log.
      await c.restart(killed);
      await c.waitForMetaLeader();
      const reader = await JetStreamLogs.connect({ ...options(stream), servers: [c.urls[killed]!] });
      try {
        const l = await reader.open(2);
        const offsets = [...acked[2]!.keys()].sort((x, y) => x - y);
        expect(l.durableNextOffset).toBe(offsets.at(-1)! + 1);
        expect((await readAll(l)).map((r) => r.offset)).toEqual(offsets);
      } finally {
        await reader.close();
      }
    } finally {
      await restartIfKilled(killed);
      await logs.close();
      await deleteStream(stream);
    }
  }, 120_000);

  // The consumer on the client's own server is the harder case: the client reconnects elsewhere
  // and its pull waits for the dead consumer's info with no end of its own (a CI run hung here
  // until the timeout; log/jetstream-log.ts FETCH_STALL_MS ends such a pull).
  it.each([
    ['another server than the client\'s', false],
    ['the client\'s own server', true],
  ])('kill -9 of the server holding a read\'s consumer mid-read (%s): the read goes on from a new consumer, every record once, in order', async (_case, own) => {
    const c = cluster!;
    const stream = freshStream();
    const logs = await JetStreamLogs.connect(options(stream));
    let killed: number | undefined;
    try {
      const log = await logs.open(0);
      const n = 300;
      const offsets: number[] = [];
      for (let i = 0; i < n; i++) offsets.push(await log.append(payload(i, 256)));
      // A read's consumer (R1) is placed on a random server: start reads until it is on the wanted one.
      let got: Array<{ offset: number; payload: Uint8Array }> = [];
      let reader: AsyncGenerator<{ offset: number; payload: Uint8Array }> | undefined;
      for (let attempt = 0; attempt < 40 && killed === undefined; attempt++) {
        reader = log.read(1);
        got = [];
        for (let i = 0; i < 10; i++) got.push((await reader.next()).value!);
        const consumers = await logs.jsm.consumers.list(stream).next();
        const mine = consumers.find((ci) => ci.name.startsWith('sluice_read_'));
        expect(mine?.cluster?.leader).toMatch(/^n\d$/);
        if ((mine!.cluster!.leader === logs.nc.info?.server_name) === own) killed = Number(mine!.cluster!.leader!.slice(1)) - 1;
        else await reader.return(undefined);
      }
      expect(killed, 'a read whose consumer is on the wanted server within 40 attempts').toBeDefined();
      await c.kill(killed!);
      for await (const r of { [Symbol.asyncIterator]: () => reader! }) got.push(r);
      expect(got.map((r) => r.offset)).toEqual(offsets);
      got.forEach((r, i) => expect(sameBytes(r.payload, payload(i, 256))).toBe(true));
    } finally {
      await restartIfKilled(killed);
      await logs.close();
      await deleteStream(stream);
    }
  }, 120_000);

  it('truncateBefore purges the subject below the offset only, other shards untouched, and reads from a purged offset start at the lowest kept one', async () => {
    const stream = freshStream();
    const logs = await JetStreamLogs.connect(options(stream, { truncateGraceMs: 0 }));
    try {
      const { shards } = await logs.openAll(2);
      const offsets: number[][] = [[], []];
      for (let i = 0; i < 300; i++) offsets[i % 2]!.push(await shards[i % 2]!.append(payload(i)));
      const [s0, s1] = shards as [NonNullable<(typeof shards)[0]>, NonNullable<(typeof shards)[1]>];
      const fresh = await JetStreamLogs.connect(options(stream, { truncateGraceMs: 0 }));
      try {
        const f0 = await fresh.open(0);
        await f0.truncateBefore(offsets[0]![97]!);
        expect(await storedOnSubject(logs, s0.subject)).toBe(150 - 97);
        expect(await storedOnSubject(logs, s1.subject)).toBe(150);
        expect((await readSettled(f0, 0, offsets[0]![97]!)).map((r) => r.offset)).toEqual(offsets[0]!.slice(97));
        expect((await readSettled(s0, 10, offsets[0]![97]!)).map((r) => r.offset)).toEqual(offsets[0]!.slice(97));
        expect((await readAll(s0, offsets[0]![120]!))[0]!.payload).toEqual(payload(240));
      } finally {
        await fresh.close();
      }
      await s1.truncateBefore(offsets[1]![149]! + 1); // everything: the newest record stays
      expect(await storedOnSubject(logs, s1.subject)).toBe(1);
      expect((await readSettled(s1, 0, offsets[1]![149]!)).map((r) => r.offset)).toEqual([offsets[1]![149]]);
      expect(await s1.append(payload(1000))).toBeGreaterThan(offsets[1]![149]!);
      // By default a log purges nothing in its first 2 × appendTimeoutMs (a chunked record begun before may lie below).
      const late = await JetStreamLogs.connect(options(stream));
      try {
        const l0 = await late.open(0);
        await l0.truncateBefore(offsets[0]![149]!);
        expect(await storedOnSubject(logs, s0.subject)).toBe(150 - 97);
      } finally {
        await late.close();
      }
    } finally {
      await logs.close();
      await deleteStream(stream);
    }
  });

  it('message-delete truncation of records another owner deleted already (a shard that moved) succeeds quietly', async () => {
    const stream = freshStream();
    const logs = await JetStreamLogs.connect(options(stream, { truncateGraceMs: 0, truncateBy: 'delete' }));
    try {
      const s0 = await logs.open(0);
      const offsets: number[] = [];
      for (let i = 0; i < 6; i++) offsets.push(await s0.append(payload(i)));
      expect((await readAll(s0, 0)).map((r) => r.offset)).toEqual(offsets); // these are the deletes it will make
      const other = await JetStreamLogs.connect(options(stream, { truncateGraceMs: 0, truncateBy: 'delete' }));
      try {
        await (await other.open(0)).truncateBefore(offsets[4]!);
      } finally {
        await other.close();
      }
      // It failed with "JetStream message delete … failed: no message found" (logged as a warning with its stack).
      await s0.truncateBefore(offsets[4]!);
      expect(await storedOnSubject(logs, s0.subject)).toBe(2);
    } finally {
      await logs.close();
      await deleteStream(stream);
    }
  });

  it('pull responses lost in transit (a client reconnecting mid-batch; no acks, so the consumer moved past them): the read notices the gap in delivery sequences and reads them again from a new consumer', async () => {
    const stream = freshStream();
    let dropped = 0;
    // The first pull of 20 or more messages loses 10 from its middle on the way to the client.
    const onFetch = (messages: JsMsg[]): JsMsg[] => {
      if (dropped > 0 || messages.length < 20) return messages;
      dropped = 10;
      return [...messages.slice(0, 5), ...messages.slice(15)];
    };
    const writer = await JetStreamLogs.connect(options(stream));
    const lossy = await JetStreamLogs.connect(options(stream, { onFetch }));
    try {
      const log = await writer.open(0);
      const offsets: number[] = [];
      for (let i = 0; i < 200; i++) offsets.push(await log.append(payload(i, 64)));
      const reader = await lossy.open(0);
      const got = await readAll(reader, 1);
      expect(dropped).toBe(10);
      expect(got.map((r) => r.offset)).toEqual(offsets);
      got.forEach((r, i) => expect(sameBytes(r.payload, payload(i, 64))).toBe(true));
    } finally {
      await writer.close();
      await lossy.close();
      await deleteStream(stream);
    }
  });

  it('truncation survives a kill -9 of a replica: after its restart, every server still serves every record of the other shards (nats-server < 2.9.18 replays a filtered purge as a purge of all subjects)', async () => {
    const c = cluster!;
    /** Shard 1's sequences as a consumer hosted on each server delivers them (placement is random: consumers are made until each server hosted one). */
    const perServer = async (logs: JetStreamLogs, subject: string): Promise<Map<string, number[]>> => {
      const seen = new Map<string, number[]>();
      for (let k = 0; k < 60 && seen.size < 3; k++) {
        const ci = await logs.jsm.consumers
          .add(logs.options.stream, { filter_subject: subject, deliver_policy: DeliverPolicy.All, ack_policy: AckPolicy.None, mem_storage: true, num_replicas: 1 })
          .catch(() => undefined); // the restarted server may still be catching up with the meta layer
        if (ci === undefined) {
          await new Promise((r) => setTimeout(r, 250));
          continue;
        }
        const host = ci.cluster?.leader ?? '?';
        if (!seen.has(host)) {
          const seqs: number[] = [];
          const got = await (await logs.js.consumers.get(logs.options.stream, ci.name)).fetch({ max_messages: 500, expires: 1500 });
          for await (const m of got) seqs.push(m.seq);
          seen.set(host, seqs);
        }
        await logs.jsm.consumers.delete(logs.options.stream, ci.name).catch(() => undefined);
      }
      return seen;
    };
    const run = async (truncateBy: 'purge' | 'delete'): Promise<{ expected: number[]; seen: Map<string, number[]> }> => {
      const stream = freshStream();
      const logs = await JetStreamLogs.connect(options(stream, { truncateGraceMs: 0, truncateBy }));
      let killed: number | undefined;
      try {
        const { shards } = await logs.openAll(2);
        const [s0, s1] = shards as [JetStreamLog, JetStreamLog];
        const expected: number[] = [];
        for (let i = 0; i < 100; i++) {
          const offset = await shards[i % 2]!.append(payload(i, 64));
          if (i % 2 === 1) expected.push(offset);
        }
        await s0.truncateBefore((await s0.sync()) - 20); // an engine's truncation after a checkpoint of shard 0
        for (let i = 100; i < 120; i++) {
          const offset = await shards[i % 2]!.append(payload(i, 64));
          if (i % 2 === 1) expected.push(offset);
        }
        const info = await logs.jsm.streams.info(stream);
        killed = ['n1', 'n2', 'n3'].map((n) => Number(n.slice(1)) - 1).find((i) => `n${i + 1}` !== info.cluster?.leader)!;
        await new Promise((r) => setTimeout(r, 500));
        await c.kill(killed); // a follower, after the truncation is in its Raft log
        await c.restart(killed);
        await c.waitForMetaLeader();
        await new Promise((r) => setTimeout(r, 2000)); // caught up, as far as the cluster can tell
        return { expected, seen: await perServer(logs, s1.subject) };
      } finally {
        await restartIfKilled(killed);
        await logs.close();
        await deleteStream(stream);
      }
    };
    const safe = await run('delete');
    expect(safe.seen.size).toBe(3);
    for (const [host, seqs] of safe.seen) expect(seqs, `shard 1 as served by ${host}`).toEqual(safe.expected);
    // The default on this server: message deletes unless it is 2.9.18 or later.
    const probe = await JetStreamLogs.connect(options(freshStream()));
    try {
      expect(probe.truncatesByPurge).toBe(versionAtLeast(probe.nc.info?.version, [2, 9, 18]));
      if (probe.truncatesByPurge) return;
    } finally {
      await probe.close();
    }
    // The hazard itself, on this (affected) server: with a filtered purge, the restarted replica lost shard 1's records.
    const purged = await run('purge');
    expect([...purged.seen.values()].some((seqs) => seqs.length < purged.expected.length)).toBe(true);
  }, 180_000);

  it('reads records written by another process from a cold start; sync() learns new ones', async () => {
    const stream = freshStream();
    const w = await JetStreamLogs.connect(options(stream));
    const r = await JetStreamLogs.connect(options(stream));
    try {
      const [writer, other] = [await w.open(0), await w.open(1)];
      const mine: number[] = [];
      for (let i = 0; i < 500; i++) {
        const o = await (i % 5 === 0 ? other : writer).append(payload(i, 16));
        if (i % 5 !== 0) mine.push(o);
      }
      const reader = await r.open(0);
      expect(reader.durableNextOffset).toBe(mine.at(-1)! + 1);
      const tail = await readAll(reader, mine[333]!);
      expect(tail.map((x) => x.offset)).toEqual(mine.slice(333));
      // Record k of shard 0 is the k-th i with i % 5 !== 0.
      const shard0 = Array.from({ length: 500 }, (_, i) => i).filter((i) => i % 5 !== 0);
      tail.forEach((x, k) => expect(x.payload).toEqual(payload(shard0[333 + k]!, 16)));
      const next = await writer.append(payload(9999, 16));
      expect(reader.durableNextOffset).toBe(mine.at(-1)! + 1);
      expect(await reader.sync()).toBe(next + 1);
      expect((await readAll(reader, mine.at(-1)! + 1)).map((x) => x.payload)).toEqual([payload(9999, 16)]);
    } finally {
      await w.close();
      await r.close();
      await deleteStream(stream);
    }
  });

  it('at maxBytes the stream refuses appends (log_full) instead of dropping unconsumed records; truncation makes room', async () => {
    const stream = freshStream();
    const logs = await JetStreamLogs.connect(options(stream, { maxBytes: 64 * 1024, truncateGraceMs: 0 }));
    try {
      const info = await logs.jsm.streams.info(stream);
      expect(info.config).toMatchObject({ discard: 'new', max_bytes: 64 * 1024, max_age: 0 });
      const log = await logs.open(0);
      let full: unknown;
      const offsets: number[] = [];
      for (let n = 0; n < 200; n++) {
        try {
          offsets.push(await log.append(payload(n, 1000)));
        } catch (err) {
          full = err;
          break;
        }
      }
      const n = offsets.length;
      expect(full).toMatchObject({ code: 'log_full', domain: 'external', retry: 'backoff' });
      expect(n).toBeGreaterThan(10);
      expect((await readAll(log)).map((r) => r.offset)).toEqual(offsets); // nothing dropped
      await log.truncateBefore(offsets[n - 5]!);
      const more = await log.append(payload(n, 1000));
      expect((await readSettled(log, 0, offsets[n - 5]!)).map((r) => r.offset)).toEqual([...offsets.slice(n - 5), more]);
    } finally {
      await logs.close();
      await deleteStream(stream);
    }
  });

  it('stores a record above max_payload as chunks (offset = last chunk), reads it back whole with another writer\'s records interleaved, also from a read starting inside it', async () => {
    const stream = freshStream();
    const logs = await JetStreamLogs.connect(options(stream));
    const other = await JetStreamLogs.connect(options(stream, { writerId: 'other' }));
    try {
      const log = await logs.open(0);
      const small = await other.open(0);
      const big = (i: number) => payload(i, Math.floor(logs.maxPayload * 2.5));
      const expected = new Map<number, Uint8Array>();
      const put = async (l: typeof log, p: Uint8Array) => expected.set(await l.append(p), p);
      await put(log, payload(0));
      // A big record while the other writer appends small ones to the same subject.
      await Promise.all([put(log, big(1)), (async () => { for (let i = 0; i < 6; i++) await put(small, payload(100 + i)); })()]);
      await put(log, big(3)); // the subject's last record is chunked
      expect(await storedOnSubject(logs, log.subject)).toBe(1 + 3 + 6 + 3);
      const m = await logs.jsm.streams.getMessage(stream, { last_by_subj: shardSubject(prefixOf(stream), 0) });
      expect(m!.header.get(CHUNK_HEADER)).toBe('2/3');
      expect(expected.has(m!.seq)).toBe(true);
      const offsets = [...expected.keys()].sort((x, y) => x - y);
      const check = (all: Array<{ offset: number; payload: Uint8Array }>, from: number) => {
        expect(all.map((r) => r.offset)).toEqual(offsets.filter((o) => o >= from));
        all.forEach((r) => expect(sameBytes(r.payload, expected.get(r.offset)!)).toBe(true));
      };
      check(await readAll(log), 0);
      const cold = await JetStreamLogs.connect(options(stream));
      try {
        const l = await cold.open(0);
        expect(l.nextOffset).toBe(offsets.at(-1)! + 1);
        // From the last chunk's sequence: chunks 0 and 1 lie before the read's start and are fetched by sequence.
        check(await readAll(l, offsets.at(-1)!), offsets.at(-1)!);
        check(await readAll(l, offsets[1]! - 1), offsets[1]! - 1);
        // readAt: exactly the record at an offset (a chunked one whole), nothing where no record of the subject ends.
        for (const o of offsets) expect(sameBytes((await l.readAt(o))!.payload, expected.get(o)!)).toBe(true);
        expect(await l.readAt(offsets.at(-1)! - 1)).toBeUndefined(); // chunk 1 of 3
        expect(await l.readAt(offsets.at(-1)! + 1000)).toBeUndefined(); // past the stream's end
        const shard1 = await cold.open(1);
        const o1 = await shard1.append(payload(9));
        expect(await l.readAt(o1)).toBeUndefined(); // another subject's message
        expect((await shard1.readAt(o1))?.offset).toBe(o1);
        expect(await l.append(payload(4))).toBeGreaterThan(offsets.at(-1)!);
      } finally {
        await cold.close();
      }
    } finally {
      await logs.close();
      await other.close();
      await deleteStream(stream);
    }
  });

  it('truncation keeps the earlier chunks of a chunked record read whole but not committed (another writer\'s committed record lies between its chunks), so a re-read still yields it', async () => {
    const stream = freshStream();
    // No grace: only the rule under test keeps anything.
    const reader = await JetStreamLogs.connect(options(stream, { truncateGraceMs: 0 }));
    const { logs: w, release } = await gatedWriter(stream);
    const other = await JetStreamLogs.connect(options(stream));
    try {
      const [r0, w0, o0] = [await reader.open(0), await w.open(0), await other.open(0)];
      const first = await o0.append(payload(0));
      const { big, append: bigAppend } = await beginBigRecord(w, w0);
      const q = await o0.append(payload(2)); // between the big record's chunks
      release();
      const offset = await bigAppend;
      expect(offset).toBeGreaterThan(q);
      await r0.sync();
      const all = await readAll(r0);
      expect(all.map((r) => r.offset)).toEqual([first, q, offset]);
      // The engine committed through q (the big record is in its next range): truncation below q + 1.
      await r0.truncateBefore(q + 1);
      // A crash now: the next owner reads from q + 1 and must get the big record whole (its first chunk is below q).
      const again = await readAll(r0, q + 1);
      expect(again.map((r) => r.offset)).toEqual([offset]);
      expect(sameBytes(again[0]!.payload, big)).toBe(true);
      // Committed: now everything below goes, the newest message stays.
      await r0.truncateBefore(offset + 1);
      expect(await storedOnSubject(reader, r0.subject)).toBe(1);
    } finally {
      release();
      await reader.close();
      await w.close();
      await other.close();
      await deleteStream(stream);
    }
  }, 60_000);

  it('truncation keeps the first chunk of a record still being written (another writer\'s records after it), so the record is read whole once complete', async () => {
    const stream = freshStream();
    const graceMs = 3000;
    const reader = await JetStreamLogs.connect(options(stream, { truncateGraceMs: graceMs }));
    const openedAt = Date.now();
    // The big record's last chunk waits for the gate: the record is being written while others append and the engine truncates.
    const { logs: w, release } = await gatedWriter(stream);
    const other = await JetStreamLogs.connect(options(stream));
    try {
      const [r0, w0, o0] = [await reader.open(0), await w.open(0), await other.open(0)];
      await o0.append(payload(0));
      // The first chunk must be stored before the other writer's records (so its sequence is below theirs).
      const { big, append: bigAppend } = await beginBigRecord(w, w0);
      expect(await storedOnSubject(w, w0.subject)).toBe(2);
      const after = [await o0.append(payload(2)), await o0.append(payload(3))];
      // Past the grace after open (no purge at all before it), and the read below comes after it:
      // a hold lasts `graceMs` from when the read saw the record incomplete (read first and wait
      // after, and the hold had expired by the time of the purge on a fast run).
      await new Promise((r) => setTimeout(r, Math.max(0, openedAt + graceMs + 100 - Date.now())));
      await r0.sync();
      // The engine's read: it sees the first chunk, incomplete, and yields the other records.
      expect((await readAll(r0)).map((r) => r.payload)).toEqual([payload(0), payload(2), payload(3)]);
      await r0.truncateBefore(after[1]! + 1); // "committed" through the last record it read
      expect(await storedOnSubject(reader, r0.subject)).toBe(3); // record 0 purged; the first chunk and what follows it stay
      release();
      const offset = await bigAppend;
      expect(offset).toBeGreaterThan(after[1]!);
      await r0.sync(); // as an engine's follow() would
      const rest = await readAll(r0, after[1]! + 1);
      expect(rest.map((r) => r.offset)).toEqual([offset]);
      expect(sameBytes(rest[0]!.payload, big)).toBe(true);
    } finally {
      release();
      await reader.close();
      await w.close();
      await other.close();
      await deleteStream(stream);
    }
  });

  it('a chunked append that fails midway is never read, and records after it are', async () => {
    const stream = freshStream();
    let failSecondChunk = true;
    let setup: JetStreamLogs | undefined;
    // The real publish, but the 2nd chunk of a record never gets through (a partition, say).
    const publish = async (subject: string, data: Uint8Array, o: Partial<JetStreamPublishOptions>) => {
      if (failSecondChunk && o.headers?.get(CHUNK_HEADER) === '1/2') throw Object.assign(new Error('TIMEOUT: injected'), { code: 'TIMEOUT' });
      return setup!.js.publish(subject, data, o);
    };
    const logs = (setup = await JetStreamLogs.connect(options(stream, { publish, appendTimeoutMs: 500 })));
    try {
      const log = await logs.open(0);
      const first = await log.append(payload(0));
      await expect(log.append(payload(1, Math.floor(logs.maxPayload * 1.5)))).rejects.toMatchObject({ code: 'log_publish_failed', domain: 'external' });
      expect(await storedOnSubject(logs, log.subject)).toBe(2); // record 0 and the first chunk of the failed one
      failSecondChunk = false;
      const big = payload(12, Math.floor(logs.maxPayload * 1.5));
      const offsets = [first, await log.append(payload(11)), await log.append(big)];
      for (const l of [log, await logs.open(0)]) {
        const all = await readAll(l);
        expect(all.map((r) => r.offset)).toEqual(offsets);
        expect(all.map((r) => r.payload.byteLength)).toEqual([32, 32, big.byteLength]);
        all.forEach((r, i) => expect(sameBytes(r.payload, [payload(0), payload(11), big][i]!)).toBe(true));
      }
    } finally {
      await logs.close();
      await deleteStream(stream);
    }
  });
});

describeNats('JetStreamLog on a single server', () => {
  it('refuses R3 on an unclustered server with a user error that says what to do; ?replicas=1 works', async () => {
    const single = await startNatsCluster({ nodes: 1 });
    try {
      await expect(JetStreamLogs.connect({ servers: single.urls })).rejects.toMatchObject({ code: 'log_replicas', domain: 'user' });
      const logs = await JetStreamLogs.connect({ servers: single.urls, replicas: 1 });
      try {
        const log = await logs.open(0);
        expect(await log.append(payload(0))).toBe(1); // the stream's first message
        expect((await readAll(log)).map((r) => r.payload)).toEqual([payload(0)]);
      } finally {
        await logs.close();
      }
    } finally {
      await single.stop();
    }
  });
});

describe('JetStreamLog options', () => {
  it('versionAtLeast compares nats-server versions (truncation purges only from 2.9.18 on)', () => {
    expect(versionAtLeast('2.9.10', [2, 9, 18])).toBe(false);
    expect(versionAtLeast('2.9.18', [2, 9, 18])).toBe(true);
    expect(versionAtLeast('2.10.0-beta.1', [2, 9, 18])).toBe(true);
    expect(versionAtLeast('v3.0.0', [2, 9, 18])).toBe(true);
    expect(versionAtLeast('1.99.99', [2, 9, 18])).toBe(false);
    expect(versionAtLeast(undefined, [2, 9, 18])).toBe(false);
    expect(versionAtLeast('unknown', [2, 9, 18])).toBe(false);
    expect(() => validateJetStreamLogOptions({ servers: ['nats://x:1'], truncateBy: 'drop' as never })).toThrow(/truncateBy must be 'auto', 'purge' or 'delete'/);
    expect(validateJetStreamLogOptions({ servers: ['nats://x:1'] }).truncateBy).toBe('auto');
  });

  it('fills defaults and validates', () => {
    const o = validateJetStreamLogOptions({ servers: ['nats://127.0.0.1:4222'] });
    expect(o).toMatchObject({ stream: 'SLUICE', subjectPrefix: 'sluice', replicas: 3, maxAgeMs: 0, maxBytes: -1, duplicateWindowMs: 120_000, appendTimeoutMs: 30_000, truncateGraceMs: 60_000 });
    expect(validateJetStreamLogOptions({ servers: ['nats://127.0.0.1:4222'], appendTimeoutMs: 1000 }).truncateGraceMs).toBe(2000);
    expect(o.writerId).toMatch(/^[A-Za-z0-9]+$/);
    const bad: Array<Partial<JetStreamLogOptions>> = [
      { servers: [] },
      { servers: ['http://x:1'] },
      { servers: ['nats://x:1'], replicas: 0 },
      { servers: ['nats://x:1'], stream: 'a.b' },
      { servers: ['nats://x:1'], subjectPrefix: 'a.*' },
      { servers: ['nats://x:1'], appendTimeoutMs: 200_000 },
      { servers: ['nats://x:1'], maxBytes: 0 },
      { servers: ['nats://x:1'], truncateGraceMs: -1 },
    ];
    for (const b of bad) expect(() => validateJetStreamLogOptions(b as JetStreamLogOptions)).toThrow(expect.objectContaining({ code: 'invalid_option' }));
  });

  it('parses --log URLs', () => {
    expect(parseNatsLogUrl('nats://a:4222,nats://b:4222')).toEqual(['nats://a:4222', 'nats://b:4222']);
    expect(parseNatsLogUrl('nats://a:4222, b:4223')).toEqual(['nats://a:4222', 'nats://b:4223']);
    expect(() => parseNatsLogUrl('kafka://a')).toThrow(expect.objectContaining({ code: 'invalid_option' }));
    expect(parseNatsLog('nats://a:4222,b:4222?replicas=1')).toEqual({ servers: ['nats://a:4222', 'nats://b:4222'], replicas: 1 });
    expect(parseNatsLog('nats://a:4222')).toEqual({ servers: ['nats://a:4222'], replicas: undefined });
    expect(() => parseNatsLog('nats://a:4222?replicas=9')).toThrow(expect.objectContaining({ code: 'invalid_option' }));
  });
});
