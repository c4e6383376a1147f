/**
 * The on-access policy (OnAccessHandler) against a scripted SVM: verdicts within the deadline,
 * deadline answers by policy, SVM unavailable (allow queues the file, deny refuses it), and a
 * threat found after a deadline answer is still quarantined and reported.
 */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { DeferredQueue } from '../../src/store/deferred-queue.js';
import { DetectionLog } from '../../src/store/detections.js';
import { FileScanner } from '../../src/scan/file-scanner.js';
import { OnAccessHandler, type AccessEvent } from '../../src/scan/on-access.js';
import { SvmLink } from '../../src/svm-link/index.js';
import { eventually, tempDir } from '../helpers/procs.js';
import { fakeSvm } from '../helpers/fake-svm.js';

const dir = tempDir('la-onaccess-');
const cleanups: Array<() => unknown> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
  fs.rmSync(dir, { recursive: true, force: true });
});

/** An SVM whose verdict for content containing "EVIL" is infected, answered after `delayMs`. */
const svmWithDelay = (delayMs: () => number) => fakeSvm({ infected: { marker: 'EVIL', threat: 'Test-Evil' }, answerDelayMs: delayMs });

async function setup(policy: 'allow' | 'deny', url: string, deadlineMs = 300) {
  const link = new SvmLink({
    url,
    token: 'good',
    agentId: 'agent-onaccess',
    host: 'h',
    os: 'linux',
    agentVersion: '0',
    deadlineMs: 5000,
    backoffMinMs: 20,
    backoffMaxMs: 100,
    connectTimeoutMs: 500,
  });
  cleanups.push(() => link.close());
  const queue = await DeferredQueue.open({ file: path.join(fs.mkdtempSync(path.join(dir, 'q-')), 'queue.journal') });
  cleanups.push(() => queue.close());
  const quarantined: string[] = [];
  const detections = new DetectionLog(50);
  const handler = new OnAccessHandler({
    scanner: new FileScanner({ link, maxFileSize: 1 << 20, deadlineMs: 5000 }),
    detections,
    deferred: queue,
    quarantine: { put: async (p) => (quarantined.push(p), 'id') },
    deadlineMs,
    onSvmUnavailable: policy,
    maxFileSize: 1 << 20,
  });
  return { link, queue, quarantined, detections, handler };
}

function event(name: string, content: string): AccessEvent & { close: () => void } {
  const p = path.join(dir, name);
  fs.writeFileSync(p, content);
  const fd = fs.openSync(p, 'r');
  return { fd, path: p, pid: process.pid, kind: 'open', stat: fs.fstatSync(fd, { bigint: true }), close: () => fs.closeSync(fd) };
}

describe('OnAccessHandler', () => {
  it('allows clean files as cacheable and denies infected ones, then quarantines and reports them', async () => {
    const svm = await svmWithDelay(() => 0);
    cleanups.push(svm.close);
    const s = await setup('allow', svm.url);
    await s.link.connect();
    const clean = event('clean.txt', 'hello');
    assert.deepEqual(await s.handler.decide(clean), { allow: true, cacheable: true });
    const evil = event('evil.txt', 'this is EVIL');
    assert.deepEqual(await s.handler.decide(evil), { allow: false, cacheable: false });
    await eventually(() => s.quarantined.length === 1, 2000, 'quarantine');
    assert.equal(s.quarantined[0], evil.path);
    assert.equal(s.detections.recent()[0]!.threat, 'Test-Evil');
    clean.close();
    evil.close();
  });

  it('answers by policy at the deadline, queues the file, and still quarantines a late detection', async () => {
    const svm = await svmWithDelay(() => 800);
    cleanups.push(svm.close);
    const s = await setup('allow', svm.url, 200);
    await s.link.connect();
    const evil = event('late-evil.txt', 'EVIL but slow');
    const t0 = performance.now();
    const d = await s.handler.decide(evil);
    const took = performance.now() - t0;
    assert.equal(d.allow, true, 'fail-open');
    assert.equal(d.cacheable, false, 'no kernel mark for an unjudged file');
    assert.ok(d.hold instanceof Promise, 'the gate is told to keep the fd open for the late scan');
    assert.ok(took < 600, `answered near the 200 ms deadline, took ${took.toFixed(0)} ms`);
    assert.equal(s.queue.has(evil.path), true, 'queued for a later scan');
    await eventually(() => s.quarantined.includes(evil.path), 5000, 'late quarantine');
    assert.equal(s.handler.counts.deadline, 1);
    evil.close();
  });

  it('SVM unreachable: allow policy opens and queues; deny policy refuses, both within the deadline', async () => {
    const svm = await svmWithDelay(() => 0);
    const url = svm.url;
    await svm.close();
    for (const policy of ['allow', 'deny'] as const) {
      const s = await setup(policy, url, 300);
      const f = event(`down-${policy}.txt`, 'anything');
      const t0 = performance.now();
      const d = await s.handler.decide(f);
      assert.ok(performance.now() - t0 < 1500, 'within the deadline plus slack');
      assert.equal(d.allow, policy === 'allow');
      assert.equal(d.cacheable, false);
      assert.equal(s.queue.has(f.path), true);
      f.close();
    }
  });

  it('allows what is not a regular file and files over max_file_size without scanning', async () => {
    const svm = await svmWithDelay(() => 0);
    cleanups.push(svm.close);
    const s = await setup('deny', svm.url);
    const big = event('big.bin', 'x'.repeat((1 << 20) + 1));
    assert.deepEqual(await s.handler.decide(big), { allow: true, cacheable: true });
    assert.equal(s.handler.counts.tooLarge, 1);
    big.close();
  });

  it('quarantines a file once when a denied open and its close-write scan both find it; a new file at that path is moved anew', async () => {
    const svm = await svmWithDelay(() => 0);
    cleanups.push(svm.close);
    const link = new SvmLink({
      url: svm.url,
      token: 'good',
      agentId: 'agent-once',
      host: 'h',
      os: 'linux',
      agentVersion: '0',
      deadlineMs: 5000,
    });
    cleanups.push(() => link.close());
    await link.connect();
    const moved = new Set<string>();
    const puts: string[] = [];
    const detections = new DetectionLog(50);
    const scanner = new FileScanner({ link, maxFileSize: 1 << 20, deadlineMs: 5000 });
    const handler = new OnAccessHandler({
      scanner,
      detections,
      deferred: { add: () => undefined },
      quarantine: {
        // Like the real store: the file is gone once moved, and a second move fails on ENOENT.
        put: async (p) => {
          puts.push(p);
          await new Promise((r) => setTimeout(r, 50));
          const content = fs.readFileSync(p, 'utf8');
          fs.rmSync(p);
          moved.add(content);
          return `q${puts.length}`;
        },
      },
      deadlineMs: 2000,
      onSvmUnavailable: 'allow',
      maxFileSize: 1 << 20,
    });
    const evil = event('once-evil.txt', 'EVIL once');
    const denied = handler.decide(evil);
    const written = handler.written(evil.path, () => scanner.scanFd(evil.fd, evil.path, evil.stat));
    assert.equal((await denied).allow, false);
    assert.equal((await written).outcome, 'infected');
    await eventually(() => detections.recent().length === 2, 3000, 'two detections');
    assert.deepEqual(puts, [evil.path], 'one move for the two detections');
    assert.deepEqual(
      detections
        .recent()
        .map((d) => d.action)
        .sort(),
      ['quarantined', 'quarantined'],
    );
    evil.close();

    // A later detection of that path, file already gone (ENOENT) with the same content: the same move.
    const put2 = puts.length;
    const r = await handler.written(evil.path, async () => ({
      path: evil.path,
      outcome: 'infected',
      threat: 'Test-Evil',
      sha256: (await scanner.scanPath(evil.path)).sha256 ?? crypto.createHash('sha256').update('EVIL once').digest('hex'),
      size: 9,
      source: 'svm-scan',
      uploaded: 0,
      read: 0,
    }));
    assert.equal(r.outcome, 'infected');
    assert.equal(puts.length, put2 + 1);
    await eventually(() => detections.recent().length === 3, 3000, 'third detection');
    assert.deepEqual(
      detections.recent().map((d) => d.action),
      ['quarantined', 'quarantined', 'quarantined'],
      'ENOENT for a file just moved is that move, not a failure',
    );

    // A NEW infected file dropped at the same path is moved again, not taken for the old one.
    const again = event('once-evil.txt', 'EVIL twice, other content');
    await handler.written(again.path, () => scanner.scanFd(again.fd, again.path, again.stat));
    await eventually(() => moved.has('EVIL twice, other content'), 3000, 'second file moved');
    again.close();
  });

  it('Windows: the image of a terminated process is moved once it is released, seconds later; another refusal is not waited on', async () => {
    const lockedFor = 2500; // longer than the 1 s this waited before (a busy Wine prefix in CI)
    const t0 = performance.now();
    const tries: string[] = [];
    const detections = new DetectionLog(50);
    const handler = new OnAccessHandler({
      scanner: {} as FileScanner, // started() gets its scan; the scanner is not used
      detections,
      deferred: { add: () => undefined },
      quarantine: {
        put: async (p) => {
          tries.push(p);
          if (p.endsWith('locked.exe') && performance.now() - t0 < lockedFor)
            throw Object.assign(new Error('EBUSY: resource busy or locked'), { code: 'EBUSY' });
          return 'q';
        },
      },
      deadlineMs: 1000,
      onSvmUnavailable: 'allow',
      maxFileSize: 1 << 20,
      processes: {
        attribute: (pid) => ({ pid, ppid: 1, exe: 'C:\\x.exe', source: 'proc', parents: [] }) as never,
        respond: () => ({ action: 'killed' }),
        denied: () => undefined,
      },
    });
    const infected = (p: string) => async () =>
      ({
        path: p,
        outcome: 'infected',
        threat: 'Win.Test',
        sha256: 'ab'.repeat(32),
        size: 1,
        source: 'svm-scan',
        uploaded: 0,
        read: 0,
      }) as const;
    await handler.started('C:\\locked.exe', 700, infected('C:\\locked.exe'));
    const waited = performance.now() - t0;
    assert.ok(waited >= lockedFor, `moved only once released (${Math.round(waited)} ms)`);
    assert.ok(tries.length >= 3 && tries.length <= 12, `tried ${tries.length} times, backing off`);
    assert.equal(detections.recent().find((d) => d.path === 'C:\\locked.exe')?.action, 'killed');
    // A process that was not terminated: its image is tried once, and the detection says so.
    const handler2 = new OnAccessHandler({
      scanner: {} as FileScanner,
      detections,
      deferred: { add: () => undefined },
      quarantine: { put: async (p) => (tries.push(p), Promise.reject(Object.assign(new Error('EBUSY'), { code: 'EBUSY' }))) },
      deadlineMs: 1000,
      onSvmUnavailable: 'allow',
      maxFileSize: 1 << 20,
      processes: {
        attribute: (pid) => ({ pid, ppid: 1, source: 'proc', parents: [] }) as never,
        respond: () => ({ action: 'spared', why: 'protected' }),
        denied: () => undefined,
      },
    });
    const n = tries.length;
    await handler2.started('C:\\denied.exe', 701, infected('C:\\denied.exe'));
    assert.equal(tries.length, n + 1, 'no retry for an image whose process still runs');
    const d = detections.recent().find((x) => x.path === 'C:\\denied.exe');
    assert.ok(d, 'the detection is recorded');
    assert.notEqual(d.action, 'quarantined');
  });
});
