/**
 * Agents that speak feature state-report by hand (a raw ws client: hello with features, then
 * `state` and `event` frames exactly as a test means them), and GETs of the admin API.
 */
import http from 'node:http';
import https from 'node:https';
import WebSocket from 'ws';
import { decodeSvmMessage, type StateReport, type SvmMessage } from '../../src/protocol/index.js';

export interface StateAgent {
  ws: WebSocket;
  msgs: SvmMessage[];
  welcomed: Promise<SvmMessage>;
  closed: Promise<number>;
  state(patch?: Partial<StateReport>): void;
  detection(patch?: Record<string, unknown>): void;
  close(): Promise<number>;
}

export const baseState = (): StateReport => ({
  t: 'state',
  mode: 'fanotify',
  state: 'protected',
  reasons: [],
  since: new Date().toISOString(),
  agentVersion: '0.1.0',
  os: 'linux',
  osRelease: '6.8.0-test',
  generation: 'g1',
  cache: { entries: 10, hits: 3, misses: 1 },
  deferred: 0,
  detections: 0,
});

export async function stateAgent(
  url: string,
  o: { token: string; agentId: string; host?: string; features?: string[]; ws?: WebSocket.ClientOptions },
): Promise<StateAgent> {
  const ws = new WebSocket(url, { perMessageDeflate: false, ...(o.ws ?? {}) });
  const msgs: SvmMessage[] = [];
  const closed = new Promise<number>((r) => ws.on('close', (code) => r(code)));
  ws.on('error', () => {});
  let welcome: (m: SvmMessage) => void = () => {};
  const welcomed = new Promise<SvmMessage>((r, j) => {
    welcome = r;
    setTimeout(() => j(new Error('no welcome within 5 s')), 5000).unref();
  });
  ws.on('message', (d, bin) => {
    if (bin) return;
    const m = decodeSvmMessage(d as Buffer);
    msgs.push(m);
    if (m.t === 'welcome') welcome(m);
  });
  await new Promise<void>((r, j) => {
    ws.once('open', () => r());
    ws.once('error', j);
  });
  ws.send(
    JSON.stringify({
      t: 'hello',
      v: 1,
      agentId: o.agentId,
      token: o.token,
      host: o.host ?? `host-${o.agentId}`,
      os: 'linux',
      agentVersion: '0.1.0',
      features: o.features ?? ['state-report'],
    }),
  );
  await welcomed;
  return {
    ws,
    msgs,
    welcomed,
    closed,
    state: (patch = {}) => ws.send(JSON.stringify({ ...baseState(), ...patch })),
    detection: (patch = {}) =>
      ws.send(
        JSON.stringify({
          t: 'event',
          kind: 'detection',
          time: new Date().toISOString(),
          path: '/srv/eicar.com',
          sha256: 'ab'.repeat(32),
          threat: 'Eicar-Test-Signature',
          action: 'quarantined',
          process: { pid: 42, exe: '/usr/bin/cp', uid: 1000 },
          ...patch,
        }),
      ),
    close: () => {
      ws.close();
      return closed;
    },
  };
}

export interface ApiAnswer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  body: any; // eslint-disable-line @typescript-eslint/no-explicit-any
}

/** GET (or another method) `path` on an SVM's HTTP port, with a bearer token; https with `ca`. */
export function api(
  base: string,
  path: string,
  token?: string,
  o: { method?: string; ca?: Buffer; headers?: Record<string, string> } = {},
): Promise<ApiAnswer> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { ...(token !== undefined ? { authorization: `Bearer ${token}` } : {}), ...(o.headers ?? {}) };
    const u = new URL(base);
    const mod = u.protocol === 'https:' ? https : http;
    const req = mod.request(
      { host: u.hostname, port: u.port, path, method: o.method ?? 'GET', headers, ...(o.ca ? { ca: o.ca } : {}), timeout: 10_000 },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (text += c));
        res.on('end', () => {
          let body: unknown;
          try {
            body = text ? JSON.parse(text) : undefined;
          } catch {
            body = undefined;
          }
          resolve({ status: res.statusCode ?? 0, headers: res.headers, text, body });
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error(`no answer to ${path} within 10 s`)));
    req.on('error', reject);
    req.end();
  });
}

/** Poll an async condition every 50 ms until it gives a value, at most `ms`. */
export async function eventuallyAsync<T>(fn: () => Promise<T | undefined | false>, ms = 10_000, what = 'condition'): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
