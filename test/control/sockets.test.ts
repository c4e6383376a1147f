/**
 * The local sockets with a scripted daemon behind them (AgentService): real Unix sockets, real
 * peer credentials, real other users (setpriv to uid 65534). The daemon end to end is in
 * test/agent/service.test.ts.
 */
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { request, watch } from '../../src/control/client.js';
import { LineServer } from '../../src/control/line-server.js';
import { CONTROL_SOCKET, LocalSockets, STATUS_SOCKET, type AgentService } from '../../src/control/local-sockets.js';
import { peerCred } from '../../src/control/peer-cred.js';
import type { ProtectionSnapshot } from '../../src/control/protection-state.js';
import type { Detection } from '../../src/store/detections.js';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { eventually, needRoot, tempDir } from '../helpers/procs.js';

const execFileP = promisify(execFile);

const SEND = new URL('./fixtures/send-line.js', import.meta.url).pathname;
const NOBODY = ['--reuid=65534', '--regid=65534', '--clear-groups'];

/** Async: the server under test lives in this process, so a blocking spawnSync would deadlock. */
async function asNobody(sock: string, line: string): Promise<string> {
  const { stdout } = await execFileP('setpriv', [...NOBODY, process.execPath, SEND, sock, line], { timeout: 10_000 });
  return stdout;
}

/** One reply line as the server writes it: `ok`, and `error` when it refused. */
interface ReplyLine {
  ok?: boolean;
  error?: { code: string; message: string };
  [field: string]: unknown;
}

/** Raw bytes in, every reply line out (until the server closes or `ms` pass). */
function rawExchange(sock: string, bytes: Buffer | string, ms = 1500): Promise<{ lines: ReplyLine[]; closedByServer: boolean }> {
  return new Promise((resolve) => {
    const c = net.connect(sock);
    let buf = '';
    // Closed by the server: the connection ended before our own timeout destroyed it, whether
    // the client saw a clean end or (still writing) EPIPE/ECONNRESET — which one depends on timing
    // and on the Node version.
    let timedOut = false;
    const t = setTimeout(() => ((timedOut = true), c.destroy()), ms);
    c.on('connect', () => c.write(bytes));
    c.on('data', (d) => (buf += d.toString()));
    c.on('error', () => undefined);
    c.on('close', () => {
      clearTimeout(t);
      resolve({
        lines: buf
          .split('\n')
          .filter(Boolean)
          .map((l) => JSON.parse(l) as ReplyLine),
        closedByServer: !timedOut,
      });
    });
  });
}

class FakeDaemon implements AgentService {
  readonly bus = new EventEmitter();
  reloads = 0;
  status() {
    return { mode: 'fanotify', protection: { state: 'protected', reasons: [], since: new Date().toISOString() } };
  }
  subscribe(on: { detection(d: Detection): void; state(now: ProtectionSnapshot, before: ProtectionSnapshot): void }) {
    this.bus.on('detection', on.detection);
    this.bus.on('state', on.state);
    return () => {
      this.bus.off('detection', on.detection);
      this.bus.off('state', on.state);
    };
  }
  async reload() {
    this.reloads++;
    return { applied: ['exclude'] };
  }
  async rescan(paths: string[]) {
    return paths.map(() => 'clean');
  }
  async quarantineList() {
    return [{ id: 'abcd1234' }];
  }
  async quarantineRestore(id: string) {
    return { id };
  }
  async quarantineDelete(id: string) {
    return { id };
  }
}

describe('local sockets', () => {
  let dir: string;
  let sockets: LocalSockets;
  const daemon = new FakeDaemon();
  before(async () => {
    dir = tempDir('la-sock-');
    sockets = await LocalSockets.start(dir, daemon);
  });
  after(async () => {
    await sockets?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('creates status.sock for everyone and control.sock for its owner only; the directory is searchable', () => {
    assert.equal(fs.statSync(path.join(dir, STATUS_SOCKET)).mode & 0o777, 0o666);
    assert.equal(fs.statSync(path.join(dir, CONTROL_SOCKET)).mode & 0o777, 0o600);
    assert.equal(fs.statSync(dir).mode & 0o777, 0o755);
  });

  it('answers status and control requests, echoing the request id', async () => {
    const s = await request(path.join(dir, STATUS_SOCKET), { cmd: 'status', id: 'a1' });
    assert.equal(s.id, 'a1');
    assert.equal((s.status as { mode: string }).mode, 'fanotify');
    const r = await request(path.join(dir, CONTROL_SOCKET), { cmd: 'reload', id: 9 });
    assert.deepEqual(r, { id: 9, ok: true, reload: { applied: ['exclude'] } });
    assert.equal(daemon.reloads, 1);
    const q = await request(path.join(dir, CONTROL_SOCKET), { cmd: 'quarantine-restore', item: 'abcd1234', to: '/tmp/x' });
    assert.deepEqual(q.restored, { id: 'abcd1234' });
  });

  it('streams detections and state changes to watchers, and forgets a watcher that left', async () => {
    const events: Array<Record<string, unknown>> = [];
    let status: Record<string, unknown> | undefined;
    const close = watch(path.join(dir, STATUS_SOCKET), {
      onStatus: (s) => (status = s),
      onEvent: (e) => events.push(e),
      onEnd: () => undefined,
    });
    await eventually(() => status && daemon.bus.listenerCount('detection') === 1, 5000, 'the watch to start');
    daemon.bus.emit('detection', { kind: 'detection', time: 't', path: '/x/eicar.com', threat: 'Eicar', action: 'quarantined' });
    const deg = { state: 'degraded', reasons: ['svm-unreachable'], since: 't' };
    daemon.bus.emit('state', deg, { state: 'protected', reasons: [], since: 't' });
    daemon.bus.emit('state', { state: 'protected', reasons: [], since: 't' }, deg);
    await eventually(() => events.length === 3, 5000, 'three events');
    assert.deepEqual(
      events.map((e) => e.event),
      ['detection', 'degraded', 'recovered'],
    );
    assert.equal((events[0]!.detection as Detection).path, '/x/eicar.com');
    close();
    await eventually(() => daemon.bus.listenerCount('detection') === 0, 5000, 'the subscription to end');
  });

  it('hostile input: bad JSON, non-objects, unknown commands and bad fields get error replies; the server lives on', async () => {
    const { lines } = await rawExchange(
      path.join(dir, CONTROL_SOCKET),
      'garbage\n[1,2]\n"str"\n{"cmd":"nope"}\n{"cmd":"rescan","paths":["relative"]}\n{"cmd":"rescan","paths":"x"}\n{"cmd":"quarantine-delete","item":"../../etc"}\n{"cmd":"quarantine-restore","item":"abcd1234","force":"yes"}\n\xff\xfe\n{"cmd":"status"}\n',
    );
    assert.equal(lines.length, 10, JSON.stringify(lines));
    assert.deepEqual(
      lines.slice(0, 9).map((l) => [l.ok, l.error?.code]),
      Array(9).fill([false, 'LA_ERR_CONTROL_REQUEST']),
    );
    assert.equal(lines[9]!.ok, true);
    // control commands on the status socket are refused with their own code
    const ro = await rawExchange(path.join(dir, STATUS_SOCKET), '{"cmd":"quarantine-delete","item":"abcd1234"}\n');
    assert.equal(ro.lines[0]!.error?.code, 'LA_ERR_CONTROL_DENIED');
  });

  it('a line longer than the bound gets an error and the connection is closed; other clients are served', async () => {
    const big = Buffer.alloc(256 * 1024, 0x61); // no newline: never a complete line
    const r = await rawExchange(path.join(dir, STATUS_SOCKET), big, 3000);
    assert.equal(r.lines.length, 1);
    assert.match(r.lines[0]!.error?.message ?? '', /longer than 4096 bytes/);
    assert.ok(r.closedByServer);
    const s = await request(path.join(dir, STATUS_SOCKET), { cmd: 'status' });
    assert.equal(s.ok, true);
  });

  it('a client that floods requests without reading is cut off, not buffered without bound', async () => {
    const flood = '{"cmd":"status"}\n'.repeat(5000);
    const r = await rawExchange(path.join(dir, STATUS_SOCKET), flood, 3000);
    assert.ok(r.lines.length <= 17, `replies: ${r.lines.length}`);
    assert.ok(r.lines.some((l) => /requests waiting/.test(l.error?.message ?? '')));
    assert.equal((await request(path.join(dir, STATUS_SOCKET), { cmd: 'status' })).ok, true);
  });

  it('peer credentials: the kernel says who connected', async () => {
    const srv = net.createServer();
    const p = path.join(dir, 'cred.sock');
    await new Promise<void>((r) => srv.listen(p, r));
    const got = new Promise<ReturnType<typeof peerCred>>((r) => srv.once('connection', (s) => (r(peerCred(s)), s.destroy())));
    const c = net.connect(p);
    const cred = await got;
    c.destroy();
    srv.close();
    assert.deepEqual(cred, { pid: process.pid, uid: process.getuid!(), gid: process.getgid!() });
  });

  it('refuses a second server on a live socket, replaces a dead one', async () => {
    await assert.rejects(LocalSockets.start(dir, daemon), (e: Error & { code?: string }) => e.code === 'LA_ERR_ALREADY_RUNNING');
    const d2 = tempDir('la-sock-');
    const stale = net.createServer();
    await new Promise<void>((r) => stale.listen(path.join(d2, STATUS_SOCKET), r));
    // Close the listener but keep the file (what a SIGKILL leaves behind).
    (stale as unknown as { _handle: { close(): void } })._handle.close();
    const s2 = await LocalSockets.start(d2, daemon);
    assert.equal((await request(path.join(d2, STATUS_SOCKET), { cmd: 'status' })).ok, true);
    await s2.close();
    fs.rmSync(d2, { recursive: true, force: true });
  });
});

describe('local sockets, other users', { skip: needRoot() }, () => {
  let dir: string;
  let sockets: LocalSockets;
  before(async () => {
    dir = tempDir('la-sock-');
    sockets = await LocalSockets.start(dir, new FakeDaemon());
  });
  after(async () => {
    await sockets?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('a non-root user reads the status socket', async () => {
    const out = await asNobody(path.join(dir, STATUS_SOCKET), '{"cmd":"status"}');
    assert.equal(JSON.parse(out).ok, true, out);
  });

  it('a non-root user cannot use the control socket (file mode)', async () => {
    assert.match(await asNobody(path.join(dir, CONTROL_SOCKET), '{"cmd":"reload"}'), /CONNECT-ERROR EACCES/);
  });

  it('a non-root user cannot use a root-only socket even when its file mode lets them connect (peer credentials)', async () => {
    let served = 0;
    const p = path.join(dir, 'open-control.sock');
    const srv = await LineServer.listen({ path: p, mode: 0o666, name: 'control', rootOnly: true, handle: () => ({ served: ++served }) });
    try {
      const out = await asNobody(p, '{"cmd":"reload"}');
      const reply = JSON.parse(out.split('\n')[0]!);
      assert.equal(reply.ok, false);
      assert.equal(reply.error.code, 'LA_ERR_CONTROL_DENIED');
      assert.match(reply.error.message, /uid 65534/);
      assert.equal(served, 0, 'the handler never ran');
      assert.equal((await request(p, { cmd: 'x' })).served, 1, 'root is served');
    } finally {
      await srv.close();
    }
  });
});
