/**
 * Seeded xxh64 (xxhash-wasm): the content fingerprint and the identity key. Both use the secret
 * per-install seed (seed.ts), so nobody without the seed can aim a collision at a chosen entry.
 * xxh64 is fast, not collision-resistant: it never leaves the guest; anything shared is SHA-256.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import xxhash from 'xxhash-wasm';

export type XxApi = Awaited<ReturnType<typeof xxhash>>;

let api: Promise<XxApi> | undefined;
/** The wasm module, instantiated once per thread. */
export function loadXxhash(): Promise<XxApi> {
  api ??= xxhash();
  return api;
}

/** A file identity as fstat/stat with `{bigint: true}` reports it (fs.BigIntStats fits). */
export interface FileIdentity {
  dev: bigint;
  ino: bigint;
  size: bigint;
  mtimeNs: bigint;
  ctimeNs: bigint;
}

export interface StreamingHasher {
  update(b: Uint8Array): void;
  /** The fingerprint of everything updated so far. */
  digest(): bigint;
}

export interface FileDigest {
  /** Seeded xxh64 of the content: the local fingerprint. */
  fingerprint: bigint;
  /** SHA-256 of the content, lowercase hex: what may be shared with the SVM. */
  sha256: string;
  /** Bytes read. */
  size: number;
}

export const HASH_CHUNK = 1024 * 1024;
let chunk: Buffer | undefined;

/**
 * Hash a file through an open fd in one pass (xxh64 + SHA-256) with one reused 1 MiB buffer.
 * Reads with pread from offset 0, so the fd's file position does not matter (event fds from
 * fanotify are read this way too: never reopen by path). Synchronous on purpose: it runs where
 * the caller already decided to spend the read (a miss), and holds no buffer across awaits.
 * `maxBytes` stops early (the digest then covers only that prefix, and `size` says so).
 */
export function hashFd(fd: number, hasher: StreamingHasher, maxBytes = Number.MAX_SAFE_INTEGER): FileDigest {
  chunk ??= Buffer.allocUnsafe(HASH_CHUNK);
  const sha = crypto.createHash('sha256');
  let pos = 0;
  while (pos < maxBytes) {
    const n = fs.readSync(fd, chunk, 0, Math.min(HASH_CHUNK, maxBytes - pos), pos);
    if (n === 0) break;
    const part = chunk.subarray(0, n);
    hasher.update(part);
    sha.update(part);
    pos += n;
  }
  return { fingerprint: hasher.digest(), sha256: sha.digest('hex'), size: pos };
}
