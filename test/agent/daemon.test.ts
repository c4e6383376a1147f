/**
 * The daemon end to end: a real SVM process, a real `lightagent run` process protecting a tmpfs
 * made for the test, real files. The shared part runs once per protection backend (the watcher
 * conformance suite); the fanotify part checks what only a gate can do (deny before the open).
 * Every agent runs under a watchdog; only the scratch tmpfs is ever marked.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { EICAR, hdbLine } from '../helpers/fixtures.js';
import { quarantineList, startAgent, type Agent } from '../helpers/agent.js';
import {
  eventually,
  needRoot,
  type Proc,
  restartSvmProcess,
  run,
  scratchMount,
  startSvmProcess,
  tempDir,
  waitFor,
} from '../helpers/procs.js';

const skip = needRoot();

for (const mode of ['fanotify', 'watcher'] as const) {
  describe(`daemon protection, ${mode} backend (shared suite)`, { skip }, () => {
    let svm: Awaited<ReturnType<typeof startSvmProcess>>;
    let agent: Agent;
    let mnt: ReturnType<typeof scratchMount>;
    let stateDir: string;
    before(async () => {
      svm = await startSvmProcess();
      mnt = scratchMount();
      stateDir = tempDir('la-state-');
      fs.mkdirSync(path.join(mnt.dir, 'docs/nested/deeper'), { recursive: true });
      fs.mkdirSync(path.join(mnt.dir, 'skip-me'));
      agent = await startAgent({ svm: svm.url, protect: mnt.dir, stateDir, mode, args: ['--exclude', path.join(mnt.dir, 'skip-me')] });
    });
    after(async () => {
      await agent?.stop();
      await svm?.stop();
      mnt?.unmount();
      fs.rmSync(stateDir, { recursive: true, force: true });
    });

    it('reports the mode it runs in', async () => {
      const s = await agent.status();
      assert.equal(s.mode, mode);
    });

    it('quarantines an EICAR file written into a nested protected folder, and reports it', async () => {
      const f = path.join(mnt.dir, 'docs/nested/deeper/eicar.com');
      fs.writeFileSync(f, EICAR);
      await eventually(() => !fs.existsSync(f), 10_000, 'the infected file to leave its place');
      const q = quarantineList(stateDir);
      assert.ok(
        q.some((r) => r.originalPath === f && /eicar/i.test(r.threat)),
        JSON.stringify(q),
      );
      const s = await agent.status();
      assert.ok(s.detections.total >= 1);
    });

    it('leaves clean files and excluded folders alone', async () => {
      const clean = path.join(mnt.dir, 'docs/readme.txt');
      fs.writeFileSync(clean, 'just text\n');
      const excluded = path.join(mnt.dir, 'skip-me/eicar.com');
      fs.writeFileSync(excluded, EICAR);
      await new Promise((r) => setTimeout(r, 1500));
      assert.equal(fs.readFileSync(clean, 'utf8'), 'just text\n');
      assert.ok(fs.existsSync(excluded), 'excluded path not touched');
    });
  });
}

describe('daemon protection, fanotify only', { skip }, () => {
  let svm: Awaited<ReturnType<typeof startSvmProcess>>;
  let agent: Agent;
  let mnt: ReturnType<typeof scratchMount>;
  let stateDir: string;
  before(async () => {
    svm = await startSvmProcess();
    mnt = scratchMount();
    stateDir = tempDir('la-state-');
    agent = await startAgent({ svm: svm.url, protect: mnt.dir, stateDir, mode: 'fanotify', args: ['--deadline', '1s'] });
  });
  after(async () => {
    await agent?.stop();
    await svm?.stop();
    mnt?.unmount();
    fs.rmSync(stateDir, { recursive: true, force: true });
  });

  it('denies `cat` of an EICAR file that was there before the agent (EPERM), then quarantines it', async () => {
    const f = path.join(mnt.dir, 'pre-existing.com');
    await agent.stop();
    fs.writeFileSync(f, EICAR);
    agent = await startAgent({ svm: svm.url, protect: mnt.dir, stateDir, mode: 'fanotify', args: ['--deadline', '1s'] });
    const r = run('cat', [f]);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /Operation not permitted/);
    await eventually(() => !fs.existsSync(f), 5000, 'quarantine');
  });

  it('refuses to execute an infected script', async () => {
    const f = path.join(mnt.dir, 'evil.sh');
    await agent.stop();
    fs.writeFileSync(f, `#!/bin/sh\n# ${EICAR}\necho ran\n`, { mode: 0o755 });
    agent = await startAgent({ svm: svm.url, protect: mnt.dir, stateDir, mode: 'fanotify', args: ['--deadline', '1s'] });
    const r = run(f, []);
    assert.notEqual(r.stdout.trim(), 'ran');
  });

  it('opens clean files normally, and warm opens of a clean tree raise no events', async () => {
    const dir = path.join(mnt.dir, 'tree');
    fs.mkdirSync(dir);
    for (let i = 0; i < 50; i++) fs.writeFileSync(path.join(dir, `f${i}.txt`), `file ${i}\n`);
    fs.writeFileSync(path.join(dir, 'empty.txt'), ''); // empty files are marked too (at its close-write)
    const catAll = () => run('bash', ['-c', `cat ${dir}/*.txt > /dev/null`]);
    assert.equal(catAll().status, 0);
    assert.equal(catAll().status, 0); // first passes: scans, then ignore marks
    // The files' close-writes wait while the gate is busy (up to 1 s): empty.txt gets its mark only
    // from its close-write scan, so wait until every close-write fd is scanned and closed.
    for (const end = Date.now() + 10_000; (await agent.status()).backend.closeWriteFds !== 0;) {
      assert.ok(Date.now() < end, 'the close-write scans did not finish within 10 s');
      await new Promise((r) => setTimeout(r, 50));
    }
    const before = (await agent.status()).backend;
    for (let i = 0; i < 5; i++) assert.equal(catAll().status, 0);
    const afterS = (await agent.status()).backend;
    const permEvents = (s: Record<string, number>) => (s.open ?? 0) + (s.exec ?? 0);
    assert.equal(permEvents(afterS) - permEvents(before), 0, `warm opens raised events: ${JSON.stringify({ before, afterS })}`);

    // After a restart the kernel marks are gone but the cache is on disk: the gate worker answers
    // these opens itself from the shared cache, with no decision on the main thread.
    await agent.stop();
    // An empty file made while no agent ran (no close-write seen): marked at its first open once
    // it is a few seconds old, so it raises no event after that.
    const madeAt = Date.now();
    fs.writeFileSync(path.join(dir, 'empty-offline.txt'), '');
    agent = await startAgent({ svm: svm.url, protect: mnt.dir, stateDir, mode: 'fanotify', args: ['--deadline', '1s'] });
    const fresh = await agent.status();
    await new Promise((r) => setTimeout(r, Math.max(0, madeAt + 3500 - Date.now())));
    assert.equal(catAll().status, 0);
    const restarted = await agent.status();
    assert.ok(
      restarted.backend.workerHits - fresh.backend.workerHits >= 50,
      `answered in the worker: ${JSON.stringify(restarted.backend)}`,
    );
    assert.equal(restarted.counts.decisions - fresh.counts.decisions, 0, 'no decision on the main thread');
    assert.equal(catAll().status, 0);
    const again = await agent.status();
    assert.equal(
      permEvents(again.backend) - permEvents(restarted.backend),
      0,
      `the old empty file was marked: ${JSON.stringify(again.backend)}`,
    );
  });

  it('a file written clean is kernel-marked at its close-write: its next opens raise no event', async () => {
    const before = await agent.status();
    const files = Array.from({ length: 20 }, (_, i) => path.join(mnt.dir, `written-${i}.txt`));
    // Written by another process (the agent's own writes raise nothing), clean content.
    assert.equal(run('bash', ['-c', files.map((f, i) => `echo 'written ${i} ${Math.random()}' > ${f}`).join('; ')]).status, 0);
    let scanned = await agent.status();
    // `written` counts scans begun; the mark comes after the verdict. Each file is marked once,
    // after its close-write: its O_CREAT open found a new empty file, answered without a mark
    // (the write would drop it at once).
    const marked = (s: typeof before) => s.backend.ignoreMarks - before.backend.ignoreMarks;
    for (const end = Date.now() + 10_000; marked(scanned) < 20 && Date.now() < end; scanned = await agent.status())
      await new Promise((r) => setTimeout(r, 100));
    await new Promise((r) => setTimeout(r, 300));
    scanned = await agent.status();
    assert.equal(marked(scanned), 20, 'one kernel mark per file written');
    assert.equal(scanned.backend.writtenMarks - before.backend.writtenMarks, 20, 'each counted as a mark after a write');
    assert.equal(scanned.backend.marksDropped - before.backend.marksDropped, 0, 'no mark taken back: none was added at the O_CREAT open');
    for (const f of files) assert.equal(run('cat', [f]).status, 0);
    const afterS = await agent.status();
    const permEvents = (s: Record<string, number>) => (s.open ?? 0) + (s.exec ?? 0);
    assert.equal(
      permEvents(afterS.backend) - permEvents(scanned.backend),
      0,
      `opens after the close-write scans raised events: ${JSON.stringify({ scanned: scanned.backend, afterS: afterS.backend })}`,
    );
  });

  it('written, scanned, then silent: a tree extracted (tar) and copied (cp -a) into the protected folder is read with no permission event once the scans have ended', async () => {
    // The tree is made outside any mark; tar and cp write into the protected tmpfs.
    const src = tempDir('la-tree-');
    fs.mkdirSync(path.join(src, 'tree/sub'), { recursive: true });
    for (let i = 0; i < 40; i++) fs.writeFileSync(path.join(src, `tree${i % 2 ? '/sub' : ''}/f${i}.txt`), `file ${i} ${Math.random()}\n`);
    assert.equal(run('tar', ['cf', path.join(src, 'tree.tar'), '-C', src, 'tree']).status, 0);
    const before = await agent.status();
    const x = path.join(mnt.dir, 'extracted');
    fs.mkdirSync(x);
    assert.equal(run('tar', ['xf', path.join(src, 'tree.tar'), '-C', x]).status, 0);
    assert.equal(run('cp', ['-a', path.join(x, 'tree'), path.join(mnt.dir, 'copied')]).status, 0);
    // The wait a user gives it (as bench/onaccess/workloads.ts does): no close-write held or being scanned.
    let st = await agent.status();
    for (const end = Date.now() + 15_000; (st.backend.closeWriteFds !== 0 || st.backend.inFlight !== 0) && Date.now() < end;)
      st = await new Promise((r) => setTimeout(r, 100)).then(() => agent.status());
    assert.equal(st.backend.closeWriteFds, 0, 'every close-write scanned');
    assert.equal(st.backend.writtenMarks - before.backend.writtenMarks, 80, 'each written file marked after its scan');
    const files = run('find', [x, path.join(mnt.dir, 'copied'), '-type', 'f'])
      .stdout.trim()
      .split('\n');
    assert.equal(files.length, 80);
    for (const f of files) assert.equal(run('cat', [f]).status, 0);
    const after = await agent.status();
    const perm = (s: Record<string, number>) => (s.open ?? 0) + (s.exec ?? 0);
    assert.equal(perm(after.backend) - perm(st.backend), 0, 'reads of the 80 written files raised no permission event');
  });

  it('new signatures (SVM reload) make a clean, kernel-marked file judged again, and now denied', async () => {
    const sigs = path.join(stateDir, '..', `sigs-${process.pid}.hdb`);
    fs.writeFileSync(sigs, '');
    const svm2 = await startSvmProcess(['--signatures', sigs]);
    await agent.stop();
    agent = await startAgent({ svm: svm2.url, protect: mnt.dir, stateDir, mode: 'fanotify', args: ['--deadline', '1s'] });
    try {
      const f = path.join(mnt.dir, 'becomes-bad.bin');
      const content = `harmless today ${Math.random()}\n`;
      fs.writeFileSync(f, content);
      assert.equal(run('cat', [f]).status, 0);
      assert.equal(run('cat', [f]).status, 0, 'clean, marked');
      fs.writeFileSync(sigs, `${hdbLine(content, 'Test.Reclassified')}\n`);
      svm2.child.kill('SIGHUP');
      await waitFor(svm2, /"event":"reloaded"|signatures reloaded/);
      await eventually(() => run('cat', [f]).status !== 0, 10_000, 'the file to be refused under the new signatures');
      await eventually(() => !fs.existsSync(f), 5000, 'quarantine');
    } finally {
      await agent.stop();
      await svm2.stop();
      fs.rmSync(sigs, { force: true });
      agent = await startAgent({ svm: svm.url, protect: mnt.dir, stateDir, mode: 'fanotify', args: ['--deadline', '1s'] });
    }
  });

  it('catches a file on close-write, so it is gone before anyone opens it', async () => {
    const f = path.join(mnt.dir, 'downloaded.com');
    fs.writeFileSync(f, EICAR); // our own write: the agent scans it after close
    await eventually(() => !fs.existsSync(f), 5000, 'quarantine after close-write');
  });

  it('SVM down + allow: opens succeed within the deadline; the queued file is quarantined when the SVM returns', async () => {
    const f = path.join(mnt.dir, 'while-down.com');
    await agent.stop();
    // New content (EICAR plus a unique tail): the local cache cannot know it, only an SVM can judge it.
    fs.writeFileSync(f, `${EICAR}\n${Date.now()}-${Math.random()}\n`);
    const port = svm.port;
    await svm.stop('SIGKILL');
    agent = await startAgent({ svm: `ws://127.0.0.1:${port}`, protect: mnt.dir, stateDir, mode: 'fanotify', args: ['--deadline', '1s'] });
    const r = run('cat', [f]);
    assert.equal(r.status, 0, 'fail-open while the SVM is away');
    assert.ok(r.ms < 3000, `answered within the deadline (+ slack): ${r.ms.toFixed(0)} ms`);
    svm = await restartSvmProcess(port);
    // The link retries with full jitter, 250 ms doubling to 30 s: by the time the SVM is back
    // (~3 s after the agent started) the wait before its next try may be anything up to 16 s.
    await eventually(() => !fs.existsSync(f), 45_000, 'quarantine after the SVM came back').catch((e: unknown) => {
      throw new Error(`${(e as Error).message}; the agent's log:\n${agent.logs().slice(-4000)}`, { cause: e });
    });
  });

  it('SVM down + deny: opens fail within the deadline', async () => {
    const f = path.join(mnt.dir, 'unknown.txt');
    await agent.stop();
    fs.writeFileSync(f, 'never scanned');
    const port = svm.port;
    await svm.stop('SIGKILL');
    agent = await startAgent({
      svm: `ws://127.0.0.1:${port}`,
      protect: mnt.dir,
      stateDir,
      mode: 'fanotify',
      args: ['--deadline', '1s', '--fail-closed'],
    });
    const r = run('cat', [f]);
    assert.notEqual(r.status, 0);
    assert.ok(r.ms < 3000, `refused within the deadline (+ slack): ${r.ms.toFixed(0)} ms`);
    svm = await restartSvmProcess(port);
  });

  it('SIGKILL of a stuck agent releases the process it was blocking', async () => {
    const f = path.join(mnt.dir, 'after-kill.txt');
    await agent.stop();
    fs.writeFileSync(f, `blocked ${Math.random()}\n`);
    agent = await startAgent({ svm: svm.url, protect: mnt.dir, stateDir, mode: 'fanotify', args: ['--deadline', '30s'] });
    agent.child.kill('SIGSTOP'); // frozen: nobody answers the permission event
    const { spawn } = await import('node:child_process');
    const cat = spawn('cat', [f], { stdio: ['ignore', 'pipe', 'pipe'] });
    const done = new Promise<number | null>((r) => cat.once('exit', (code) => r(code)));
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(cat.exitCode, null, 'cat is blocked in open() while the agent is frozen');
    await agent.stop('SIGKILL');
    const t0 = performance.now();
    const code = await Promise.race([done, new Promise<'hung'>((r) => setTimeout(() => r('hung'), 5000))]);
    if (code === 'hung') cat.kill('SIGKILL');
    assert.equal(code, 0, 'the kernel released the waiter when the group went away');
    assert.ok(performance.now() - t0 < 2000);
  });
});

describe('daemon protection, the gate worker dies', { skip }, () => {
  it('status says off, then the daemon starts protection again by itself and denies again', { timeout: 120_000 }, async () => {
    const mnt = scratchMount('la-recover-', '64m');
    const protectedDir = path.join(mnt.dir, 'protected');
    fs.mkdirSync(protectedDir);
    // Two infected files there before the agent: one for before the crash, one for after.
    for (const f of ['before.com', 'after.com']) fs.writeFileSync(path.join(protectedDir, f), EICAR);
    // Its own spawn: the fixture takes commands on stdin. Killed by the watchdog if it hangs.
    const proc = spawn(process.execPath, [new URL('./fixtures/daemon-child.js', import.meta.url).pathname, mnt.dir], {
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let out = '';
    proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    proc.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    const watchdog = setTimeout(() => proc.kill('SIGKILL'), 120_000);
    const child: Proc = {
      child: proc,
      pid: proc.pid!,
      output: () => out,
      stop: async () => {
        proc.kill('SIGKILL');
        return proc.exitCode;
      },
    };
    const ask = async (cmd: string, re: RegExp, ms = 10_000) => {
      const from = out.length;
      proc.stdin!.write(`${cmd}\n`);
      return (await waitFor({ ...child, output: () => out.slice(from) }, re, ms))[0];
    };
    // Asks "mode" until the answer is `want` (the bounds are generous: CI runs this on a busy
    // machine; on an idle one the restart takes ~1 s, the worker's exit 0.5-1 s of it).
    const until = async (want: string, ms: number, what: string) => {
      let line = '';
      for (const end = Date.now() + ms; Date.now() < end && line !== want;) {
        line = await ask('mode', /MODE .*/);
        if (line !== want) await new Promise((r) => setTimeout(r, 200));
      }
      assert.equal(line, want, `${what}; output:\n${out.slice(-3000)}`);
    };
    const denied = (file: string, what: string) => {
      const r = run('cat', [path.join(protectedDir, file)]);
      assert.notEqual(r.status, 0, `${what}: cat ${file} succeeded; output:\n${out.slice(-3000)}`);
      assert.match(r.stderr, /Operation not permitted/, `${what}; output:\n${out.slice(-3000)}`);
    };
    try {
      await waitFor(child, /READY/, 30_000);
      // The SVM link connects in the background after READY: judge only once it is up, so the
      // first verdict cannot run into the 2 s deadline on a slow start.
      await until('MODE fanotify protected 0 connected', 15_000, 'the daemon protects and its SVM link is up');
      denied('before.com', 'the gate denies before the crash');
      await ask('killworker', /KILLED \d+/, 30_000);
      // The state machine's half-second poll sees the gate off; the supervisor starts a new one.
      await until('MODE fanotify protected 1 connected', 30_000, 'the daemon restarted its gate');
      denied('after.com', 'protection is back: the infected file is refused');
      assert.equal(run('cat', [path.join(protectedDir, 'before.com')]).status, 1, 'the first one is in quarantine (gone)');
      await ask('stop', /STOPPED/);
    } finally {
      clearTimeout(watchdog);
      if (proc.exitCode === null) proc.kill('SIGKILL');
      mnt.unmount();
    }
  });
});
