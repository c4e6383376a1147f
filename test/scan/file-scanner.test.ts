/**
 * FileScanner with a real local cache against a scripted SVM: each identity is looked up once
 * per scan (the cache's miss and hit counters are what `status` reports), and a local hit is
 * answered synchronously.
 */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { FileScanner, type ScanResult } from '../../src/scan/file-scanner.js';
import { VerdictCache } from '../../src/cache/verdict-cache.js';
import { encodeMessage } from '../../src/protocol/index.js';
import { SvmLink } from '../../src/svm-link/index.js';
import { fakeSvm } from '../helpers/fake-svm.js';
import { tempDir } from '../helpers/procs.js';

const dir = tempDir('la-scanner-');
const cleanups: Array<() => unknown> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('FileScanner', () => {
  it('looks each identity up once per scan, and answers a local hit without a promise', async () => {
    const parts = new Map<number, Buffer[]>();
    const svm = await fakeSvm({
      script: (ws, m) => {
        if (m.t === 'lookup') ws.send(encodeMessage({ t: 'verdict', id: m.id, verdict: 'unknown' }));
        if (m.t === 'chunk') {
          parts.set(m.id, [...(parts.get(m.id) ?? []), m.payload]);
          if (m.last)
            ws.send(
              encodeMessage({
                t: 'verdict',
                id: m.id,
                verdict: 'clean',
                sha256: crypto
                  .createHash('sha256')
                  .update(Buffer.concat(parts.get(m.id)!))
                  .digest('hex'),
              }),
            );
        }
      },
    });
    cleanups.push(svm.close);
    const link = new SvmLink({ url: svm.url, token: 'good', agentId: 'scanner-test', host: 'h', os: 'linux', agentVersion: '0' });
    cleanups.push(() => link.close());
    const cache = await VerdictCache.open({ seed: 3n, capacity: 100 });
    const scanner = new FileScanner({ link, cache, maxFileSize: 1 << 20, deadlineMs: 2000 });

    const f = path.join(dir, 'new.txt');
    fs.writeFileSync(f, 'fresh content');
    const r = await scanner.scanPath(f, fs.lstatSync(f, { bigint: true }));
    assert.equal(r.source, 'svm-scan');
    assert.equal(cache.stats().misses, 1, 'one lookup for one scan (lstat then open)');

    const g = path.join(dir, 'other.txt');
    fs.writeFileSync(g, 'other content');
    const fd = fs.openSync(g, 'r');
    const st = fs.fstatSync(fd, { bigint: true });
    const pending = scanner.scanFdNow(fd, g, st);
    assert.ok(pending instanceof Promise);
    assert.equal((await pending).outcome, 'clean');
    assert.equal(cache.stats().misses, 2, 'one more lookup for one more scan');
    const hit = scanner.scanFdNow(fd, g, st);
    assert.ok(!(hit instanceof Promise), 'a local hit is answered synchronously');
    assert.equal(hit.source, 'cache-identity');
    fs.closeSync(fd);
  });

  it('backs off and asks again while the SVM answers over-rate or busy, within the deadline; then gives up with that error', async () => {
    let lookups = 0;
    let refuseLookups = 3;
    let refuseScans = 2;
    const parts = new Map<number, Buffer[]>();
    const svm = await fakeSvm({
      script: (ws, m) => {
        if (m.t === 'lookup') {
          lookups++;
          if (refuseLookups-- > 0)
            ws.send(
              encodeMessage({
                t: 'verdict',
                id: m.id,
                verdict: 'error',
                code: 'LA_ERR_RATE_LIMITED',
                message: 'over 500 requests per second',
              }),
            );
          else ws.send(encodeMessage({ t: 'verdict', id: m.id, verdict: 'unknown' }));
        }
        if (m.t === 'chunk') {
          parts.set(m.id, [...(parts.get(m.id) ?? []), m.payload]);
          if (!m.last) return;
          if (refuseScans-- > 0) ws.send(encodeMessage({ t: 'verdict', id: m.id, verdict: 'error', code: 'LA_ERR_BUSY', message: 'busy' }));
          else
            ws.send(
              encodeMessage({
                t: 'verdict',
                id: m.id,
                verdict: 'clean',
                sha256: crypto
                  .createHash('sha256')
                  .update(Buffer.concat(parts.get(m.id)!))
                  .digest('hex'),
              }),
            );
        }
      },
    });
    cleanups.push(svm.close);
    const link = new SvmLink({ url: svm.url, token: 'good', agentId: 'rate-test', host: 'h', os: 'linux', agentVersion: '0' });
    cleanups.push(() => link.close());
    const scanner = new FileScanner({ link, maxFileSize: 1 << 20, deadlineMs: 2000 });
    const f = path.join(dir, 'rate.txt');
    fs.writeFileSync(f, 'rate limited at first');
    const r = await scanner.scanPath(f);
    assert.equal(r.outcome, 'clean', JSON.stringify(r));
    assert.equal(r.source, 'svm-scan');
    assert.equal(lookups, 4, 'three refused lookups, then one answered');

    refuseLookups = Number.MAX_SAFE_INTEGER; // never lets up: the deadline ends the retries
    const short = new FileScanner({ link, maxFileSize: 1 << 20, deadlineMs: 300 });
    const t0 = performance.now();
    const g = path.join(dir, 'rate2.txt');
    fs.writeFileSync(g, 'always over the rate');
    const e = await short.scanPath(g);
    const ms = performance.now() - t0;
    assert.equal(e.outcome, 'error');
    assert.equal(e.error?.code, 'LA_ERR_RATE_LIMITED');
    assert.ok(ms < 1000, `gave up within about the deadline: ${ms.toFixed(0)} ms`);
  });

  it('scanFdNow (the on-access path): a copy of known content is answered synchronously, and misses read into the shared buffer carry their own bytes', async () => {
    const svm = await fakeSvm({ infected: { marker: 'EVIL', threat: 'Test-Evil' }, answerDelayMs: 50 });
    cleanups.push(svm.close);
    const link = new SvmLink({ url: svm.url, token: 'good', agentId: 'scanner-test-4', host: 'h', os: 'linux', agentVersion: '0' });
    cleanups.push(() => link.close());
    const cache = await VerdictCache.open({ seed: 6n, capacity: 100 });
    const scanner = new FileScanner({ link, cache, maxFileSize: 1 << 20, deadlineMs: 5000 });
    const open = (name: string, content: string) => {
      const f = path.join(dir, name);
      fs.writeFileSync(f, content);
      const fd = fs.openSync(f, 'r');
      cleanups.push(() => fs.closeSync(fd));
      return { f, fd, st: fs.fstatSync(fd, { bigint: true }) };
    };
    // Misses, all read (into the one shared buffer) before the first verdict comes back.
    const files = Array.from({ length: 12 }, (_, i) =>
      open(`now-${i}.txt`, `${i % 4 === 0 ? 'EVIL ' : ''}now ${i} ${'y'.repeat(50 + i * 41)}\n`),
    );
    const pending = files.map((x) => scanner.scanFdNow(x.fd, x.f, x.st));
    pending.forEach((p) => assert.ok(p instanceof Promise, 'a miss goes to the SVM'));
    const results = await Promise.all(pending as Array<Promise<ScanResult>>); // each one a Promise, as asserted above
    results.forEach((r, i) => {
      assert.equal(r.error, undefined, `${files[i]!.f}: ${r.error?.code} ${r.error?.message}`);
      assert.equal(r.outcome, i % 4 === 0 ? 'infected' : 'clean', files[i]!.f);
      assert.equal(r.sha256, crypto.createHash('sha256').update(fs.readFileSync(files[i]!.f)).digest('hex'));
    });
    // Copies: new identities, known content -> no SVM round trip, no promise.
    const before = svm.received;
    for (const i of [1, 4]) {
      const copy = open(`copy-${i}.txt`, fs.readFileSync(files[i]!.f, 'utf8'));
      const r = scanner.scanFdNow(copy.fd, copy.f, copy.st);
      assert.ok(!(r instanceof Promise), 'a fingerprint hit is answered synchronously');
      assert.equal(r.source, 'cache-fingerprint');
      assert.equal(r.outcome, i % 4 === 0 ? 'infected' : 'clean');
      const again = scanner.scanFdNow(copy.fd, copy.f, copy.st);
      assert.ok(!(again instanceof Promise) && again.source === 'cache-identity', 'and the copy is now known by identity');
    }
    assert.equal(svm.received, before, 'the copies cost the SVM nothing');
  });

  it("uploads each file's own bytes when many small misses are read into the shared buffer at once", async () => {
    // Every verdict comes 50 ms late, so all 24 files are read (into the scanner's one 1 MiB
    // buffer) before the first upload starts: each upload must still carry its own file.
    const svm = await fakeSvm({ infected: { marker: 'EVIL', threat: 'Test-Evil' }, answerDelayMs: 50 });
    cleanups.push(svm.close);
    const link = new SvmLink({ url: svm.url, token: 'good', agentId: 'scanner-test-3', host: 'h', os: 'linux', agentVersion: '0' });
    cleanups.push(() => link.close());
    const cache = await VerdictCache.open({ seed: 5n, capacity: 100 });
    const scanner = new FileScanner({ link, cache, maxFileSize: 1 << 20, deadlineMs: 5000 });
    const files = Array.from({ length: 24 }, (_, i) => {
      const f = path.join(dir, `many-${i}.txt`);
      fs.writeFileSync(f, `${i % 3 === 0 ? 'EVIL ' : ''}file ${i} ${'x'.repeat(100 + i * 37)}\n`);
      return f;
    });
    const results = await Promise.all(files.map((f) => scanner.scanPath(f, fs.lstatSync(f, { bigint: true }))));
    results.forEach((r, i) => {
      assert.equal(r.error, undefined, `${files[i]}: ${r.error?.code} ${r.error?.message}`);
      assert.equal(r.outcome, i % 3 === 0 ? 'infected' : 'clean', files[i]);
      assert.equal(r.sha256, crypto.createHash('sha256').update(fs.readFileSync(files[i]!)).digest('hex'));
    });
  });

  it('a foreground scan joining the background scan of the same file raises it ahead of the other background scans', async () => {
    // 2 in flight, background may hold 1: twenty background scans queue one behind the other.
    const svm = await fakeSvm({ limits: { maxInFlight: 2 }, answerDelayMs: 15 });
    cleanups.push(svm.close);
    const link = new SvmLink({ url: svm.url, token: 'good', agentId: 'scanner-prio', host: 'h', os: 'linux', agentVersion: '0' });
    cleanups.push(() => link.close());
    await link.connect();
    const cache = await VerdictCache.open({ seed: 5n, capacity: 100 });
    const scanner = new FileScanner({ link, cache, maxFileSize: 1 << 20, deadlineMs: 30_000 });
    const files = Array.from({ length: 20 }, (_, i) => {
      const f = path.join(dir, `bg-${i}.txt`);
      fs.writeFileSync(f, `background content ${i}`);
      return f;
    });
    const done: string[] = [];
    const bg = files.map((f) => scanner.scanPath(f).then((r) => (done.push(path.basename(f)), r)));
    await new Promise((r) => setTimeout(r, 5));
    const target = files[15]!;
    const fd = fs.openSync(target, 'r');
    const fg = await scanner.scanFdNow(fd, target, fs.fstatSync(fd, { bigint: true }), 'foreground');
    fs.closeSync(fd);
    const finishedBefore = done.filter((n) => n !== 'bg-15.txt').length;
    assert.equal(fg.outcome, 'clean');
    assert.equal(scanner.raised, 1, 'the open raised the background scan it joined');
    assert.ok(finishedBefore <= 4, `${finishedBefore} other background scans finished before the foreground one`);
    assert.equal(link.windowStats.foreground.admitted >= 2, true, 'its lookup and upload went as foreground');
    const all = await Promise.all(bg);
    assert.ok(all.every((r) => r.outcome === 'clean'));
  });
});
