#!/usr/bin/env node
// Entry shim: registers the TypeScript loader (tsx) so the CLI and its worker threads run from source.
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../cli/main.ts');
await main(process.argv.slice(2));
