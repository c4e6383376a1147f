/**
 * What the builtin engine will unpack from one file, and the verdict when a file asks for more.
 *
 * A crossed limit is a heuristic detection (`Heuristics.Limits.Exceeded.*`, ClamAV's names where
 * it has one), not an error verdict: the limits are deterministic, so the same bytes under the
 * same limits always get the same verdict, which may then be cached for the farm like any other.
 * An error verdict is never cached: every guest that opens a bomb would make the SVM unpack it
 * again, and on access the agent's fail-open default would let it through. The time limit is the
 * exception (ArchiveTimeoutError): time depends on the SVM's load, and a verdict that depends on
 * load must not be cached for everyone.
 */
export interface ArchiveLimits {
  /** Look inside containers at all. */
  enabled: boolean;
  /** Containers opened inside one another: the file itself is level 0, so 1 opens only the file. */
  maxDepth: number;
  /** Members (files, parts) taken out of one scanned file, all levels together. */
  maxMembers: number;
  /** Bytes unpacked from one scanned file, all levels together: bounds its memory and work. */
  maxUnpacked: number;
  /** Largest single member, unpacked (it is judged as one buffer). */
  maxMemberSize: number;
  /** Unpacked / packed bytes of one member, checked once it is past RATIO_FLOOR bytes. */
  maxRatio: number;
  /** Wall time for one file's unpacking, ms. */
  timeoutMs: number;
  /** An encrypted member (which cannot be looked into) makes the file a detection. */
  alertEncrypted: boolean;
}

/**
 * Defaults close to clamd's (MaxRecursion 17, MaxFiles 10000, MaxScanSize 400M, MaxFileSize
 * 100M, MaxScanTime 120 s), tighter on bytes: these are held in memory, and up to
 * scan_concurrency files are unpacked at once.
 */
export const DEFAULT_ARCHIVE_LIMITS: Readonly<ArchiveLimits> = Object.freeze({
  enabled: true,
  maxDepth: 16,
  maxMembers: 10_000,
  maxUnpacked: 256 * 1024 * 1024,
  // As large as the total: a .tar.gz's tar is one member, held whole (streaming it is future work).
  maxMemberSize: 256 * 1024 * 1024,
  maxRatio: 250,
  timeoutMs: 30_000,
  alertEncrypted: true,
});

/** Below this many unpacked bytes a member's ratio is not judged: tiny files of one repeated byte are common. */
export const RATIO_FLOOR = 1024 * 1024;

export type LimitKind = 'MaxRecursion' | 'MaxFiles' | 'MaxScanSize' | 'MaxFileSize' | 'MaxRatio';

/**
 * Thrown inside the unpacker when the structure itself is the finding (a crossed limit, zip
 * entries sharing bytes, an encrypted member): the engine turns it into a detection.
 */
export class HeuristicHit extends Error {
  constructor(
    readonly threat: string,
    /** Member path (inside the scanned file) where it was found. */
    readonly where: string,
  ) {
    super(`${threat} at ${where || '(the file itself)'}`);
  }
}

export class LimitExceeded extends HeuristicHit {
  constructor(
    readonly kind: LimitKind,
    where: string,
  ) {
    super(`Heuristics.Limits.Exceeded.${kind}`, where);
  }
}

/** The generation part that says what the unpacker can do and under which limits. */
export function limitsFingerprint(l: ArchiveLimits, ability: string): string {
  // timeoutMs is left out on purpose: a timeout gives an error verdict, and those are never cached.
  const { timeoutMs: _t, ...rest } = l;
  return `${ability};${JSON.stringify(rest, Object.keys(rest).sort())}`;
}
