/**
 * How old the signatures in force are, from what each engine makes public: clamd's database date
 * in its VERSION reply, the newest modification time of the YARA rule files. The builtin engine
 * keeps its signature file list private, so it reports no age.
 *
 * Worked out once per signature generation (a reload), not per scrape: a directory of YARA rules
 * may hold thousands of files.
 */
import fs from 'node:fs';
import path from 'node:path';
import { ClamavEngine } from './engines/clamav.js';
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

/** The newest mtime (ms) of a rule file, or of the .yar/.yara files of a directory (as the engine picks them). */
export function newestRuleTime(rules: string): number | undefined {
  try {
    const st = fs.statSync(rules);
    if (!st.isDirectory()) return st.mtimeMs;
    const names = fs.readdirSync(rules).filter((n) => !n.startsWith('.') && /\.(yar|yara)$/i.test(n));
    let newest: number | undefined;
    for (const n of names.slice(0, YARA_LIMITS.maxRuleFiles)) {
      try {
        const f = fs.statSync(path.join(rules, n));
        if (f.isFile() && (newest === undefined || f.mtimeMs > newest)) newest = f.mtimeMs;
      } catch {
        // removed since the engine loaded it: the others still date the set
      }
    }
    return newest;
  } catch {
    return undefined;
  }
}

export class SignatureAge {
  private generation: string | undefined;
  private madeAt: number | undefined;

  constructor(private readonly engine: ScanEngine) {}

  /** Seconds since the signatures in force were made (never negative), or undefined when the engine does not say. */
  seconds(now = Date.now()): number | undefined {
    const gen = this.engine.generation();
    if (gen !== this.generation) {
      this.generation = gen;
      this.madeAt = this.read();
    }
    return this.madeAt === undefined ? undefined : Math.max(0, Math.round((now - this.madeAt) / 1000));
  }

  private read(): number | undefined {
    const e = this.engine;
    if (e instanceof ClamavEngine) return clamdDatabaseTime(e.clamdVersion);
    if (e instanceof YaraEngine) return newestRuleTime(e.rulesPath);
    return undefined;
  }
}
