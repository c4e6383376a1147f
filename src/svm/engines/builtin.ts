/**
 * The embedded engine: hash signatures (MD5, SHA-1, SHA-256, from ClamAV .hdb/.hsb files) and
 * byte-pattern signatures (a subset of ClamAV .ndb, see signatures.ts). EICAR is always loaded.
 *
 * Cost: one MD5 pass (plus SHA-1 only if SHA-1 signatures are loaded; SHA-256 comes from the SVM),
 * and per body signature one Buffer.indexOf pass for its longest literal run (memchr-class speed),
 * verifying the full pattern only around anchor hits. Many thousands of body signatures would
 * want Aho-Corasick over the anchors; the builtin set is small.
 */
import crypto from 'node:crypto';
import { logger } from '../../log.js';
import type { EngineResult, ScanEngine } from './engine.js';
import { emptySignatureSet, loadSignatureFile, parseHashLine, parseNdbLine, type BodySig, type HashSig, type SignatureSet } from './signatures.js';

export const EICAR = 'X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*';
const EICAR_NAME = 'Eicar-Test-Signature';
/** Anchor hits examined per signature per file before giving up on that signature (bounds hostile input). */
const MAX_ANCHOR_HITS = 4096;

export interface BuiltinEngineOptions {
  /** Signature files (.hdb, .hsb, .ndb) to load besides the built-in EICAR signatures. */
  signatureFiles?: readonly string[];
}

export class BuiltinEngine implements ScanEngine {
  readonly name = 'builtin';
  private set: SignatureSet = emptySignatureSet();
  private gen = '';
  private readonly log = logger('engine-builtin');

  constructor(private readonly opts: BuiltinEngineOptions = {}) {
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
    this.gen = `builtin-${crypto.createHash('sha256').update([...set.canonical].sort().join('\n')).digest('hex').slice(0, 16)}`;
    this.log.info('signatures loaded', { files: this.opts.signatureFiles?.length ?? 0, loaded, errors: set.errors.length, generation: this.gen });
    return { loaded, errors: set.errors.length, generation: this.gen };
  }

  generation(): string {
    return this.gen;
  }

  healthy(): boolean {
    return true;
  }

  get signatureCount(): number {
    return this.set.canonical.length;
  }

  async scan(content: Buffer, known?: { sha256?: string }): Promise<EngineResult> {
    return this.scanSync(content, known);
  }

  scanSync(content: Buffer, known?: { sha256?: string }): EngineResult {
    const s = this.set;
    const size = content.length;
    const byHash = (map: Map<string, HashSig[]>, hash: () => string): string | undefined => {
      if (map.size === 0) return undefined;
      const hit = map.get(hash())?.find((h) => h.size < 0 || h.size === size);
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

function pieceAt(p: BodySig['pieces'][number], buf: Buffer, at: number): boolean {
  const b = p.bytes;
  if (at < 0 || at + b.length > buf.length) return false;
  for (let i = 0; i < b.length; i++) {
    const want = b[i]!;
    if (want >= 0 && buf[at + i] !== want) return false;
  }
  return true;
}

/** Do pieces[i..] match with piece i starting at `at`? Tries each allowed gap (bounded by the buffer). */
function forward(sig: BodySig, buf: Buffer, i: number, at: number): boolean {
  const p = sig.pieces[i]!;
  if (!pieceAt(p, buf, at)) return false;
  if (i === sig.pieces.length - 1) return true;
  const next = sig.pieces[i + 1]!;
  const from = at + p.bytes.length + p.gapMin;
  const to = Math.min(at + p.bytes.length + p.gapMax, buf.length - next.bytes.length);
  for (let s = from; s <= to; s++) if (forward(sig, buf, i + 1, s)) return true;
  return false;
}

/** Can pieces[0..i-1] be placed before piece i at `at`? Returns the start of piece 0, or -1. */
function backward(sig: BodySig, buf: Buffer, i: number, at: number, okStart: (start: number) => boolean): boolean {
  if (i === 0) return okStart(at);
  const prev = sig.pieces[i - 1]!;
  const latest = at - prev.gapMin - prev.bytes.length;
  const earliest = Math.max(0, prev.gapMax === Infinity ? 0 : at - prev.gapMax - prev.bytes.length);
  for (let s = latest; s >= earliest; s--) if (pieceAt(prev, buf, s) && backward(sig, buf, i - 1, s, okStart)) return true;
  return false;
}

function startAllowed(sig: BodySig, len: number): (start: number) => boolean {
  const o = sig.offset;
  if (o.kind === 'any') return () => true;
  const base = o.kind === 'abs' ? o.at : len - o.back;
  return (s) => s >= base && s <= base + o.shift;
}

export function matchBody(sig: BodySig, buf: Buffer): boolean {
  const okStart = startAllowed(sig, buf.length);
  let from = 0;
  for (let hits = 0; hits < MAX_ANCHOR_HITS; hits++) {
    const a = buf.indexOf(sig.anchor, from);
    if (a < 0) return false;
    const pieceStart = a - sig.anchorStart;
    if (forward(sig, buf, sig.anchorPiece, pieceStart) && backward(sig, buf, sig.anchorPiece, pieceStart, okStart)) return true;
    from = a + 1;
  }
  return false;
}
