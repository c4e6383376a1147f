/**
 * Raw agents for SVM tests: a plain `ws` client that speaks lightagent/1 by hand, so tests can
 * send exactly the frames they mean (valid or not). Every server listens on port 0.
 */
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { decodeSvmMessage, encodeChunk, encodeMessage, type SvmMessage, type VerdictMsg } from '../../src/protocol/index.js';
import { BuiltinEngine } from '../../src/svm/engines/builtin.js';
import { MemoryVerdictCache } from '../../src/svm/memory-verdict-cache.js';
import { SvmServer, type SvmOptions } from '../../src/svm/server.js';

export const TOKEN = 'tenant-a-token';

export function startTestSvm(extra: Partial<SvmOptions> = {}): Promise<SvmServer> {
  return SvmServer.start({
    host: '127.0.0.1',
    port: 0,
    tokens: [{ tenant: 'a', token: TOKEN }],
    engine: new BuiltinEngine(),
    cache: new MemoryVerdictCache(1000),
    closeGraceMs: 500,
    ...extra,
  });
}

/** The options of an SvmLink or SvmPool a test connects as an agent of tenant `a`: fast backoff, short timeouts. */
export function testAgentOptions(agentId: string, host: string, features: string[]) {
  return {
    token: TOKEN,
    agentId,
    host,
    os: 'linux' as const,
    agentVersion: '0.1.0',
    deadlineMs: 1000,
    backoffMinMs: 20,
    backoffMaxMs: 100,
    connectTimeoutMs: 2000,
    features,
  };
}

export interface RawAgent {
  ws: WebSocket;
  msgs: SvmMessage[];
  closed: Promise<number>;
  next(pred: (m: SvmMessage) => boolean, ms?: number): Promise<SvmMessage>;
  verdict(id: number, ms?: number): Promise<VerdictMsg>;
}

/** Connect; send a hello with `token` (null: no token field) unless `hello` is false. Collects every message; `closed` resolves with the close code. */
export async function rawAgent(
  url: string,
  token: string | null = TOKEN,
  hello = true,
  wsOptions: WebSocket.ClientOptions = {},
): Promise<RawAgent> {
  const ws = new WebSocket(url, { perMessageDeflate: false, ...wsOptions });
  const msgs: SvmMessage[] = [];
  const waiters: Array<() => void> = [];
  const closed = new Promise<number>((r) => ws.on('close', (code) => r(code)));
  ws.on('error', () => {});
  ws.on('message', (d, bin) => {
    if (!bin) msgs.push(decodeSvmMessage(d as Buffer));
    for (const w of waiters.splice(0)) w();
  });
  await new Promise<void>((r, j) => {
    ws.once('open', () => r());
    ws.once('error', j);
  });
  const next = async (pred: (m: SvmMessage) => boolean, ms = 5000): Promise<SvmMessage> => {
    const end = Date.now() + ms;
    for (;;) {
      const m = msgs.find(pred);
      if (m) return m;
      if (Date.now() > end) throw new Error(`no matching message within ${ms} ms; got ${JSON.stringify(msgs).slice(0, 2000)}`);
      await new Promise<void>((r) => {
        waiters.push(r);
        setTimeout(r, 50);
      });
    }
  };
  /** The next verdict for `id`, taken out of `msgs` (ids are reused). */
  const verdict = async (id: number, ms?: number) => {
    const v = (await next((m) => m.t === 'verdict' && m.id === id, ms)) as VerdictMsg;
    msgs.splice(msgs.indexOf(v), 1);
    return v;
  };
  if (hello) {
    const h: Record<string, unknown> = { t: 'hello', v: 1, agentId: 'raw-agent', host: 'test', os: 'linux', agentVersion: '0' };
    if (token !== null) h.token = token;
    ws.send(JSON.stringify(h));
  }
  return { ws, msgs, closed, next, verdict };
}

/** Announce and send `content` in chunks of `chunk` bytes (at least one chunk, the last flagged). */
export function sendUpload(a: RawAgent, id: number, content: Buffer, chunk = 1 << 20): void {
  a.ws.send(encodeMessage({ t: 'scan', id, size: content.length }));
  let idx = 0;
  let off = 0;
  do {
    const part = content.subarray(off, off + chunk);
    off += part.length;
    a.ws.send(encodeChunk(id, idx++, off >= content.length, part));
  } while (off < content.length);
}

export async function upload(a: RawAgent, id: number, content: Buffer, chunk = 1 << 20): Promise<VerdictMsg> {
  sendUpload(a, id, content, chunk);
  return a.verdict(id);
}

/** One sample from GET /metrics (the text format, parsed the way Prometheus would). */
export async function metric(s: SvmServer, name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${s.address.port}/metrics`)).text();
  const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
  assert.ok(m, `metric ${name} present`);
  return Number(m[1]);
}
