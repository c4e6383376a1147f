/**
 * The command line of a benchmark script: node:util's parseArgs (strict) with `--help` (`-h`), a
 * usage text made from the options' own descriptions, and one line on stderr and exit 2 for an
 * unknown option or a bad value instead of a stack trace:
 *
 *   const { values: args, usageError } = benchArgs(
 *     { name: 'bench/micro/example', summary: 'What it measures.\nSee docs/benchmarks.md, "Running".' },
 *     { n: { type: 'string', default: '2000', arg: 'N', help: 'round trips per run' } },
 *   );
 *   if (!(Number(args.n) > 0)) usageError('--n must be a positive number');
 *
 * Parse before anything is started, mounted or installed (needRoot, installCleanup): --help and a
 * usage error then leave nothing behind. No imports but node:util: rdcw-vs-fswatch.ts copies this
 * file into a Wine prefix beside bench/windows/rdcw-probe.ts, which runs in node.exe there.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';

type OptionConfig = NonNullable<ParseArgsConfig['options']>[string];

/** One option: parseArgs's own fields, plus what --help says of it. */
export type BenchOption = OptionConfig & {
  /** The value's name in the help (`--files N`), string options only; VALUE without it. */
  arg?: string;
  /** What it does, with its unit; a string `default` is appended to it by the usage. */
  help: string;
};

export interface BenchScript {
  /** `bench/<dir>/<script>`: how every error line starts, and the script's path in the usage. */
  name: string;
  /** What it measures and where the doc says more: two or three lines, the usage prints them as given. */
  summary: string;
  /** It needs root: the usage starts with sudo. */
  root?: boolean;
  /** Node flags the usage puts before the script (`--expose-gc`). */
  node?: string;
  /** Positional arguments as the usage names them (`DIR [phase...]`); without it there are none. */
  positionals?: string;
}

/** `values` as parseArgs types it for these options (a `default` makes one non-optional). */
export type BenchValues<O extends Record<string, BenchOption>> = ReturnType<typeof parseArgs<{ options: O }>>['values'];

const WIDTH = 100;

/** The --help text: usage line, summary, one aligned line (or more, wrapped) per option. */
function usageText(script: BenchScript, options: Record<string, BenchOption>): string {
  const run = [script.root ? 'sudo' : '', 'node', script.node ?? '', `build/${script.name}.js`, '[options]', script.positionals ?? '']
    .filter(Boolean)
    .join(' ');
  const rows = Object.entries(options).map(([name, o]): [string, string] => {
    const shown = o.type === 'string' && typeof o.default === 'string' ? `${o.help} (default: ${o.default})` : o.help;
    return [`--${name}${o.type === 'string' ? ` ${o.arg ?? 'VALUE'}` : ''}`, shown];
  });
  rows.push(['-h, --help', 'this text']);
  const left = Math.max(...rows.map(([l]) => l.length)) + 3;
  const lines = rows.map(([l, text]) => `  ${l.padEnd(left)}${wrap(text, WIDTH - 2 - left).join(`\n${' '.repeat(left + 2)}`)}`);
  return `usage: ${run}\n\n${script.summary.trim()}\n\n${lines.join('\n')}\n`;
}

/** Words to lines of at most `width` (a longer word alone); "(default: X)" stays on one line. */
function wrap(text: string, width: number): string[] {
  const out: string[] = [];
  let line = '';
  for (const word of text.replace(/\(default: [^)]*\)/g, (d) => d.replaceAll(' ', '\0')).split(/\s+/)) {
    if (line && line.length + 1 + word.length > width) {
      out.push(line);
      line = word;
    } else line = line ? `${line} ${word}` : word;
  }
  return [...out, line].map((l) => l.replaceAll('\0', ' '));
}

/**
 * Parse `args` (this process's arguments): --help prints the usage and exits 0; an unknown option,
 * a missing value or a stray argument is one line `<name>: <what> (see --help)` and exit 2.
 * `usageError` does the same for what the script checks itself (numbers, required options).
 */
export function benchArgs<O extends Record<string, BenchOption>>(
  script: BenchScript,
  options: O,
  args: readonly string[] = process.argv.slice(2),
): { values: BenchValues<O>; positionals: string[]; usageError: (message: string) => never } {
  const usageError = (message: string): never => {
    process.stderr.write(`${script.name}: ${message} (see --help)\n`);
    process.exit(2);
  };
  const config: NonNullable<ParseArgsConfig['options']> = {};
  for (const [name, { arg: _arg, help: _help, ...o }] of Object.entries(options)) config[name] = o;
  config.help = { type: 'boolean', short: 'h' };
  let parsed;
  try {
    parsed = parseArgs({ args, options: config, allowPositionals: script.positionals !== undefined });
  } catch (e) {
    const err = e as Error & { code?: string };
    // Node goes on to say how to pass a positional that starts with '-': one sentence is enough.
    return usageError(err.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' ? err.message.split('. ')[0]! : err.message);
  }
  if (parsed.values.help) {
    process.stdout.write(usageText(script, options));
    process.exit(0);
  }
  return { values: parsed.values as BenchValues<O>, positionals: parsed.positionals, usageError };
}
