/**
 * `sluice demo` (`npm run demo`): Sluice end to end on embedded defaults in one command —
 * start the server, drive it with the load generator for a while, flush, then query the
 * Parquet it wrote with DuckDB and print the answers.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Command } from 'commander';
import { pino } from 'pino';
import { parseDuration } from '../common/duration.js';
import { userError } from '../common/errors.js';
import { formatTable, openLakeQuery } from '../analytics/query.js';
import { REALISTIC_MIX } from '../loadgen/options.js';
import { runLoadgen } from '../loadgen/run.js';
import { composeServeConfig } from './config.js';
import { formatSummary } from './loadgen.js';
import { startSluice } from './serve.js';

export function register(program: Command): void {
  program
    .command('demo')
    .description('start Sluice, send generated traffic, then query the lake it wrote')
    .option('--duration <d>', 'how long to send traffic', '20s')
    .option('--dir <dir>', 'where data and lake go (default: a new temp directory)')
    .option('--protocol <p>', 'http | ndjson | arrow-ws', 'http')
    .action(async (f: { duration: string; dir?: string; protocol: 'http' | 'ndjson' | 'arrow-ws' }) => {
      // Flags first: a bad one must not leave a started server and a temp directory behind.
      if (!['http', 'ndjson', 'arrow-ws'].includes(f.protocol)) throw userError('invalid_option', `--protocol must be http, ndjson or arrow-ws, got ${JSON.stringify(f.protocol)}`);
      const durationMs = parseDuration(f.duration, '--duration');
      const dir = f.dir ?? mkdtempSync(join(tmpdir(), 'sluice-demo-'));
      const config = composeServeConfig({ port: 0, data: join(dir, 'data'), lake: join(dir, 'lake'), flushInterval: '2s', writeKeys: ['demo-key'] }, {});
      const out = (s: string): boolean => process.stdout.write(`${s}\n`);
      out(`Sluice demo: data and lake in ${dir}`);
      const sluice = await startSluice(config, pino({ level: 'warn' }, pino.destination(2)));
      out(`server on ${sluice.url} (${config.engine.shards} shards, ${config.engine.workers} workers); sending ${f.protocol} traffic for ${f.duration}…`);
      const summary = await runLoadgen({
        url: sluice.url,
        writeKey: 'demo-key',
        protocol: f.protocol,
        durationMs,
        users: 20_000,
        seed: 1,
        // A steady closed loop, not the machine's max: at max the engine falls behind the acks and
        // ingest refuses with 503 (the lag bound), which a first run should not show as failures.
        workers: 2,
        connections: 3,
        batchSize: 50,
        ...REALISTIC_MIX,
        onProgress: (p) => process.stderr.write(`\r  ${p.elapsedS.toFixed(0)}s  ${Math.round(p.rate).toLocaleString('en-US')} ev/s  acked ${p.acked.toLocaleString('en-US')}   `),
      });
      process.stderr.write('\n');
      out(formatSummary(summary));
      out('flushing and committing everything acknowledged…');
      await sluice.close();
      const q = await openLakeQuery({ lake: config.engine.lake });
      try {
        const show = async (title: string, sql: string): Promise<void> => {
          out(`\n${title}\n${sql.trim().replace(/\s+/g, ' ')}`);
          out(formatTable(await q.run(sql)));
        };
        await show('Daily active users by platform:', `SELECT CAST(event_time AS DATE) AS day, device_type, count(DISTINCT user_id) AS dau FROM events GROUP BY ALL ORDER BY ALL`);
        await show('Top event types:', `SELECT event_type, count(*) AS events FROM events GROUP BY 1 ORDER BY 2 DESC LIMIT 8`);
        await show(
          'Sessions closed so far (a session is written once the watermark — newest event time − the allowed lateness, 2 h — passes its end + the 30-minute gap, so after a short run most are still open):',
          `SELECT count(*) AS sessions, round(median(duration_s), 1) AS median_s, round(avg(bounce::INT), 3) AS bounce_rate FROM sessions`,
        );
        await show('Layers:', `SELECT 'bronze' AS layer, count(*) AS rows FROM bronze_events UNION ALL SELECT 'silver', count(*) FROM events UNION ALL SELECT 'dlq', count(*) FROM dlq ORDER BY 1`);
      } finally {
        await q.close();
      }
      out(`\nExplore: node ${process.argv[1] ?? 'bin/sluice.js'} query --lake ${config.engine.lake} "SELECT * FROM events LIMIT 5"`);
    });
}
