/**
 * The command line of a benchmark script: node:util's parseArgs (strict) with `--help` (`-h`), a
 * usage text made from the options' own descriptions, and one line on stderr and exit 2 for an
 * unknown option or a bad value instead of a stack trace:
 *
 *   const { values: args, usageError } = benchArgs(
 *     { name: 'bench/micro/example', summary: 'What it measures.\nSee docs/benchmarks.md, "Running".' },
 *     {
 *       n: { type: 'string', default: '2000', arg: 'N', number: 'int', min: 1, help: 'round trips per run' },
 *       mode: { type: 'string', default: 'tcp', arg: 'MODE', help: 'tcp or ws' },
 *     },
 *   );
 *   const n = Number(args.n); // benchArgs refused anything but a whole number >= 1
 *   if (args.mode !== 'tcp' && args.mode !== 'ws') usageError(`--mode ${args.mode}: tcp or ws`);
 *
 * A string option with `number` holds a number (with `list`, a comma-separated list of them):
 * benchArgs refuses a value that is not a finite number of that kind or is out of `min`, `above`
 * or `max`, in one line naming the option and the value, before --help and before the script sees
 * it. The values stay strings, as parseArgs types them: the script's Number() gives what was checked.
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
  /** A string option that holds a number: 'int' a whole one, 'float' any finite one (`1e6`, `0.5`). */
  number?: 'int' | 'float';
  /** With `number`: the least value allowed. */
  min?: number;
  /** With `number`: a bound the value must be above (seconds: `above: 0`). */
  above?: number;
  /** With `number`: the greatest value allowed. */
  max?: number;
  /** With `number`: a comma-separated list of such numbers (`--sizes 1000,10000`), each checked. */
  list?: boolean;
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

/** Why `value` of a `number` option is refused (`not a whole number >= 1`), or undefined. */
function numberProblem(value: string, o: BenchOption): string | undefined {
  const n = value.trim() === '' ? NaN : Number(value);
  const ok =
    Number.isFinite(n) &&
    (o.number !== 'int' || Number.isInteger(n)) &&
    (o.min === undefined || n >= o.min) &&
    (o.above === undefined || n > o.above) &&
    (o.max === undefined || n <= o.max);
  if (ok) return undefined;
  const bounds = [
    o.min !== undefined && o.max !== undefined ? `from ${o.min} to ${o.max}` : '',
    o.min !== undefined && o.max === undefined ? `>= ${o.min}` : '',
    o.above !== undefined ? `> ${o.above}` : '',
    o.max !== undefined && o.min === undefined ? `<= ${o.max}` : '',
  ];
  return [o.number === 'int' ? 'a whole number' : 'a number', ...bounds].filter(Boolean).join(' ');
}

/** The usage error for a value of a `number` option (`--n abc: not a whole number >= 1`), or undefined. */
function checkNumber(name: string, value: string, o: BenchOption): string | undefined {
  const shown = (v: string) => (v === '' || /\s/.test(v) ? JSON.stringify(v) : v);
  if (!o.list) {
    const why = numberProblem(value, o);
    return why && `--${name} ${shown(value)}: not ${why}`;
  }
  for (const item of value.split(',')) {
    const why = numberProblem(item, o);
    if (why) return `--${name} ${shown(value)}: ${shown(item)} is not ${why}`;
  }
  return undefined;
}

/**
 * Parse `args` (this process's arguments): --help prints the usage and exits 0; an unknown option,
 * a missing value, a stray argument or a bad value of a `number` option (given or default) is one
 * line `<name>: <what> (see --help)` and exit 2, also with --help. `usageError` does the same for
 * what the script checks itself (names in a list, required options).
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
  for (const [name, o] of Object.entries(options)) {
    if (o.number !== undefined && o.type !== 'string') throw new Error(`${script.name}: --${name} has number but is not a string option`);
    // parseArgs gets its own fields only.
    const { arg: _arg, help: _help, number: _number, min: _min, above: _above, max: _max, list: _list, ...own } = o;
    config[name] = own;
  }
  config.help = { type: 'boolean', short: 'h' };
  let parsed;
  try {
    parsed = parseArgs({ args, options: config, allowPositionals: script.positionals !== undefined });
  } catch (e) {
    const err = e as Error & { code?: string };
    // Node goes on to say how to pass a positional that starts with '-': one sentence is enough.
    return usageError(err.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' ? err.message.split('. ')[0]! : err.message);
  }
  // Given or default, one value or several (`multiple`): each checked before --help, so that
  // `--n 5 --help` shows that 5 would do.
  for (const [name, o] of Object.entries(options)) {
    if (o.number === undefined) continue;
    for (const value of [parsed.values[name]].flat()) {
      const message = typeof value === 'string' ? checkNumber(name, value, o) : undefined;
      if (message) return usageError(message);
    }
  }
  if (parsed.values.help) {
    process.stdout.write(usageText(script, options));
    process.exit(0);
  }
  return { values: parsed.values as BenchValues<O>, positionals: parsed.positionals, usageError };
}
