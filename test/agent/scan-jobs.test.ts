/**
 * Daemon-run scan jobs end to end: a real SVM process, a real `lightagent run` (the watcher
 * backend on a temp dir: no fanotify mark, and files present before the start are not scanned by
 * it), and `lightagent scan --daemon` over the control socket. The job must find the EICAR file
 * that sat in the tree, quarantine it, and write it to the events file like on-access does.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { EICAR } from '../helpers/fixtures.js';
import { quarantineList, startAgent, type Agent } from '../helpers/agent.js';
import { request } from '../../src/control/client.js';
import { STATUS_SOCKET } from '../../src/control/local-sockets.js';
import { CLI, eventually, needRoot, run, startSvmProcess, tempDir } from '../helpers/procs.js';
import { eventuallyAsync } from '../svm/inventory-helpers.js';

// The control socket is root's (SO_PEERCRED).
const skip = needRoot();

describe('daemon scan jobs', { skip }, () => {
  let svm: Awaited<ReturnType<typeof startSvmProcess>>;
  let agent: Agent;
  let tree: string;
  let eicar: string;
  before(async () => {
    svm = await startSvmProcess();
    tree = tempDir('la-scanjob-');
    fs.mkdirSync(path.join(tree, 'a/b/c'), { recursive: true });
    for (let i = 0; i < 40; i++) fs.writeFileSync(path.join(tree, `a/b/file-${i}.txt`), `clean file ${i}\n`);
    eicar = path.join(tree, 'a/b/c/old-eicar.com');
    fs.writeFileSync(eicar, EICAR);
    agent = await startAgent({ svm: svm.url, protect: tree, mode: 'watcher' });
  });
  after(async () => {
    await agent?.stop();
    await svm?.stop();
  });

  it('the watcher left the old EICAR file alone (only a job will find it)', async () => {
    await new Promise((r) => setTimeout(r, 500));
    assert.ok(fs.existsSync(eicar));
    assert.equal((await agent.status()).scan, undefined, 'no job before one is asked for');
  });

  it('scan --daemon walks the protected tree, quarantines the EICAR file and reports it in events', async () => {
    const r = run(process.execPath, [CLI, 'scan', '--daemon', '--state-dir', agent.stateDir, '--json'], 60_000);
    assert.equal(r.status, 1, `exit 1 for infected; stderr: ${r.stderr}`);
    const job = (JSON.parse(r.stdout) as { job: { trigger: string; state: string; counters: Record<string, number> } }).job;
    assert.equal(job.trigger, 'manual');
    assert.equal(job.state, 'done');
    assert.equal(job.counters.seen, 41);
    assert.equal(job.counters.scanned, 41);
    assert.equal(job.counters.infected, 1);
    assert.equal(job.counters.errors, 0);
    assert.ok(!fs.existsSync(eicar), 'moved to quarantine');
    assert.ok(quarantineList(agent.stateDir).some((q) => q.originalPath === eicar));
    const events = await eventually(
      () => {
        const f = path.join(agent.stateDir, 'events.jsonl');
        const text = fs.existsSync(f) ? fs.readFileSync(f, 'utf8') : '';
        return text.includes(eicar) ? text : undefined;
      },
      10_000,
      'the detection in events.jsonl',
    );
    assert.match(events, /"action":"quarantined"/);
    const s = await agent.status();
    assert.equal(s.scan?.state, 'done');
    assert.ok(s.detections.total >= 1);
  });

  it('a second job answers from the shared verdict cache (no upload)', async () => {
    const before = await agent.status();
    const r = run(process.execPath, [CLI, 'scan', '--daemon', '--state-dir', agent.stateDir, '--json', path.join(tree, 'a')], 60_000);
    assert.equal(r.status, 0, r.stderr);
    const job = (JSON.parse(r.stdout) as { job: { counters: Record<string, number>; paths: string[] } }).job;
    assert.equal(job.counters.scanned, 40);
    assert.deepEqual(job.paths, [fs.realpathSync(path.join(tree, 'a'))]);
    const now = await agent.status();
    assert.equal(now.cache!.misses, before.cache!.misses, 'every file a local cache hit');
  });

  it('refuses a path outside the protected trees, also through a symbolic link', async () => {
    const outside = tempDir('la-outside-');
    fs.symlinkSync(outside, path.join(tree, 'escape'));
    for (const p of [outside, path.join(tree, 'escape')]) {
      const r = run(process.execPath, [CLI, 'scan', '--daemon', '--state-dir', agent.stateDir, p], 20_000);
      assert.equal(r.status, 2, r.stdout);
      assert.match(r.stderr, /LA_ERR_SCAN_PATH/);
      assert.match(r.stderr, /outside the protected trees/);
    }
  });

  it('status shows the last job to any user; the status socket refuses to start one', async () => {
    const r = run(process.execPath, [CLI, 'scan', '--daemon', '--status', '--state-dir', agent.stateDir], 20_000);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /\(manual\) done: 40 files seen, 40 scanned/);
    await assert.rejects(request(path.join(agent.socketDir, STATUS_SOCKET), { cmd: 'scan-start' }), /LA_ERR_CONTROL_DENIED|read-only/);
    const st = run(process.execPath, [CLI, 'status', '--state-dir', agent.stateDir], 20_000);
    assert.match(st.stdout, /^scan job: +done \(manual, .* ago\): 40 seen, 40 scanned, 0 infected, 0 errors$/m);
  });
});

describe('daemon scheduled scans', { skip }, () => {
  let svm: Awaited<ReturnType<typeof startSvmProcess>>;
  let agent: Agent;
  after(async () => {
    await agent?.stop();
    await svm?.stop();
  });

  it('a slot missed while the agent was down runs once after the start (at least a minute), as trigger schedule', async () => {
    svm = await startSvmProcess();
    const tree = tempDir('la-sched-tree-');
    for (let i = 0; i < 3; i++) fs.writeFileSync(path.join(tree, `f${i}.txt`), `file ${i}\n`);
    const stateDir = tempDir('la-sched-state-');
    // What an agent that last handled a slot in 1970 would have kept: the schedule as parsed, its last slot.
    const key = JSON.stringify({ every: 3_600_000, spread: 0 });
    fs.writeFileSync(path.join(stateDir, 'scan-schedule.json'), JSON.stringify({ v: 1, schedule: key, lastSlot: 0 }));
    const t0 = Date.now();
    agent = await startAgent({
      svm: svm.url,
      protect: tree,
      mode: 'watcher',
      stateDir,
      settings: { scan_schedule: { every: '1h', spread: '0s' } },
    });
    const s = await eventuallyAsync(
      async () => {
        const st = await agent.status();
        return st.scan?.state === 'done' ? st : undefined;
      },
      120_000,
      'the catch-up job',
    );
    assert.equal(s.scan!.trigger, 'schedule');
    assert.equal(s.scan!.counters.scanned, 3);
    assert.ok(Date.now() - t0 >= 60_000, 'not before a minute after the start');
    const rec = JSON.parse(fs.readFileSync(path.join(stateDir, 'scan-schedule.json'), 'utf8')) as { lastJob: string; lastSlot: number };
    assert.equal(rec.lastJob, s.scan!.id);
    assert.ok(rec.lastSlot > 0 && rec.lastSlot % 3_600_000 === 0 && Date.now() - rec.lastSlot < 2 * 3_600_000, String(rec.lastSlot));
  });
});
