/**
 * The status server as it runs on Windows (LocalSockets.start with `windowsPipe`), here on a Unix
 * socket path because Linux has no named pipes (the real pipe, \\.\pipe\lightagent-status, is
 * tested under Wine in test/windows/wine.test.ts): no control server, control commands refused
 * with the Windows reason, and a client that sends nothing (on Windows: one the default pipe
 * DACL lets only read) gets the status and the event stream by itself.
 */
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { request } from '../../src/control/client.js';
import { CONTROL_SOCKET, LocalSockets, statusEndpoint, WINDOWS_STATUS_PIPE, type AgentService } from '../../src/control/local-sockets.js';
import type { ProtectionSnapshot } from '../../src/control/protection-state.js';
import type { Detection } from '../../src/store/detections.js';
import { tempDir } from '../helpers/procs.js';

class FakeDaemon implements AgentService {
  readonly bus = new EventEmitter();
  status() {
    return { mode: 'watcher', protection: { state: 'protected', reasons: [], since: new Date().toISOString() } };
  }
  subscribe(on: { detection(d: Detection): void; state(now: ProtectionSnapshot, before: ProtectionSnapshot): void }) {
    this.bus.on('detection', on.detection);
    return () => this.bus.off('detection', on.detection);
  }
  async reload() {
    return {};
  }
  async rescan() {
    return [];
  }
  async quarantineList() {
    return [];
  }
  async quarantineRestore(id: string) {
    return { id };
  }
  async quarantineDelete(id: string) {
    return { id };
  }
}

describe('status server, Windows flavour', () => {
  let dir: string;
  let pipe: string;
  let sockets: LocalSockets;
  const daemon = new FakeDaemon();
  before(async () => {
    dir = tempDir('la-statuspipe-');
    pipe = path.join(dir, 'stand-in-for-the-pipe');
    sockets = await LocalSockets.start(dir, daemon, { windowsPipe: pipe, silentClientMs: 200 });
  });
  after(async () => {
    await sockets.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('serves status on the pipe, and no control server', async () => {
    assert.equal(sockets.status.path, pipe);
    assert.equal(sockets.control, undefined);
    assert.ok(!fs.existsSync(path.join(dir, CONTROL_SOCKET)));
    const r = await request(pipe, { cmd: 'status', id: 7 });
    assert.equal(r.id, 7);
    assert.equal((r.status as Record<string, unknown>).mode, 'watcher');
    assert.equal(statusEndpoint('/ignored', 'win32'), WINDOWS_STATUS_PIPE);
    assert.equal(WINDOWS_STATUS_PIPE, '\\\\.\\pipe\\lightagent-status');
  });

  it('refuses control commands, saying Windows has no control pipe', async () => {
    await assert.rejects(
      request(pipe, { cmd: 'reload' }),
      (e: Error & { code?: string }) => e.code === 'LA_ERR_CONTROL_DENIED' && /Windows has no control pipe/.test(e.message),
    );
  });

  it('a client that sends nothing gets the status, then events, by itself', async () => {
    // What the pipe writes unasked: the status reply, then watch events.
    type PipeLine = { ok?: boolean; status?: { mode: string }; event?: string; detection?: { path: string } };
    const lines: PipeLine[] = [];
    const c = net.connect(pipe);
    c.on('error', () => undefined);
    let buf = '';
    c.on('data', (d) => {
      buf += d.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        lines.push(JSON.parse(buf.slice(0, nl)) as PipeLine);
        buf = buf.slice(nl + 1);
      }
    });
    const t0 = Date.now();
    await new Promise<void>((r) => c.once('connect', () => r()));
    for (let i = 0; i < 100 && lines.length === 0; i++) await new Promise((r) => setTimeout(r, 20));
    const waited = Date.now() - t0;
    assert.equal(lines.length, 1, 'the status line');
    assert.equal(lines[0]!.ok, true);
    assert.equal(lines[0]!.status?.mode, 'watcher');
    assert.ok(waited >= 150, `sent after the silence (${waited} ms), not at once`);
    daemon.bus.emit('detection', { kind: 'detection', time: new Date().toISOString(), path: 'C:\\x.exe', threat: 'T', action: 'killed' });
    for (let i = 0; i < 100 && lines.length < 2; i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(lines[1]!.event, 'detection');
    assert.equal(lines[1]!.detection?.path, 'C:\\x.exe');
    c.destroy();
  });

  it('a client that asks in time gets only its answer (the silence rule does not fire)', async () => {
    const got: string[] = [];
    const c = net.connect(pipe);
    c.on('error', () => undefined);
    c.on('data', (d) => got.push(d.toString()));
    c.on('connect', () => c.write('{"cmd":"status","id":"a"}\n'));
    await new Promise((r) => setTimeout(r, 600));
    c.destroy();
    const lines = got
      .join('')
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.deepEqual(
      lines.map((l) => l.id),
      ['a'],
    );
  });
});
