/**
 * Backup and restore of what an SVM keeps: its config file, every file the config names (token
 * files, TLS material wherever it is set (`tls.*`, `siem.N.ca/cert/key`), builtin signatures,
 * YARA rules; any `*_file` / `*_dir` key, so keys other branches add such as `admin_token_file`
 * come along), and the whole `state_dir`.
 *
 * The archive is a tar.gz: `manifest.json` first (format, version, roots, and per entry its
 * absolute path, kind, size, SHA-256, mode, owner), then one member `files/<path>` per file.
 *
 * A restore treats the archive as hostile. It reads it twice: the first pass writes nothing and
 * checks every member against the manifest (a regular file, named in it once, its size, its
 * SHA-256), every manifest path (absolute, normalized, inside one of the manifest's roots, each
 * root inside a directory the operator allows) and the bounds (manifest 16 MiB, 100,000 entries,
 * content `maxBytes`, time `timeoutMs`); the second pass writes each file to a temporary file
 * beside its target, checks its hash again, and only when all are written renames them into
 * place with their modes (no setuid/setgid/sticky, never writable by others) and, as root, their owners. Paths through a
 * symbolic link are refused. `dryRun` stops after the first pass and says what would change.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Transform, type Readable } from 'node:stream';
import zlib from 'node:zlib';
import tar from 'tar-stream';
import { BackupError } from '../errors.js';
import { readConfigFile } from '../config/load.js';
import { DIR_PREFIX } from '../platform/native-assets.js';

export const BACKUP_FORMAT = 'lightagent-svm-backup/1';
export const DEFAULT_STATE_DIR = '/var/lib/lightagent-svm';
/** Where a restore may write without --allow-root: the shipped unit's directories. */
export const DEFAULT_RESTORE_ROOTS = ['/etc/lightagent', DEFAULT_STATE_DIR] as const;
export const MAX_MANIFEST_BYTES = 16 * 1024 * 1024;
export const MAX_ENTRIES = 100_000;
const MAX_DEPTH = 32;
const MAX_PATH = 4096;
const SEA_DIR = new RegExp(`^${DIR_PREFIX}\\d+-[A-Za-z0-9]{6}$`);

export interface BackupRoot {
  /** Absolute, normalized. */
  path: string;
  kind: 'file' | 'dir';
  /** The config key that named it (`token_file`, `tls.key`, `state_dir`, `config`, `include`). */
  key: string;
}

export interface BackupEntry {
  path: string;
  kind: 'file' | 'dir';
  size: number;
  sha256?: string;
  mode: number;
  uid: number;
  gid: number;
  /** Tokens, keys, the config and env files that may hold tokens (informational: the mode is kept as it was). */
  secret?: boolean;
}

export interface Manifest {
  format: typeof BACKUP_FORMAT;
  version: string;
  created: string;
  host: string;
  config: string;
  roots: BackupRoot[];
  entries: BackupEntry[];
}

export interface Progress {
  phase: 'hash' | 'write' | 'verify' | 'restore';
  files: number;
  bytes: number;
}

export interface BackupOptions {
  config: string;
  out: string;
  /** More files or directories to take (e.g. /etc/lightagent/svm.env). */
  include?: string[];
  version: string;
  force?: boolean;
  onProgress?: (p: Progress) => void;
}

export interface BackupResult {
  out: string;
  bytes: number;
  files: number;
  contentBytes: number;
  roots: BackupRoot[];
  /** Paths not taken, and why (symbolic links, sockets, a default state_dir that does not exist). */
  skipped: Array<{ path: string; reason: string }>;
}

const bad = (message: string, hint = 'check the file or setting named above') => new BackupError('LA_ERR_BACKUP', message, hint);
const invalid = (archive: string, detail: string) =>
  new BackupError(
    'LA_ERR_BACKUP_INVALID',
    `backup archive ${archive}: ${detail}; nothing was written`,
    'use an archive made by `lightagent-svm backup` that has not been changed since (its manifest lists a SHA-256 per file)',
  );
const refused = (detail: string, hint: string) => new BackupError('LA_ERR_BACKUP_RESTORE', detail, hint);

const SECRET_KEYS = /(^|\.)(token_file|key|[a-z_]*token[a-z_]*_file|env|config|include)$/;
const SKIP_KEYS = new Set(['clamd.database_dir', 'log.file']);
/** TLS material wherever it is set: `tls.cert/key/client_ca`, `siem.N.ca/cert/key`. */
const PEM_KEYS = new Set(['cert', 'key', 'ca', 'client_ca']);

/** The paths the config names: [key, path, known kind]. Walks the raw document (not the parsed one: keys other code adds come along). */
function namedPaths(doc: Record<string, unknown>, configFile: string): Array<{ key: string; path: string }> {
  const found: Array<{ key: string; path: string }> = [];
  const add = (key: string, v: unknown) => {
    if (typeof v !== 'string' || v === '') throw bad(`${configFile}: ${key} must be a path, not ${JSON.stringify(v)?.slice(0, 80)}`);
    found.push({ key, path: v });
  };
  const walk = (o: Record<string, unknown>, prefix: string, depth: number) => {
    if (depth > 4) return;
    for (const [k, v] of Object.entries(o)) {
      const key = prefix + k;
      if (SKIP_KEYS.has(key) || v === undefined || v === null) continue;
      if (key === 'signatures') {
        if (!Array.isArray(v)) throw bad(`${configFile}: signatures must be a list of files`);
        v.forEach((f, i) => add(`signatures.${i}`, f));
      } else if (['yara_rules', 'state_dir'].includes(key) || PEM_KEYS.has(k) || /_(file|dir)$/.test(k)) {
        add(key, v);
      } else if (Array.isArray(v)) {
        // Lists of settings (siem: [{address, ca, cert, key}]): each item walked as `siem.0.`.
        v.forEach((item, i) => {
          if (typeof item === 'object' && item !== null && !Array.isArray(item))
            walk(item as Record<string, unknown>, `${key}.${i}.`, depth + 1);
        });
      } else if (typeof v === 'object') walk(v as Record<string, unknown>, `${key}.`, depth + 1);
    }
  };
  walk(doc, '', 0);
  return found;
}

function statOrUndefined(p: string): fs.Stats | undefined {
  try {
    return fs.statSync(p);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw bad(
      `${p}: cannot read it (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`,
      'run the backup as a user that may read it (root)',
    );
  }
}

/** Collect the roots and every entry under them (no content read yet). */
export function planBackup(
  configFile: string,
  include: string[] = [],
): { roots: BackupRoot[]; entries: BackupEntry[]; skipped: BackupResult['skipped'] } {
  const cfg = path.resolve(configFile);
  let doc: unknown;
  try {
    doc = readConfigFile(cfg);
  } catch (e) {
    throw bad(`config ${cfg}: ${(e as Error).message}`, 'point --config at the SVM configuration file (default /etc/lightagent/svm.yaml)');
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw bad(`config ${cfg}: (top level) must be a mapping of settings`);
  const named = [
    { key: 'config', path: cfg },
    ...namedPaths(doc as Record<string, unknown>, cfg),
    ...include.map((p) => ({ key: 'include', path: p })),
  ];
  if (!named.some((n) => n.key === 'state_dir')) named.push({ key: 'state_dir', path: DEFAULT_STATE_DIR });
  const roots: BackupRoot[] = [];
  const entries: BackupEntry[] = [];
  const skipped: BackupResult['skipped'] = [];
  const seen = new Set<string>();
  const push = (e: BackupEntry) => {
    if (seen.has(e.path)) return;
    if (entries.length >= MAX_ENTRIES) throw bad(`more than ${MAX_ENTRIES} files and directories to back up (under ${roots.at(-1)?.path})`);
    seen.add(e.path);
    entries.push(e);
  };
  for (const n of named) {
    const abs = path.resolve(path.dirname(cfg), n.path);
    const st = statOrUndefined(abs);
    if (!st) {
      if (n.key === 'state_dir' || n.key === 'yara_rules') {
        skipped.push({ path: abs, reason: `${n.key}: does not exist` });
        continue;
      }
      throw bad(`${cfg}: ${n.key}: ${abs} does not exist`, 'fix the setting, or create the file: the SVM would not start with it either');
    }
    const secret = SECRET_KEYS.test(n.key) || undefined;
    if (st.isFile()) {
      if (!roots.some((r) => r.path === abs)) roots.push({ path: abs, kind: 'file', key: n.key });
      push({ path: abs, kind: 'file', size: st.size, mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, ...(secret ? { secret } : {}) });
    } else if (st.isDirectory()) {
      if (abs === '/') throw bad(`${cfg}: ${n.key}: / cannot be backed up whole`);
      roots.push({ path: abs, kind: 'dir', key: n.key });
      const walk = (dir: string, depth: number, dst: fs.Stats) => {
        push({ path: dir, kind: 'dir', size: 0, mode: dst.mode & 0o7777, uid: dst.uid, gid: dst.gid });
        if (depth > MAX_DEPTH) throw bad(`${dir}: directories nested over ${MAX_DEPTH} deep under ${n.key}`);
        for (const name of fs.readdirSync(dir).sort()) {
          const p = path.join(dir, name);
          const l = fs.lstatSync(p);
          // The single binary unpacks its native assets into the unit's state directory (src/sea/unpack.ts).
          if (depth === 0 && n.key === 'state_dir' && l.isDirectory() && SEA_DIR.test(name))
            skipped.push({ path: p, reason: "the single binary's unpacked native assets (made again at each start)" });
          else if (l.isDirectory()) walk(p, depth + 1, l);
          else if (l.isFile()) push({ path: p, kind: 'file', size: l.size, mode: l.mode & 0o7777, uid: l.uid, gid: l.gid });
          else skipped.push({ path: p, reason: l.isSymbolicLink() ? 'a symbolic link (not followed)' : 'not a regular file' });
        }
      };
      walk(abs, 0, st);
    } else throw bad(`${cfg}: ${n.key}: ${abs} is neither a file nor a directory`);
  }
  return { roots, entries, skipped };
}

function hashFile(p: string): Promise<{ sha256: string; size: number }> {
  return new Promise((resolve, reject) => {
    const h = crypto.createHash('sha256');
    let size = 0;
    fs.createReadStream(p)
      .on('data', (d: Buffer | string) => {
        size += d.length;
        h.update(d);
      })
      .on('error', (e) => reject(bad(`${p}: cannot read it (${(e as NodeJS.ErrnoException).code ?? e.message})`)))
      .on('end', () => resolve({ sha256: h.digest('hex'), size }));
  });
}

const memberName = (p: string) => `files${p}`;

/** Write the archive: to a temporary file beside `out` (mode 0600), renamed into place when complete. */
export async function createBackup(o: BackupOptions): Promise<BackupResult> {
  const out = path.resolve(o.out);
  if (!o.force && fs.existsSync(out)) throw bad(`--out ${out} exists`, 'give another file, or --force to replace it');
  const { roots, entries, skipped } = planBackup(o.config, o.include);
  if (entries.some((e) => e.path === out)) throw bad(`--out ${out} is inside what is backed up`, 'write the archive elsewhere');
  let files = 0;
  let bytes = 0;
  for (const e of entries) {
    if (e.kind !== 'file') continue;
    const h = await hashFile(e.path);
    e.sha256 = h.sha256;
    e.size = h.size;
    files++;
    bytes += h.size;
    o.onProgress?.({ phase: 'hash', files, bytes });
  }
  const manifest: Manifest = {
    format: BACKUP_FORMAT,
    version: o.version,
    created: new Date().toISOString(),
    host: os.hostname(),
    config: path.resolve(o.config),
    roots,
    entries,
  };
  const tmp = `${out}.tmp-${process.pid}-${crypto.randomBytes(4).toString('hex')}`;
  const pack = tar.pack();
  const sink = fs.createWriteStream(tmp, { flags: 'wx', mode: 0o600 });
  const done = pipeline(pack, zlib.createGzip({ level: 6 }), sink);
  done.catch(() => {});
  try {
    const put = (header: Partial<tar.Header> & { name: string }, body: Buffer | Readable) =>
      new Promise<void>((resolve, reject) => {
        if (Buffer.isBuffer(body)) pack.entry(header, body, (e) => (e ? reject(e) : resolve()));
        else body.pipe(pack.entry(header, (e) => (e ? reject(e) : resolve())));
      });
    await put({ name: 'manifest.json', type: 'file', mode: 0o600 }, Buffer.from(JSON.stringify(manifest, null, 1)));
    let written = 0;
    let wbytes = 0;
    for (const e of entries) {
      if (e.kind !== 'file') continue;
      const h = crypto.createHash('sha256');
      const src = fs.createReadStream(e.path, { start: 0, end: Math.max(0, e.size - 1) });
      const counted = new Transform({
        transform(chunk: Buffer, _enc, cb) {
          h.update(chunk);
          cb(null, chunk);
        },
      });
      if (e.size === 0) await put({ name: memberName(e.path), type: 'file', size: 0, mode: e.mode }, Buffer.alloc(0));
      else await put({ name: memberName(e.path), type: 'file', size: e.size, mode: e.mode, uid: e.uid, gid: e.gid }, src.pipe(counted));
      if (e.size > 0 && h.digest('hex') !== e.sha256)
        throw bad(`${e.path} changed while it was backed up`, 'run the backup again (or stop the SVM while it runs)');
      written++;
      wbytes += e.size;
      o.onProgress?.({ phase: 'write', files: written, bytes: wbytes });
    }
    pack.finalize();
    await done;
    const fd = fs.openSync(tmp, 'r');
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fs.renameSync(tmp, out);
  } catch (e) {
    pack.destroy();
    fs.rmSync(tmp, { force: true });
    if (e instanceof BackupError) throw e;
    throw bad(`--out ${out}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, 'check the directory and the space left');
  }
  return { out, bytes: fs.statSync(out).size, files, contentBytes: bytes, roots, skipped };
}

// ---- restore ----

export interface RestoreOptions {
  archive: string;
  /** Directories a root may be in, besides DEFAULT_RESTORE_ROOTS. */
  allowRoots?: string[];
  dryRun?: boolean;
  /** Content bytes (sum of the manifest's sizes) accepted; default 1 GiB. */
  maxBytes?: number;
  /** Default 10 minutes. */
  timeoutMs?: number;
  onProgress?: (p: Progress) => void;
}

export interface RestoreAction {
  path: string;
  kind: 'file' | 'dir';
  /** create: absent now; overwrite: exists and differs; same: exists with the same content. */
  action: 'create' | 'overwrite' | 'same';
  size: number;
  mode: number;
}

export interface RestoreResult {
  archive: string;
  version: string;
  created: string;
  host: string;
  config: string;
  dryRun: boolean;
  roots: BackupRoot[];
  actions: RestoreAction[];
  written: number;
}

const isCleanAbsolute = (p: unknown): p is string =>
  typeof p === 'string' &&
  p.length > 1 &&
  p.length <= MAX_PATH &&
  p.startsWith('/') &&
  !p.includes('\0') &&
  path.posix.normalize(p) === p &&
  !p.endsWith('/') &&
  !p.split('/').includes('..');

const inside = (p: string, dir: string) => p === dir || p.startsWith(dir === '/' ? '/' : `${dir}/`);

/** Check the manifest's shape, paths and bounds; returns it typed. */
export function validateManifest(raw: unknown, archive: string, allowRoots: string[], maxBytes: number): Manifest {
  const m = raw as Partial<Manifest> | null;
  if (typeof m !== 'object' || m === null) throw invalid(archive, 'manifest.json is not an object');
  if (m.format !== BACKUP_FORMAT)
    throw invalid(archive, `manifest format ${JSON.stringify(m.format)?.slice(0, 60)}, expected ${BACKUP_FORMAT}`);
  if (!Array.isArray(m.roots) || m.roots.length === 0 || m.roots.length > 1000)
    throw invalid(archive, 'manifest roots: 1 to 1000 expected');
  if (!Array.isArray(m.entries) || m.entries.length > MAX_ENTRIES) throw invalid(archive, `manifest entries: at most ${MAX_ENTRIES}`);
  for (const r of m.roots) {
    if (!r || !isCleanAbsolute(r.path) || (r.kind !== 'file' && r.kind !== 'dir') || typeof r.key !== 'string')
      throw invalid(archive, `manifest root ${JSON.stringify(r)?.slice(0, 200)}: an absolute normalized path without .. is expected`);
    if (!allowRoots.some((a) => inside(r.path, a)))
      throw refused(
        `backup archive ${archive}: root ${r.path} (${r.key.slice(0, 64)}) is outside the directories a restore may write ` +
          `(${allowRoots.join(', ')}); nothing was written`,
        `if you mean it, pass --allow-root ${path.dirname(r.path)} (the archive says where its files go: check it with --dry-run first)`,
      );
  }
  const seen = new Set<string>();
  let total = 0;
  for (const e of m.entries) {
    const where = JSON.stringify(e)?.slice(0, 200);
    if (!e || !isCleanAbsolute(e.path))
      throw invalid(archive, `manifest entry ${where}: an absolute normalized path without .. is expected`);
    if (seen.has(e.path)) throw invalid(archive, `manifest entry ${e.path} is listed twice`);
    seen.add(e.path);
    const root = m.roots.find((r) => (r.kind === 'file' ? e.path === r.path : inside(e.path, r.path)));
    if (!root) throw invalid(archive, `${e.path} is outside the manifest's roots`);
    if (!Number.isInteger(e.mode) || e.mode < 0 || e.mode > 0o7777)
      throw invalid(archive, `${e.path}: mode ${String(e.mode)} out of range`);
    if (!Number.isInteger(e.uid) || !Number.isInteger(e.gid) || e.uid < 0 || e.gid < 0 || e.uid > 0xfffffffe || e.gid > 0xfffffffe)
      throw invalid(archive, `${e.path}: owner out of range`);
    if (e.kind === 'file') {
      if (root.kind === 'dir' && e.path === root.path) throw invalid(archive, `${e.path}: a directory root listed as a file`);
      if (!Number.isSafeInteger(e.size) || e.size < 0) throw invalid(archive, `${e.path}: size ${String(e.size)} is not a byte count`);
      if (typeof e.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(e.sha256)) throw invalid(archive, `${e.path}: no SHA-256 in the manifest`);
      total += e.size;
      if (total > maxBytes) throw invalid(archive, `the files add up to more than ${maxBytes} bytes (--max-size)`);
    } else if (e.kind === 'dir') {
      if (root.kind !== 'dir') throw invalid(archive, `${e.path}: a directory under the file root ${root.path}`);
    } else throw invalid(archive, `${e.path}: kind ${JSON.stringify((e as { kind?: unknown }).kind)} (file or dir expected)`);
  }
  return m as Manifest;
}

/** Counts what leaves gunzip: a gzip bomb (or a member the manifest does not know of) stops at the bound. */
function bounded(limit: number, archive: string): Transform {
  let n = 0;
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      n += chunk.length;
      if (n > limit) cb(invalid(archive, `it unpacks to more than ${limit} bytes`));
      else cb(null, chunk);
    },
  });
}

/**
 * One pass over the archive: the manifest first, then every member checked against it and handed
 * to `onFile` (which must consume the stream). Throws LA_ERR_BACKUP_INVALID on anything amiss.
 */
async function readArchive(
  o: RestoreOptions & { allowRoots: string[]; maxBytes: number },
  onFile: ((e: BackupEntry, body: AsyncIterable<Buffer>) => Promise<string>) | undefined,
  signal: AbortSignal,
): Promise<Manifest> {
  const archive = o.archive;
  let st: fs.Stats;
  try {
    st = fs.statSync(archive);
  } catch (e) {
    throw refused(
      `backup archive ${archive}: cannot read it (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`,
      'give the path of a file made by `lightagent-svm backup`',
    );
  }
  if (!st.isFile()) throw invalid(archive, 'not a regular file');
  const extract = tar.extract();
  const input = fs.createReadStream(archive);
  // Tar headers and padding: at most 1.5 KiB per entry, plus the manifest.
  const limit = o.maxBytes + MAX_MANIFEST_BYTES + (MAX_ENTRIES + 2) * 1536;
  const feeding = pipeline(input, zlib.createGunzip(), bounded(limit, archive), extract, { signal });
  feeding.catch(() => {});
  let manifest: Manifest | undefined;
  let byPath = new Map<string, BackupEntry>();
  const found = new Set<string>();
  let files = 0;
  let bytes = 0;
  try {
    for await (const entry of extract) {
      const h = entry.header;
      const name = h.name;
      if (!manifest) {
        if (name !== 'manifest.json' || h.type !== 'file')
          throw invalid(archive, `the first member is ${JSON.stringify(name).slice(0, 120)}, not manifest.json`);
        if ((h.size ?? 0) > MAX_MANIFEST_BYTES) throw invalid(archive, `manifest.json is over ${MAX_MANIFEST_BYTES} bytes`);
        const parts: Buffer[] = [];
        for await (const c of entry) parts.push(c as Buffer);
        let raw: unknown;
        try {
          raw = JSON.parse(Buffer.concat(parts).toString('utf8'));
        } catch {
          throw invalid(archive, 'manifest.json is not JSON');
        }
        manifest = validateManifest(raw, archive, o.allowRoots, o.maxBytes);
        byPath = new Map(manifest.entries.filter((e) => e.kind === 'file').map((e) => [e.path, e]));
        continue;
      }
      if (h.type !== 'file')
        throw invalid(archive, `member ${JSON.stringify(name).slice(0, 200)} is a ${h.type}, only regular files are accepted`);
      const p = name.startsWith('files/') ? name.slice('files'.length) : undefined;
      const e = p !== undefined ? byPath.get(p) : undefined;
      if (!e || p === undefined) throw invalid(archive, `member ${JSON.stringify(name).slice(0, 200)} is not in the manifest`);
      if (found.has(p)) throw invalid(archive, `member ${name} appears twice`);
      found.add(p);
      if (h.size !== e.size) throw invalid(archive, `member ${name} has ${h.size} bytes, the manifest says ${e.size}`);
      let sha: string;
      if (onFile) sha = await onFile(e, entry as AsyncIterable<Buffer>);
      else {
        const hash = crypto.createHash('sha256');
        for await (const c of entry) hash.update(c as Buffer);
        sha = hash.digest('hex');
      }
      if (sha !== e.sha256) throw invalid(archive, `${e.path}: its SHA-256 is not the manifest's (the archive is damaged or was changed)`);
      files++;
      bytes += e.size;
      o.onProgress?.({ phase: onFile ? 'restore' : 'verify', files, bytes });
    }
    await feeding;
  } catch (e) {
    input.destroy();
    if (e instanceof BackupError) throw e;
    if (signal.aborted) throw invalid(archive, `not read within ${o.timeoutMs ?? 600_000} ms (--timeout)`);
    throw invalid(archive, `not a readable tar.gz (${(e as Error).message.slice(0, 200)})`);
  }
  if (!manifest) throw invalid(archive, 'no manifest.json (an empty archive)');
  const missing = [...byPath.keys()].filter((p) => !found.has(p));
  if (missing.length) throw invalid(archive, `${missing.length} files of the manifest are not in it (first: ${missing[0]})`);
  return manifest;
}

/** Refuse a path with a symbolic link in it (restore follows none), and a file where a directory must go. */
function checkTarget(p: string, kind: 'file' | 'dir'): void {
  const parts = p.split('/').filter(Boolean);
  let cur = '';
  for (let i = 0; i < parts.length; i++) {
    cur += `/${parts[i]}`;
    let l: fs.Stats;
    try {
      l = fs.lstatSync(cur);
    } catch {
      return; // from here on nothing exists: made by the restore
    }
    if (l.isSymbolicLink())
      throw refused(
        `restore: ${cur} is a symbolic link (on the way to ${p}); a restore follows none`,
        `replace the link by the real directory, or restore on a machine without it`,
      );
    const last = i === parts.length - 1;
    if (!last && !l.isDirectory()) throw refused(`restore: ${cur} is not a directory (on the way to ${p})`, 'move it away first');
    if (last && kind === 'dir' && !l.isDirectory()) throw refused(`restore: ${p} exists and is not a directory`, 'move it away first');
    if (last && kind === 'file' && !l.isFile()) throw refused(`restore: ${p} exists and is not a regular file`, 'move it away first');
  }
}

/** Same content as the manifest says? (A different size answers without reading.) */
function sameContent(p: string, e: BackupEntry): boolean {
  try {
    if (fs.statSync(p).size !== e.size) return false;
    return crypto.createHash('sha256').update(fs.readFileSync(p)).digest('hex') === e.sha256;
  } catch {
    return false;
  }
}

export async function restoreBackup(o: RestoreOptions): Promise<RestoreResult> {
  const allowRoots = [...DEFAULT_RESTORE_ROOTS, ...(o.allowRoots ?? []).map((r) => path.resolve(r))];
  const opts = { ...o, allowRoots, maxBytes: o.maxBytes ?? 1024 * 1024 * 1024 };
  const timeoutMs = o.timeoutMs ?? 600_000;
  const signal = AbortSignal.timeout(timeoutMs);
  // Pass 1: everything checked, nothing written.
  const m = await readArchive(opts, undefined, signal);
  const actions: RestoreAction[] = m.entries.map((e) => {
    checkTarget(e.path, e.kind);
    const exists = fs.existsSync(e.path);
    const action = !exists ? 'create' : e.kind === 'dir' || sameContent(e.path, e) ? 'same' : 'overwrite';
    return { path: e.path, kind: e.kind, action, size: e.size, mode: modeOf(e) };
  });
  const result: RestoreResult = {
    archive: o.archive,
    version: m.version,
    created: m.created,
    host: m.host,
    config: m.config,
    dryRun: !!o.dryRun,
    roots: m.roots,
    actions,
    written: 0,
  };
  if (o.dryRun) return result;

  // Pass 2: directories, then each file into a temporary file beside its target, hashed again.
  const root = process.getuid?.() === 0;
  const dirs = m.entries.filter((e) => e.kind === 'dir').sort((a, b) => a.path.length - b.path.length);
  try {
    for (const r of m.roots) fs.mkdirSync(r.kind === 'dir' ? r.path : path.dirname(r.path), { recursive: true, mode: 0o755 });
    for (const d of dirs) {
      if (!fs.existsSync(d.path)) fs.mkdirSync(d.path, { mode: 0o700 });
      fs.chmodSync(d.path, modeOf(d));
      if (root) fs.chownSync(d.path, d.uid, d.gid);
    }
  } catch (e) {
    throw refused(`restore: cannot make a directory (${(e as Error).message})`, 'check the permissions (run as root) and the disk');
  }
  const temps = new Map<string, string>();
  const cleanup = () => {
    for (const t of temps.values()) fs.rmSync(t, { force: true });
  };
  try {
    await readArchive(
      opts,
      async (e, body) => {
        checkTarget(e.path, 'file');
        const tmp = path.join(path.dirname(e.path), `.${path.basename(e.path)}.la-restore-${crypto.randomBytes(6).toString('hex')}`);
        temps.set(e.path, tmp);
        const hash = crypto.createHash('sha256');
        const tap = new Transform({
          transform(chunk: Buffer, _enc, cb) {
            hash.update(chunk);
            cb(null, chunk);
          },
        });
        await pipeline(body, tap, fs.createWriteStream(tmp, { flags: 'wx', mode: 0o600 }));
        const fd = fs.openSync(tmp, 'r');
        fs.fsyncSync(fd);
        fs.closeSync(fd);
        return hash.digest('hex');
      },
      signal,
    );
    // Every file is written and its hash checked: now into place.
    for (const e of m.entries) {
      if (e.kind !== 'file') continue;
      const tmp = temps.get(e.path)!;
      if (root) fs.chownSync(tmp, e.uid, e.gid);
      fs.chmodSync(tmp, modeOf(e));
      fs.renameSync(tmp, e.path);
      temps.delete(e.path);
      result.written++;
    }
  } catch (e) {
    cleanup();
    if (e instanceof BackupError) throw e;
    throw refused(
      `restore: writing failed after ${result.written} files (${(e as Error).message})`,
      'check the disk and the permissions; the files not yet renamed are unchanged',
    );
  }
  for (const d of new Set(m.entries.filter((e) => e.kind === 'file').map((e) => path.dirname(e.path)))) {
    try {
      const fd = fs.openSync(d, 'r');
      fs.fsyncSync(fd);
      fs.closeSync(fd);
    } catch {
      // best effort: the renames are done
    }
  }
  return result;
}

/**
 * The mode a restore gives: the recorded one (a 0600 token file stays 0600, a 0640 one stays
 * readable by the service's group), without setuid/setgid/sticky bits and never writable by others.
 */
function modeOf(e: BackupEntry): number {
  return e.mode & 0o775;
}
