/**
 * The process side end to end: a real SVM, a real agent (fanotify on a scratch tmpfs) with
 * on_detect: deny-and-kill. An infected script run by a shell is denied and the event names that
 * shell (pid, exe, parent chain); the writer of an infected file is killed and nothing else is;
 * `lightagent events` shows both. Plus the response policy's guards in isolation.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Attribution } from '../../src/store/events-file.js';
import type { AgentEvent } from '../../src/store/events-file.js';
import { ProcessResponse } from '../../src/processes/response.js';
import { startAgent, type Agent } from '../helpers/agent.js';
import { EICAR } from '../helpers/fixtures.js';
import { CLI, eventually, needRoot, run, scratchMount, startSvmProcess, tempDir, waitFor } from '../helpers/procs.js';

const skip = needRoot();

const who = (pid: number, exe = '/usr/bin/x', extra: Partial<Attribution> = {}): Attribution => ({
  pid,
  exe,
  parents: [],
  source: 'proc',
  startTicks: 1,
  ...extra,
});

describe('ProcessResponse guards', () => {
  it('deny never kills; deny-and-kill never kills init, kernel threads, the agent, protected or unknown processes', () => {
    const killed: number[] = [];
    const kill = (pid: number) => {
      killed.push(pid);
      return 'killed' as const;
    };
    assert.deepEqual(new ProcessResponse({ onDetect: 'deny', kill }).respond(who(500), 'wrote', '/f'), { action: 'none', why: 'policy' });
    const r = new ProcessResponse({ onDetect: 'deny-and-kill', kill, selfPid: 4242, protectedProcesses: ['/usr/sbin/sshd', 'postgres'] });
    assert.deepEqual(r.respond(who(1, '/sbin/init'), 'wrote', '/f'), { action: 'spared', why: 'init' });
    assert.deepEqual(r.respond(who(37, '', { ppid: 2 }), 'wrote', '/f'), { action: 'spared', why: 'kernel' });
    assert.deepEqual(r.respond(who(4242, '/usr/bin/node'), 'wrote', '/f'), { action: 'spared', why: 'agent' });
    assert.deepEqual(r.respond(who(600, '/usr/sbin/sshd'), 'runs', '/f'), { action: 'spared', why: 'protected' });
    assert.deepEqual(r.respond(who(601, '/usr/lib/postgresql/16/bin/postgres (deleted)'), 'runs', '/f'), {
      action: 'spared',
      why: 'protected',
    });
    assert.deepEqual(r.respond({ pid: 602, parents: [], source: 'none' }, 'wrote', '/f'), { action: 'spared', why: 'unknown-process' });
    assert.deepEqual(killed, []);
    assert.deepEqual(r.respond(who(700, '/tmp/dropper'), 'wrote', '/f'), { action: 'killed' });
    assert.deepEqual(killed, [700]);
    assert.deepEqual(new ProcessResponse({ onDetect: 'deny-and-kill', kill: () => 'reused' }).respond(who(701), 'wrote', '/f'), {
      action: 'failed',
      why: 'reused',
    });
  });
});

function events(stateDir: string): AgentEvent[] {
  const r = run(process.execPath, [CLI, 'events', '--json', '--state-dir', stateDir]);
  assert.equal(r.status, 0, r.stderr);
  return r.stdout
    .split('\n')
    .filter((l) => l)
    .map((l) => JSON.parse(l) as AgentEvent);
}

describe('process attribution and deny-and-kill, end to end (fanotify)', { skip }, () => {
  let svm: Awaited<ReturnType<typeof startSvmProcess>>;
  let agent: Agent;
  let mnt: ReturnType<typeof scratchMount>;
  let stateDir: string;
  let script: string;
  before(async () => {
    svm = await startSvmProcess();
    mnt = scratchMount();
    stateDir = tempDir('la-state-');
    // Present before the agent starts: judged when the shell opens it.
    script = path.join(mnt.dir, 'infected.sh');
    fs.writeFileSync(script, `${EICAR}\n`, { mode: 0o755 });
    agent = await startAgent({
      svm: svm.url,
      protect: mnt.dir,
      stateDir,
      mode: 'fanotify',
      settings: { on_detect: 'deny-and-kill', protected_processes: ['sshd'], processes: { watcher: 'connector' } },
      watchdogMs: 120_000,
    });
  });
  after(async () => {
    await agent?.stop();
    await svm?.stop();
    mnt?.unmount();
    fs.rmSync(stateDir, { recursive: true, force: true });
  });

  it('logs the process watcher mode', async () => {
    await waitFor(agent, /process watcher: kernel process events connector/, 5000);
  });

  it('an infected script run by a shell is denied, and the event names that shell and its parents', async () => {
    const sh = spawn('/bin/sh', [script], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    sh.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const code = await new Promise<number | null>((r) => sh.once('exit', r));
    assert.notEqual(code, 0, 'the shell could not read its script');
    assert.match(stderr, /Operation not permitted|Permission denied|Can't open/i);
    const ev = await eventually(
      () => events(stateDir).find((e) => e.kind === 'detection' && e.path === script),
      10_000,
      'the detection event',
    );
    assert.match(ev.threat ?? '', /eicar/i);
    assert.equal(ev.process?.pid, sh.pid, JSON.stringify(ev));
    assert.equal(ev.process?.exe, fs.realpathSync('/bin/sh'));
    assert.equal(ev.process?.cmdline, `/bin/sh ${script}`);
    assert.equal(ev.process?.user, 'root');
    assert.equal(ev.process?.parents[0]?.pid, process.pid, 'parent: this test process');
    assert.equal(ev.process?.parents[0]?.exe, process.execPath);
    assert.ok((ev.process?.parents.length ?? 0) >= 2, 'a parent chain, not just the parent');
    assert.equal(ev.response, undefined, 'a denied open kills nothing');
    // The plain text form names it too.
    const text = run(process.execPath, [CLI, 'events', '--state-dir', stateDir]);
    assert.match(text.stdout, new RegExp(`process ${sh.pid} ${fs.realpathSync('/bin/sh')} \\(root\\)`));
  });

  it('deny-and-kill kills the writer of an infected file, and nothing else', async () => {
    const bystander = spawn('/bin/sleep', ['60'], { stdio: 'ignore' });
    const target = path.join(mnt.dir, 'dropped.bin');
    const writer = spawn(
      process.execPath,
      ['-e', `require('fs').writeFileSync(${JSON.stringify(target)}, ${JSON.stringify(EICAR)}); setInterval(() => {}, 1000)`],
      { stdio: 'ignore' },
    );
    try {
      const sig = await Promise.race([
        new Promise((r) => writer.once('exit', (_c, s) => r(s))),
        new Promise((r) => setTimeout(() => r('still alive'), 15_000)),
      ]);
      assert.equal(sig, 'SIGKILL', 'the writer was killed');
      const ev = await eventually(
        () => events(stateDir).find((e) => e.kind === 'detection' && e.path === target),
        10_000,
        'the detection event',
      );
      assert.equal(ev.action, 'killed');
      assert.equal(ev.response, 'killed');
      assert.equal(ev.process?.pid, writer.pid);
      assert.equal(ev.process?.parents[0]?.pid, process.pid);
      assert.equal(fs.existsSync(target), false, 'the file was quarantined');
      // Nothing else: the bystander, the agent, this process.
      assert.equal(bystander.exitCode, null);
      assert.equal(bystander.signalCode, null);
      assert.equal(agent.child.exitCode, null);
      assert.equal(agent.child.signalCode, null);
      process.kill(bystander.pid!, 0);
    } finally {
      writer.kill('SIGKILL');
      bystander.kill('SIGKILL');
    }
  });
});
