/**
 * The benchmarks' command lines: `parseArgs` (node:util) with `--help`, which prints the usage in
 * the script's header comment, and one line for a flag it does not know (a stack trace before).
 *
 *   const { values } = benchArgs(import.meta.url, { options: { runs: { type: 'string', default: '3' } } });
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs, type ParseArgsConfig } from 'node:util';

/** The header comment of the script at `url`, without its comment markers. */
function usageOf(url: string): string {
  const text = readFileSync(fileURLToPath(url), 'utf8');
  const header = /^\/\*\*([\s\S]*?)\*\//.exec(text)?.[1] ?? '';
  return header
    .split('\n')
    .map((l) => l.replace(/^ ?\* ?/, ''))
    .join('\n')
    .trim();
}

export function benchArgs<T extends ParseArgsConfig>(url: string, config: T): ReturnType<typeof parseArgs<T>> {
  const args = config.args ?? process.argv.slice(2);
  if (args.includes('--help') || args.includes('-h')) {
    process.stdout.write(`${usageOf(url)}\n`);
    process.exit(0);
  }
  try {
    return parseArgs(config.args === undefined ? config : { ...config, args }) as ReturnType<typeof parseArgs<T>>;
  } catch (err) {
    process.stderr.write(`${(err as Error).message} (--help prints the usage)\n`);
    process.exit(2);
  }
}
