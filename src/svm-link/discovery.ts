/**
 * SVM discovery: an http(s) URL that answers a JSON list of SVMs, e.g.
 *   [{"url": "wss://svm-a:7443", "priority": 0}, "wss://svm-b:7443"]   or   {"svms": [...]}
 * Everything about the answer is hostile until validated: its time (timeoutMs for the whole
 * exchange), its size (maxBytes, counted as it arrives), no redirects, at most maxEntries SVMs,
 * each a ws:// or wss:// URL without credentials, priority an integer 0..1000.
 */
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import { SvmDiscoveryError } from '../errors.js';

/** One SVM the agent may use; lower `priority` is preferred. */
export interface SvmEntry {
  url: string;
  priority: number;
}

export const DISCOVERY_LIMITS = { maxBytes: 64 * 1024, timeoutMs: 5000, maxEntries: 16, maxUrl: 2048, maxPriority: 1000 } as const;

/** Why `url` is not an acceptable SVM URL, or undefined when it is. */
export function svmUrlProblem(url: unknown): string | undefined {
  if (typeof url !== 'string') return 'must be a string';
  if (url.length > DISCOVERY_LIMITS.maxUrl) return `is longer than ${DISCOVERY_LIMITS.maxUrl} characters`;
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return 'is not a URL';
  }
  if (u.protocol !== 'ws:' && u.protocol !== 'wss:') return 'must be a ws:// or wss:// URL';
  if (u.username || u.password) return 'must not carry credentials (the token is configured separately)';
  return undefined;
}

/** Plain ws:// sends the token and file contents in clear: only to this machine unless allowed. */
export function isLoopbackUrl(url: string): boolean {
  const host = new URL(url).hostname.replace(/^\[|\]$/g, '');
  if (host === 'localhost') return true;
  if (net.isIPv4(host)) return host.startsWith('127.');
  return host === '::1';
}

/** Validate a discovery document; throws SvmDiscoveryError naming the first bad entry. */
export function parseSvmList(doc: unknown, source: string): SvmEntry[] {
  const list = Array.isArray(doc)
    ? doc
    : typeof doc === 'object' && doc !== null && Array.isArray((doc as { svms?: unknown }).svms)
      ? (doc as { svms: unknown[] }).svms
      : undefined;
  if (!list) throw new SvmDiscoveryError(source, 'the answer must be a JSON list of SVMs, or an object with an `svms` list');
  if (list.length === 0) throw new SvmDiscoveryError(source, 'the list of SVMs is empty');
  if (list.length > DISCOVERY_LIMITS.maxEntries)
    throw new SvmDiscoveryError(source, `${list.length} SVMs listed; at most ${DISCOVERY_LIMITS.maxEntries} are accepted`);
  const out: SvmEntry[] = [];
  const seen = new Set<string>();
  list.forEach((item: unknown, i) => {
    const obj = typeof item === 'string' ? { url: item } : item;
    if (typeof obj !== 'object' || obj === null || Array.isArray(obj))
      throw new SvmDiscoveryError(source, `entry ${i}: must be a URL or {url, priority}`);
    const { url, priority, ...rest } = obj as { url?: unknown; priority?: unknown };
    const extra = Object.keys(rest);
    if (extra.length) throw new SvmDiscoveryError(source, `entry ${i}: unknown key ${JSON.stringify(extra[0]!.slice(0, 40))}`);
    const bad = svmUrlProblem(url);
    if (bad) throw new SvmDiscoveryError(source, `entry ${i}: url ${bad}`);
    const p = priority === undefined ? i : priority;
    if (typeof p !== 'number' || !Number.isInteger(p) || p < 0 || p > DISCOVERY_LIMITS.maxPriority)
      throw new SvmDiscoveryError(source, `entry ${i}: priority must be an integer 0..${DISCOVERY_LIMITS.maxPriority}`);
    const key = new URL(url as string).href;
    if (seen.has(key)) throw new SvmDiscoveryError(source, `entry ${i}: ${key} is listed twice`);
    seen.add(key);
    out.push({ url: url as string, priority: p });
  });
  return out;
}

export interface DiscoveryOptions {
  timeoutMs?: number;
  maxBytes?: number;
  /** PEM CA pinned for https:// (the agent's `ca`); the system CAs otherwise. */
  ca?: string | Buffer | undefined;
}

/** GET `url` and parse the SVM list it returns. */
export function fetchSvmList(url: string, opts: DiscoveryOptions = {}): Promise<SvmEntry[]> {
  const timeoutMs = opts.timeoutMs ?? DISCOVERY_LIMITS.timeoutMs;
  const maxBytes = opts.maxBytes ?? DISCOVERY_LIMITS.maxBytes;
  return new Promise<SvmEntry[]>((resolve, reject) => {
    let u: URL;
    try {
      u = new URL(url);
    } catch {
      reject(new SvmDiscoveryError(url, 'not a URL'));
      return;
    }
    if (u.protocol !== 'http:' && u.protocol !== 'https:') {
      reject(new SvmDiscoveryError(url, 'must be an http:// or https:// URL'));
      return;
    }
    let settled = false;
    const fail = (detail: string, cause?: unknown) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      req.destroy();
      reject(new SvmDiscoveryError(url, detail, cause === undefined ? undefined : { cause }));
    };
    const get = u.protocol === 'https:' ? https.get : http.get;
    const req = get(
      u,
      { headers: { accept: 'application/json' }, ...(u.protocol === 'https:' && opts.ca ? { ca: opts.ca } : {}) },
      (res) => {
        if (res.statusCode !== 200) {
          res.resume();
          fail(`answered HTTP ${res.statusCode ?? '?'} (redirects are not followed)`);
          return;
        }
        const declared = Number(res.headers['content-length']);
        if (Number.isFinite(declared) && declared > maxBytes) {
          fail(`the answer is ${declared} bytes; at most ${maxBytes} are read`);
          return;
        }
        const chunks: Buffer[] = [];
        let got = 0;
        res.on('data', (c: Buffer) => {
          got += c.length;
          if (got > maxBytes) fail(`the answer is larger than ${maxBytes} bytes`);
          else chunks.push(c);
        });
        res.on('error', (e) => fail(e.message, e));
        res.on('end', () => {
          if (settled) return;
          let doc: unknown;
          try {
            doc = JSON.parse(Buffer.concat(chunks).toString('utf8'));
          } catch (e) {
            fail(`the answer is not JSON: ${(e as Error).message}`, e);
            return;
          }
          try {
            const list = parseSvmList(doc, url);
            settled = true;
            clearTimeout(timer);
            resolve(list);
          } catch (e) {
            settled = true;
            clearTimeout(timer);
            reject(e as Error);
          }
        });
      },
    );
    req.on('error', (e) => fail(e.message, e));
    const timer = setTimeout(() => fail(`no complete answer within ${timeoutMs} ms`), timeoutMs);
  });
}
