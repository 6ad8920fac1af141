/**
 * SlotStrings (the session table's id arena) against a plain model: an array of strings per
 * (slot, field), compared with Buffer.compare. Random sets, copies and clears, many more than the
 * arena holds, so it compacts and grows many times on the way.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { SlotStrings } from '../../engine/kernels/slot-strings.js';

const SLOTS = 64;
const FIELDS = 2;

type Op =
  | { kind: 'set'; slot: number; field: number; value: string; pad: number }
  | { kind: 'copy'; slot: number; field: number; from: number }
  | { kind: 'clear'; slot: number };

const value = fc.oneof(fc.string({ maxLength: 40 }), fc.constantFrom('', 'ü', '日本', 'a\u0000b'), fc.uuid(), fc.string({ unit: 'grapheme', maxLength: 300 }));
const op: fc.Arbitrary<Op> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ kind: fc.constant('set' as const), slot: fc.nat(SLOTS - 1), field: fc.nat(FIELDS - 1), value, pad: fc.nat(5) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('copy' as const), slot: fc.nat(SLOTS - 1), field: fc.nat(FIELDS - 1), from: fc.nat(SLOTS - 1) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('clear' as const), slot: fc.nat(SLOTS - 1) }) },
);

describe('SlotStrings', () => {
  it('holds what was last set, copied or cleared per (slot, field), through compactions and growth', () => {
    fc.assert(
      fc.property(fc.array(op, { minLength: 800, maxLength: 3000 }), fc.string({ maxLength: 20 }), (ops, probe) => {
        const arena = new SlotStrings(FIELDS);
        arena.reserve(SLOTS);
        const model: string[] = new Array<string>(SLOTS * FIELDS).fill('');
        for (const o of ops) {
          if (o.kind === 'set') {
            // The bytes sit inside a larger buffer, as a row's bytes sit in an Arrow column.
            const bytes = Buffer.concat([Buffer.alloc(o.pad, 0x7a), Buffer.from(o.value), Buffer.alloc(o.pad, 0x7a)]);
            arena.set(o.slot, o.field, bytes, o.pad, bytes.length - o.pad);
            model[o.slot * FIELDS + o.field] = o.value;
          } else if (o.kind === 'copy') {
            arena.copy(o.slot, o.field, o.from);
            model[o.slot * FIELDS + o.field] = model[o.from * FIELDS + o.field]!;
          } else {
            arena.clear(o.slot);
            for (let f = 0; f < FIELDS; f++) model[o.slot * FIELDS + f] = '';
          }
        }
        const p = Buffer.from(probe);
        for (let s = 0; s < SLOTS; s++) {
          for (let f = 0; f < FIELDS; f++) {
            const want = model[s * FIELDS + f]!;
            expect(arena.get(s, f)).toBe(want);
            expect(Math.sign(arena.compare(p, 0, p.length, s, f))).toBe(Buffer.compare(p, Buffer.from(want)));
          }
        }
      }),
      { numRuns: 60 },
    );
  });

  it('keeps its arena near the live bytes: garbage is compacted away, not grown over', () => {
    const arena = new SlotStrings(1);
    arena.reserve(1000);
    const id = (i: number): Buffer => Buffer.from(`event-${String(i).padStart(30, '0')}`);
    for (let i = 0; i < 1000; i++) arena.set(i, 0, id(i), 0, 36);
    // 200 rounds of replacing every id: 7.2 MB appended in all, 36 KB live at any time.
    for (let r = 1; r <= 200; r++) for (let i = 0; i < 1000; i++) arena.set(i, 0, id(r * 1000 + i), 0, 36);
    for (let i = 0; i < 1000; i += 97) expect(arena.get(i, 0)).toBe(id(200_000 + i).toString());
    const live = 1000 * 36;
    expect(arena.byteLength - 1000 * 8).toBeLessThanOrEqual(live * 2.2);
  });
});
