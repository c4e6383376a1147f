/**
 * TrayApp's reconnect to the status socket, against a real Unix socket that appears late and
 * drops the tray: the delays between attempts grow as its Backoff says, and a connection that
 * worked starts them again from the shortest.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { Backoff } from '../../src/backoff.js';
import type { TrayNotification, TrayPresenter, TrayState } from '../../src/tray/presenter.js';
import { TrayApp } from '../../src/tray/tray-app.js';

class RecordingPresenter implements TrayPresenter {
  readonly states: TrayState[] = [];
  readonly notes: TrayNotification[] = [];
  async setState(state: TrayState): Promise<void> {
    this.states.push(state);
  }
  async notify(n: TrayNotification): Promise<void> {
    this.notes.push(n);
  }
  async close(): Promise<void> {}
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(what: string, ms: number, ok: () => boolean): Promise<void> {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(20);
  }
}

describe('TrayApp reconnects with backoff', { skip: process.platform === 'win32' ? 'Unix sockets' : undefined }, () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'la-tray-app-'));
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('waits 500, 1000, 2000 ms between failed attempts, and 500 ms again after a drop', { timeout: 30_000 }, async () => {
    const socketPath = path.join(dir, 'status.sock');
    const presenter = new RecordingPresenter();
    // The top of the jitter range: delays 500, 1000, 2000, 4000, 8000 ms.
    const app = new TrayApp({ socketPath, presenter, reconnect: new Backoff(500, 30_000, () => 1) });
    const connections: Array<{ at: number; sock: net.Socket }> = [];
    const server = net.createServer((sock) => {
      connections.push({ at: performance.now(), sock });
      sock.once('data', () =>
        sock.write(`${JSON.stringify({ ok: true, status: { mode: 'fanotify', protection: { state: 'protected' } } })}\n`),
      );
    });
    const t0 = performance.now();
    app.start();
    try {
      // Attempts at 0, 0.5 and 1.5 s find no socket; the one at 3.5 s finds it.
      await sleep(2000);
      await new Promise<void>((r) => server.listen(socketPath, r));
      await until('the first connection', 8000, () => presenter.states.includes('protected'));
      const first = connections[0]!.at - t0;
      assert.equal(connections.length, 1);
      assert.ok(first >= 3400 && first < 6000, `first connection after ${Math.round(first)} ms, expected about 3500`);
      assert.deepEqual(presenter.states, ['off', 'protected']);

      connections[0]!.sock.destroy();
      await until('the reconnection', 8000, () => connections.length >= 2 && presenter.states.at(-1) === 'protected');
      const gap = connections[1]!.at - connections[0]!.at;
      // Without the reset the next delay would be 8000 ms.
      assert.ok(gap >= 450 && gap < 2500, `reconnected ${Math.round(gap)} ms after the drop, expected about 500`);
      assert.deepEqual(presenter.states, ['off', 'protected', 'off', 'protected']);
      assert.ok(
        presenter.notes.some((n) => n.kind === 'off'),
        'the drop was announced',
      );
    } finally {
      await app.stop();
      for (const c of connections) c.sock.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    }
  });
});
