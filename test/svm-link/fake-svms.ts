/**
 * Small scripted SVMs for pool tests: each has its own id, generation and load, can push `load`
 * and `generation` reports, hold answers, die (every connection reset, the port closed) and come
 * back on the same port. Token `good`.
 */
import type { AddressInfo } from 'node:net';
import { WebSocketServer, type WebSocket } from 'ws';
import { CloseCode, decodeAgentMessage, decodeChunk, encodeMessage, type VerdictMsg } from '../../src/protocol/index.js';

export interface FakeSvm {
  readonly id: string;
  readonly url: string;
  readonly port: number;
  /** Requests (lookups and completed uploads) this SVM answered. */
  answered: number;
  /** Requests it received. */
  received: number;
  generation: string;
  /** While true, requests are received but not answered. */
  hold: boolean;
  setLoad(load: number): void;
  setGeneration(g: string): void;
  /** Answer every held request now. */
  release(): void;
  kill(): Promise<void>;
  revive(): Promise<void>;
  close(): Promise<void>;
}

export async function fakeSvm(id: string, opts: { generation?: string; load?: number; port?: number; answerDelayMs?: number } = {}): Promise<FakeSvm> {
  let load = opts.load ?? 0;
  let wss: WebSocketServer;
  let port = opts.port ?? 0;
  const held: Array<() => void> = [];
  const self: FakeSvm = {
    id,
    get url() {
      return `ws://127.0.0.1:${port}`;
    },
    get port() {
      return port;
    },
    answered: 0,
    received: 0,
    generation: opts.generation ?? 'g1',
    hold: false,
    setLoad(l: number) {
      load = l;
      for (const c of wss.clients) c.send(encodeMessage({ t: 'load', load: l, queue: 0 }));
    },
    setGeneration(g: string) {
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
  const answer = (ws: WebSocket, v: Omit<VerdictMsg, 't'>) => {
    const send = () => {
      if (ws.readyState !== ws.OPEN) return;
      self.answered++;
      ws.send(encodeMessage({ t: 'verdict', ...v, generation: self.generation, engine: id }));
    };
    if (self.hold) held.push(send);
    else if (opts.answerDelayMs) setTimeout(send, opts.answerDelayMs);
    else send();
  };
  const listen = async () => {
    wss = new WebSocketServer({ port, host: '127.0.0.1', perMessageDeflate: false });
    await new Promise<void>((r, j) => {
      wss.once('listening', () => r());
      wss.once('error', j);
    });
    port = (wss.address() as AddressInfo).port;
    wss.on('connection', (ws) => {
      ws.on('error', () => {});
      ws.on('message', (data, isBinary) => {
        if (isBinary) {
          const c = decodeChunk(data as Buffer);
          if (c.last) answer(ws, { id: c.id, verdict: 'clean' });
          return;
        }
        const m = decodeAgentMessage(data as Buffer);
        if (m.t === 'hello') {
          if (m.token !== 'good') {
            ws.send(encodeMessage({ t: 'error', code: 'LA_ERR_AUTH', message: 'unknown token' }));
            ws.close(CloseCode.AUTH);
            return;
          }
          ws.send(encodeMessage({ t: 'welcome', v: 1, svmId: id, generation: self.generation, load, limits: { maxFileSize: 1 << 26, maxChunk: 1 << 16, maxInFlight: 8 } }));
          return;
        }
        if (m.t === 'lookup') {
          self.received++;
          answer(ws, { id: m.id, verdict: 'unknown', sha256: m.sha256 });
        } else if (m.t === 'scan') {
          self.received++;
        }
      });
    });
  };
  await listen();
  return self;
}
