/**
 * Reads V8 `.cpuprofile` files (written by `node --cpu-prof`, one per thread) and sums the
 * sampled time inside a wall-clock window by stage (bench/profile-stages.ts) and by function.
 */
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { classify, framePath, STAGES, type Frame, type Role, type Stage } from './profile-stages.js';

interface ProfileNode {
  id: number;
  callFrame: Frame & { lineNumber: number; columnNumber: number };
  children?: number[];
}

/** The JSON of a .cpuprofile. Times are µs of V8's monotonic clock (CLOCK_MONOTONIC on Linux). */
interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

/** What one thread's profile says about a window. Times in µs. */
export interface ThreadProfile {
  file: string;
  pid: number;
  /** Node's thread id: 0 the main thread, ≥ 1 worker threads. */
  threadId: number;
  role: Role;
  /** Non-idle samples per stage inside the window. */
  stages: Record<Stage, number>;
  /** Non-idle samples inside the window. */
  busy: number;
  /** Samples inside the window, idle included. */
  samples: number;
  /** Non-idle samples per leaf function (key: `name path:line`) and its stage. */
  functions: Map<string, { n: number; stage: Stage }>;
  /** Whether the profile covers the whole window (false: the thread started or ended inside it). */
  coversWindow: boolean;
}

export function emptyStages(): Record<Stage, number> {
  return Object.fromEntries(STAGES.map((s) => [s, 0])) as Record<Stage, number>;
}

/** `CPU.<date>.<time>.<pid>.<threadId>.<seq>.cpuprofile` → pid and thread id. */
export function profileIds(file: string): { pid: number; threadId: number } | undefined {
  const m = /^CPU\.\d+\.\d+\.(\d+)\.(\d+)\.\d+\.cpuprofile$/.exec(basename(file));
  return m ? { pid: Number(m[1]), threadId: Number(m[2]) } : undefined;
}

/**
 * Counts one profile's samples inside [fromUs, toUs] (V8 monotonic µs) by stage and function.
 * Counts, not time: on a busy machine a descheduled thread's next sample comes late, so the gap
 * between samples (what DevTools calls self time) is wall time, not CPU. bench/profile.ts turns
 * counts into CPU with the thread's /proc CPU over the same window.
 */
export function readThreadProfile(file: string, role: Role, fromUs: number, toUs: number): ThreadProfile {
  const ids = profileIds(file) ?? { pid: 0, threadId: 0 };
  const p = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map<number, ProfileNode>();
  const parent = new Map<number, number>();
  for (const n of p.nodes) {
    byId.set(n.id, n);
    for (const c of n.children ?? []) parent.set(c, n.id);
  }
  // Classify each node once (its stack is fixed).
  const stageOf = new Map<number, Stage | 'idle'>();
  const stackOf = (id: number): Frame[] => {
    const out: Frame[] = [];
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) out.push(byId.get(cur)!.callFrame);
    return out;
  };
  const out: ThreadProfile = {
    file,
    ...ids,
    role,
    stages: emptyStages(),
    busy: 0,
    samples: 0,
    functions: new Map(),
    coversWindow: p.startTime <= fromUs && p.endTime >= toUs,
  };
  let t = p.startTime;
  for (let i = 0; i < p.samples.length; i++) {
    t += p.timeDeltas[i]!;
    if (t < fromUs) continue;
    if (t > toUs) break;
    const id = p.samples[i]!;
    let stage = stageOf.get(id);
    if (stage === undefined) {
      stage = classify(role, stackOf(id));
      stageOf.set(id, stage);
    }
    out.samples++;
    if (stage === 'idle') continue;
    out.stages[stage]++;
    out.busy++;
    const f = byId.get(id)!.callFrame;
    const key = `${f.functionName || '(anonymous)'} ${framePath(f.url) || '(native)'}${f.url ? `:${f.lineNumber + 1}` : ''}`;
    const fn = out.functions.get(key);
    if (fn) fn.n++;
    else out.functions.set(key, { n: 1, stage });
  }
  return out;
}
