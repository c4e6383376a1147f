/**
 * Exclusions, compiled once per configuration (start-up and each reload) into one matcher that the
 * on-access decision, the written-file scans and on-demand scans share. Pure and allocation-free
 * on the path checks: it runs for every event that reaches the main thread.
 *
 * What each kind does (docs/install.md, "Exclusions"):
 *   paths, extensions -> the file is not scanned: its opens are allowed, its writes not scanned.
 *                        Never a kernel ignore mark: a mark follows the inode, and the file could
 *                        be renamed or linked out of the excluded place. Plain folders and
 *                        `DIR/**` globs are also given to the fanotify worker as prefixes, so their
 *                        events are answered there without the hop to the main thread.
 *   processes         -> an open BY that executable (or, with `children`, by a process one of whose
 *                        ancestors runs it) is allowed unscanned, for that process only: never a
 *                        mark (it would let every other process in too).
 *   sha256            -> content with that hash is clean whatever the engine says (a known false
 *                        positive). Judged on the hash the scan computes anyway: no extra read.
 *                        Such an open is cacheable like any clean one (the mark follows the very
 *                        content that was judged; a reload starts a new fanotify group without marks).
 *   threats           -> a detection with such a name is reported (action `reported`, in the
 *                        events and to the SVM), not denied, not quarantined, nobody killed.
 *
 * A rule never widens beyond what it says: `/srv/a` covers /srv/a and /srv/a/..., never /srv/ab;
 * globs are picomatch's syntax and meaning (dot files included, no extglobs, no negation), matched
 * by src/config/glob.ts in linear time (picomatch's regexes backtrack on hostile file names).
 */
import { NO_EXCLUSIONS, type ExclusionsConfig } from '../config/exclusions.js';
import { GlobSet, hasGlobSyntax } from '../config/glob.js';
import { someAncestor, processExe, processStart, LINEAGE_MAX_DEPTH, type LineageReader } from '../processes/lineage.js';

/**
 * How long an ancestor walk's answer is kept for the same process (pid and start time): its
 * ancestors change only when one exits (its children go to a reaper) or runs another program.
 */
const LINEAGE_TTL_MS = 1000;
const LINEAGE_CACHE = 1024;

export type ExclusionKind = 'path' | 'extension' | 'process' | 'sha256' | 'threat';

/** A Windows path (drive or UNC): matched with `/` for `\`, without case. */
const isWindowsPath = (p: string) => /^[a-zA-Z]:[\\/]/.test(p) || p.startsWith('\\\\');

/** A path free of glob syntax, or `DIR/**` with such a DIR: exactly that and everything under it. */
function literalFolder(pattern: string): string | undefined {
  const base = pattern.endsWith('/**') ? pattern.slice(0, -3) : pattern;
  if (base === '' || hasGlobSyntax(base)) return undefined;
  return base.length > 1 && base.endsWith('/') ? base.slice(0, -1) : base;
}

/** Whether `p` is `prefix` or below it (`/srv/a` never covers `/srv/ab`). */
function under(p: string, prefix: string): boolean {
  if (prefix === '/') return p.startsWith('/');
  return p.startsWith(prefix) && (p.length === prefix.length || p.charCodeAt(prefix.length) === 47); /* / */
}

/**
 * Threat names: `*` any run of characters, `?` one, everything else literal; the whole name,
 * case-sensitive. One resume point per star (no regex: no backtracking on a long name).
 */
export function wildcardMatch(pattern: string, name: string): boolean {
  let pi = 0;
  let ni = 0;
  let starPi = -1;
  let starNi = 0;
  while (ni < name.length) {
    const c = pattern[pi];
    if (c === '*') {
      starPi = pi++;
      starNi = ni;
    } else if (c !== undefined && (c === '?' || c === name[ni])) {
      pi++;
      ni++;
    } else if (starPi >= 0) {
      pi = starPi + 1;
      ni = ++starNi;
    } else return false;
  }
  while (pattern[pi] === '*') pi++;
  return pi === pattern.length;
}

export class Exclusions {
  /**
   * Literal folders and files (and `DIR/**`), as written (Windows ones too): for the fanotify
   * worker, the watchers and the tree walker, which answer them without calling path().
   */
  readonly prefixes: readonly string[];
  private readonly globs: GlobSet | undefined;
  private readonly winPrefixes: string[];
  private readonly winGlobs: GlobSet | undefined;
  private readonly extensions: readonly string[];
  private readonly exes: ReadonlySet<string>;
  private readonly parentExes: ReadonlySet<string>;
  private readonly hashes: ReadonlySet<string>;
  private readonly threatExact: ReadonlySet<string>;
  private readonly threatPatterns: string[];
  /** Ancestor walks by (pid, start time), for LINEAGE_TTL_MS: a busy process opens many files. */
  private readonly lineageSeen = new Map<number, { start: number; excluded: boolean; until: number }>();
  /** Nothing about paths or extensions: path() is always false. */
  readonly noPaths: boolean;
  readonly noProcesses: boolean;
  readonly empty: boolean;

  constructor(
    readonly config: ExclusionsConfig = NO_EXCLUSIONS,
    /** Folders always excluded beside the configured ones, taken literally (the state directory). */
    extraPrefixes: readonly string[] = [],
    private readonly lineage?: LineageReader,
  ) {
    const prefixes: string[] = [];
    const globs: string[] = [];
    const winGlobs: string[] = [];
    this.winPrefixes = [];
    // Always literal, whatever characters they hold: the state directory, `--exclude PATH` of a scan.
    for (const p of extraPrefixes) prefixes.push(p.length > 1 && p.endsWith('/') ? p.slice(0, -1) : p);
    for (const p of config.paths) {
      if (isWindowsPath(p)) {
        const norm = p.replaceAll('\\', '/').toLowerCase();
        const folder = literalFolder(norm);
        if (folder !== undefined) {
          this.winPrefixes.push(folder);
          prefixes.push(p.replace(/[\\/]\*\*$/, ''));
        } else winGlobs.push(norm);
        continue;
      }
      const folder = literalFolder(p);
      if (folder !== undefined) prefixes.push(folder);
      else globs.push(p);
    }
    this.globs = globs.length === 0 ? undefined : new GlobSet(globs);
    this.winGlobs = winGlobs.length === 0 ? undefined : new GlobSet(winGlobs);
    this.prefixes = [...new Set(prefixes)];
    this.extensions = [...new Set(config.extensions.map((e) => e.toLowerCase()))];
    this.exes = new Set(config.processes.map((r) => r.path));
    this.parentExes = new Set(config.processes.filter((r) => r.children).map((r) => r.path));
    this.hashes = new Set(config.sha256.map((h) => h.toLowerCase()));
    this.threatExact = new Set(config.threats.filter((t) => !/[*?]/.test(t)));
    this.threatPatterns = config.threats.filter((t) => /[*?]/.test(t));
    this.noPaths = this.prefixes.length + globs.length + this.winPrefixes.length + winGlobs.length + this.extensions.length === 0;
    this.noProcesses = this.exes.size === 0;
    this.empty = this.noPaths && this.noProcesses && this.hashes.size === 0 && this.threatExact.size + this.threatPatterns.length === 0;
  }

  /** The kind of path exclusion that covers the file at absolute `p`, or undefined. Never throws. */
  path(p: string): 'path' | 'extension' | undefined {
    if (this.noPaths || typeof p !== 'string') return undefined;
    for (const prefix of this.prefixes) if (under(p, prefix)) return 'path';
    if (this.globs?.match(p)) return 'path';
    if ((this.winPrefixes.length > 0 || this.winGlobs !== undefined) && isWindowsPath(p)) {
      const w = p.replaceAll('\\', '/').toLowerCase();
      for (const prefix of this.winPrefixes) if (under(w, prefix)) return 'path';
      if (this.winGlobs?.match(w)) return 'path';
    }
    if (this.extensions.length > 0 && this.extension(p)) return 'extension';
    return undefined;
  }

  /** The file name, lower-cased, ends with a listed extension and is longer than it (a file called `.log` has none). */
  private extension(p: string): boolean {
    // `\` separates names on Windows only: on Linux it is a character of a name like any other.
    const slash = p.charCodeAt(0) === 47 /* / */ ? p.lastIndexOf('/') : Math.max(p.lastIndexOf('/'), p.lastIndexOf('\\'));
    const nameLen = p.length - slash - 1;
    for (const ext of this.extensions) {
      if (nameLen <= ext.length) continue;
      // ASCII compare from the end without allocating; anything else goes the slow, exact way.
      let i = ext.length;
      let j = p.length;
      for (;;) {
        if (i === 0) return true;
        const c = p.charCodeAt(--j);
        const e = ext.charCodeAt(--i);
        if (c > 127 || e > 127) return this.extensionSlow(p.slice(slash + 1));
        if (c !== e && !(c >= 65 && c <= 90 && c + 32 === e)) break;
      }
    }
    return false;
  }

  private extensionSlow(name: string): boolean {
    const lower = name.toLowerCase();
    for (const ext of this.extensions) if (lower.length > ext.length && lower.endsWith(ext)) return true;
    return false;
  }

  /**
   * Whether an access by `pid` is excluded by process: its executable is listed, or with
   * `children` one of its ancestors' (at most LINEAGE_MAX_DEPTH up). Reads /proc; only called when
   * process rules exist, on events that reached the main thread.
   */
  process(pid: number): boolean {
    if (this.noProcesses || !Number.isInteger(pid) || pid <= 0) return false;
    const exe = processExe(pid, this.lineage);
    if (exe !== undefined && exe.length < 4096 && this.exes.has(exe)) return true;
    if (this.parentExes.size === 0) return false;
    const start = processStart(pid, this.lineage);
    if (start === undefined) return false;
    const now = performance.now();
    const seen = this.lineageSeen.get(pid);
    if (seen && seen.start === start && seen.until > now) return seen.excluded;
    const excluded = someAncestor(pid, (e) => e.length < 4096 && this.parentExes.has(e), LINEAGE_MAX_DEPTH, this.lineage);
    if (this.lineageSeen.size >= LINEAGE_CACHE)
      for (const [k, v] of this.lineageSeen) if (v.until <= now || this.lineageSeen.size >= LINEAGE_CACHE) this.lineageSeen.delete(k);
    this.lineageSeen.set(pid, { start, excluded, until: now + LINEAGE_TTL_MS });
    return excluded;
  }

  /** Whether an executable path is listed (for callers that know the exe, e.g. Windows snapshots). */
  exe(path: string, asAncestor = false): boolean {
    return (asAncestor ? this.parentExes : this.exes).has(path);
  }

  sha256(hash: string | undefined): boolean {
    return hash !== undefined && this.hashes.size > 0 && this.hashes.has(hash.toLowerCase());
  }

  threat(name: string | undefined): boolean {
    if (name === undefined) return false;
    if (this.threatExact.has(name)) return true;
    for (const t of this.threatPatterns) if (wildcardMatch(t, name)) return true;
    return false;
  }
}

export const NOTHING_EXCLUDED = new Exclusions();
