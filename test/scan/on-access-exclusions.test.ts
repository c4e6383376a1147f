/**
 * OnAccessHandler with exclusions, against a scripted SVM (content with "EVIL" is infected as
 * Test-Evil): what each kind answers on access and after a write, and that none of them is ever
 * cacheable except a SHA-256 exclusion (a clean verdict on exactly that content).
 */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { NO_EXCLUSIONS, type ExclusionsConfig } from '../../src/config/exclusions.js';
import { Exclusions } from '../../src/scan/exclusions.js';
import { FileScanner } from '../../src/scan/file-scanner.js';
import { OnAccessHandler, type AccessEvent } from '../../src/scan/on-access.js';
import { DetectionLog } from '../../src/store/detections.js';
import { SvmLink } from '../../src/svm-link/index.js';
import { fakeSvm, type FakeSvm } from '../helpers/fake-svm.js';
import { tempDir } from '../helpers/procs.js';

const dir = tempDir('la-onaccess-ex-');
const EVIL = 'this is EVIL';
const EVIL_SHA = crypto.createHash('sha256').update(EVIL).digest('hex');

describe('OnAccessHandler: exclusions', () => {
  let svm: FakeSvm;
  let link: SvmLink;
  before(async () => {
    svm = await fakeSvm({ infected: { marker: 'EVIL', threat: 'Test-Evil' } });
    link = new SvmLink({ url: svm.url, token: 'good', agentId: 'a', host: 'h', os: 'linux', agentVersion: '0', deadlineMs: 5000 });
    await link.connect();
  });
  after(async () => {
    link.close();
    await svm.close();
  });

  function handler(c: Partial<ExclusionsConfig>) {
    const quarantined: string[] = [];
    const detections = new DetectionLog(50);
    let scans = 0;
    const scanner = new FileScanner({ link, maxFileSize: 1 << 20, deadlineMs: 5000 });
    const counting = new Proxy(scanner, {
      get: (t, k) => (k === 'scanFdNow' ? (...a: Parameters<FileScanner['scanFdNow']>) => (scans++, t.scanFdNow(...a)) : Reflect.get(t, k)),
    });
    const h = new OnAccessHandler({
      scanner: counting,
      detections,
      deferred: { add: () => {} },
      quarantine: { put: async (p) => (quarantined.push(p), 'id') },
      deadlineMs: 3000,
      onSvmUnavailable: 'allow',
      maxFileSize: 1 << 20,
      exclusions: new Exclusions({ ...NO_EXCLUSIONS, ...c }),
    });
    return { h, quarantined, detections, scans: () => scans };
  }

  const opened: number[] = [];
  after(() => opened.forEach((fd) => fs.closeSync(fd)));
  function event(name: string, content: string, pid = process.pid): AccessEvent {
    const p = path.join(dir, name);
    fs.mkdirSync(path.dirname(p), { recursive: true });
    fs.writeFileSync(p, content);
    const fd = fs.openSync(p, 'r');
    opened.push(fd);
    return { fd, path: p, pid, kind: 'open', stat: fs.fstatSync(fd, { bigint: true }) };
  }

  it('paths and extensions: allowed unscanned, never cacheable; the rest is judged', async () => {
    const s = handler({ paths: [`${dir}/build/*.o`], extensions: ['.log'] });
    assert.deepEqual(await s.h.decide(event('build/a.o', EVIL)), { allow: true, cacheable: false });
    assert.deepEqual(await s.h.decide(event('x/APP.LOG', EVIL)), { allow: true, cacheable: false });
    assert.equal(s.scans(), 0, 'not scanned');
    assert.equal(s.h.counts.excluded, 2);
    assert.deepEqual(await s.h.decide(event('build/a.c', EVIL)), { allow: false, cacheable: false });
    assert.deepEqual(await s.h.decide(event('build/ok.c', 'fine')), { allow: true, cacheable: true }, 'a clean file is still marked');
    const w = await s.h.written(path.join(dir, 'build/b.o'), async () => assert.fail('an excluded written file is not scanned'));
    assert.equal(w.outcome, 'skipped');
  });

  it('processes: the opener by its executable, allowed unscanned and never cacheable', async () => {
    const s = handler({ processes: [{ path: process.execPath, children: false }] });
    assert.deepEqual(await s.h.decide(event('p/evil.txt', EVIL)), { allow: true, cacheable: false });
    assert.equal(s.scans(), 0);
    const other = handler({ processes: [{ path: '/nonexistent/rsync', children: true }] });
    assert.deepEqual(await other.h.decide(event('p/evil2.txt', EVIL)), { allow: false, cacheable: false });
  });

  it('sha256: that content is clean (cacheable), other infected content is not', async () => {
    const s = handler({ sha256: [EVIL_SHA] });
    assert.deepEqual(await s.h.decide(event('h/evil.txt', EVIL)), { allow: true, cacheable: true });
    assert.deepEqual(await s.h.decide(event('h/evil2.txt', `${EVIL}!`)), { allow: false, cacheable: false });
    const w = await s.h.written(path.join(dir, 'h/evil.txt'), async () => ({
      path: path.join(dir, 'h/evil.txt'),
      outcome: 'infected',
      threat: 'Test-Evil',
      sha256: EVIL_SHA.toUpperCase(),
      size: EVIL.length,
      source: 'svm-scan',
      uploaded: 0,
      read: 0,
    }));
    assert.equal(w.outcome, 'clean');
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(s.quarantined, [path.join(dir, 'h/evil2.txt')]);
  });

  it('threats: allowed, not cacheable, reported once (not quarantined)', async () => {
    const s = handler({ threats: ['Test-*'] });
    const ev = event('t/evil.txt', EVIL);
    assert.deepEqual(await s.h.decide(ev), { allow: true, cacheable: false });
    assert.deepEqual(await s.h.decide(ev), { allow: true, cacheable: false });
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(s.quarantined, []);
    const d = s.detections.recent();
    assert.equal(d.length, 1, 'the same file and content are reported once');
    assert.equal(d[0]!.action, 'reported');
    assert.equal(d[0]!.threat, 'Test-Evil');
    assert.equal(d[0]!.sha256, EVIL_SHA);
    assert.equal(s.h.counts.reported, 1);
  });
});
