import { ArchiveTimeoutError } from '../engine.js';
import { RATIO_FLOOR, LimitExceeded, type ArchiveLimits, type LimitKind } from './limits.js';

/** How much one member may unpack to, and which limit stops it there. */
export interface OutputCap {
  bytes: number;
  kind: LimitKind;
  /** Most unpacked bytes per packed byte consumed, judged past RATIO_FLOOR (undefined: stored data). */
  ratio: number | undefined;
}

/** Has a decoder that consumed `packed` bytes and produced `unpacked` crossed the ratio? */
export function overRatio(cap: OutputCap, unpacked: number, packed: number): boolean {
  return cap.ratio !== undefined && unpacked > RATIO_FLOOR && unpacked > packed * cap.ratio;
}

/**
 * The limits of one scanned file, as it is being unpacked: every format reader asks here before
 * it takes a member out or unpacks a byte, so no reader can hold more than the file is allowed.
 */
export class UnpackBudget {
  members = 0;
  unpacked = 0;
  private readonly deadline: number;

  constructor(readonly limits: ArchiveLimits) {
    this.deadline = performance.now() + limits.timeoutMs;
  }

  /** One more member taken out at `where`. */
  member(where: string): void {
    if (++this.members > this.limits.maxMembers) throw new LimitExceeded('MaxFiles', where);
  }

  /** The most the next member may unpack to; `compressed` false for stored data (no ratio). */
  cap(compressed: boolean): OutputCap {
    const l = this.limits;
    const left = Math.max(0, l.maxUnpacked - this.unpacked);
    const ratio = compressed ? l.maxRatio : undefined;
    return left < l.maxMemberSize ? { bytes: left, kind: 'MaxScanSize', ratio } : { bytes: l.maxMemberSize, kind: 'MaxFileSize', ratio };
  }

  /** Account `n` unpacked bytes of the member at `where`. */
  take(n: number, where: string): void {
    this.unpacked += n;
    if (this.unpacked > this.limits.maxUnpacked) throw new LimitExceeded('MaxScanSize', where);
  }

  /** Throws ArchiveTimeoutError once the file's time is spent. Cheap: call it often. */
  checkTime(): void {
    if (performance.now() > this.deadline) throw new ArchiveTimeoutError(this.limits.timeoutMs);
  }
}
