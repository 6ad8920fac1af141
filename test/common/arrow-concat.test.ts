import { Bool, Field, Float64, Int32, Schema, type RecordBatch } from 'apache-arrow';
import { describe, expect, it } from 'vitest';
import { concatBatches } from '../../common/arrow-concat.js';
import { silverSchema } from '../../common/schema.js';
import { batchOf as build } from '../helpers/batches.js';

const schema = new Schema([...silverSchema.fields, new Field('n', new Int32(), true), new Field('x', new Float64(), false), new Field('flag', new Bool(), true)]);

const row = (i: number, devices: string[]): Record<string, unknown> => ({
  event_id: `e${i}`,
  user_id: `u${i % 3}`,
  anonymous_id: i % 2 ? null : `a${i}`,
  event_type: ['screen', 'click', 'install'][i % 3],
  event_time: 1_700_000_000_000 + i,
  received_at: 1_700_000_100_000 + i,
  session_id: null,
  device_type: i % 4 === 0 ? null : devices[i % devices.length],
  os: 'iOS',
  app_version: `${i % 2}.0`,
  country: i % 3 ? 'DE' : 'Ümlaut-Land',
  source: 'test',
  properties: i % 5 === 0 ? null : `{"i":${i}}`,
  n: i % 7 === 0 ? null : i * 3,
  x: i / 4,
  flag: i % 6 === 0 ? null : i % 2 === 0,
});

const batchOf = (rows: Array<Record<string, unknown>>): RecordBatch => build(schema, rows);
const plain = (b: RecordBatch): unknown[] => b.toArray().map((r) => r.toJSON());

describe('concatBatches', () => {
  it('keeps every row and value of every column type, unifying different dictionaries, nulls included', () => {
    const a = Array.from({ length: 13 }, (_, i) => row(i, ['ios', 'android']));
    const b = Array.from({ length: 1 }, (_, i) => row(100 + i, ['web']));
    const c = Array.from({ length: 70 }, (_, i) => row(200 + i, ['android', 'tv', 'ios']));
    const batches = [batchOf(a), batchOf(b), batchOf(c)];
    const out = concatBatches(batches);
    expect(out.numRows).toBe(84);
    expect(plain(out)).toEqual(batches.flatMap(plain));
    // One dictionary, first-seen order.
    expect([...(out.getChild('device_type')!.data[0]!.dictionary as Iterable<string>)]).toEqual(['android', 'ios', 'tv']); // b's only row has no device
  });

  it('works on sliced batches (offset buffers, unsliced bitmaps)', () => {
    const whole = batchOf(Array.from({ length: 40 }, (_, i) => row(i, ['ios', 'android', 'web'])));
    const parts = [whole.slice(3, 17), whole.slice(17, 18), whole.slice(21, 40)];
    expect(plain(concatBatches(parts))).toEqual(parts.flatMap(plain));
  });

  it('returns a single batch as it is', () => {
    const one = batchOf([row(1, ['ios'])]);
    expect(concatBatches([one])).toBe(one);
  });
});
