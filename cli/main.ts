/**
 * The `sluice` command line. Each subcommand lives in its own file under cli/ and registers
 * itself on the program; this file only composes them.
 */
import { Command } from 'commander';
import { SluiceError } from '../common/errors.js';

type Register = (program: Command) => void;

/** Subcommand modules; each exports `register(program)`. */
const COMMANDS: Array<() => Promise<{ register: Register }>> = [
  () => import('./serve.js'),
  () => import('./engine.js'),
  () => import('./reconcile.js'),
  () => import('./erase.js'),
  () => import('./loadgen.js'),
  () => import('./compact.js'),
  () => import('./query.js'),
  () => import('./quality.js'),
  () => import('./demo.js'),
  () => import('./bench.js'),
];

export async function main(argv: string[]): Promise<void> {
  const program = new Command('sluice')
    .description('Streaming ingestion and analytics for app-engagement events')
    .showHelpAfterError()
    .exitOverride();
  for (const load of COMMANDS) (await load()).register(program);
  try {
    await program.parseAsync(argv, { from: 'user' });
  } catch (err) {
    if (err instanceof Error && 'code' in err && typeof err.code === 'string' && err.code.startsWith('commander.')) {
      process.exitCode = (err as { exitCode?: number }).exitCode ?? 2;
      return;
    }
    if (err instanceof SluiceError && err.domain === 'user') {
      process.stderr.write(`sluice: ${err.message}\n`);
      process.exitCode = 2;
      return;
    }
    throw err;
  }
}
