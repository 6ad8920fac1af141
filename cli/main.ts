/**
 * The `sluice` command line. Each subcommand lives in its own file under cli/ and registers
 * itself on the program; this file only composes them.
 */
import { Command } from 'commander';
import { classifyError } from '../common/errors.js';

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
      // Help and version exit 0; every other commander error (an unknown option or command, a
      // missing argument) is a user's mistake: 2, as a bad value is (commander says 1, which for
      // `sluice quality` means "a check failed").
      process.exitCode = (err as { exitCode?: number }).exitCode === 0 ? 0 : 2;
      return;
    }
    // A user's mistake (exit 2) or a failing dependency (disk, network, S3: exit 1) is one line on
    // stderr; only an internal error (a bug) gets Node's report with the stack.
    // SLUICE_LOG_LEVEL=debug prints the stack of the others too.
    const e = classifyError(err);
    if (e.domain === 'internal') throw err;
    process.stderr.write(`sluice: ${e.message}\n`);
    if (/^(debug|trace)$/.test(process.env.SLUICE_LOG_LEVEL ?? '')) process.stderr.write(`${(err as Error)?.stack ?? String(err)}\n`);
    process.exitCode = e.domain === 'user' ? 2 : 1;
  }
}
