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

/** UUIDs (held packed when all their letters are of one case), and strings that are almost UUIDs (held as they are). */
const uuidLike = fc.oneof(
  fc.uuid(),
  fc.uuid().map((u) => u.toUpperCase()),
  fc.tuple(fc.uuid(), fc.nat(35)).map(([u, k]) => u.slice(0, k) + u[k]!.toUpperCase() + u.slice(k + 1)), // one letter upper case: mixed
  fc.tuple(fc.uuid(), fc.nat(35), fc.constantFrom('g', '-', 'G', ' ', 'é')).map(([u, k, c]) => u.slice(0, k) + c + u.slice(k + 1)),
  fc.uuid().map((u) => u.replaceAll('-', '')),
  fc.uuid().map((u) => `${u}0`),
  fc.constantFrom('00000000-0000-0000-0000-000000000000', 'FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF', '12345678-1234-1234-1234-123456789012'),
);
const value = fc.oneof(fc.string({ maxLength: 40 }), fc.constantFrom('', 'ü', '日本', 'a\u0000b'), uuidLike, uuidLike, fc.string({ unit: 'grapheme', maxLength: 300 }));
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
            const out = Buffer.alloc(arena.utf8Length(s, f) + 2, 0x7a);
            expect(arena.writeTo(s, f, out, 1)).toBe(out.length - 2);
            expect(out.subarray(1, -1).toString()).toBe(want);
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

  it('holds a UUID whose letters are all of one case in its 16 bytes, any other string in its UTF-8 bytes', () => {
    const arena = new SlotStrings(1);
    arena.reserve(4);
    const cases = ['3f2a9c1e-7b4d-4e8f-9a0b-1c2d3e4f5a6b', '3F2A9C1E-7B4D-4E8F-9A0B-1C2D3E4F5A6B', '3f2a9c1e-7b4d-4e8f-9a0b-1c2d3e4f5A6b'];
    cases.forEach((u, i) => arena.set(i, 0, Buffer.from(u), 0, 36));
    arena.copy(3, 0, 1);
    expect([0, 1, 2, 3].map((i) => arena.get(i, 0))).toEqual([...cases, cases[1]]);
    expect(arena.liveBytes).toBe(16 + 16 + 36 + 16);
    arena.clear(1);
    expect(arena.liveBytes).toBe(16 + 36 + 16);
  });
});
