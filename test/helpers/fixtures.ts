/**
 * Test content every suite shares: EICAR, deterministic noise, and the small offline signature
 * files (ClamAV .hdb/.ndb lines) the builtin engine and a real clamd both load.
 */
import crypto from 'node:crypto';

// Split so that no file of this repository is itself an EICAR file (a scanner on a developer's
// machine would quarantine the source).
export const EICAR = 'X5O!P%@AP[4\\PZX54(P^)7CC)7}$' + 'EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*';
export const EICAR_BYTES = Buffer.from(EICAR, 'latin1');
export const EICAR_THREAT = 'Eicar-Test-Signature';

/** `len` bytes of deterministic pseudo-random content (differs per seed, never contains EICAR). */
export function noise(len: number, seed = 1): Buffer {
  const out = Buffer.allocUnsafe(len);
  let block = crypto.createHash('sha256').update(`noise-${seed}`).digest();
  for (let off = 0; off < len; off += block.length) {
    block.copy(out, off, 0, Math.min(block.length, len - off));
    block = crypto.createHash('sha256').update(block).digest();
  }
  return out;
}

/** A ClamAV .hdb line (MD5:size:name) that flags exactly `content`. */
export function hdbLine(content: string | Buffer, name: string): string {
  const bytes = typeof content === 'string' ? Buffer.from(content) : content;
  return `${crypto.createHash('md5').update(bytes).digest('hex')}:${bytes.length}:${name}`;
}

/** A ClamAV .ndb line (name:any target:any offset:hex) that flags any file containing `pattern`. */
export function ndbLine(pattern: string | Buffer, name: string): string {
  return `${name}:0:*:${(typeof pattern === 'string' ? Buffer.from(pattern, 'latin1') : pattern).toString('hex')}`;
}

/**
 * The offline EICAR database: EICAR alone by MD5 (.hdb) and EICAR anywhere in a file (.ndb).
 * File name -> content, for a clamd database directory or `lightagent-svm --signatures`.
 */
export const EICAR_SIGNATURES: Readonly<Record<string, string>> = Object.freeze({
  'eicar.hdb': `${hdbLine(EICAR_BYTES, EICAR_THREAT)}\n`,
  'eicar.ndb': `${ndbLine(EICAR_BYTES, `${EICAR_THREAT}-Embedded`)}\n`,
});
