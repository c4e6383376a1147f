/**
 * The recursive look inside one scanned file: each member is judged like a file of its own
 * (`judge`), then opened if it is a container, depth first, under one UnpackBudget. The first
 * finding ends the walk: the whole file is infected, and the finding names the member path
 * (`docs/report.zip!bin/tool.exe`, names joined by `!` as clamd's --debug and most AV consoles do).
 */
import { ArchiveTimeoutError } from '../engine.js';
import { UnpackBudget } from './budget.js';
import { HeuristicHit, LimitExceeded, type ArchiveLimits } from './limits.js';
import { sniffContainer } from './sniff.js';
import type { ReadContext } from './types.js';

export interface Finding {
  threat: string;
  /** Member path inside the scanned file; '' when the finding is about the file's own stream (an unnamed gzip). */
  member: string;
}

/** Judge one buffer as a plain file: the threat name, or undefined when clean. */
export type Judge = (data: Buffer) => string | undefined;

const MAX_NAME = 255;
const MAX_PATH = 1024;
/** Synchronous work between two yields to the event loop, so other agents' requests are served. */
const YIELD_BYTES = 16 * 1024 * 1024;
const YIELD_MEMBERS = 256;

/** A member name as it may be shown and logged: no control characters, bounded. */
export function cleanName(name: string): string {
  // eslint-disable-next-line no-control-regex -- control characters are what it removes
  const s = name.replace(/[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g, '?');
  return s.length > MAX_NAME ? `${s.slice(0, MAX_NAME - 1)}…` : s;
}

export function joinPath(segments: readonly string[]): string {
  const p = segments.join('!');
  return p.length > MAX_PATH ? `…${p.slice(p.length - MAX_PATH + 1)}` : p;
}

export class ContainerWalker {
  private sinceYield = 0;
  private membersSinceYield = 0;

  constructor(
    private readonly judge: Judge,
    private readonly limits: ArchiveLimits,
    private readonly onDamaged: (where: string, format: string, e: unknown) => void = () => {},
  ) {}

  /** Is `buf` a container this walker opens? */
  static isContainer(buf: Buffer): boolean {
    return sniffContainer(buf) !== undefined;
  }

  /**
   * Look inside `buf` (already judged as a plain file by the caller). Resolves with the first
   * finding, a HeuristicHit turned into one, or undefined; rejects only with ArchiveTimeoutError.
   */
  async walk(buf: Buffer): Promise<Finding | undefined> {
    const budget = new UnpackBudget(this.limits);
    try {
      return await this.open(buf, 0, [], budget);
    } catch (e) {
      if (e instanceof HeuristicHit) return { threat: e.threat, member: e.where };
      throw e;
    }
  }

  private async open(buf: Buffer, depth: number, prefix: readonly string[], budget: UnpackBudget): Promise<Finding | undefined> {
    const format = sniffContainer(buf);
    if (!format) return undefined;
    if (depth >= this.limits.maxDepth) throw new LimitExceeded('MaxRecursion', joinPath(prefix));
    const ctx: ReadContext = {
      budget,
      pathOf: (name) => joinPath(name ? [...prefix, cleanName(name)] : prefix),
      encrypted: (name, fmt) => {
        if (this.limits.alertEncrypted) throw new HeuristicHit(`Heuristics.Encrypted.${fmt}`, ctx.pathOf(name));
      },
    };
    try {
      for await (const m of format.read(buf, ctx)) {
        const path = m.name ? [...prefix, cleanName(m.name)] : prefix;
        // Inside first, so a threat in a stored member is named by its own path, not its container's.
        const inner = await this.open(m.data, depth + 1, path, budget);
        if (inner) return inner;
        const threat = this.judge(m.data);
        if (threat) return { threat, member: joinPath(path) };
        this.sinceYield += m.data.length;
        if (this.sinceYield > YIELD_BYTES || ++this.membersSinceYield > YIELD_MEMBERS) {
          this.sinceYield = 0;
          this.membersSinceYield = 0;
          await new Promise<void>((r) => setImmediate(r));
          budget.checkTime();
        }
      }
    } catch (e) {
      if (e instanceof HeuristicHit || e instanceof ArchiveTimeoutError) throw e;
      // A reader library that trips over hostile bytes: this container ends here, the rest stands.
      this.onDamaged(joinPath(prefix), format.name, e);
    }
    return undefined;
  }
}

/** What this unpacker can open: part of the engine's generation, so a new ability re-judges old clean verdicts. */
export const UNPACK_ABILITY = 'unpack/2:zip(0,8,12;local-records),gzip,bzip2,tar,cpio(newc,odc),mime(base64,qp)';
