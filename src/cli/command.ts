/**
 * One definition per command: its name, summary, options (typed), help text and handler, stated
 * once. `defineCommand` parses (node:util parseArgs, strict), answers `--help` (usage on stdout,
 * exit 0), and refuses an unknown option, a missing value or a bad one with a message that names
 * the option (exit 2), so no command repeats that preamble or words it differently.
 */
import { parseArgs } from 'node:util';
import { parseDuration } from '../config/units.js';
import { err, fail, out } from './output.js';

export type OptionType = 'boolean' | 'string' | 'duration' | 'integer';

export interface OptionSpec {
  type: OptionType;
  /** One letter: `-n`. */
  short?: string;
  /** Repeatable: the values in order. */
  multiple?: boolean;
  /** What the value is, for the help: `--svm URL`. */
  arg?: string;
  /** The help text; more lines after '\n' are indented under the first. */
  help: string;
  /** string: the only values accepted. */
  choices?: readonly string[];
  /** integer and duration (ms): the bounds, inclusive. */
  min?: number;
  max?: number;
  /** integer and duration (ms): the value when the option is absent. */
  default?: number;
}

type Scalar<S extends OptionSpec> = S['type'] extends 'boolean' ? boolean : S['type'] extends 'integer' | 'duration' ? number : string;

/** The parsed options: booleans are false when absent, numbers with a default always set. */
export type Values<O extends Record<string, OptionSpec>> = {
  -readonly [K in keyof O]: O[K]['type'] extends 'boolean'
    ? boolean
    : O[K] extends { multiple: true }
      ? Array<Scalar<O[K]>> | undefined
      : O[K] extends { default: number }
        ? number
        : Scalar<O[K]> | undefined;
};

export interface Invocation<O extends Record<string, OptionSpec>> {
  values: Values<O>;
  positionals: string[];
  /** `lightagent scan`: what messages start with. */
  prefix: string;
  /** Print `message` and the help on stderr; returns 2. */
  usage(message: string): number;
}

export interface CommandSpec<O extends Record<string, OptionSpec>> {
  /** `lightagent-svm` and others; default `lightagent`. */
  program?: string;
  /** The subcommand (`scan`); absent for a program that is one command. */
  name?: string;
  /** One line for `lightagent --help`. */
  summary: string;
  /** What follows the command in the usage line: `[options] PATH...`. */
  usage: string;
  /** Paragraphs between the usage line and the options. */
  description?: string;
  options: O;
  /** Words after the options (positionals) are allowed; the handler checks them. */
  positionals?: boolean;
  /** Paragraphs after the options: exit codes, examples. */
  footer?: string;
  /** Left out of `lightagent --help` (a platform's own command). */
  hidden?: boolean;
  /** Returns the exit code; an error it throws is printed (what happened, what to do) as exit 2. */
  handler(inv: Invocation<O>): Promise<number> | number;
}

export interface Command {
  readonly name: string;
  readonly summary: string;
  readonly hidden: boolean;
  readonly help: string;
  run(argv: string[]): Promise<number>;
}

const HELP_OPTION: OptionSpec = { type: 'boolean', short: 'h', help: 'show this help' };

export function defineCommand<const O extends Record<string, OptionSpec>>(spec: CommandSpec<O>): Command {
  const prefix = [spec.program ?? 'lightagent', spec.name].filter(Boolean).join(' ');
  const all: Record<string, OptionSpec> = { ...spec.options, help: HELP_OPTION };
  const help = renderHelp(prefix, spec, all);
  const usage = (message: string) => {
    err(`${prefix}: ${message}\n\n${help}`);
    return 2;
  };
  return {
    name: spec.name ?? prefix,
    summary: spec.summary,
    hidden: spec.hidden ?? false,
    help,
    async run(argv) {
      let parsed;
      try {
        parsed = parseArgs({
          args: argv,
          allowPositionals: spec.positionals ?? false,
          strict: true,
          options: Object.fromEntries(
            Object.entries(all).map(([k, o]) => [
              k,
              {
                type: o.type === 'boolean' ? 'boolean' : 'string',
                ...(o.short ? { short: o.short } : {}),
                ...(o.multiple ? { multiple: true } : {}),
              },
            ]),
          ) as Record<string, { type: 'boolean' | 'string'; short?: string; multiple?: boolean }>,
        });
      } catch (e) {
        return usage(parseError(e, all));
      }
      if (parsed.values.help) {
        out(help);
        return 0;
      }
      const values: Record<string, unknown> = {};
      for (const [k, o] of Object.entries(spec.options)) {
        const raw = parsed.values[k];
        if (o.type === 'boolean') {
          values[k] = raw === true;
          continue;
        }
        if (raw === undefined) {
          values[k] = o.default;
          continue;
        }
        const list = Array.isArray(raw) ? raw : [raw];
        const converted: unknown[] = [];
        for (const text of list as string[]) {
          const v = convert(k, o, text);
          if (typeof v === 'object') {
            err(`${prefix}: ${v.problem}`);
            return 2;
          }
          converted.push(v);
        }
        values[k] = o.multiple ? converted : converted[0];
      }
      try {
        return await spec.handler({ values: values as Values<O>, positionals: parsed.positionals, prefix, usage });
      } catch (e) {
        return fail(e, prefix);
      }
    },
  };
}

/**
 * A duration flag in milliseconds: `3s`, `500ms`, `2m` (src/config/units.ts, as in the config
 * files), or a bare number of milliseconds (what `status --timeout` always took).
 */
export function parseDurationFlag(text: string): number | undefined {
  if (/^\s*\d+\s*$/.test(text)) {
    const ms = Number(text);
    return Number.isSafeInteger(ms) ? ms : undefined;
  }
  return parseDuration(text);
}

/** `1000` -> `1s`, `600000` -> `10m`: bounds in messages, as a person would type them. */
export function formatDurationFlag(ms: number): string {
  for (const [unit, size] of [
    ['h', 3_600_000],
    ['m', 60_000],
    ['s', 1000],
  ] as const) {
    if (ms >= size && ms % size === 0) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}

function convert(name: string, o: OptionSpec, text: string): string | number | { problem: string } {
  const flag = `--${name}`;
  const shown = JSON.stringify(text.length > 60 ? `${text.slice(0, 60)}...` : text);
  if (o.type === 'string') {
    if (o.choices && !o.choices.includes(text)) return { problem: `${flag} must be ${orList(o.choices)}, not ${shown}` };
    return text;
  }
  const n = o.type === 'integer' ? (/^\s*\d+\s*$/.test(text) ? Number(text) : undefined) : parseDurationFlag(text);
  const min = o.min ?? 0;
  const max = o.max ?? Number.MAX_SAFE_INTEGER;
  if (n !== undefined && Number.isSafeInteger(n) && n >= min && n <= max) return n;
  if (o.type === 'integer') return { problem: `${flag} must be a whole number from ${min} to ${max}, not ${shown}` };
  return {
    problem:
      `${flag} must be a duration from ${formatDurationFlag(min)} to ${formatDurationFlag(max)} (e.g. 3s, 500ms; a ` +
      `bare number is milliseconds), not ${shown}`,
  };
}

function orList(items: readonly string[]): string {
  return items.length <= 1 ? (items[0] ?? '') : `${items.slice(0, -1).join(', ')} or ${items[items.length - 1]}`;
}

/** parseArgs' own messages name the option but not in our words; the option is in its first quotes. */
function parseError(e: unknown, options: Record<string, OptionSpec>): string {
  const { code, message } = e as { code?: string; message?: string };
  // '--name', '--name <value>', or '-v, --verbose' for an option with a short form.
  const quoted = /'(?:-\w, )?(-{1,2}[^'\s<=,]+)/.exec(message ?? '')?.[1];
  if (code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' && quoted) return `unknown option "${quoted}"`;
  if (code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE' && quoted) {
    const name = quoted.startsWith('--') ? quoted.slice(2) : Object.entries(options).find(([, o]) => `-${o.short}` === quoted)?.[0];
    const o = name ? options[name] : undefined;
    if (o?.type === 'boolean') return `${quoted} takes no value`;
    const dash = /ambiguous/.test(message ?? '') ? `; a value that starts with "-" is given as ${quoted}=VALUE` : '';
    return `${quoted} needs a value${o?.arg ? ` (${quoted} ${o.arg})` : ''}${dash}`;
  }
  if (code === 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL') {
    const word = /'([^']*)'/.exec(message ?? '')?.[1];
    return `unexpected argument${word !== undefined ? ` ${JSON.stringify(word.slice(0, 60))}` : ''}: this command takes options only`;
  }
  return message ?? String(e);
}

function renderHelp(prefix: string, spec: CommandSpec<Record<string, OptionSpec>>, options: Record<string, OptionSpec>): string {
  const labels = Object.entries(options).map(
    ([k, o]) => [`${o.short ? `-${o.short}, ` : ''}--${k}${o.arg ? ` ${o.arg}` : ''}`, o] as const,
  );
  const width = Math.max(...labels.map(([l]) => l.length)) + 2;
  const rows = labels.map(([label, o]) => {
    const [first, ...more] = o.help.split('\n');
    return [`  ${label.padEnd(width)} ${first}`, ...more.map((m) => `${' '.repeat(width + 3)}${m.trim()}`)].join('\n');
  });
  return [`Usage: ${prefix} ${spec.usage}`, spec.description, `Options:\n${rows.join('\n')}`, spec.footer]
    .filter((p) => p !== undefined && p !== '')
    .join('\n\n');
}
