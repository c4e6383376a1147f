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

function startGate(mount: string, behaviour: string, deadlineMs: number, onDeadline: 'allow' | 'deny'): Proc & { ask: (cmd: string, re: RegExp) => Promise<string> } {
  const child = spawn(process.execPath, [CHILD, mount, behaviour, String(deadlineMs), onDeadline], { stdio: ['pipe', 'pipe', 'pipe'] });
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
