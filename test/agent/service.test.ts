/**
 * `lightagent run` as a service: one daemon per state directory, SIGTERM answers pending opens,
 * SIGHUP reloads without a gap, sd_notify to a socket we listen on, kill -9 and restart keep
 * the quarantine, the deferred queue and the cache. Real SVM, real fanotify on scratch tmpfs.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { DaemonStatus } from '../../src/agent/daemon.js';
import { sockaddrUn, watchdogIntervalMs } from '../../src/platform/linux/sd-notify.js';
import { quarantineList, startAgent, type StartAgentOptions } from '../helpers/agent.js';
import { fakeSvm } from '../helpers/fake-svm.js';
import { EICAR } from '../helpers/fixtures.js';
import { CLI, eventually, inCi, needRoot, restartSvmProcess, run, scratchMount, startSvmProcess, waitFor } from '../helpers/procs.js';

const skip = needRoot();

const fanotify = (o: StartAgentOptions) => startAgent({ mode: 'fanotify', watchdogMs: 120_000, ...o });

/** Through the CLI (`lightagent status --json`), as a user asks. */
async function cliStatus(stateDir: string): Promise<DaemonStatus> {
  const r = run(process.execPath, [CLI, 'status', '--json', '--state-dir', stateDir]);
  assert.ok(r.status === 0 || r.status === 1, r.stderr);
  return JSON.parse(r.stdout) as DaemonStatus;
}

/** `cat` without blocking this process (the SVM under test may live here). */
function catAsync(file: string): { done: Promise<number | null>; exited: () => boolean } {
  const c = spawn('cat', [file], { stdio: ['ignore', 'ignore', 'ignore'] });
  let exited = false;
  const t = setTimeout(() => c.kill('SIGKILL'), 60_000);
  const done = new Promise<number | null>((r) => c.once('exit', (code) => ((exited = true), clearTimeout(t), r(code))));
  return { done, exited: () => exited };
}

describe('sd_notify helpers', () => {
  it('builds sockaddr_un for paths and abstract names', () => {
    const p = sockaddrUn('/run/systemd/notify');
    assert.equal(p.addr.readUInt16LE(0), 1);
    assert.equal(p.addr.toString('utf8', 2, 2 + 19), '/run/systemd/notify');
    assert.equal(p.len, 2 + 20);
    const a = sockaddrUn('@sd-notify-x');
    assert.equal(a.addr[2], 0);
    assert.equal(a.addr.toString('utf8', 3, 3 + 11), 'sd-notify-x');
    assert.equal(a.len, 2 + 1 + 11);
    assert.throws(() => sockaddrUn(`/${'x'.repeat(120)}`));
  });
  it('reads WatchdogSec from WATCHDOG_USEC (for this pid only)', () => {
    assert.equal(watchdogIntervalMs({ WATCHDOG_USEC: '3000000' }, 42), 3000);
    assert.equal(watchdogIntervalMs({ WATCHDOG_USEC: '3000000', WATCHDOG_PID: '41' }, 42), undefined);
    assert.equal(watchdogIntervalMs({}, 42), undefined);
  });
});

describe('service lifecycle', { skip }, () => {
  let svm: Awaited<ReturnType<typeof startSvmProcess>>;
  let mnt: ReturnType<typeof scratchMount>;
  let stateMnt: ReturnType<typeof scratchMount>;
  before(async () => {
    svm = await startSvmProcess();
    mnt = scratchMount();
    stateMnt = scratchMount('la-state-');
  });
  after(async () => {
    await svm?.stop();
    mnt?.unmount();
    stateMnt?.unmount();
  });

  it('a second daemon on the same state directory exits 3 with LA_ERR_ALREADY_RUNNING; the first keeps protecting', async () => {
    const stateDir = path.join(stateMnt.dir, 'double');
    const a = await fanotify({ svm: svm.url, protect: mnt.dir, stateDir });
    try {
      const b = await fanotify({ svm: svm.url, protect: mnt.dir, stateDir, wait: false });
      const code = await b.exited();
      assert.equal(code, 3, b.output());
      assert.match(b.output(), /LA_ERR_ALREADY_RUNNING/);
      assert.match(b.output(), /another lightagent daemon \(pid \d+\) is running on the state directory/);
      const s = await cliStatus(stateDir);
      assert.equal(s.pid, a.pid);
      assert.equal((await a.status()).pid, a.pid, 'the status socket answers for the first daemon');
      // The process watcher's counters (the connector, as root): the second daemon's start was an exec it read.
      const procs = (await a.status()).processes;
      assert.ok(procs && procs.exec! >= 1 && procs.fork! >= 1 && typeof procs.execGone === 'number', JSON.stringify(procs));
      // Memory as the kernel sees it (VmRSS of the same pid, read right after).
      const vmRssKb = Number(/VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${a.pid}/status`, 'utf8'))![1]);
      assert.ok(Math.abs(s.memory.rssKb - vmRssKb) < vmRssKb * 0.25, `status rssKb ${s.memory.rssKb} vs VmRSS ${vmRssKb}`);
      assert.ok(s.memory.heapUsedKb > 0 && s.memory.heapUsedKb < s.memory.rssKb, JSON.stringify(s.memory));
      const text = run(process.execPath, [CLI, 'status', '--state-dir', stateDir]).stdout;
      assert.match(text, /^memory: +\d+\.\d MB resident \(main thread's heap \d+\.\d MB(, trimmed 1 time\(s\) while idle)?\)$/m);
      // Left idle, it gives its start-up heap back once (src/heap-trim.ts): a collection that
      // leaves less heap in use than before it.
      await eventually(() => a.logs().includes('"heap trimmed"'), 20_000, 'the idle daemon trims its heap');
      assert.equal((await a.status()).memory.heapTrims, 1);
      const trimmed = a
        .logs()
        .split('\n')
        .filter((l) => l.includes('"heap trimmed"'))
        .map((l) => JSON.parse(l) as { kind: string; thread: string; heapUsedKb: [number, number]; rssKb: [number, number] });
      assert.equal(trimmed.length, 1, a.logs());
      // Node 20's V8 has no last-resort flavour (src/heap-trim.ts); the single executable is Node 24.
      const lastResort = process.env.LIGHTAGENT_TEST_BINARY !== undefined || Number(process.versions.v8.split('.')[0]) >= 12;
      assert.equal(trimmed[0]!.kind, lastResort ? 'last-resort' : 'regular');
      assert.equal(trimmed[0]!.thread, 'main');
      assert.ok(trimmed[0]!.heapUsedKb[1] < trimmed[0]!.heapUsedKb[0], JSON.stringify(trimmed[0]));
      assert.match(run(process.execPath, [CLI, 'status', '--state-dir', stateDir]).stdout, /trimmed 1 time\(s\) while idle\)$/m);
    } finally {
      assert.equal(await a.stop(), 0);
    }
  });

  it('SIGTERM answers an open that waits for a verdict (it completes, it does not hang) and exits 0', async () => {
    const stateDir = path.join(stateMnt.dir, 'term');
    // An SVM that takes every request and never answers: the open stays pending in the agent.
    const silent = await fakeSvm({ script: () => undefined });
    const a = await fanotify({ svm: silent.url, token: 'good', protect: mnt.dir, stateDir, args: ['--deadline', '60s'] });
    try {
      const f = path.join(mnt.dir, `pending-${Date.now()}.txt`);
      fs.writeFileSync(f, `never judged ${Math.random()}\n`);
      const cat = catAsync(f);
      await new Promise((r) => setTimeout(r, 1500));
      assert.equal(cat.exited(), false, 'the open waits for a verdict');
      const t0 = Date.now();
      a.child.kill('SIGTERM');
      const code = await cat.done;
      assert.equal(code, 0, 'answered (allow) at shutdown');
      assert.ok(Date.now() - t0 < 8000, `answered in ${Date.now() - t0} ms`);
      assert.equal(await a.exited(), 0);
    } finally {
      await a.stop('SIGKILL');
      await silent.close();
    }
  });

  it('SIGHUP reloads exclusions and the deadline; the gate never drops while it reloads', async () => {
    const stateDir = path.join(stateMnt.dir, 'hup');
    const prot = path.join(mnt.dir, 'hup');
    const outside = path.join(mnt.dir, 'hup-outside');
    fs.mkdirSync(path.join(prot, 'skip'), { recursive: true });
    fs.mkdirSync(outside, { recursive: true });
    const a = await fanotify({ svm: svm.url, protect: prot, stateDir, settings: { deadline: '2s' } });
    try {
      // Infected files made outside the protected folder and renamed in: a rename is no open,
      // so each is judged at its first open below (and denied).
      const N = 150;
      for (let i = 0; i < N; i++) fs.writeFileSync(path.join(outside, `x${i}.com`), EICAR);
      for (let i = 0; i < N; i++) fs.renameSync(path.join(outside, `x${i}.com`), path.join(prot, `x${i}.com`));
      const reader = spawn(
        'bash',
        [
          '-c',
          `leaks=0; for f in ${prot}/x*.com; do if cat "$f" >/dev/null 2>&1; then leaks=$((leaks+1)); echo "LEAK $f"; fi; done; echo "leaks=$leaks"`,
        ],
        { stdio: ['ignore', 'pipe', 'ignore'] },
      );
      let out = '';
      reader.stdout!.on('data', (d: Buffer) => (out += d.toString()));
      const readerDone = new Promise((r) => reader.once('exit', r));
      // Reload three times while the reader runs: each changes the deadline, so each swaps the gate.
      for (const d of ['3s', '2500ms', '2s']) {
        a.reconfigure({ deadline: d });
        const n = (a.output().match(/"event":"reloaded"/g) ?? []).length;
        a.child.kill('SIGHUP');
        await eventually(() => (a.output().match(/"event":"reloaded"/g) ?? []).length > n, 15_000, 'reloaded');
      }
      await readerDone;
      assert.match(out, /leaks=0/, out);
      assert.match(a.output(), /"applied":\["deadline"\]/);
      // Now an exclusion: EICAR there is left alone; elsewhere it is still caught.
      a.reconfigure({ deadline: '2s', exclude: [path.join(prot, 'skip')] });
      a.child.kill('SIGHUP');
      await waitFor(a, /"event":"reloaded","applied":\["exclude"\]/, 15_000);
      const s = await a.status();
      assert.deepEqual(s.exclude, [path.join(prot, 'skip')]);
      assert.equal(s.mode, 'fanotify');
      const skipped = path.join(prot, 'skip', 'e.com');
      const caught = path.join(prot, 'e.com');
      fs.writeFileSync(skipped, EICAR);
      fs.writeFileSync(caught, EICAR);
      await eventually(() => !fs.existsSync(caught), 10_000, 'the protected EICAR quarantined');
      assert.equal(fs.readFileSync(skipped, 'utf8'), EICAR, 'the newly excluded folder is left alone');
      // A broken config is refused; the running one stays.
      fs.writeFileSync(a.configFile, 'deadline: [not a duration\n');
      a.child.kill('SIGHUP');
      await waitFor(a, /"event":"reload-failed"/, 15_000);
      assert.equal((await a.status()).mode, 'fanotify');
    } finally {
      assert.equal(await a.stop(), 0);
    }
  });

  it('sd_notify: READY=1, WATCHDOG=1 at WatchdogSec/2, RELOADING=1 on SIGHUP, STOPPING=1 on SIGTERM', async (t) => {
    if (run('sh', ['-c', 'command -v socat']).status !== 0) {
      if (inCi) throw new Error('CI=true: this test needs socat (apt-get install socat)');
      t.skip('socat not installed');
      return;
    }
    const stateDir = path.join(stateMnt.dir, 'notify');
    const sock = path.join(stateMnt.dir, 'notify.sock');
    // socat prints every datagram it receives on that AF_UNIX SOCK_DGRAM socket.
    const rx = spawn('socat', ['-u', `UNIX-RECV:${sock}`, 'STDOUT'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let got = '';
    rx.stdout!.on('data', (d: Buffer) => (got += `${d.toString()}\n`));
    try {
      await eventually(() => fs.existsSync(sock), 5000, 'the notify socket');
      const a = await fanotify({ svm: svm.url, protect: mnt.dir, stateDir, env: { NOTIFY_SOCKET: sock, WATCHDOG_USEC: '400000' } });
      await eventually(() => /READY=1/.test(got), 5000, 'READY=1');
      assert.match(got, /MAINPID=\d+/);
      await eventually(() => (got.match(/WATCHDOG=1/g) ?? []).length >= 3, 5000, 'three watchdog pings');
      a.child.kill('SIGHUP');
      await eventually(() => /RELOADING=1/.test(got), 5000, 'RELOADING=1');
      assert.equal(await a.stop(), 0);
      await eventually(() => /STOPPING=1/.test(got), 5000, 'STOPPING=1');
    } finally {
      rx.kill('SIGKILL');
    }
  });

  it('kill -9 and restart: quarantine, deferred queue and cache come back intact', async () => {
    const stateDir = path.join(stateMnt.dir, 'crash');
    const dir = path.join(mnt.dir, 'crash');
    fs.mkdirSync(dir);
    // The SVM by flag, everything else from the file: flags and file merged, as an operator may.
    const crashAgent = () =>
      fanotify({ protect: dir, stateDir, settings: { deadline: '1s', cache: { save_interval: '1s' } }, args: ['--svm', svm.url] });
    let a = await crashAgent();
    const bad = path.join(dir, 'bad.com');
    fs.writeFileSync(bad, EICAR);
    await eventually(() => !fs.existsSync(bad), 10_000, 'quarantine');
    for (let i = 0; i < 20; i++) fs.writeFileSync(path.join(dir, `clean${i}.txt`), `clean ${i}\n`);
    assert.equal(run('bash', ['-c', `cat ${dir}/clean*.txt >/dev/null`]).status, 0);
    // SVM gone: a new file is allowed unjudged and queued.
    const port = svm.port;
    await svm.stop('SIGKILL');
    const later = path.join(dir, 'later.com');
    fs.writeFileSync(later, `${EICAR}\n${Math.random()}\n`);
    assert.equal(run('cat', [later]).status, 0, 'allowed while the SVM is away');
    let s1 = await a.status();
    for (let i = 0; i < 50 && s1.deferredQueue < 1; i++) {
      await new Promise((r) => setTimeout(r, 200));
      s1 = await a.status();
    }
    assert.ok(s1.deferredQueue >= 1, JSON.stringify(s1));
    assert.ok(s1.cache!.entries >= 20, JSON.stringify(s1.cache));
    await new Promise((r) => setTimeout(r, 1500)); // one periodic cache save
    await a.kill('SIGKILL');
    assert.ok(fs.lstatSync(path.join(stateDir, 'agent.lock'), { throwIfNoEntry: false }), 'the dead daemon left its lock');

    svm = await restartSvmProcess(port);
    a = await crashAgent(); // the stale lock and socket are taken over
    try {
      const s2 = await a.status();
      assert.ok(s2.cache!.entries >= 20, `cache reloaded: ${JSON.stringify(s2.cache)}`);
      await eventually(() => !fs.existsSync(later), 20_000, 'the queued file scanned and quarantined after the restart');
      const q = quarantineList(stateDir);
      assert.deepEqual(q.map((r) => r.originalPath).sort(), [bad, later].sort());
    } finally {
      assert.equal(await a.stop(), 0);
    }
  });
});
