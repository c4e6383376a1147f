/**
 * Signature loading for the builtin engine: ClamAV's hash formats and a useful subset of its
 * extended (.ndb) body signatures. Reference: ClamAV "Creating signatures for ClamAV"
 * (docs.clamav.net/manual/Signatures): .hdb `md5:size:Name`, .hsb `hash:size:Name` (SHA-1 or
 * SHA-256 by length; size may be `*`), .ndb `Name:TargetType:Offset:HexSig[:MinFL[:MaxFL]]`.
 *
 * Supported in .ndb: any TargetType (treated as 0, "any file"); Offset `*`, `n`, `EOF-n`,
 * `n,maxshift`; HexSig bytes, `??` (any byte), `*` (any run), `{n}`, `{n-m}`, `{-n}`, `{n-}` gaps,
 * and alternatives of literal bytes `(aa|bbcc|??dd)`, expanded into one pattern per combination
 * (at most MAX_VARIANTS per line). MinFL/MaxFL are ClamAV functionality levels: read, ignored.
 * Not supported (line skipped with a SignatureFileError): nibble wildcards `a?`/`?a`, anchored
 * bytes `[n-m]`, `!`-negated alternatives, word boundaries `(B)`/`(L)`, EP/Sx offsets.
 * The PUA variants .hdu/.hsu/.ndu use the same formats.
 */
import fs from 'node:fs';
import { SignatureFileError } from '../../errors.js';

export interface HashSig {
  name: string;
  /** Exact size in bytes, or -1 for any size (`*`). */
  size: number;
}

/** One piece of a body signature: literal bytes (with `??` wildcards as -1), then a gap before the next piece. */
export interface Piece {
  bytes: Int16Array; // 0..255, or -1 for `??`
  /** Gap before the next piece: min and max bytes (max Infinity for `*`). */
  gapMin: number;
  gapMax: number;
}

/** A run of literal bytes inside a piece, at `start`: searched for with Buffer.indexOf. */
export interface LiteralRun {
  start: number;
  bytes: Buffer;
}

export interface BodySig {
  name: string;
  pieces: Piece[];
  /** Per piece, its longest literal run (undefined for a piece of ?? only). */
  runs: Array<LiteralRun | undefined>;
  /** Where the first piece may start. */
  offset: { kind: 'any' } | { kind: 'abs'; at: number; shift: number } | { kind: 'eof'; back: number; shift: number };
  /** Index into pieces[] of the piece with the longest literal run, and that run itself: the search anchor. */
  anchorPiece: number;
  anchorStart: number;
  anchor: Buffer;
  /** Bytes from the start of the match to the anchor: min and max (Infinity after a `*`). */
  anchorDistMin: number;
  anchorDistMax: number;
}

/** Hash signatures of one algorithm, with the sizes they apply to: a file of no listed size skips that hash. */
export interface HashTable {
  sigs: Map<string, HashSig[]>;
  sizes: Set<number>;
  anySize: boolean;
}

export interface SignatureSet {
  md5: HashTable;
  sha1: HashTable;
  sha256: HashTable;
  body: BodySig[];
  /** Lines that could not be parsed (already skipped). */
  errors: SignatureFileError[];
  /** Canonical text of everything loaded, for the generation hash. */
  canonical: string[];
}

export function emptySignatureSet(): SignatureSet {
  const table = (): HashTable => ({ sigs: new Map(), sizes: new Set(), anySize: false });
  return { md5: table(), sha1: table(), sha256: table(), body: [], errors: [], canonical: [] };
}

/** Does any signature of `t` apply to a file of `size` bytes? If not, that hash need not be computed. */
export function hashApplies(t: HashTable, size: number): boolean {
  return t.anySize || t.sizes.has(size);
}

const MAX_LINE = 64 * 1024;
const MAX_SIGS_PER_FILE = 2_000_000;
/** Patterns one .ndb line may expand to through its alternatives. */
export const MAX_VARIANTS = 64;

function addHash(set: SignatureSet, hash: string, sig: HashSig): void {
  const t = hash.length === 32 ? set.md5 : hash.length === 40 ? set.sha1 : set.sha256;
  const list = t.sigs.get(hash);
  if (list) list.push(sig);
  else t.sigs.set(hash, [sig]);
  if (sig.size < 0) t.anySize = true;
  else t.sizes.add(sig.size);
  set.canonical.push(`h:${hash}:${sig.size}:${sig.name}`);
}

function parseSize(s: string): number | undefined {
  if (s === '*') return -1;
  if (!/^\d{1,12}$/.test(s)) return undefined;
  return Number(s);
}

function validName(n: string): boolean {
  // eslint-disable-next-line no-control-regex -- refusing control characters in names is the point
  return n.length > 0 && n.length <= 256 && !/[\x00-\x1f]/.test(n);
}

/** Parse one .hdb/.hsb line. Returns an error text or undefined on success. */
export function parseHashLine(set: SignatureSet, line: string): string | undefined {
  const parts = line.split(':');
  if (parts.length < 3) return 'expected hash:size:Name';
  const [hashRaw, sizeRaw, ...rest] = parts;
  const name = rest[0]!; // ClamAV allows a 4th field (min flevel): ignored
  const hash = hashRaw!.toLowerCase();
  if (!/^[0-9a-f]+$/.test(hash) || ![32, 40, 64].includes(hash.length))
    return 'the hash must be 32 (MD5), 40 (SHA-1) or 64 (SHA-256) hex digits';
  const size = parseSize(sizeRaw!);
  if (size === undefined) return `size ${JSON.stringify(sizeRaw)} must be a number or *`;
  if (!validName(name)) return 'missing or invalid signature name';
  addHash(set, hash, { name, size });
  return undefined;
}

function parseOffset(s: string): BodySig['offset'] | string {
  if (s === '*') return { kind: 'any' };
  let m = /^(\d{1,10})(?:,(\d{1,10}))?$/.exec(s);
  if (m) return { kind: 'abs', at: Number(m[1]), shift: Number(m[2] ?? 0) };
  m = /^EOF-(\d{1,10})(?:,(\d{1,10}))?$/.exec(s);
  if (m) return { kind: 'eof', back: Number(m[1]), shift: Number(m[2] ?? 0) };
  return `offset ${JSON.stringify(s)} is not supported (use *, n, n,shift or EOF-n)`;
}

/** Parse a ClamAV body hex signature into pieces separated by gaps. */
export function parseHexSig(hex: string): Piece[] | string {
  const pieces: Piece[] = [];
  let cur: number[] = [];
  let i = 0;
  const flush = (gapMin: number, gapMax: number) => {
    if (cur.length === 0) {
      if (pieces.length === 0) return 'a signature cannot start with a gap';
      const prev = pieces[pieces.length - 1]!;
      prev.gapMin += gapMin;
      prev.gapMax += gapMax;
      return undefined;
    }
    pieces.push({ bytes: Int16Array.from(cur), gapMin, gapMax });
    cur = [];
    return undefined;
  };
  while (i < hex.length) {
    const c = hex[i]!;
    if (c === '*') {
      const e = flush(0, Infinity);
      if (e) return e;
      i++;
    } else if (c === '{') {
      const end = hex.indexOf('}', i);
      if (end < 0) return 'unclosed {';
      const body = hex.slice(i + 1, end);
      let min: number;
      let max: number;
      let m: RegExpExecArray | null;
      if ((m = /^(\d{1,7})$/.exec(body))) min = max = Number(m[1]);
      else if ((m = /^(\d{1,7})-(\d{1,7})$/.exec(body))) [min, max] = [Number(m[1]), Number(m[2])];
      else if ((m = /^-(\d{1,7})$/.exec(body))) [min, max] = [0, Number(m[1])];
      else if ((m = /^(\d{1,7})-$/.exec(body))) [min, max] = [Number(m[1]), Infinity];
      else return `gap {${body}} is not supported`;
      if (max < min) return `gap {${body}} has max < min`;
      const e = flush(min, max);
      if (e) return e;
      i = end + 1;
    } else if (c === '?' && hex[i + 1] === '?') {
      cur.push(-1);
      i += 2;
    } else if (/[0-9a-fA-F]/.test(c) && /[0-9a-fA-F]/.test(hex[i + 1] ?? '')) {
      cur.push(parseInt(hex.slice(i, i + 2), 16));
      i += 2;
    } else {
      return `unsupported syntax at character ${i + 1} (${JSON.stringify(hex.slice(i, i + 6))})`;
    }
  }
  if (cur.length === 0) return pieces.length === 0 ? 'empty signature' : 'a signature cannot end with a gap';
  pieces.push({ bytes: Int16Array.from(cur), gapMin: 0, gapMax: 0 });
  return pieces;
}

/** The longest run of literal bytes (no ??) in one piece, or undefined if it is all wildcards. */
function longestRun(p: Piece): LiteralRun | undefined {
  let best: { start: number; len: number } | undefined;
  let runStart = 0;
  for (let j = 0; j <= p.bytes.length; j++) {
    if (j === p.bytes.length || p.bytes[j]! < 0) {
      const len = j - runStart;
      if (len > 0 && (!best || len > best.len)) best = { start: runStart, len };
      runStart = j + 1;
    }
  }
  return best && { start: best.start, bytes: Buffer.from(Array.from(p.bytes.subarray(best.start, best.start + best.len))) };
}

/** The longest literal run across the pieces: what the first Buffer.indexOf pass searches for. */
function chooseAnchor(runs: ReadonlyArray<LiteralRun | undefined>): { piece: number; start: number; bytes: Buffer } | undefined {
  let best = -1;
  runs.forEach((r, i) => {
    if (r && (best < 0 || r.bytes.length > runs[best]!.bytes.length)) best = i;
  });
  const r = runs[best];
  if (!r || r.bytes.length < 2) return undefined;
  return { piece: best, start: r.start, bytes: r.bytes };
}

/**
 * Expand `(aa|bbcc|??dd)` alternatives into plain hex signatures, one per combination. Each
 * alternative holds literal bytes and `??` only; the product is capped at MAX_VARIANTS.
 */
export function expandAlternatives(hex: string): string[] | string {
  let variants = [''];
  let i = 0;
  while (i < hex.length) {
    const open = hex.indexOf('(', i);
    const literal = open < 0 ? hex.slice(i) : hex.slice(i, open);
    variants = variants.map((v) => v + literal);
    if (open < 0) break;
    if (hex[open - 1] === '!') return 'negated alternatives !(..) are not supported';
    const close = hex.indexOf(')', open);
    if (close < 0) return 'unclosed (';
    const alts = hex.slice(open + 1, close).split('|');
    for (const a of alts) {
      if (!/^(?:[0-9a-fA-F]{2}|\?\?)+$/.test(a))
        return `alternative ${JSON.stringify(a.slice(0, 20))} must be hex bytes or ?? (nibbles, gaps, (B)/(L) are not supported)`;
    }
    if (variants.length * alts.length > MAX_VARIANTS) return `the alternatives expand to more than ${MAX_VARIANTS} patterns`;
    variants = variants.flatMap((v) => alts.map((a) => v + a));
    i = close + 1;
  }
  return variants;
}

/** Distance from the start of a match to its anchor: the pieces and gaps before it. */
function anchorDistance(pieces: Piece[], piece: number, start: number): { min: number; max: number } {
  let min = start;
  let max = start;
  for (let k = 0; k < piece; k++) {
    min += pieces[k]!.bytes.length + pieces[k]!.gapMin;
    max += pieces[k]!.bytes.length + pieces[k]!.gapMax;
  }
  return { min, max };
}

export function parseNdbLine(set: SignatureSet, line: string): string | undefined {
  const parts = line.split(':');
  if (parts.length < 4) return 'expected Name:TargetType:Offset:HexSig[:MinFL[:MaxFL]]';
  const [name, target, offsetRaw, hex] = parts as [string, string, string, string];
  if (!validName(name)) return 'missing or invalid signature name';
  if (!/^\d{1,2}$/.test(target)) return `target type ${JSON.stringify(target)} must be a number`;
  for (const fl of parts.slice(4, 6))
    if (fl !== '' && !/^\d{1,4}$/.test(fl)) return `functionality level ${JSON.stringify(fl)} must be a number`;
  const offset = parseOffset(offsetRaw);
  if (typeof offset === 'string') return offset;
  const variants = expandAlternatives(hex);
  if (typeof variants === 'string') return variants;
  const sigs: BodySig[] = [];
  for (const v of variants) {
    const pieces = parseHexSig(v);
    if (typeof pieces === 'string') return pieces;
    const runs = pieces.map(longestRun);
    const anchor = chooseAnchor(runs);
    if (!anchor) return 'the signature needs at least 2 consecutive literal bytes';
    const d = anchorDistance(pieces, anchor.piece, anchor.start);
    sigs.push({
      name,
      pieces,
      runs,
      offset,
      anchorPiece: anchor.piece,
      anchorStart: anchor.start,
      anchor: anchor.bytes,
      anchorDistMin: d.min,
      anchorDistMax: d.max,
    });
  }
  set.body.push(...sigs);
  set.canonical.push(`n:${name}:${offsetRaw}:${hex.toLowerCase()}`);
  return undefined;
}

const HASH_EXTS = new Set(['.hdb', '.hsb', '.hdu', '.hsu']);
const BODY_EXTS = new Set(['.ndb', '.ndu']);

/**
 * Load one signature file into `set`. Bad lines are recorded in set.errors and skipped. Throws
 * only if the file cannot be read or has an unknown extension.
 */
export function loadSignatureFile(set: SignatureSet, file: string): number {
  const ext = file.slice(file.lastIndexOf('.')).toLowerCase();
  const parse = HASH_EXTS.has(ext) ? parseHashLine : BODY_EXTS.has(ext) ? parseNdbLine : undefined;
  if (!parse)
    throw new SignatureFileError(
      file,
      0,
      `unknown signature file type ${JSON.stringify(ext)} (supported: .hdb, .hsb, .ndb and their PUA forms .hdu, .hsu, .ndu)`,
    );
  let text: string;
  try {
    text = fs.readFileSync(file, 'latin1');
  } catch (e) {
    throw new SignatureFileError(file, 0, `cannot read the file: ${(e as Error).message}`);
  }
  let loaded = 0;
  const lines = text.split('\n');
  for (let n = 0; n < lines.length; n++) {
    const line = lines[n]!.replace(/\r$/, '').trim();
    if (line === '' || line.startsWith('#')) continue;
    if (loaded >= MAX_SIGS_PER_FILE) {
      set.errors.push(new SignatureFileError(file, n + 1, `more than ${MAX_SIGS_PER_FILE} signatures; the rest was not loaded`));
      break;
    }
    const err = line.length > MAX_LINE ? `line longer than ${MAX_LINE} characters` : parse(set, line);
    if (err) set.errors.push(new SignatureFileError(file, n + 1, err));
    else loaded++;
  }
  return loaded;
}
