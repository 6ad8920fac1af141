import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    environment: 'node',
    pool: 'forks',
    // A hang guard, not a performance bound: real servers, DuckDB and Parquet on 2 shared cores;
    // the quality suites took 20–57 s per test at load average 12 and hit 60 s.
    testTimeout: 120_000,
    hookTimeout: 60_000,
    env: { TZ: 'UTC' },
  },
});
