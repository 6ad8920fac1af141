/**
 * Load-generator benchmark (not part of `npm test`):
 *
 *   node --import tsx bench/loadgen-gen.bench.ts [--events 300000] [--runs 3] [--users 10000] [--json]
 *
 * Events/s that ONE thread generates and serializes into request bodies of 50 events, per
 * protocol (Segment JSON batch, NDJSON, Arrow IPC), with the default CLI knobs (2 % duplicates,
 * 1 % late, 0.1 % too late, 0.5 % invalid, 5 s jitter), event time stepping 10 µs per event
 * (100 k events/s: far more than the users can fill, the common benchmarking regime), and once
 * with 1 M users at 1 ms per event (realistic pacing). Each figure is the median of `--runs`.
 * The machine is shared and noisy: read ±30 %.
 */
import { benchArgs } from './args.js';
import { TrafficGenerator, type GeneratedEvent, type GeneratorOptions } from '../loadgen/generator.js';
import { IngestBatchBuilder, arrowBody, ndjsonBody, segmentBody } from '../loadgen/encode.js';

const { values: args } = benchArgs(import.meta.url, {
  options: {
    events: { type: 'string', default: '300000' },
    runs: { type: 'string', default: '3' },
    users: { type: 'string', default: '10000' },
    json: { type: 'boolean', default: false },
  },
});
const EVENTS = Number(args.events);
const RUNS = Number(args.runs);
const BATCH = 50;

type Encoder = 'generate only' | 'segment json' | 'ndjson' | 'arrow ipc';

function once(options: GeneratorOptions, encoder: Encoder): { eventsPerS: number; bytesPerEvent: number } {
  const g = new TrafficGenerator(options);
  const builder = new IngestBatchBuilder(BATCH);
  const batch: GeneratedEvent[] = new Array(BATCH);
  let bytes = 0;
  const t0 = performance.now();
  for (let done = 0; done < EVENTS; done += BATCH) {
    for (let i = 0; i < BATCH; i++) batch[i] = g.next();
    switch (encoder) {
      case 'generate only':
        break;
      case 'segment json':
        bytes += segmentBody(batch).length;
        break;
      case 'ndjson':
        bytes += ndjsonBody(batch).length;
        break;
      case 'arrow ipc':
        bytes += arrowBody(batch, builder, Date.now()).byteLength;
        break;
    }
  }
  const s = (performance.now() - t0) / 1000;
  return { eventsPerS: EVENTS / s, bytesPerEvent: bytes / EVENTS };
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const knobs = { duplicateRate: 0.02, lateRate: 0.01, tooLateRate: 0.001, invalidRate: 0.005, jitterMs: 5000 };
const cases: Array<{ name: string; options: GeneratorOptions; encoder: Encoder }> = [];
for (const encoder of ['generate only', 'segment json', 'ndjson', 'arrow ipc'] as const) {
  cases.push({ name: `${Number(args.users)} users, 10 µs/event, ${encoder}`, options: { seed: 1, users: Number(args.users), startTime: Date.UTC(2026, 2, 1), stepMs: 0.01, ...knobs }, encoder });
}
cases.push({ name: '1M users, 1 ms/event, segment json', options: { seed: 1, users: 1_000_000, startTime: Date.UTC(2026, 2, 1), stepMs: 1, ...knobs }, encoder: 'segment json' });

const results: Array<{ name: string; eventsPerS: number; bytesPerEvent: number }> = [];
for (const c of cases) {
  once({ ...c.options }, c.encoder); // warm-up
  const runs = Array.from({ length: RUNS }, () => once(c.options, c.encoder));
  const r = { name: c.name, eventsPerS: median(runs.map((x) => x.eventsPerS)), bytesPerEvent: median(runs.map((x) => x.bytesPerEvent)) };
  results.push(r);
  if (!args.json) console.log(`${r.name.padEnd(48)} ${Math.round(r.eventsPerS).toLocaleString('en-US').padStart(10)} events/s per thread   ${r.bytesPerEvent.toFixed(0)} B/event`);
}
if (args.json) console.log(JSON.stringify({ events: EVENTS, runs: RUNS, results }));
