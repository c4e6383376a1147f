/**
 * The embedded engine: hash signatures (MD5, SHA-1, SHA-256, from ClamAV .hdb/.hsb files) and
 * byte-pattern signatures (a subset of ClamAV .ndb, see signatures.ts). EICAR is always loaded.
 *
 * Cost per file: a hash pass only for algorithms that have a signature of exactly this file's size
 * (or size `*`): with the shipped set, MD5 runs on 68-byte files only, and SHA-256 comes from the
 * SVM, which hashed the upload as it arrived. Then per body signature one Buffer.indexOf pass for
 * its longest literal run (Node's Boyer-Moore-Horspool search: several GB/s for long anchors,
 * slower for 2-3 byte ones), verifying the whole pattern only around anchor hits; a fixed offset
 * narrows the pass to the window where the anchor can be. So the cost is O(size x body
 * signatures): right for a few hundred patterns; thousands would want Aho-Corasick over the
 * anchors (one pass for all), or the clamav engine. Scans run on the event loop: about 10 ms per
 * 64 MiB with the shipped set (test/svm/engines/builtin.test.ts measures it).
 */
import crypto from 'node:crypto';
import { logger } from '../../log.js';
import type { EngineResult, ScanEngine } from './engine.js';
import { DEFAULT_ARCHIVE_LIMITS, limitsFingerprint, type ArchiveLimits } from './containers/limits.js';
import { ContainerWalker, UNPACK_ABILITY } from './containers/walker.js';
import {
  emptySignatureSet,
  hashApplies,
  loadSignatureFile,
  parseHashLine,
  parseNdbLine,
  type BodySig,
  type HashTable,
  type Piece,
  type SignatureSet,
} from './signatures.js';

export const EICAR = 'X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*';
const EICAR_NAME = 'Eicar-Test-Signature';
/**
 * Bounds on hostile content, per signature per file: anchor hits examined, and placements tried
 * around them. Past either, that signature is given up for that file: a bounded miss on content
 * built to be slow, rather than an SVM stalled on it.
 */
const MAX_ANCHOR_HITS = 65_536;
const MAX_MATCH_STEPS = 1_000_000;

export interface BuiltinEngineOptions {
  /** Signature files (.hdb, .hsb, .ndb) to load besides the built-in EICAR signatures. */
  signatureFiles?: readonly string[];
  /** What to unpack and how far (SVM config `archives`); unset fields take DEFAULT_ARCHIVE_LIMITS. */
  archives?: Partial<ArchiveLimits>;
}

export class BuiltinEngine implements ScanEngine {
  readonly name = 'builtin';
  private set: SignatureSet = emptySignatureSet();
  private gen = '';
  private readonly log = logger('engine-builtin');
  readonly archiveLimits: Readonly<ArchiveLimits>;
  private readonly walker: ContainerWalker;

  constructor(private readonly opts: BuiltinEngineOptions = {}) {
    this.archiveLimits = Object.freeze({ ...DEFAULT_ARCHIVE_LIMITS, ...opts.archives });
    this.walker = new ContainerWalker(
      (data) => this.judgeFlat(data),
      this.archiveLimits,
      (where, format, e) =>
        this.log.debug('damaged container member; judged up to the damage', { where, format, message: (e as Error)?.message }),
    );
    this.reload();
  }

  /** (Re)load the built-in and configured signatures. Throws (keeping the old set) if a file cannot be read. */
  reload(): { loaded: number; errors: number; generation: string } {
    const set = emptySignatureSet();
    parseHashLine(set, `44d88612fea8a8f36de82e1278abb02f:68:${EICAR_NAME}`);
    parseHashLine(set, `275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f:68:${EICAR_NAME}`);
    parseNdbLine(set, `${EICAR_NAME}:0:*:${Buffer.from(EICAR, 'latin1').toString('hex')}`);
    let loaded = 0;
    for (const f of this.opts.signatureFiles ?? []) loaded += loadSignatureFile(set, f);
    for (const e of set.errors) this.log.warn('signature line skipped', { code: e.code, message: e.message });
    this.set = set;
    // What the unpacker can open, and its limits, judge files as much as the signatures do.
    const unpack = this.archiveLimits.enabled ? limitsFingerprint(this.archiveLimits, UNPACK_ABILITY) : 'unpack:off';
    this.gen = `builtin-${crypto
      .createHash('sha256')
      .update([...set.canonical].sort().join('\n'))
      .update(`\n#${unpack}`)
      .digest('hex')
      .slice(0, 16)}`;
    this.log.info('signatures loaded', {
      files: this.opts.signatureFiles?.length ?? 0,
      loaded,
      errors: set.errors.length,
      generation: this.gen,
    });
    return { loaded, errors: set.errors.length, generation: this.gen };
  }

  generation(): string {
    return this.gen;
  }

  healthy(): boolean {
    return true;
  }

  /** The signature files configured (besides the built-in EICAR set), as given. */
  get signatureFiles(): readonly string[] {
    return this.opts.signatureFiles ?? [];
  }

  get signatureCount(): number {
    return this.set.canonical.length;
  }

  /**
   * The file as it is, then (when it is a container) what is inside it. Rejects with
   * ArchiveTimeoutError when unpacking passes archives.timeout; a crossed limit is a detection.
   */
  async scan(content: Buffer, known?: { sha256?: string }): Promise<EngineResult> {
    if (!this.archiveLimits.enabled || !ContainerWalker.isContainer(content)) return this.scanSync(content, known);
    // Inside first, so that a stored member's threat is named by its member path rather than
    // found in the container's raw bytes; then the container's own bytes.
    const f = await this.walker.walk(content);
    if (f) return { infected: true, threat: f.member ? `${f.threat} in ${f.member}` : f.threat, ...(f.member ? { member: f.member } : {}) };
    return this.scanSync(content, known);
  }

  private judgeFlat(data: Buffer): string | undefined {
    const r = this.scanSync(data);
    return r.infected ? r.threat : undefined;
  }

  /** The file as it is, without looking inside containers. */
  scanSync(content: Buffer, known?: { sha256?: string }): EngineResult {
    const s = this.set;
    const size = content.length;
    // A hash is computed only when some signature of that algorithm has this file's size (or `*`).
    const byHash = (t: HashTable, hash: () => string): string | undefined => {
      if (!hashApplies(t, size)) return undefined;
      const hit = t.sigs.get(hash())?.find((h) => h.size < 0 || h.size === size);
      return hit?.name;
    };
    const name =
      byHash(s.md5, () => crypto.createHash('md5').update(content).digest('hex')) ??
      byHash(s.sha256, () => known?.sha256 ?? crypto.createHash('sha256').update(content).digest('hex')) ??
      byHash(s.sha1, () => crypto.createHash('sha1').update(content).digest('hex'));
    if (name) return { infected: true, threat: name };
    for (const sig of s.body) if (matchBody(sig, content)) return { infected: true, threat: sig.name };
    return { infected: false };
  }

  async close(): Promise<void> {}
}

function pieceAt(p: Piece, buf: Buffer, at: number): boolean {
  const b = p.bytes;
  if (at < 0 || at + b.length > buf.length) return false;
  for (let i = 0; i < b.length; i++) {
    const want = b[i]!;
    if (want >= 0 && buf[at + i] !== want) return false;
  }
  return true;
}

/**
 * The search around anchor hits, over occurrences of each piece's literal run (Buffer.indexOf /
 * lastIndexOf), never byte by byte. Placements known to fail are remembered per piece, so each is
 * tried at most once per file. Across a `*` gap only one fact matters — the last position where
 * the rest of the pattern matches (forward), or the first where the part before it matches
 * (backward) — computed once, so `*` chains stay linear in the occurrences. `steps` bounds the
 * work on content built to be slow.
 */
class Matcher {
  private readonly failedForward: Array<Set<number>>;
  private readonly failedBackward: Array<Set<number>>;
  private readonly lastGood: Array<number | undefined>;
  private readonly firstGood: Array<number | undefined>;
  steps = 0;

  constructor(
    private readonly sig: BodySig,
    private readonly buf: Buffer,
    private readonly okStart: (start: number) => boolean,
  ) {
    const n = sig.pieces.length;
    this.failedForward = Array.from({ length: n }, () => new Set<number>());
    this.failedBackward = Array.from({ length: n }, () => new Set<number>());
    this.lastGood = new Array<number | undefined>(n);
    this.firstGood = new Array<number | undefined>(n);
  }

  get exhausted(): boolean {
    return this.steps > MAX_MATCH_STEPS;
  }

  /** First position >= s where piece k's literal run sits (or s itself for a wildcard-only piece); -1 if none. */
  private next(k: number, s: number): number {
    const r = this.sig.runs[k];
    if (!r) return s <= this.buf.length - this.sig.pieces[k]!.bytes.length ? s : -1;
    const i = this.buf.indexOf(r.bytes, s + r.start);
    return i < 0 ? -1 : i - r.start;
  }

  /** Last position <= s where piece k's literal run sits; -1 if none. */
  private prev(k: number, s: number): number {
    if (s < 0) return -1; // lastIndexOf would count a negative offset from the end
    const r = this.sig.runs[k];
    if (!r) return s;
    const i = this.buf.lastIndexOf(r.bytes, s + r.start);
    return i < r.start ? -1 : i - r.start;
  }

  /** Do pieces[i..] match with piece i starting at `at`? */
  forward(i: number, at: number): boolean {
    if (++this.steps > MAX_MATCH_STEPS) return false;
    const { sig, buf } = this;
    const p = sig.pieces[i]!;
    if (!pieceAt(p, buf, at)) return false;
    if (i === sig.pieces.length - 1) return true;
    if (this.failedForward[i]!.has(at)) return false;
    const from = at + p.bytes.length + p.gapMin;
    let ok = false;
    if (p.gapMax === Infinity) {
      ok = from <= this.lastForward(i + 1);
    } else {
      const to = Math.min(at + p.bytes.length + p.gapMax, buf.length - sig.pieces[i + 1]!.bytes.length);
      for (let s = this.next(i + 1, from); s >= 0 && s <= to && !this.exhausted; s = this.next(i + 1, s + 1)) {
        if (this.forward(i + 1, s)) {
          ok = true;
          break;
        }
      }
    }
    if (!ok) this.failedForward[i]!.add(at);
    return ok;
  }

  /** The last position where pieces[k..] match, or -1. */
  private lastForward(k: number): number {
    let v = this.lastGood[k];
    if (v !== undefined) return v;
    v = -1;
    for (let s = this.prev(k, this.buf.length - this.sig.pieces[k]!.bytes.length); s >= 0 && !this.exhausted; s = this.prev(k, s - 1)) {
      if (this.forward(k, s)) {
        v = s;
        break;
      }
    }
    this.lastGood[k] = v;
    return v;
  }

  /** With piece i at `at`, can pieces[0..i-1] be placed before it, piece 0 at an allowed offset? */
  backward(i: number, at: number): boolean {
    if (i === 0) return this.okStart(at);
    if (++this.steps > MAX_MATCH_STEPS) return false;
    if (this.failedBackward[i]!.has(at)) return false;
    const prev = this.sig.pieces[i - 1]!;
    const latest = at - prev.gapMin - prev.bytes.length;
    let ok = false;
    if (prev.gapMax === Infinity) {
      const first = this.firstBackward(i - 1);
      ok = first >= 0 && first <= latest;
    } else {
      const earliest = Math.max(0, at - prev.gapMax - prev.bytes.length);
      for (let s = this.prev(i - 1, latest); s >= earliest && !this.exhausted; s = this.prev(i - 1, s - 1)) {
        if (pieceAt(prev, this.buf, s) && this.backward(i - 1, s)) {
          ok = true;
          break;
        }
      }
    }
    if (!ok) this.failedBackward[i]!.add(at);
    return ok;
  }

  /** The first position where piece k matches with pieces[0..k-1] before it, or -1. */
  private firstBackward(k: number): number {
    let v = this.firstGood[k];
    if (v !== undefined) return v;
    v = -1;
    const p = this.sig.pieces[k]!;
    for (let s = this.next(k, 0); s >= 0 && !this.exhausted; s = this.next(k, s + 1)) {
      if (pieceAt(p, this.buf, s) && this.backward(k, s)) {
        v = s;
        break;
      }
    }
    this.firstGood[k] = v;
    return v;
  }
}

function startAllowed(sig: BodySig, len: number): (start: number) => boolean {
  const o = sig.offset;
  if (o.kind === 'any') return () => true;
  const base = o.kind === 'abs' ? o.at : len - o.back;
  return (s) => s >= base && s <= base + o.shift;
}

/**
 * Does `sig` match anywhere in `buf`? One Buffer.indexOf pass for the anchor (the longest literal
 * run); a fixed offset narrows that pass to the window where the anchor can sit.
 */
export function matchBody(sig: BodySig, buf: Buffer): boolean {
  const okStart = startAllowed(sig, buf.length);
  let from = 0;
  let until = Infinity;
  if (sig.offset.kind !== 'any') {
    const base = sig.offset.kind === 'abs' ? sig.offset.at : buf.length - sig.offset.back;
    if (base < 0) return false;
    from = base + sig.anchorDistMin;
    until = base + sig.offset.shift + sig.anchorDistMax;
  }
  let m: Matcher | undefined;
  for (let hits = 0; hits < MAX_ANCHOR_HITS; hits++) {
    const a = buf.indexOf(sig.anchor, from);
    if (a < 0 || a > until) return false;
    m ??= new Matcher(sig, buf, okStart);
    const pieceStart = a - sig.anchorStart;
    if (m.forward(sig.anchorPiece, pieceStart) && m.backward(sig.anchorPiece, pieceStart)) return true;
    if (m.exhausted) return false;
    from = a + 1;
  }
  return false;
}
