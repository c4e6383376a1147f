/**
 * A fake SVM on 127.0.0.1 (port 0 unless given) for client-side tests: the link, the pool, the
 * scanner and a real `lightagent run`. It does the hello/welcome handshake itself (token `good`
 * unless given), then either hands every frame to `script` (answer late, wrongly, or not at
 * all), or answers by itself: every lookup is unknown, so content is uploaded, and an upload is
 * clean unless it contains `infected.marker`. It can push load and generation reports, hold
 * answers, die (every connection reset, the port closed) and come back on the same port.
 *
 *   const svm = await fakeSvm({ infected: { marker: 'EVIL', threat: 'Test-Evil' } });
 *   const silent = await fakeSvm({ script: () => undefined });   // takes requests, never answers
 *   const [a, b] = await Promise.all([fakeSvm({ id: 'a', load: 0.9 }), fakeSvm({ id: 'b' })]);
 */
import crypto from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { WebSocketServer, type WebSocket } from 'ws';
import {
  CloseCode,
  decodeAgentMessage,
  decodeChunk,
  encodeMessage,
  type AgentMessage,
  type Limits,
  type VerdictMsg,
} from '../../src/protocol/index.js';

export type FakeSvmFrame = AgentMessage | { t: 'chunk'; id: number; index: number; last: boolean; bytes: number; payload: Buffer };
export type FakeSvmScript = (ws: WebSocket, msg: FakeSvmFrame) => void;

export interface FakeSvmOptions {
  /** Its svmId in the welcome and the engine named in its verdicts (default `test-svm`). */
  id?: string;
  /** The one token it accepts (default `good`); any other gets LA_ERR_AUTH and a close. */
  token?: string;
  generation?: string;
  load?: number;
  /** Listen here (a revived SVM keeps its port anyway). */
  port?: number;
  /** The limits sent in the welcome (default 64 MiB files, 1 MiB chunks, 32 in flight). */
  limits?: Partial<Limits>;
  /** Every frame after the handshake goes here, and nothing is answered for the test. */
  script?: FakeSvmScript;
  /** Uploaded content containing `marker` is infected with `threat` (default: all clean). */
  infected?: { marker: string; threat: string };
  /** Wait this long before each answer of its own (a function: asked once per answer). */
  answerDelayMs?: number | (() => number);
}

export interface FakeSvm {
  readonly id: string;
  readonly url: string;
  readonly port: number;
  /** The live server (a new one after revive()). */
  readonly wss: WebSocketServer;
  /** Lookups and scans received (after the handshake). */
  received: number;
  /** Verdicts it sent of its own. */
  answered: number;
  generation: string;
  /** While true, requests are received but their answers wait for release(). */
  hold: boolean;
  /** Push a load report to every connected agent (and welcome new ones with it). */
  setLoad(load: number): void;
  /** Push a new signature generation to every connected agent. */
  setGeneration(g: string): void;
  /** Send every held answer now. */
  release(): void;
  /** Reset every connection and close the port. */
  kill(): Promise<void>;
  /** Listen again on the same port. */
  revive(): Promise<void>;
  close(): Promise<void>;
}

export async function fakeSvm(o: FakeSvmOptions = {}): Promise<FakeSvm> {
  const id = o.id ?? 'test-svm';
  const token = o.token ?? 'good';
  const limits = { maxFileSize: 1 << 26, maxChunk: 1 << 20, maxInFlight: 32, ...o.limits };
  let load = o.load ?? 0;
  let port = o.port ?? 0;
  let wss: WebSocketServer;
  const held: Array<() => void> = [];
  const delay = () => (typeof o.answerDelayMs === 'function' ? o.answerDelayMs() : (o.answerDelayMs ?? 0));

  const self: FakeSvm = {
    id,
    get url() {
      return `ws://127.0.0.1:${port}`;
    },
    get port() {
      return port;
    },
    get wss() {
      return wss;
    },
    received: 0,
    answered: 0,
    generation: o.generation ?? 'g1',
    hold: false,
    setLoad(l) {
      load = l;
      for (const c of wss.clients) c.send(encodeMessage({ t: 'load', load: l, queue: 0 }));
    },
    setGeneration(g) {
      self.generation = g;
      for (const c of wss.clients) c.send(encodeMessage({ t: 'generation', generation: g }));
    },
    release() {
      for (const h of held.splice(0)) h();
    },
    async kill() {
      held.length = 0;
      for (const c of wss.clients) c.terminate();
      await new Promise<void>((r) => wss.close(() => r()));
    },
    revive: () => listen(),
    async close() {
      await self.kill().catch(() => undefined);
    },
  };

  const answer = (ws: WebSocket, v: Omit<VerdictMsg, 't' | 'generation' | 'engine'>) => {
    const send = () => {
      if (ws.readyState !== ws.OPEN) return;
      self.answered++;
      ws.send(encodeMessage({ t: 'verdict', ...v, generation: self.generation, engine: id }));
    };
    const ms = delay();
    if (self.hold) held.push(send);
    else if (ms > 0) setTimeout(send, ms);
    else send();
  };

  /** Its own answers: unknown to every lookup, a verdict on the content of every upload. */
  const judge = (): FakeSvmScript => {
    const uploads = new Map<number, Buffer[]>();
    return (ws, m) => {
      if (m.t === 'lookup') {
        self.received++;
        answer(ws, { id: m.id, verdict: 'unknown', sha256: m.sha256 });
      } else if (m.t === 'scan') {
        self.received++;
      } else if (m.t === 'chunk') {
        const parts = uploads.get(m.id) ?? [];
        parts.push(m.payload);
        uploads.set(m.id, parts);
        if (!m.last) return;
        uploads.delete(m.id);
        const content = Buffer.concat(parts);
        const bad = o.infected !== undefined && content.includes(o.infected.marker);
        answer(ws, {
          id: m.id,
          verdict: bad ? 'infected' : 'clean',
          sha256: crypto.createHash('sha256').update(content).digest('hex'),
          ...(bad ? { threat: o.infected!.threat } : {}),
        });
      }
    };
  };

  const listen = async () => {
    wss = new WebSocketServer({ port, host: '127.0.0.1', perMessageDeflate: false });
    await new Promise<void>((r, j) => {
      wss.once('listening', () => r());
      wss.once('error', j);
    });
    port = (wss.address() as AddressInfo).port;
    wss.on('connection', (ws) => {
      const onFrame = o.script ?? judge();
      ws.on('error', () => {});
      ws.on('message', (data, isBinary) => {
        if (isBinary) {
          const c = decodeChunk(data as Buffer);
          onFrame(ws, { t: 'chunk', id: c.id, index: c.index, last: c.last, bytes: c.payload.length, payload: Buffer.from(c.payload) });
          return;
        }
        const m = decodeAgentMessage(data as Buffer);
        if (m.t === 'hello') {
          if (m.token !== token) {
            ws.send(encodeMessage({ t: 'error', code: 'LA_ERR_AUTH', message: 'unknown token' }));
            ws.close(CloseCode.AUTH);
            return;
          }
          ws.send(encodeMessage({ t: 'welcome', v: 1, svmId: id, generation: self.generation, load, limits }));
          return;
        }
        onFrame(ws, m);
      });
    });
  };
  await listen();
  return self;
}
