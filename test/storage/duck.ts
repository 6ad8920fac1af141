/**
 * DuckDB for storage tests: reads what Sluice wrote the way analysts do.
 */
import { DuckDBInstance } from '@duckdb/node-api';

export interface Duck {
  rows<T = Record<string, unknown>>(sql: string): Promise<T[]>;
  close(): void;
}

export async function openDuck(): Promise<Duck> {
  const db = await DuckDBInstance.create(':memory:');
  const conn = await db.connect();
  await conn.run("SET TimeZone = 'UTC'");
  return {
    async rows<T>(sql: string): Promise<T[]> {
      return (await conn.runAndReadAll(sql)).getRowObjectsJS() as T[];
    },
    close() {
      conn.closeSync();
      db.closeSync();
    },
  };
}

/** `read_parquet` over every Parquet file under a local table directory, Hive partitions typed. */
export function glob(dir: string, granularity: 'hour' | 'day' = 'hour'): string {
  const hiveTypes = granularity === 'hour' ? "{'year': INTEGER, 'month': INTEGER, 'day': INTEGER, 'hour': INTEGER}" : "{'year': INTEGER, 'month': INTEGER, 'day': INTEGER}";
  return `read_parquet('${dir}/**/*.parquet', hive_partitioning = true, hive_types = ${hiveTypes})`;
}
