/**
 * What engine nodes share through the lake instead of one coordinator's memory or LMDB
 * (docs/SCALE-OUT.md, "Gold across nodes"):
 *
 *   _sluice/frontiers/s{n}.json   shard n's committed emitted watermarks, written by its owner
 *                                 after each successful checkpoint (so its window partials up to
 *                                 there are published); the gold owner merges a window once
 *                                 every shard's frontier passed it. Also the shard's own watermark
 *                                 and whether it was idle then: the other nodes' idle shards
 *                                 follow it (Coordinator.advanceIdleShards)
 *   _sluice/dlq-state.json        the DLQ flush's offset and recorded pending commit (what the
 *                                 single-process coordinator keeps in its LMDB), so a new `dlq`
 *                                 owner finishes a recorded flush and resumes after it
 *   _sluice/commits/gold-….json   a window's gold commit record: proof that it was merged (the
 *                                 single-process coordinator's `gold-merged:` LMDB marker)
 */
import { META_PREFIX } from '../common/lake-layout.js';
import type { ObjectStore } from '../storage/object-store.js';
import { commitRecordKey } from '../storage/commit-record.js';
import type { PendingCommit } from '../storage/two-phase.js';

const FRONTIERS_PREFIX = `${META_PREFIX}/frontiers`;
const DLQ_STATE_KEY = `${META_PREFIX}/dlq-state.json`;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A shard's committed progress (JSON: −∞ is stored as null). */
export interface ShardFrontier {
  offset: number;
  emittedMs: number;
  emittedDailyMs: number;
  /** The shard's own watermark at that checkpoint (−∞: it has had no event yet). */
  watermarkMs?: number;
  /** Whether it was idle then (no input for the idle timeout, everything processed). */
  idle?: boolean;
}

const finite = (v: number): number | null => (Number.isFinite(v) ? v : null);
const orNegInf = (v: unknown): number => (typeof v === 'number' ? v : Number.NEGATIVE_INFINITY);

export async function writeShardFrontier(store: ObjectStore, shard: number, f: ShardFrontier): Promise<void> {
  const body = { offset: f.offset, emittedMs: finite(f.emittedMs), emittedDailyMs: finite(f.emittedDailyMs), watermarkMs: f.watermarkMs === undefined ? undefined : finite(f.watermarkMs), idle: f.idle };
  await store.put(`${FRONTIERS_PREFIX}/s${shard}.json`, encoder.encode(`${JSON.stringify(body)}\n`));
}

export async function readShardFrontier(store: ObjectStore, shard: number): Promise<ShardFrontier | undefined> {
  const body = await store.get(`${FRONTIERS_PREFIX}/s${shard}.json`);
  if (body === undefined) return undefined;
  const f = JSON.parse(decoder.decode(body)) as Record<string, unknown>;
  return {
    offset: typeof f.offset === 'number' ? f.offset : -1,
    emittedMs: orNegInf(f.emittedMs),
    emittedDailyMs: orNegInf(f.emittedDailyMs),
    ...('watermarkMs' in f ? { watermarkMs: orNegInf(f.watermarkMs) } : {}),
    ...(typeof f.idle === 'boolean' ? { idle: f.idle } : {}),
  };
}

/** The minimum committed frontier over shards 0 … shards−1 (−∞ while some shard has none). */
export async function readLakeFrontier(store: ObjectStore, shards: number): Promise<{ hourly: number; daily: number }> {
  const all = await Promise.all(Array.from({ length: shards }, (_, s) => readShardFrontier(store, s)));
  let hourly = Number.POSITIVE_INFINITY;
  let daily = Number.POSITIVE_INFINITY;
  for (const f of all) {
    hourly = Math.min(hourly, f?.emittedMs ?? Number.NEGATIVE_INFINITY);
    daily = Math.min(daily, f?.emittedDailyMs ?? Number.NEGATIVE_INFINITY);
  }
  return { hourly, daily };
}

export interface DlqState {
  /** Last DLQ log offset flushed into dlq/ (−1: none). */
  offset: number;
  /** A recorded flush whose publish may not have finished. */
  pending: PendingCommit | null;
}

export async function readDlqState(store: ObjectStore): Promise<DlqState> {
  const body = await store.get(DLQ_STATE_KEY);
  if (body === undefined) return { offset: -1, pending: null };
  return JSON.parse(decoder.decode(body)) as DlqState;
}

export async function writeDlqState(store: ObjectStore, state: DlqState): Promise<void> {
  await store.put(DLQ_STATE_KEY, encoder.encode(`${JSON.stringify(state)}\n`));
}

/** Whether the gold window's commit record exists (it was merged; partials left over are only deleted). */
export async function goldMerged(store: ObjectStore, commitId: string): Promise<boolean> {
  return (await store.get(commitRecordKey(commitId))) !== undefined;
}
