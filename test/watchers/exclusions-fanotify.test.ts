/**
 * Exclusions under the real fanotify gate, as root: a real SVM (builtin engine, EICAR), a real
 * `lightagent run` with a watchdog, a tmpfs mounted for the run. One case per kind: glob and
 * extension, process (no ignore mark: a normal reader is still denied after the excluded one),
 * process children, SHA-256, threat (reported, not denied, the event written), and a reload that
 * changes them (a bad one keeps the old ones).
 */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { eventsFilePath } from '../../src/store/events-file.js';
import { startAgent, type Agent } from '../helpers/agent.js';
import { EICAR } from '../helpers/fixtures.js';
import { eventually, needRoot, run, scratchMount, startSvmProcess, tempDir, waitFor } from '../helpers/procs.js';

const skip = needRoot();

describe('exclusions under fanotify', { skip }, () => {
  let svm: Awaited<ReturnType<typeof startSvmProcess>>;
  let mnt: ReturnType<typeof scratchMount>;
  let agent: Agent;
  let bin: string;
  /** Copies of cat and sh at paths of their own, so that only they are excluded. */
  let exCat: string;
  let kidSh: string;
  let loneSh: string;
  const variant = `${EICAR}\n`; // still EICAR to the engine (byte pattern), another SHA-256
  const variantSha = crypto.createHash('sha256').update(variant, 'latin1').digest('hex');
  let exclude: Record<string, unknown>;

  /** `cat FILE` by `exe` (default the system's): its exit status (0 read, 1 refused). */
  const cat = (file: string, exe = 'cat') => run(exe, [file], 20_000);
  /** `SH -c 'cat FILE'` where cat is a child of the shell (no exec of the last command). */
  const catUnder = (sh: string, file: string) => run(sh, ['-c', 'cat "$1" >/dev/null; rc=$?; exit $rc', 'sh', file], 20_000);
  let staged = 0;
  /**
   * A new file at `name`: written in the excluded folder, its close-write let go there (the gate
   * reads a close-write's path when it takes it), then renamed into place (a rename raises no
   * event): so no close-write scan quarantines it behind the test's back.
   */
  const fresh = async (name: string, content = EICAR) => {
    const p = path.join(mnt.dir, name);
    const stage = path.join(mnt.dir, 'skip', `staged-${staged++}`);
    fs.mkdirSync(path.dirname(p), { recursive: true });
    fs.mkdirSync(path.dirname(stage), { recursive: true });
    const outside = (await agent.status()).backend.outside ?? 0;
    fs.writeFileSync(stage, content, 'latin1');
    for (const end = Date.now() + 10_000; ((await agent.status()).backend.outside ?? 0) <= outside;) {
      if (Date.now() > end) throw new Error('timed out waiting for the staged close-write to be let go');
      await new Promise((r) => setTimeout(r, 20));
    }
    fs.renameSync(stage, p);
    return p;
  };
  /** The open was refused by the gate (not a file gone missing). */
  const denied = (r: ReturnType<typeof run>, what: string) => {
    assert.equal(r.status, 1, `${what}: ${r.stderr}`);
    assert.match(r.stderr, /Operation not permitted/, what);
  };
  const events = () =>
    fs.existsSync(eventsFilePath(agent.stateDir))
      ? fs
          .readFileSync(eventsFilePath(agent.stateDir), 'utf8')
          .split('\n')
          .filter(Boolean)
          .map((l) => JSON.parse(l) as { kind: string; path?: string; action?: string; threat?: string })
      : [];

  before(async () => {
    svm = await startSvmProcess();
    mnt = scratchMount('la-excl-');
    bin = tempDir('la-excl-bin-');
    exCat = path.join(bin, 'excluded-cat');
    kidSh = path.join(bin, 'parent-sh');
    loneSh = path.join(bin, 'lone-sh');
    for (const [from, to] of [
      ['/bin/cat', exCat],
      ['/bin/sh', kidSh],
      ['/bin/sh', loneSh],
    ] as const) {
      fs.copyFileSync(fs.realpathSync(from), to);
      fs.chmodSync(to, 0o755);
    }
    exclude = {
      paths: [path.join(mnt.dir, 'build/*.o'), path.join(mnt.dir, 'skip')],
      extensions: ['.LOG'],
      processes: [exCat, { path: kidSh, children: true }, { path: loneSh, children: false }],
      sha256: [variantSha],
    };
    agent = await startAgent({ svm: svm.url, protect: mnt.dir, mode: 'fanotify', watchdogMs: 150_000, settings: { exclude } });
  });
  after(async () => {
    if (agent) assert.equal(await agent.stop(), 0, agent.logs().slice(-3000));
    await svm?.stop();
    mnt?.unmount();
  });

  it('an excluded glob, folder or extension opens EICAR unscanned; a file next to it is still denied', async () => {
    const o = await fresh('build/x.o');
    const c = await fresh('build/x.c');
    const sub = await fresh('build/sub/x.o');
    const folder = await fresh('skip/deep/e.com');
    const log = await fresh('logs/APP.log');
    for (const p of [o, folder, log]) assert.equal(cat(p).status, 0, `${p} is excluded`);
    assert.equal(cat(o).status, 0, 'again: still allowed');
    denied(cat(c), 'build/*.o does not cover build/x.c');
    denied(cat(sub), 'build/*.o does not cover build/sub/x.o');
    denied(cat(await fresh('logs/APP.log.gz')), 'the extension is the end of the name');
    denied(cat(await fresh('skipped/e.com')), 'the folder skip does not cover skipped');
    assert.ok(fs.existsSync(o) && fs.existsSync(folder) && fs.existsSync(log), 'excluded files are never quarantined');
  });

  it('a process-excluded reader opens EICAR; a normal reader is still denied after it (no ignore mark)', async () => {
    const f = await fresh('proc/e.com');
    assert.equal(cat(f, exCat).status, 0, 'the excluded cat reads it');
    assert.equal(cat(f, exCat).status, 0, 'and again');
    const marks = (await agent.status()).backend.ignoreMarks ?? 0;
    denied(cat(f), 'a normal cat');
    assert.equal((await agent.status()).backend.ignoreMarks ?? 0, marks, 'no ignore mark was placed for the excluded process');
    await eventually(() => !fs.existsSync(f), 10_000, 'quarantined after the normal reader was denied');
  });

  it('children: a child of an excluded shell is allowed only with children: true', async () => {
    const f = await fresh('kids/e.com');
    assert.equal(catUnder(kidSh, f).status, 0, 'cat under parent-sh (children: true)');
    assert.equal(catUnder(kidSh, f).status, 0, 'and again');
    denied(catUnder(loneSh, f), 'cat under lone-sh (children: false)');
    denied(catUnder('/bin/sh', await fresh('kids/e2.com')), 'cat under the system sh');
    await eventually(() => !fs.existsSync(f), 10_000, 'quarantined');
  });

  it('sha256: the excluded EICAR variant is allowed, EICAR itself is not', async () => {
    const v = await fresh('hash/variant.com', variant);
    assert.equal(cat(v).status, 0, 'the excluded content opens');
    assert.equal(cat(v).status, 0, 'and again');
    denied(cat(await fresh('hash/eicar.com')), 'other content with the same threat');
    assert.ok(fs.existsSync(v), 'never quarantined');
  });

  it('threats (by reload): the detection is reported, not denied, and written to the events; a bad reload keeps it', async () => {
    const n = (agent.output().match(/"event":"reloaded"/g) ?? []).length;
    agent.reconfigure({ exclude: { ...exclude, threats: ['Eicar-*'] } });
    agent.child.kill('SIGHUP');
    await eventually(() => (agent.output().match(/"event":"reloaded"/g) ?? []).length > n, 15_000, 'reloaded');
    assert.match(agent.output(), /"applied":\["exclude"\]/);
    const f = await fresh('threat/e.com');
    const r = cat(f);
    assert.equal(r.status, 0, `reported, not denied: ${r.stderr}`);
    const reported = await eventually(
      () => events().find((e) => e.kind === 'detection' && e.path === f && e.action === 'reported'),
      10_000,
      'a reported detection in events.jsonl',
    );
    assert.equal(reported.threat, 'Eicar-Test-Signature');
    assert.ok(fs.existsSync(f), 'not quarantined');
    const s = await agent.status();
    assert.equal(s.exclusions.threats[0], 'Eicar-*');
    assert.equal(s.exclusions.processes, 3, 'processes are counted in status...');
    assert.ok(!JSON.stringify(s).includes(exCat), '...never named: status.sock answers any user');
    assert.ok(s.counts.reported >= 1);

    // A bad exclusion is refused as a whole; the running ones stay.
    agent.reconfigure({ exclude: { ...exclude, threats: ['Eicar-*'], paths: ['relative/path'], sha256: ['abc'] } });
    agent.child.kill('SIGHUP');
    const failed = await waitFor(agent, /"event":"reload-failed"[^\n]*/, 15_000);
    assert.match(failed[0], /exclude\.paths\.0/);
    assert.match(failed[0], /exclude\.sha256\.0/);
    assert.equal(cat(await fresh('threat/e2.com')).status, 0, 'the threat exclusion is still in force');
    assert.equal(cat(await fresh('threat/other.txt', `x${EICAR}`)).status, 0, 'any EICAR detection is reported');

    // And removed again: denied at once (the reload started a new fanotify group, without marks).
    agent.reconfigure({ exclude });
    const m = (agent.output().match(/"event":"reloaded"/g) ?? []).length;
    agent.child.kill('SIGHUP');
    await eventually(() => (agent.output().match(/"event":"reloaded"/g) ?? []).length > m, 15_000, 'reloaded');
    denied(cat(f), 'the same file, once its threat is no longer excluded');
  });
});
