/**
 * The yara engine: YARA rules judged in this process by YARA-X, through the optional npm package
 * @litko/yara-x (a prebuilt napi binding). The package is loaded with a dynamic import only when
 * this engine is chosen, so nothing else (agent, other engines) ever loads it; when it is
 * missing, create() fails with LA_ERR_ENGINE_UNAVAILABLE saying how to install it. The single
 * binary does not carry it: there it is looked up from the executable's directory upwards
 * (DIR/node_modules/@litko/yara-x), not from the path the binary was built at.
 *
 * - Rules: one .yar/.yara file, or a directory whose .yar/.yara files (not recursive, hidden files
 *   skipped, sorted by name) are compiled together into one rule set. `include` is disabled (it
 *   would read any file the SVM can read into its log on an error): put the files in a directory.
 *   Each file is first compiled alone, so an error names that file, line and column; then all of
 *   them together (an error there, e.g. one rule name in two files, is mapped back to its file).
 *   Compiler warnings (slow patterns...) are logged with their file and line, and loading goes on.
 * - A failing rule set is a ConfigError (LA_ERR_CONFIG) naming the file and line: at start the
 *   SVM does not start; on reload (SIGHUP) the previous rules stay in force and the error is
 *   logged.
 * - Threat name: `YARA.<file>.<rule>`, <file> the rule's file name without .yar/.yara; the first
 *   matching rule of the set gives the name.
 * - Generation: `yara-` + 16 hex digits of SHA-256 over the package version and every file's
 *   name and bytes: any rule change (or a YARA-X upgrade) makes cached verdicts stale.
 * - Limits: content over `maxFileSize` (the SVM's max_file_size) is an EngineLimitError; each
 *   pattern records at most `maxMatchesPerPattern` matches (default 1000, so `#a > N` works up
 *   to N = 999); rule files at most 16 MiB each, 64 MiB and 10,000 files in all.
 * - Scans run synchronously on the event loop (the binding's scanAsync does the work before it
 *   returns too): about 4 ms per MiB of ordinary content with a dozen rules, so a 64 MiB file holds
 *   the SVM for ~0.5 s; a pattern of one or two bytes over content made of it costs ~0.1 s per
 *   MiB. See docs/svm.md; a worker pool is future work.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { ConfigError, LightagentError } from '../../errors.js';
import { logger } from '../../log.js';
import { EngineError, EngineLimitError, type EngineResult, type ScanEngine } from './engine.js';

/** The part of @litko/yara-x this engine uses (declared here: the package is optional). */
interface YaraCompileIssue {
  code: string;
  message: string;
  line?: number;
  column?: number;
}
interface YaraCompilerOptions {
  enableIncludes?: boolean;
  errorOnSlowPattern?: boolean;
}
interface YaraRuleMatch {
  ruleIdentifier: string;
  namespace: string;
}
interface YaraScanner {
  scan(data: Buffer): YaraRuleMatch[];
  getWarnings(): YaraCompileIssue[];
  setMaxMatchesPerPattern(n: number): void;
}
export interface YaraModule {
  compile(source: string, options?: YaraCompilerOptions): YaraScanner;
  validate(source: string, options?: YaraCompilerOptions): { warnings: YaraCompileIssue[]; errors: YaraCompileIssue[] };
}

/**
 * The prebuilt YARA-X binding itself (its `main` is the .node file). Its wrapper package
 * `@litko/yara-x` is not used: it lists optional darwin bindings that the registry does not have,
 * which makes `npm ci` refuse the lock file.
 */
export const YARA_PACKAGE = '@litko/yara-x-linux-x64-gnu';

/** The engine's library is not installed (or cannot load on this platform). */
export class EngineUnavailableError extends LightagentError {
  constructor(message: string, hint: string, options?: { cause?: unknown }) {
    super('LA_ERR_ENGINE_UNAVAILABLE', message, hint, options);
  }
}

export interface YaraEngineOptions {
  /** A .yar/.yara file, or a directory of them. */
  rules: string;
  /** Largest content judged (the SVM's max_file_size); larger is an EngineLimitError. */
  maxFileSize?: number;
  /** Matches recorded per pattern (default 1000). */
  maxMatchesPerPattern?: number;
  /** How the package is loaded (tests); default a dynamic import of @litko/yara-x. */
  load?: () => Promise<YaraModule>;
}

export const YARA_LIMITS = {
  maxRuleFileBytes: 16 << 20,
  maxRuleBytes: 64 << 20,
  maxRuleFiles: 10_000,
  maxMatchesPerPattern: 1000,
} as const;

const COMPILER: YaraCompilerOptions = { enableIncludes: false };

interface RuleFile {
  file: string;
  /** The file name without .yar/.yara, as used in threat names. */
  stem: string;
  source: string;
}

interface Loaded {
  scanner: YaraScanner;
  generation: string;
  files: RuleFile[];
  /** rule identifier -> stem of the file that defines it. */
  ruleFile: Map<string, string>;
  rules: number;
}

/**
 * Where the package is looked up: from this module (npm install), or in the single binary from
 * the executable's directory upwards (its node_modules), never from the path it was built at.
 */
function yaraRequire(): NodeJS.Require {
  let sea = false;
  try {
    const m = (process as unknown as { getBuiltinModule?: (id: string) => unknown }).getBuiltinModule?.('node:sea') as
      { isSea?: () => boolean } | undefined;
    sea = m?.isSea?.() === true;
  } catch {
    // Node 20: no getBuiltinModule, and no single binary either.
  }
  return createRequire(sea ? path.join(path.dirname(process.execPath), 'lightagent-yara-lookup.js') : import.meta.url);
}

let versionCache: string | undefined;
function packageVersion(): string {
  if (versionCache !== undefined) return versionCache;
  versionCache = 'unknown';
  try {
    const pj = yaraRequire().resolve(`${YARA_PACKAGE}/package.json`);
    const doc = JSON.parse(fs.readFileSync(pj, 'utf8')) as { name?: string; version?: string };
    if (doc.name === YARA_PACKAGE && typeof doc.version === 'string') versionCache = doc.version;
  } catch {
    // The version only salts the generation.
  }
  return versionCache;
}

/** Import @litko/yara-x, or an EngineUnavailableError saying what to install. */
export async function loadYaraModule(): Promise<YaraModule> {
  let mod: Record<string, unknown>;
  try {
    // A .node module: loaded with require (ESM import cannot load native addons).
    mod = yaraRequire()(YARA_PACKAGE) as Record<string, unknown>;
  } catch (e) {
    const detail = (e as NodeJS.ErrnoException).code ?? (e as Error).message;
    throw new EngineUnavailableError(
      `engine yara needs the npm package ${YARA_PACKAGE} (YARA-X), which cannot be loaded here (${detail})`,
      `install it (an optional dependency with a prebuilt linux-x64 binding): npm install ${YARA_PACKAGE} where ` +
        `lightagent's npm package is installed, or for the single binary, which does not carry it: npm install --prefix ` +
        `<the binary's directory> ${YARA_PACKAGE}; or choose engine builtin or clamav`,
      { cause: e },
    );
  }
  const m = (typeof mod.compile === 'function' ? mod : (mod.default as Record<string, unknown> | undefined)) ?? mod;
  if (typeof m.compile !== 'function' || typeof m.validate !== 'function') {
    throw new EngineUnavailableError(
      `${YARA_PACKAGE} was loaded but has no compile()/validate(); is it the expected package (0.3.x)?`,
      `install ${YARA_PACKAGE} 0.3.x`,
    );
  }
  return m as unknown as YaraModule;
}

/** The rule files named by `rules` (a file, or a directory's .yar/.yara files), read and bounded. */
export function readRuleFiles(rules: string): RuleFile[] {
  const issues: string[] = [];
  let st: fs.Stats;
  try {
    st = fs.statSync(rules);
  } catch (e) {
    throw new ConfigError(rules, [
      `yara_rules: cannot read ${rules} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}); give a .yar file ` +
        `or a directory of .yar/.yara files`,
    ]);
  }
  let names: string[];
  if (st.isDirectory()) {
    names = fs
      .readdirSync(rules)
      .filter((n) => !n.startsWith('.') && /\.(yar|yara)$/i.test(n))
      .sort()
      .map((n) => path.join(rules, n));
    if (names.length === 0) throw new ConfigError(rules, [`yara_rules: the directory ${rules} has no .yar or .yara files`]);
    if (names.length > YARA_LIMITS.maxRuleFiles)
      throw new ConfigError(rules, [`yara_rules: ${names.length} rule files in ${rules}, more than ${YARA_LIMITS.maxRuleFiles}`]);
  } else {
    names = [rules];
  }
  const out: RuleFile[] = [];
  let total = 0;
  for (const file of names) {
    try {
      const fst = fs.statSync(file);
      if (!fst.isFile()) {
        // A directory entry named *.yar that is not a file: skipped, said.
        if (file !== rules) continue;
        issues.push(`${file}: not a regular file`);
        continue;
      }
      if (fst.size > YARA_LIMITS.maxRuleFileBytes) {
        issues.push(`${file}: ${fst.size} bytes, over the ${YARA_LIMITS.maxRuleFileBytes}-byte limit for one rule file`);
        continue;
      }
      total += fst.size;
      if (total > YARA_LIMITS.maxRuleBytes) {
        issues.push(`${file}: the rule files add up to over ${YARA_LIMITS.maxRuleBytes} bytes`);
        break;
      }
      const bytes = fs.readFileSync(file);
      const source = bytes.toString('utf8');
      if (source.includes('\0')) {
        issues.push(`${file}: has NUL bytes; is it a compiled rule file? give YARA source`);
        continue;
      }
      const stem =
        path
          .basename(file)
          .replace(/\.(yar|yara)$/i, '')
          .replace(/[^A-Za-z0-9_-]+/g, '_')
          .slice(0, 64) || 'rules';
      out.push({ file, stem, source });
    } catch (e) {
      issues.push(`${file}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
    }
  }
  if (issues.length) throw new ConfigError(rules, issues);
  return out;
}

/** `--> line:L:C` in a YARA-X message. */
function locate(issue: YaraCompileIssue): { line: number; column: number } | undefined {
  if (typeof issue.line === 'number') return { line: issue.line, column: issue.column ?? 0 };
  const m = /-->\s*line:(\d+):(\d+)/.exec(issue.message);
  return m ? { line: Number(m[1]), column: Number(m[2]) } : undefined;
}

/** The first line of a YARA-X message without its `error[E001]: ` prefix. */
function headline(message: string): string {
  const first = message.split('\n').find((l) => l.trim().length > 0) ?? message;
  return first
    .replace(/^Compilation error \([A-Z0-9]+\):\s*/, '')
    .replace(/^(?:error|warning)\[[^\]]+\]:\s*/, '')
    .trim()
    .slice(0, 500);
}

/** `file:line:col: message (code)` */
function describeIssue(file: string, issue: YaraCompileIssue, lineOffset = 0): string {
  const at = locate(issue);
  return `${file}${at ? `:${at.line - lineOffset}:${at.column}` : ''}: ${headline(issue.message)}${issue.code ? ` (${issue.code})` : ''}`;
}

/** Rule names a source defines (comments and strings blanked first); only for threat names. */
export function ruleNames(source: string): string[] {
  const blank = source.replace(/\/\*[\s\S]*?\*\/|\/\/[^\n]*|"(?:[^"\\\n]|\\.)*"/g, (s) => s.replace(/[^\n]/g, ' '));
  const out: string[] = [];
  for (const m of blank.matchAll(/(?:^|[\s;}])(?:(?:private|global)\s+)*rule\s+([A-Za-z_][A-Za-z0-9_]*)/g)) out.push(m[1]!);
  return out;
}

export class YaraEngine implements ScanEngine {
  readonly name = 'yara';
  private loaded: Loaded | undefined;
  private closed = false;
  private readonly log = logger('engine-yara');
  private readonly maxMatches: number;

  private constructor(
    private readonly yx: YaraModule,
    private readonly opts: YaraEngineOptions,
  ) {
    this.maxMatches = opts.maxMatchesPerPattern ?? YARA_LIMITS.maxMatchesPerPattern;
  }

  /** Load the package and compile the rules; LA_ERR_ENGINE_UNAVAILABLE or LA_ERR_CONFIG (naming file and line) on failure. */
  static async create(opts: YaraEngineOptions): Promise<YaraEngine> {
    const yx = await (opts.load ?? loadYaraModule)();
    const e = new YaraEngine(yx, opts);
    e.reload();
    return e;
  }

  /** The rule path this engine loads. */
  get rulesPath(): string {
    return this.opts.rules;
  }

  /** Rules in force (as counted in their sources). */
  get ruleCount(): number {
    return this.loaded?.rules ?? 0;
  }

  /**
   * Re-read and compile the rules. On any failure throws a ConfigError naming the file and line
   * and keeps the rules in force (logged as an error too).
   */
  reload(): { generation: string; files: number; rules: number; warnings: number } {
    let next: Loaded;
    let warnings: string[];
    try {
      ({ next, warnings } = this.compile());
    } catch (e) {
      if (this.loaded)
        this.log.error('yara rules not reloaded, keeping the previous ones', {
          rules: this.opts.rules,
          error: (e as Error).message,
          generation: this.loaded.generation,
        });
      throw e;
    }
    for (const w of warnings) this.log.warn('yara rule warning', { warning: w });
    this.loaded = next;
    this.log.info('yara rules loaded', {
      rules: this.opts.rules,
      files: next.files.length,
      count: next.rules,
      warnings: warnings.length,
      generation: next.generation,
    });
    return { generation: next.generation, files: next.files.length, rules: next.rules, warnings: warnings.length };
  }

  private compile(): { next: Loaded; warnings: string[] } {
    const files = readRuleFiles(this.opts.rules);
    const issues: string[] = [];
    const warnings: string[] = [];
    // Each file alone first: errors and warnings name the file and its own line numbers.
    for (const f of files) {
      let r: ReturnType<YaraModule['validate']>;
      try {
        r = this.yx.validate(f.source, COMPILER);
      } catch (e) {
        issues.push(`${f.file}: ${headline((e as Error).message)}`);
        continue;
      }
      for (const e of r.errors) issues.push(describeIssue(f.file, e));
      for (const w of r.warnings) warnings.push(describeIssue(f.file, w));
    }
    if (issues.length)
      throw new ConfigError(
        this.opts.rules,
        issues.map((i) => `yara rules: ${i}`),
      );
    // Then together; an error here is between files (one rule name twice...): map its line back.
    const starts: number[] = [];
    let line = 1;
    for (const f of files) {
      starts.push(line);
      line += f.source.split('\n').length;
    }
    let scanner: YaraScanner;
    try {
      scanner = this.yx.compile(files.map((f) => f.source).join('\n'), COMPILER);
    } catch (e) {
      const issue: YaraCompileIssue = { code: '', message: (e as Error).message };
      const at = locate(issue);
      let i = 0;
      if (at) while (i + 1 < files.length && starts[i + 1]! <= at.line) i++;
      throw new ConfigError(this.opts.rules, [
        `yara rules: ${describeIssue(files[i]!.file, issue, at ? starts[i]! - 1 : 0)}` +
          `${files.length > 1 ? ' (when compiled with the other rule files)' : ''}`,
      ]);
    }
    scanner.setMaxMatchesPerPattern(this.maxMatches);
    const ruleFile = new Map<string, string>();
    let rules = 0;
    for (const f of files) {
      for (const n of ruleNames(f.source)) {
        rules++;
        if (!ruleFile.has(n)) ruleFile.set(n, f.stem);
      }
    }
    const h = crypto.createHash('sha256').update(`${YARA_PACKAGE}@${packageVersion()}\0max-matches=${this.maxMatches}\0`);
    for (const f of files) h.update(`${path.basename(f.file)}\0${f.source.length}\0${f.source}\0`);
    return { next: { scanner, files, ruleFile, rules, generation: `yara-${h.digest('hex').slice(0, 16)}` }, warnings };
  }

  generation(): string {
    return this.loaded?.generation ?? 'yara-none';
  }

  async scan(content: Buffer): Promise<EngineResult> {
    const l = this.loaded;
    if (this.closed || !l) throw new EngineError('the yara engine is closed', 'the SVM is shutting down');
    const max = this.opts.maxFileSize;
    if (max !== undefined && content.length > max)
      throw new EngineLimitError(
        `${content.length} bytes is over the yara engine's limit of ${max} bytes (max_file_size)`,
        'such files are not scanned: raise max_file_size',
      );
    let matches: YaraRuleMatch[];
    try {
      matches = l.scanner.scan(content);
    } catch (e) {
      throw new EngineError(
        `YARA-X failed to scan ${content.length} bytes: ${(e as Error).message.slice(0, 500)}`,
        'see the SVM log; check the rules',
        { cause: e },
      );
    }
    const first = matches[0];
    if (!first) return { infected: false };
    const rule = String(first.ruleIdentifier);
    const file = l.ruleFile.get(rule) ?? (first.namespace && first.namespace !== 'default' ? first.namespace : undefined);
    return { infected: true, threat: file ? `YARA.${file}.${rule}` : `YARA.${rule}` };
  }

  healthy(): boolean {
    return !this.closed && this.loaded !== undefined;
  }

  async close(): Promise<void> {
    this.closed = true;
    this.loaded = undefined;
  }
}
