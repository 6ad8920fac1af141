import { describe, expect, it } from 'vitest';
import { boundOf, type RunUsage } from '../../bench/e2e-bench.js';

const base: RunUsage = { offeredPerSec: undefined, ackedPerSec: 50_000, serverCores: 0.8, serverMainCores: 0.5, loadgenCores: 0.4, machineBusyCores: 1.3, diskBusy: 0.1, cores: 2 };

describe('boundOf: what bounded a bench run', () => {
  it.each<[string, Partial<RunUsage>, ReturnType<typeof boundOf>]>([
    ['an open loop that got what it offered', { offeredPerSec: 10_000, ackedPerSec: 9_700 }, 'offered rate'],
    ['an open loop short of its rate on a saturated machine, server busiest', { offeredPerSec: 10_000, ackedPerSec: 6_000, serverCores: 1.2, loadgenCores: 0.6, machineBusyCores: 1.95 }, 'server CPU'],
    ['a closed loop whose client used more than the server', { serverCores: 0.7, loadgenCores: 1.1, machineBusyCores: 1.9 }, 'client CPU'],
    ['a closed loop on a machine busy with other tenants', { serverCores: 0.4, loadgenCores: 0.3, machineBusyCores: 1.98 }, 'other processes'],
    ['a busy disk, before CPU', { diskBusy: 0.95, machineBusyCores: 1.99, serverCores: 1.5 }, 'disk'],
    ['the ack thread at one core on an idle machine', { serverMainCores: 0.97, serverCores: 1.2, machineBusyCores: 1.5 }, 'server ack thread'],
    ['nothing saturated: in-flight requests per latency', {}, 'round trips'],
    ['no /proc/stat: server + client cores stand for the machine', { machineBusyCores: NaN, serverCores: 1.2, loadgenCores: 0.7 }, 'server CPU'],
  ])('%s', (_, over, want) => {
    expect(boundOf({ ...base, ...over })).toBe(want);
  });
});
