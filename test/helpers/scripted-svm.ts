/**
 * A scripted SVM on port 0 for client-side tests: it does the handshake (token `good`) and hands
 * every other frame to `onMessage`, so a test can answer late, wrongly, or not at all.
 */
import crypto from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { WebSocketServer, type WebSocket } from 'ws';
import { CloseCode, decodeAgentMessage, decodeChunk, encodeMessage, type AgentMessage } from '../../src/protocol/index.js';

export type ScriptedFrame = AgentMessage | { t: 'chunk'; id: number; index: number; last: boolean; bytes: number; payload: Buffer };
export type Handler = (ws: WebSocket, msg: ScriptedFrame) => void;

export async function scriptedSvm(onMessage: Handler, opts: { maxInFlight?: number; port?: number } = {}) {
  const wss = new WebSocketServer({ port: opts.port ?? 0, host: '127.0.0.1', perMessageDeflate: false });
  await new Promise<void>((r) => wss.once('listening', () => r()));
  wss.on('connection', (ws) => {
    ws.on('message', (data, isBinary) => {
      if (isBinary) {
        const c = decodeChunk(data as Buffer);
        onMessage(ws, { t: 'chunk', id: c.id, index: c.index, last: c.last, bytes: c.payload.length, payload: Buffer.from(c.payload) });
        return;
      }
      const m = decodeAgentMessage(data as Buffer);
      if (m.t === 'hello') {
        if (m.token !== 'good') {
          ws.send(encodeMessage({ t: 'error', code: 'LA_ERR_AUTH', message: 'unknown token' }));
          ws.close(CloseCode.AUTH);
          return;
        }
        ws.send(encodeMessage({ t: 'welcome', v: 1, svmId: 'test-svm', generation: 'g1', load: 0, limits: { maxFileSize: 1 << 26, maxChunk: 1 << 20, maxInFlight: opts.maxInFlight ?? 32 } }));
        return;
      }
      onMessage(ws, m);
    });
  });
  const port = (wss.address() as AddressInfo).port;
  return { wss, port, url: `ws://127.0.0.1:${port}`, close: () => new Promise<void>((r) => { for (const c of wss.clients) c.terminate(); wss.close(() => r()); }) };
}

/**
 * A scripted SVM that judges uploads by content: every lookup is unknown (so content is
 * uploaded), and content containing `marker` is infected with `threat`; each verdict is sent
 * after `delayMs()` (0: at once). `requests()`: lookups and scans received so far.
 */
export async function markerSvm(o: { marker: string; threat: string; delayMs?: () => number }) {
  const uploads = new Map<number, Buffer[]>();
  let requests = 0;
  const svm = await scriptedSvm((ws, m) => {
    if (m.t === 'lookup' || m.t === 'scan') requests++;
    const answer = (id: number, verdict: 'clean' | 'infected' | 'unknown', sha256?: string) => {
      const send = () => ws.readyState === ws.OPEN && ws.send(encodeMessage({ t: 'verdict', id, verdict, ...(sha256 ? { sha256 } : {}), ...(verdict === 'infected' ? { threat: o.threat } : {}), generation: 'g1', engine: 'scripted' }));
      const ms = o.delayMs?.() ?? 0;
      if (ms > 0) setTimeout(send, ms);
      else send();
    };
    if (m.t === 'lookup') answer(m.id, 'unknown');
    if (m.t === 'chunk') {
      const parts = uploads.get(m.id) ?? [];
      parts.push(m.payload);
      uploads.set(m.id, parts);
      if (m.last) {
        const content = Buffer.concat(parts);
        uploads.delete(m.id);
        answer(m.id, content.includes(o.marker) ? 'infected' : 'clean', crypto.createHash('sha256').update(content).digest('hex'));
      }
    }
  });
  return { ...svm, requests: () => requests };
}
