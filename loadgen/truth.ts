/**
 * The ground truth of a run: every valid event the server acknowledged, exactly once, with its
 * true event time and the generator's session number; and the sessions built from them.
 *
 * Each worker appends NDJSON rows to its own file while it runs (rows are written when the
 * batch carrying the event is acknowledged, so a batch that was given up is not in the truth);
 * at the end DuckDB turns the files into Parquet:
 *   FILE                     events: event_id, user_id, event_type, event_time (TIMESTAMP, UTC ms),
 *                            device_type, os, app_version, country, session_no, lateness, screen_name
 *   FILE∖.parquet + .sessions.parquet   user_id, session_no, session_start, session_end, duration_s,
 *                            event_count, bounce, first_screen, last_screen, device_type, app_version, country
 */
import { createWriteStream, type WriteStream } from 'node:fs';
import { DuckDBInstance } from '@duckdb/node-api';
import { internalError } from '../common/errors.js';
import type { GeneratedEvent, Lateness } from './generator.js';

/** One truth row as written to the NDJSON spool (event_time in epoch ms). */
export interface TruthRow {
  event_id: string;
  user_id: string;
  event_type: string;
  event_time: number;
  device_type: string;
  os: string;
  app_version: string;
  country: string;
  session_no: number;
  lateness: Lateness;
  screen_name: string | null;
}

export function truthRow(e: GeneratedEvent): TruthRow {
  const m = e.message;
  return {
    event_id: m.messageId,
    user_id: e.userId,
    event_type: e.eventType,
    event_time: e.eventTime,
    device_type: m.context.device.type,
    os: m.context.os.name,
    app_version: m.context.app.version,
    country: m.context.location.country,
    session_no: e.sessionNo,
    lateness: e.lateness,
    screen_name: m.type === 'screen' ? (m.name ?? null) : null,
  };
}

/** Appends truth rows of one worker to an NDJSON file. Not thread-safe: one per worker. */
export class TruthSpool {
  private readonly out: WriteStream;
  private buffer = '';
  rows = 0;

  constructor(readonly path: string) {
    this.out = createWriteStream(path);
  }

  add(e: GeneratedEvent): void {
    this.buffer += JSON.stringify(truthRow(e)) + '\n';
    this.rows++;
    if (this.buffer.length > 1 << 20) this.flush();
  }

  private flush(): void {
    if (this.buffer.length > 0) this.out.write(this.buffer);
    this.buffer = '';
  }

  async close(): Promise<void> {
    this.flush();
    await new Promise<void>((resolve, reject) => {
      this.out.once('error', reject);
      this.out.end(() => resolve());
    });
  }
}

/** Paths of the sessions and summary files next to a truth file. */
export function truthSiblings(file: string): { sessions: string; summary: string } {
  const base = file.replace(/\.parquet$/i, '');
  return { sessions: `${base}.sessions.parquet`, summary: `${base}.summary.json` };
}

const sqlString = (s: string): string => `'${s.replaceAll("'", "''")}'`;

/**
 * Writes the events and sessions Parquet files from the workers' spools; returns the event rows.
 * Throws an internal error if an event id appears twice (the spools must hold each once).
 */
export async function writeTruthParquet(file: string, spools: readonly string[]): Promise<number> {
  const db = await DuckDBInstance.create(':memory:', { threads: '1' });
  const conn = await db.connect();
  try {
    const columns = `{event_id: 'VARCHAR', user_id: 'VARCHAR', event_type: 'VARCHAR', event_time: 'BIGINT', device_type: 'VARCHAR', os: 'VARCHAR', app_version: 'VARCHAR', country: 'VARCHAR', session_no: 'INTEGER', lateness: 'VARCHAR', screen_name: 'VARCHAR'}`;
    const src = `read_json([${spools.map(sqlString).join(', ')}], format = 'newline_delimited', columns = ${columns})`;
    await conn.run(`CREATE TABLE truth AS SELECT * REPLACE (make_timestamp(event_time * 1000) AS event_time) FROM ${src}`);
    const check = await conn.runAndReadAll(`SELECT count(*) AS n, count(DISTINCT event_id) AS d FROM truth`);
    const [n, d] = check.getRows()[0]! as [bigint, bigint];
    if (n !== d) throw internalError('truth_duplicate', `the truth spools hold ${n} rows but ${d} distinct event ids; this is a loadgen bug`);
    await conn.run(`COPY (SELECT * FROM truth ORDER BY event_time, event_id) TO ${sqlString(file)} (FORMAT parquet, COMPRESSION zstd)`);
    const { sessions } = truthSiblings(file);
    await conn.run(
      `COPY (
         SELECT user_id, session_no, min(event_time) AS session_start, max(event_time) AS session_end,
                (epoch_ms(max(event_time)) - epoch_ms(min(event_time))) / 1000.0 AS duration_s,
                count(*) AS event_count, count(*) = 1 AS bounce,
                arg_min(screen_name, event_time) FILTER (WHERE screen_name IS NOT NULL) AS first_screen,
                arg_max(screen_name, event_time) FILTER (WHERE screen_name IS NOT NULL) AS last_screen,
                any_value(device_type) AS device_type, any_value(app_version) AS app_version, any_value(country) AS country
         FROM truth GROUP BY user_id, session_no ORDER BY user_id, session_no
       ) TO ${sqlString(sessions)} (FORMAT parquet, COMPRESSION zstd)`,
    );
    return Number(n);
  } finally {
    conn.closeSync();
    db.closeSync();
  }
}
