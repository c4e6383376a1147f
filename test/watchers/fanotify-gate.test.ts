/**
 * FanotifyGate on a tmpfs made for the test, the gate in a child process under a watchdog.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { needRoot, run, scratchMount, waitFor, type Proc } from '../helpers/procs.js';

const skip = needRoot();
const CHILD = new URL('./fixtures/gate-child.js', import.meta.url).pathname;

function startGate(
  mount: string,
  behaviour: string,
  deadlineMs: number,
  onDeadline: 'allow' | 'deny',
  env: Record<string, string> = {},
): Proc & { ask: (cmd: string, re: RegExp) => Promise<string> } {
  const child = spawn(process.execPath, [CHILD, mount, behaviour, String(deadlineMs), onDeadline], {
    stdio: ['pipe', 'pipe', 'pipe'],
    env: { ...process.env, ...env },
  });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const watchdog = setTimeout(() => child.kill('SIGKILL'), 60_000);
  watchdog.unref();
  child.once('exit', () => clearTimeout(watchdog));
  const p: Proc = {
    child,
    pid: child.pid!,
    output: () => out,
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      child.kill('SIGKILL');
      await new Promise((r) => child.once('exit', r));
      return child.exitCode;
    },
  };
  return {
    ...p,
    ask: async (cmd, re) => {
      const before = out.length;
      child.stdin!.write(`${cmd}\n`);
      const m = await waitFor({ ...p, output: () => out.slice(before) }, re, 5000);
      return m[0];
    },
  };
}

describe('FanotifyGate', { skip }, () => {
  const mnt = skip ? undefined : scratchMount();
  const gates: Proc[] = [];
  after(async () => {
    for (const g of gates) await g.stop();
    mnt?.unmount();
  });

  for (const policy of ['allow', 'deny'] as const) {
    it(`answers by policy (${policy}) within the deadline when no verdict comes`, async () => {
      const f = path.join(mnt!.dir, `stuck-${policy}.txt`);
      fs.writeFileSync(f, 'x');
      const g = startGate(mnt!.dir, 'never', 300, policy);
      gates.push(g);
      await waitFor(g, /READY/);
      const r = run('cat', [f], 10_000);
      assert.equal(r.status === 0, policy === 'allow', r.stderr);
      if (policy === 'deny') assert.match(r.stderr, /Operation not permitted/);
      assert.ok(r.ms >= 250 && r.ms < 1500, `answered at the deadline: ${r.ms.toFixed(0)} ms`);
      await g.stop();
    });
  }

  it('denies open and exec of what decide refuses, reading content through the event fd', async () => {
    const evil = path.join(mnt!.dir, 'evil.sh');
    const good = path.join(mnt!.dir, 'good.sh');
    fs.writeFileSync(evil, '#!/bin/sh\n# EVIL\necho ran\n', { mode: 0o755 });
    fs.writeFileSync(good, '#!/bin/sh\necho ran\n', { mode: 0o755 });
    const g = startGate(mnt!.dir, 'evil', 2000, 'allow');
    gates.push(g);
    await waitFor(g, /READY/);
    assert.match(run('cat', [evil]).stderr, /Operation not permitted/);
    const ex = run(evil, []);
    assert.notEqual(ex.status, 0);
    assert.doesNotMatch(ex.stdout, /ran/);
    assert.equal(run(good, []).stdout.trim(), 'ran');
    await g.stop();
  });

  it('warm-up: the hit path is replayed before the mounts are marked, and leaves no mark, count or event behind', async () => {
    const f = path.join(mnt!.dir, 'after-warm-up.txt');
    fs.writeFileSync(f, 'clean\n');
    const g = startGate(mnt!.dir, 'cacheable', 2000, 'allow', { GATE_SHARED_CACHE: '1', GATE_WARM_UP_ROUNDS: '500' });
    gates.push(g);
    await waitFor(g, /READY/);
    const stats = async () => JSON.parse(await g.ask('stats', /\{.*\}\n/)) as { decides: number; gate: Record<string, number> };
    const marks = async () => (await g.ask('marks', /MARKS .*\n/)).trim();
    const s0 = await stats();
    assert.equal(s0.gate.warmUpHits, 500, 'every round took the hit path');
    for (const k of ['open', 'exec', 'workerHits', 'ignoreMarks', 'outside', 'posted', 'marksDropped', 'deadline'])
      assert.equal(s0.gate[k], 0, `${k} after the warm-up`);
    assert.equal(s0.decides, 0, 'nothing reached the main thread');
    assert.equal(await marks(), 'MARKS 0 1', 'no inode mark left (the replayed file is not ignored), the one mount mark');
    // Protection as without a warm-up: an open is judged, then marked.
    assert.equal(run('cat', [f]).status, 0);
    const s1 = await stats();
    assert.equal(s1.decides, 1);
    assert.equal(s1.gate.open, 1);
    assert.equal(await marks(), 'MARKS 1 1', "the clean file's ignore mark");
    await g.stop();
  });

  it('ignore marks: warm opens of a clean file raise no event; a write clears the mark; flush clears all', async () => {
    const f = path.join(mnt!.dir, 'warm.txt');
    fs.writeFileSync(f, 'clean\n');
    const g = startGate(mnt!.dir, 'cacheable', 2000, 'allow');
    gates.push(g);
    await waitFor(g, /READY/);
    const decides = async () => JSON.parse(await g.ask('stats', /\{.*\}\n/)).decides as number;
    assert.equal(run('cat', [f]).status, 0);
    assert.equal(await decides(), 1);
    for (let i = 0; i < 20; i++) assert.equal(run('cat', [f]).status, 0);
    const stats = JSON.parse(await g.ask('stats', /\{.*\}\n/));
    assert.equal(stats.decides, 1, 'twenty warm opens, no new decision');
    assert.equal(stats.gate.open, 1, 'and no event at all reached the agent');
    fs.appendFileSync(f, 'changed\n'); // the kernel drops the mark on modify
    assert.equal(run('cat', [f]).status, 0);
    assert.equal(await decides(), 2);
    await g.ask('flush', /FLUSHED/);
    assert.equal(run('cat', [f]).status, 0);
    assert.equal(await decides(), 3);
    await g.stop();
  });

  it("allows clean files; the agent's own reads (main thread, threadpool, worker thread) and excluded paths raise no decision", async () => {
    const f = path.join(mnt!.dir, 'plain.txt');
    fs.mkdirSync(path.join(mnt!.dir, 'excluded'), { recursive: true });
    const x = path.join(mnt!.dir, 'excluded', 'skip.txt');
    fs.writeFileSync(f, 'hello\n');
    fs.writeFileSync(x, 'skip\n');
    const g = startGate(mnt!.dir, 'allow', 2000, 'deny');
    gates.push(g);
    await waitFor(g, /READY/);
    const stats = async () => JSON.parse(await g.ask('stats', /\{.*\}\n/)) as { decides: number; gate: Record<string, number> };
    const r = run('cat', [f]);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, 'hello\n');
    assert.equal((await stats()).decides, 1);
    await g.ask(`selfread ${f}`, /SELFREAD/);
    const s1 = await stats();
    assert.equal(s1.decides, 1, 'own reads are never judged');
    assert.ok(s1.gate.ownPid! >= 3, `own-pid events answered by the worker: ${s1.gate.ownPid}`);
    assert.equal(run('cat', [x]).status, 0);
    assert.equal(run('cat', [x]).status, 0);
    const s2 = await stats();
    assert.equal(s2.decides, 1, 'excluded paths are never judged');
    assert.equal(s2.gate.outside, 2, 'both opens answered by the worker, no kernel mark on an excluded file');
    // A write there is not scanned either (its path is checked on the main thread), one here is.
    assert.equal(run('sh', ['-c', `printf again > '${x}' && printf written > '${mnt!.dir}/written.txt'`]).status, 0);
    await waitFor(g, new RegExp(`CLOSE_WRITE ${mnt!.dir}/written.txt \\d+ written\n`));
    await new Promise((r) => setTimeout(r, 200));
    assert.doesNotMatch(g.output(), /CLOSE_WRITE \S*excluded/, 'no close-write reported from the excluded folder');
    const s3 = await stats();
    assert.equal(s3.gate.closeWrite, 2, 'the kernel reported both close-writes');
    assert.equal(s3.gate.outside, 4, "the excluded file's open and its close-write, each counted as outside");
    await g.stop();
  });

  it('regression: a file moved from an excluded folder into the protected area is judged (no mark follows it)', async () => {
    fs.mkdirSync(path.join(mnt!.dir, 'excluded'), { recursive: true });
    const outside = path.join(mnt!.dir, 'excluded', 'evil-later.txt');
    const inside = path.join(mnt!.dir, 'moved-in.txt');
    fs.writeFileSync(outside, 'EVIL payload\n');
    const g = startGate(mnt!.dir, 'evil', 2000, 'allow');
    gates.push(g);
    await waitFor(g, /READY/);
    assert.equal(run('cat', [outside]).status, 0, 'excluded: allowed unjudged');
    fs.renameSync(outside, inside);
    assert.match(run('cat', [inside]).stderr, /Operation not permitted/, 'judged once inside the protected area');
    await g.stop();
  });

  it('denies execution through FAN_OPEN_EXEC_PERM (script and binary) while plain opens stay allowed', async () => {
    const script = path.join(mnt!.dir, 'run-me.sh');
    const binary = path.join(mnt!.dir, 'true-copy');
    fs.writeFileSync(script, '#!/bin/sh\necho ran\n', { mode: 0o755 });
    fs.copyFileSync('/bin/true', binary);
    fs.chmodSync(binary, 0o755);
    const g = startGate(mnt!.dir, 'deny-exec', 2000, 'allow');
    gates.push(g);
    await waitFor(g, /READY/);
    assert.equal(run('cat', [script]).status, 0, 'reading the script is allowed');
    const ex = run(script, []);
    assert.notEqual(ex.status, 0);
    assert.doesNotMatch(ex.stdout, /ran/);
    const bin = run(binary, []);
    assert.notEqual(bin.status, 0, 'the binary did not run');
    const st = JSON.parse(await g.ask('stats', /\{.*\}\n/)) as { kinds: Record<string, number>; gate: Record<string, number> };
    assert.ok(st.kinds.exec! >= 2, `exec decisions: ${JSON.stringify(st.kinds)}`);
    assert.ok(st.gate.denied! >= 2);
    await g.stop();
  });

  it('reports a written-then-closed file, with its content readable through the event fd', async () => {
    const f = path.join(mnt!.dir, 'written.txt');
    const g = startGate(mnt!.dir, 'allow', 2000, 'allow');
    gates.push(g);
    await waitFor(g, /READY/);
    assert.equal(run('sh', ['-c', `printf 'fresh content' > ${f}`]).status, 0);
    const m = await g.ask('', new RegExp(`CLOSE_WRITE ${f} (\\d+) (.*)\n`));
    assert.match(m, /fresh content/);
    const st = JSON.parse(await g.ask('stats', /\{.*\}\n/)) as { gate: Record<string, number> };
    assert.equal(st.gate.closeWrite, 1);
    await g.stop();
  });

  describe('written, scanned, then silent (ignore mark at the end of a close-write scan)', () => {
    type Stats = { decides: number; gate: Record<string, number> };
    const statsOf = async (g: ReturnType<typeof startGate>) => JSON.parse(await g.ask('stats', /\{.*\}\n/)) as Stats;
    const esc = (f: string) => f.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    const scanned = (g: ReturnType<typeof startGate>, f: string, verdict: 'clean' | 'infected') =>
      waitFor(g, new RegExp(`CW_DONE ${esc(f)} ${verdict}\n`), 10_000);
    /** Decisions asked for `f` so far (a stats round trip first: the child's earlier lines are then read). */
    const decidesOf = async (g: ReturnType<typeof startGate>, f: string) => {
      await statsOf(g);
      return g.output().split(`DECIDE ${f} `).length - 1;
    };
    /** Let the gate's mark (right after CW_DONE, same turn) land before the stats are read. */
    const settleMark = () => new Promise((r) => setTimeout(r, 100));

    // Decisions ('evil') are never cacheable here: a silent open can only come from a close-write's mark.
    it('a clean written file opens with no event; modified after its scan (now infected) it is judged again and denied; an infected one is never marked', async () => {
      const dir = path.join(mnt!.dir, 'silent');
      fs.mkdirSync(dir);
      const g = startGate(mnt!.dir, 'evil', 2000, 'allow', { GATE_CW_JUDGE: '1' });
      gates.push(g);
      await waitFor(g, /READY/);
      const clean = path.join(dir, 'clean.txt');
      assert.equal(run('sh', ['-c', `printf 'clean content' > ${clean}`]).status, 0);
      await scanned(g, clean, 'clean');
      await settleMark();
      const s0 = await statsOf(g);
      assert.equal(s0.gate.writtenMarks, 1, 'marked when its scan ended clean');
      assert.equal(s0.gate.marksDropped, 0);
      for (let i = 0; i < 5; i++) assert.equal(run('cat', [clean]).stdout, 'clean content');
      const s1 = await statsOf(g);
      assert.equal(s1.gate.open, s0.gate.open, 'five opens after the scan: no permission event at all');
      assert.equal(await decidesOf(g, clean), 0, 'never asked: judged at its close-write only');
      // Modified after its scan: the write clears the mark in the kernel, the next open is judged.
      const mod = run('sh', ['-c', `printf ' EVIL' >> ${clean} && cat ${clean}`]);
      assert.notEqual(mod.status, 0, 'the open after the modification was denied');
      assert.match(mod.stderr, /Operation not permitted/);
      assert.equal(await decidesOf(g, clean), 1, 'judged again at its next open');
      await scanned(g, clean, 'infected');
      // An infected written file: never marked, denied at every open.
      const evil = path.join(dir, 'evil.txt');
      assert.equal(run('sh', ['-c', `printf 'EVIL payload' > ${evil}`]).status, 0);
      await scanned(g, evil, 'infected');
      await settleMark();
      const s2 = await statsOf(g);
      assert.equal(s2.gate.writtenMarks, 1, 'no mark for an infected scan (nor for the infected rewrite)');
      for (let i = 0; i < 2; i++) assert.match(run('cat', [evil]).stderr, /Operation not permitted/);
      assert.equal(await decidesOf(g, evil), 2, 'each open judged');
      await g.stop();
    });

    it('a marked file replaced by a rename over it is judged again at its next open', async () => {
      const dir = path.join(mnt!.dir, 'renamed');
      fs.mkdirSync(dir);
      const g = startGate(mnt!.dir, 'evil', 2000, 'allow', { GATE_CW_JUDGE: '1' });
      gates.push(g);
      await waitFor(g, /READY/);
      const f = path.join(dir, 'target.txt');
      const tmp = path.join(dir, '.target.txt.new');
      assert.equal(run('sh', ['-c', `printf 'first version' > ${f}`]).status, 0);
      await scanned(g, f, 'clean');
      await settleMark();
      assert.equal(run('cat', [f]).status, 0);
      assert.equal(await decidesOf(g, f), 0, 'marked: opened with no event');
      assert.equal(run('sh', ['-c', `printf 'EVIL second version' > ${tmp} && mv ${tmp} ${f}`]).status, 0);
      const r = run('cat', [f]);
      assert.match(r.stderr, /Operation not permitted/, "the new inode does not inherit the old one's mark");
      assert.equal(await decidesOf(g, f), 1);
      await g.stop();
    });

    it('a file modified while its close-write scan runs is not marked (mark taken back), raises an event and is judged again', async () => {
      const dir = path.join(mnt!.dir, 'slow-scan');
      fs.mkdirSync(dir);
      // Every close-write scan reads the content at once, then takes 3 s to answer (time enough for the append, even on a busy machine).
      const g = startGate(mnt!.dir, 'evil', 2000, 'allow', { GATE_CW_JUDGE: '1', GATE_CW_DELAY_MS: '3000' });
      gates.push(g);
      await waitFor(g, /READY/);
      const f = path.join(dir, 'racy.txt');
      const s0 = await statsOf(g);
      assert.equal(run('sh', ['-c', `printf 'clean start' > ${f}`]).status, 0);
      await waitFor(g, new RegExp(`CLOSE_WRITE ${esc(f)} \\d+ clean start\n`), 10_000); // its scan has read the content
      assert.equal(run('sh', ['-c', `printf ' EVIL' >> ${f}`]).status, 0, 'the append (its open judged on the old, clean content)');
      await scanned(g, f, 'clean'); // the first scan ends clean: about the content before the append
      await settleMark();
      const s1 = await statsOf(g);
      assert.equal(s1.gate.marksDropped - s0.gate.marksDropped, 1, 'the mark was taken back: the identity changed during the scan');
      assert.equal(s1.gate.writtenMarks, 0);
      const before = await decidesOf(g, f);
      assert.match(run('cat', [f]).stderr, /Operation not permitted/, 'judged again, on the new content');
      assert.equal(await decidesOf(g, f), before + 1);
      // A clean file modified (clean) after its scan ended raises an event before its new scan ends.
      const g2 = path.join(dir, 'later.txt');
      assert.equal(run('sh', ['-c', `printf 'clean one' > ${g2}`]).status, 0);
      await scanned(g, g2, 'clean');
      await settleMark();
      assert.equal((await statsOf(g)).gate.writtenMarks, 1);
      assert.equal(run('cat', [g2]).status, 0);
      assert.equal(await decidesOf(g, g2), 0, 'marked after its scan');
      assert.equal(run('sh', ['-c', `printf ' and two' >> ${g2} && cat ${g2} > /dev/null`]).status, 0);
      assert.equal(await decidesOf(g, g2), 1, 'the open after the modification was a permission event');
      await g.stop();
    });
  });

  it('a burst of 1,500 files written (close-writes held while the gate is busy): every close-write is reported once with its content, and every fd closed after', async () => {
    const dir = path.join(mnt!.dir, 'burst');
    fs.mkdirSync(dir);
    const g = startGate(mnt!.dir, 'allow', 2000, 'allow');
    gates.push(g);
    await waitFor(g, /READY/);
    const fds = () => fs.readdirSync(`/proc/${g.pid}/fd`).length;
    const baseline = fds();
    const N = 1500;
    // One process writes them back to back: the gate stays busy (a permission event per create).
    assert.equal(run('sh', ['-c', `i=0; while [ $i -lt ${N} ]; do i=$((i+1)); printf "burst $i" > ${dir}/f$i; done`], 60_000).status, 0);
    const seen = () => g.output().match(new RegExp(`CLOSE_WRITE ${dir}/f\\d+ \\d+ burst \\d+\n`, 'g'))?.length ?? 0;
    for (const end = Date.now() + 30_000; seen() < N && Date.now() < end;) await new Promise((r) => setTimeout(r, 50));
    const lines = g.output().match(new RegExp(`CLOSE_WRITE ${dir}/f(\\d+) \\d+ burst (\\d+)\n`, 'g')) ?? [];
    const ids = lines
      .map((l) => /f(\d+) \d+ burst (\d+)/.exec(l)!)
      .map((m) => {
        assert.equal(m[1], m[2], `content read through the event fd is the file's own: ${m[0]}`);
        return Number(m[1]);
      });
    assert.equal(ids.length, N, `close-writes reported: ${ids.length} of ${N}`);
    assert.equal(new Set(ids).size, N, 'each file reported once');
    let now = fds();
    for (const end = Date.now() + 5000; now > baseline + 4 && Date.now() < end; now = fds()) await new Promise((r) => setTimeout(r, 50));
    assert.ok(now <= baseline + 4, `fds after the burst: ${now}, before: ${baseline}`);
    await g.stop();
  });

  it('held close-writes are posted at once when half of closeWriteMaxFds wait, long before the quiet and age timers', async () => {
    const dir = path.join(mnt!.dir, 'half-bound');
    fs.mkdirSync(dir);
    // Quiet gap and maximum age a minute away: only the bound can post them within this test.
    const g = startGate(mnt!.dir, 'allow', 2000, 'allow', {
      GATE_CW_MAX_FDS: '40',
      GATE_CW_QUIET_MS: '60000',
      GATE_CW_MAX_AGE_MS: '60000',
    });
    gates.push(g);
    await waitFor(g, /READY/);
    const write = (from: number, to: number) => {
      const w = run(
        process.execPath,
        [
          '-e',
          `const fs = require('fs'); for (let i = ${from}; i <= ${to}; i++) fs.writeFileSync(${JSON.stringify(dir)} + '/f' + i, 'half ' + i);`,
        ],
        30_000,
      );
      assert.equal(w.status, 0, w.stderr);
    };
    const reported = () => g.output().match(new RegExp(`CLOSE_WRITE ${dir}/f\\d+ \\d+ half \\d+\n`, 'g'))?.length ?? 0;
    write(1, 19);
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal(reported(), 0, '19 held (under half of 40) are not posted before a timer is due');
    const st = JSON.parse(await g.ask('stats', /\{.*\}\n/)) as { gate: Record<string, number> };
    assert.equal(st.gate.closeWrite, 19, 'the worker has read all 19');
    write(20, 20);
    for (const end = Date.now() + 10_000; reported() < 20 && Date.now() < end;) await new Promise((r) => setTimeout(r, 50));
    assert.equal(reported(), 20, 'the 20th held close-write posted all 20');
    await g.stop();
  });

  it('a held close-write is posted by the quiet gap alone (maximum age a minute away, bound far)', async () => {
    const f = path.join(mnt!.dir, 'quiet.txt');
    const g = startGate(mnt!.dir, 'allow', 2000, 'allow', { GATE_CW_MAX_AGE_MS: '60000' });
    gates.push(g);
    await waitFor(g, /READY/);
    assert.equal(run('sh', ['-c', `printf 'quiet content' > ${f}`]).status, 0);
    await waitFor(g, new RegExp(`CLOSE_WRITE ${f} \\d+ quiet content\n`), 15_000);
    await g.stop();
  });

  it('a close-write held with no quiet gap to post it is posted closeWriteMaxAgeMs after it was read, not before', async () => {
    const f = path.join(mnt!.dir, 'aged.txt');
    const g = startGate(mnt!.dir, 'allow', 2000, 'allow', { GATE_CW_QUIET_MS: '60000', GATE_CW_MAX_AGE_MS: '1500' });
    gates.push(g);
    await waitFor(g, /READY/);
    const t0 = performance.now();
    assert.equal(run('sh', ['-c', `printf 'aged content' > ${f}`]).status, 0);
    await waitFor(g, new RegExp(`CLOSE_WRITE ${f} \\d+ aged content\n`), 15_000);
    const waited = performance.now() - t0;
    // The event was read after t0 and is posted no earlier than 1,500 ms after that read.
    assert.ok(waited >= 1500, `posted ${waited.toFixed(0)} ms after the write, before its maximum age`);
    await g.stop();
  });

  it('a batch of 3,000 close-writes held through a burst does not hold up a permission event that needs the main thread: they are handled in slices', async () => {
    const dir = path.join(mnt!.dir, 'slices');
    fs.mkdirSync(dir);
    const probe = path.join(mnt!.dir, 'slices-probe.txt');
    fs.writeFileSync(probe, 'probe\n');
    // Each close-write costs the main thread 1 ms of CPU (3 s for the batch); the deadline is far.
    const g = startGate(mnt!.dir, 'allow', 20_000, 'allow', { GATE_CW_MAX_FDS: '8000', GATE_CW_SYNC_MS: '1' });
    gates.push(g);
    await waitFor(g, /READY/);
    const N = 3000;
    // One fast writer: the burst is over before the worker posts, so it posts one batch of N.
    const w = run(
      process.execPath,
      [
        '-e',
        `const fs = require('fs'); for (let i = 1; i <= ${N}; i++) fs.writeFileSync(${JSON.stringify(dir)} + '/f' + i, 'slice ' + i);`,
      ],
      60_000,
    );
    assert.equal(w.status, 0, w.stderr);
    await waitFor(g, /CW_FIRST\n/);
    const cat = run('cat', [probe], 30_000);
    assert.equal(cat.status, 0, cat.stderr);
    const decided = Number((await waitFor(g, /DECIDE \S+slices-probe\.txt (\d+)\n/))[1]);
    assert.ok(decided < N, `the open was decided after ${decided} of ${N} close-writes: it waited for the whole batch`);
    type Stats = { closeWrites: number; gate: Record<string, number> };
    const stats = async () => JSON.parse(await g.ask('stats', /\{.*\}\n/)) as Stats;
    let st = await stats();
    for (const end = Date.now() + 30_000; st.closeWrites < N && Date.now() < end; st = await stats())
      await new Promise((r) => setTimeout(r, 100));
    assert.equal(st.closeWrites, N, 'every close-write was handled');
    assert.equal(st.gate.closeWritesDropped, 0);
    assert.equal(st.gate.deadline, 0, 'the open was answered by decide, not by the deadline');
    await g.stop();
  });

  it('close-writes beyond closeWriteMaxFds are counted and not scanned (their fds closed at once), and those files are still judged at their next open', async () => {
    const dir = path.join(mnt!.dir, 'flood');
    fs.mkdirSync(dir);
    // Every close-write scan hangs, so each one keeps its fd: the bound is all that frees them.
    const g = startGate(mnt!.dir, 'allow', 2000, 'allow', { GATE_CW_MAX_FDS: '100', GATE_CW_HANG: '1' });
    gates.push(g);
    await waitFor(g, /READY/);
    const baseline = fs.readdirSync(`/proc/${g.pid}/fd`).length;
    const N = 300;
    assert.equal(
      run('sh', ['-c', `i=0; while [ $i -lt ${N} ]; do i=$((i+1)); printf "flood $i" > ${dir}/f$i; done`], 60_000).status,
      0,
      'every create was answered',
    );
    type Stats = { decides: number; gate: Record<string, number> };
    let st = JSON.parse(await g.ask('stats', /\{.*\}\n/)) as Stats;
    for (
      const end = Date.now() + 10_000;
      st.gate.closeWrite! < N && Date.now() < end;
      st = JSON.parse(await g.ask('stats', /\{.*\}\n/)) as Stats
    )
      await new Promise((r) => setTimeout(r, 50));
    assert.equal(st.gate.closeWrite, N);
    assert.equal(st.gate.closeWriteFds, 100, 'the gauge stops at the bound');
    assert.equal(st.gate.closeWritesDropped, N - 100);
    const held = fs.readdirSync(`/proc/${g.pid}/fd`).length - baseline;
    assert.ok(held >= 100 && held <= 110, `fds held: ${held}`);
    // A dropped one (the last written) is still judged when opened.
    assert.equal(run('cat', [`${dir}/f${N}`]).status, 0);
    const after = JSON.parse(await g.ask('stats', /\{.*\}\n/)) as Stats;
    assert.equal(after.decides - st.decides, 1, 'the open of a file whose close-write was dropped asked for a verdict');
    await g.stop();
  });

  it('a decision the deadline overtook is not written again (answered exactly once, counted late)', async () => {
    const f = path.join(mnt!.dir, 'late.txt');
    fs.writeFileSync(f, 'x');
    const g = startGate(mnt!.dir, 'late', 200, 'allow');
    gates.push(g);
    await waitFor(g, /READY/);
    const r = run('cat', [f]);
    assert.equal(r.status, 0, 'the deadline allowed it; the late deny changes nothing');
    await new Promise((res) => setTimeout(res, 700));
    const st = JSON.parse(await g.ask('stats', /\{.*\}\n/)) as { gate: Record<string, number> };
    assert.equal(st.gate.deadline, 1);
    assert.equal(st.gate.lateDecisions, 1);
    assert.equal(st.gate.denied, 0);
    assert.equal(st.gate.inFlight, 0, 'and its fd was closed');
    await g.stop();
  });

  it('stop() answers a pending open with allow at once', async () => {
    const f = path.join(mnt!.dir, 'pending.txt');
    fs.writeFileSync(f, 'x');
    const g = startGate(mnt!.dir, 'never', 60_000, 'deny');
    gates.push(g);
    await waitFor(g, /READY/);
    const cat = spawn('cat', [f], { stdio: 'ignore' });
    const exit = new Promise<number | null>((r) => cat.once('exit', (c) => r(c)));
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(cat.exitCode, null, 'blocked');
    const t0 = performance.now();
    const stopped = g.ask('stop', /STOPPED/);
    const code = await Promise.race([exit, new Promise<'hung'>((r) => setTimeout(() => r('hung'), 5000))]);
    if (code === 'hung') cat.kill('SIGKILL');
    assert.equal(code, 0);
    const ms = performance.now() - t0;
    assert.ok(ms < 1000, `released promptly: ${ms.toFixed(0)} ms`);
    // stop() itself then waits (at most 3 s) for the decision that never settles.
    await stopped;
  });

  it("a handover (a reload's make-before-break) judges the opens it holds: an infected file pending there is refused, not allowed", async () => {
    const evil = path.join(mnt!.dir, 'handover-evil.txt');
    const later = path.join(mnt!.dir, 'handover-later.txt');
    fs.writeFileSync(evil, 'EVIL\n');
    fs.writeFileSync(later, 'EVIL too\n');
    // The deadline's policy is allow: a refusal can only come from the decision.
    const g = startGate(mnt!.dir, 'slow-evil', 5000, 'allow');
    gates.push(g);
    await waitFor(g, /READY/);
    const catOf = (f: string) => {
      const c = spawn('cat', [f], { stdio: ['ignore', 'ignore', 'pipe'] });
      let err = '';
      c.stderr!.on('data', (d: Buffer) => (err += d.toString()));
      return new Promise<{ code: number | null; err: string }>((r) => c.once('exit', (code) => r({ code, err })));
    };
    const pending = catOf(evil);
    await waitFor(g, new RegExp(`DECIDE ${evil}`)); // held by the gate, its decision 1.5 s away
    const stopped = g.ask('handover', /STOPPED/);
    // The handover takes the mount mark off first (as the kernel lists the group's marks).
    let marks = '';
    for (const end = Date.now() + 10_000; !/^MARKS \d+ 0$/.test(marks) && Date.now() < end;) marks = await g.ask('marks', /MARKS .*/);
    assert.match(marks, /^MARKS \d+ 0$/, 'the mount mark is off');
    // So an open after the handover began is no longer this gate's (in a reload, the new gate has
    // it). It passes here, with nothing else gating the mount, and no DECIDE.
    const after = await catOf(later);
    assert.equal(after.code, 0, after.err);
    const r = await pending;
    assert.notEqual(r.code, 0, 'the held open was judged, not allowed on the way out');
    assert.match(r.err, /Operation not permitted/);
    await stopped;
    assert.doesNotMatch(g.output(), new RegExp(`DECIDE ${later}`));
  });

  it('a frozen gate killed with SIGKILL releases the opens it was holding', async () => {
    const f = path.join(mnt!.dir, 'frozen.txt');
    fs.writeFileSync(f, 'x');
    const g = startGate(mnt!.dir, 'never', 60_000, 'deny');
    gates.push(g);
    await waitFor(g, /READY/);
    const cat = spawn('cat', [f], { stdio: 'ignore' });
    const exit = new Promise<number | null>((r) => cat.once('exit', (c) => r(c)));
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(cat.exitCode, null, 'blocked');
    g.child.kill('SIGKILL');
    const code = await Promise.race([exit, new Promise<'hung'>((r) => setTimeout(() => r('hung'), 5000))]);
    if (code === 'hung') cat.kill('SIGKILL');
    assert.equal(code, 0);
  });
});
