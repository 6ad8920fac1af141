// `node --import tsx test/helpers/sluice-entry.ts <command> …`: the CLI from the sources (what
// test/helpers/serve-sources.ts runs). A script, not `-e`: the engine process and the shard workers
// inherit Node's flags (process.execArgv), and an `-e` script would run again in each of them.
import { main } from '../../cli/main.js';

await main(process.argv.slice(2));
