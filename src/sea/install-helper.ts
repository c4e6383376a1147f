/**
 * `lightagent install-helper ...`: what installers/linux/install.sh needs from the binary it
 * installs, so the script depends on nothing beyond POSIX sh and coreutils:
 *
 *   hash-password           read a removal password on stdin, print its scrypt hash line
 *   verify-password FILE    read a password on stdin; exit 0 if it matches FILE's hash, 1 if not
 *   check-config FILE       exit 0 if FILE is a valid agent config naming an SVM and a token,
 *                           else print every problem and exit 3 (environment overrides ignored)
 *   unit NAME               print the systemd unit NAME carried by this binary (e.g.
 *                           lightagent.service), so the unit always matches the binary
 *
 * Hash line: `scrypt$<log2 N>$<r>$<p>$<salt b64>$<hash b64>`. Exit 2 on bad input. Not listed
 * in `--help`: an implementation detail of the installers.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import { loadAgentConfig } from '../config/agent.js';
import { err, out } from '../cli/output.js';
import { LightagentError } from '../errors.js';
import { seaApi } from '../platform/private-dir.js';

const MAX_PASSWORD = 1024;
const MAX_HASH_FILE = 4096;
const LOG_N = 15;
const R = 8;
const P = 1;
const KEY_LEN = 32;

function readStdin(limit: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let n = 0;
    process.stdin.on('data', (d: Buffer) => {
      n += d.length;
      if (n > limit) {
        reject(new Error(`more than ${limit} bytes on stdin`));
        process.stdin.destroy();
        return;
      }
      chunks.push(d);
    });
    process.stdin.once('end', () =>
      resolve(
        Buffer.concat(chunks)
          .toString('utf8')
          .replace(/\r?\n$/, ''),
      ),
    );
    process.stdin.once('error', reject);
  });
}

function derive(password: string, salt: Buffer, logN: number, r: number, p: number): Buffer {
  return crypto.scryptSync(password, salt, KEY_LEN, { N: 2 ** logN, r, p, maxmem: 256 * 1024 * 1024 });
}

export function hashPassword(password: string): string {
  const salt = crypto.randomBytes(16);
  return `scrypt$${LOG_N}$${R}$${P}$${salt.toString('base64')}$${derive(password, salt, LOG_N, R, P).toString('base64')}`;
}

/** True when `password` matches `line`; throws on a malformed line. */
export function verifyPassword(password: string, line: string): boolean {
  const m = /^scrypt\$(\d{1,2})\$(\d{1,2})\$(\d{1,2})\$([A-Za-z0-9+/=]{8,64})\$([A-Za-z0-9+/=]{40,64})$/.exec(line.trim());
  if (!m) throw new Error('not a removal password hash line');
  const [logN, r, p] = [Number(m[1]), Number(m[2]), Number(m[3])];
  if (logN < 10 || logN > 20 || r < 1 || r > 32 || p < 1 || p > 4) throw new Error('hash parameters out of range');
  const want = Buffer.from(m[5]!, 'base64');
  const got = derive(password, Buffer.from(m[4]!, 'base64'), logN, r, p);
  return want.length === got.length && crypto.timingSafeEqual(want, got);
}

export async function installHelper(argv: string[]): Promise<number> {
  const [cmd, file] = argv;
  try {
    if (cmd === 'hash-password' && argv.length === 1) {
      const pw = await readStdin(MAX_PASSWORD);
      if (!pw) throw new Error('empty password');
      out(hashPassword(pw));
      return 0;
    }
    if (cmd === 'verify-password' && file && argv.length === 2) {
      const line = fs.readFileSync(file, 'utf8').slice(0, MAX_HASH_FILE);
      return verifyPassword(await readStdin(MAX_PASSWORD), line) ? 0 : 1;
    }
    if (cmd === 'check-config' && file && argv.length === 2) {
      let cfg: Record<string, unknown>;
      try {
        cfg = loadAgentConfig({ file, env: {} }) as unknown as Record<string, unknown>;
      } catch (e) {
        err(e instanceof LightagentError ? e.toUserString() : (e as Error).message);
        return 3;
      }
      const missing: string[] = [];
      if (!cfg.svm && !cfg.svm_discovery) missing.push('svm: no SVM URL (install.sh --svm wss://HOST:PORT)');
      if (!cfg.token) missing.push('token: no tenant token (install.sh --token T or --token-file F)');
      if (missing.length) {
        err(`${file}:\n  - ${missing.join('\n  - ')}`);
        return 3;
      }
      return 0;
    }
    if (cmd === 'unit' && file && argv.length === 2 && /^[a-z0-9@.-]{1,64}\.(service|timer)$/.test(file)) {
      const sea = seaApi();
      if (!sea) throw new Error('units are carried only by the single executable (npm run release)');
      let unit: ArrayBuffer;
      try {
        unit = sea.getRawAsset(`systemd/${file}`);
      } catch {
        err(`lightagent install-helper: this binary carries no unit ${file}`);
        return 2;
      }
      process.stdout.write(Buffer.from(unit));
      return 0;
    }
    err('usage: lightagent install-helper hash-password | verify-password FILE (password on stdin) | check-config FILE | unit NAME');
    return 2;
  } catch (e) {
    err(`lightagent install-helper: ${(e as Error).message}`);
    return 2;
  }
}
