/**
 * How old the signatures in force are, one answer per engine (`signatureTime`):
 *
 * - clamav: clamd's database date in its VERSION reply (the daily/main CVD it loaded). clamd
 *   with custom databases only names no date: then the newest modification time of the database
 *   files in clamd.database_dir, when it is configured (what freshclam last wrote there).
 * - yara: the newest modification time of the rule files.
 * - builtin: the newest modification time of its configured signature files. With none, only the
 *   built-in EICAR set is in force: it has no age (it never changes), and is never stale.
 *
 * Worked out once per signature generation (a reload), not per scrape: a directory of YARA rules
 * may hold thousands of files.
 */
import fs from 'node:fs';
import path from 'node:path';
import { BuiltinEngine } from './engines/builtin.js';
import { CLAMD_DATABASE_FILE, ClamavEngine } from './engines/clamav.js';
import type { ScanEngine } from './engines/engine.js';
import { YARA_LIMITS, YaraEngine } from './engines/yara.js';

/**
 * The database date of a clamd VERSION reply (`ClamAV 1.4.6/27461/Mon Nov 25 08:24:02 2024`) in
 * ms since the epoch, or undefined without a database part (clamd with custom databases only).
 * clamd prints that date in its own time zone and names none; read as UTC, as the generation
 * does, it is off by at most the zone's offset: hours, against an alert threshold of days.
 */
export function clamdDatabaseTime(version: string): number | undefined {
  const m = /^ClamAV [^/]+\/\d+\/(.+)$/.exec(version.trim());
  if (!m) return undefined;
  const t = Date.parse(`${m[1]!.trim()} UTC`);
  return Number.isFinite(t) ? t : undefined;
}

/** The newest mtime (ms) of the regular files among `files` that exist; undefined when none does. */
export function newestFileTime(files: Iterable<string>): number | undefined {
  let newest: number | undefined;
  for (const f of files) {
    try {
      const st = fs.statSync(f);
      if (st.isFile() && (newest === undefined || st.mtimeMs > newest)) newest = st.mtimeMs;
    } catch {
      // removed since the engine loaded it: the others still date the set
    }
  }
  return newest;
}

/** The files of directory `dir` whose names pass `keep` (hidden ones skipped), at most `max`. */
function listDir(dir: string, keep: (name: string) => boolean, max: number): string[] {
  return fs
    .readdirSync(dir)
    .filter((n) => !n.startsWith('.') && keep(n))
    .slice(0, max)
    .map((n) => path.join(dir, n));
}

/** The newest mtime (ms) of a rule file, or of the .yar/.yara files of a directory (as the engine picks them). */
export function newestRuleTime(rules: string): number | undefined {
  try {
    const st = fs.statSync(rules);
    if (!st.isDirectory()) return st.mtimeMs;
    return newestFileTime(listDir(rules, (n) => /\.(yar|yara)$/i.test(n), YARA_LIMITS.maxRuleFiles));
  } catch {
    return undefined;
  }
}

/** The newest mtime (ms) of the signature files in a clamd DatabaseDirectory. */
export function newestClamdDatabaseTime(dir: string): number | undefined {
  try {
    return newestFileTime(listDir(dir, (n) => CLAMD_DATABASE_FILE.test(n), 10_000));
  } catch {
    return undefined;
  }
}

/** When the signatures in force were made, and from what. */
export interface SignatureTime {
  /** ms since the epoch; undefined when unknown or not meaningful (`source` says which). */
  at: number | undefined;
  /**
   * `clamd-version` | `database-dir` | `rule-files` | `signature-files`; `builtin-only` (the
   * EICAR set alone: no age, never stale); `unknown` (the engine does not say).
   */
  source: 'clamd-version' | 'database-dir' | 'rule-files' | 'signature-files' | 'builtin-only' | 'unknown';
}

/** One answer per engine: when its signatures in force were made. Reads the file system: call once per generation. */
export function signatureTime(e: ScanEngine): SignatureTime {
  if (e instanceof ClamavEngine) {
    const fromVersion = clamdDatabaseTime(e.clamdVersion);
    if (fromVersion !== undefined) return { at: fromVersion, source: 'clamd-version' };
    const dir = e.databaseDir;
    return dir ? { at: newestClamdDatabaseTime(dir), source: 'database-dir' } : { at: undefined, source: 'unknown' };
  }
  if (e instanceof YaraEngine) return { at: newestRuleTime(e.rulesPath), source: 'rule-files' };
  if (e instanceof BuiltinEngine) {
    if (e.signatureFiles.length === 0) return { at: undefined, source: 'builtin-only' };
    return { at: newestFileTime(e.signatureFiles), source: 'signature-files' };
  }
  return { at: undefined, source: 'unknown' };
}

/** The freshness of the signatures in force, as /healthz, the console and agents show it. */
export interface SignatureStatus {
  generation: string;
  /** Seconds since they were made; null when the engine does not say, or only the built-in set is loaded. */
  ageSeconds: number | null;
  /** When they were made (ISO 8601), when known. */
  madeAt?: string;
  /** What the age is read from (see signature-age.ts). */
  source: SignatureTime['source'];
  /** Older than max_signature_age. An unknown age is never stale. */
  stale: boolean;
  maxAgeSeconds: number;
}

/** The fields of feature signature-age (welcome, generation) for a SignatureStatus. */
export function signatureFields(st: SignatureStatus): { signaturesAt?: string; signaturesMaxAge: number } {
  return { ...(st.madeAt ? { signaturesAt: st.madeAt } : {}), signaturesMaxAge: st.maxAgeSeconds };
}

export class SignatureAge {
  private generation: string | undefined;
  private made: SignatureTime = { at: undefined, source: 'unknown' };

  constructor(private readonly engine: ScanEngine) {}

  /** Seconds since the signatures in force were made (never negative), or undefined when the engine does not say. */
  seconds(now = Date.now()): number | undefined {
    const at = this.time().at;
    return at === undefined ? undefined : Math.max(0, Math.round((now - at) / 1000));
  }

  /** When the signatures in force were made (re-read when the generation changes). */
  time(): SignatureTime {
    const gen = this.engine.generation();
    if (gen !== this.generation) {
      this.generation = gen;
      this.made = signatureTime(this.engine);
    }
    return this.made;
  }
}
