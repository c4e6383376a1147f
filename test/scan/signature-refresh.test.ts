/**
 * The signature refresh against a real SVM (builtin engine, its signatures reloaded from a file)
 * over real SvmLinks, with real files in a temp dir and the real FileScanner and VerdictCache:
 * after a new generation the first agent reads and uploads only what the SVM does not know, a
 * second agent then promotes everything without a byte, changed files are not promoted, content
 * infected under the new signatures is recorded (and judged through the caller's path), and an
 * open during the refresh is judged by the SVM exactly as without it. Kernel marks are the
 * daemon's: test/agent/signature-refresh.test.ts.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { VerdictCache } from '../../src/cache/verdict-cache.js';
import { closeLogging, configureLogging } from '../../src/log.js';
import { FEATURES } from '../../src/protocol/index.js';
import { FileScanner, type ScanResult } from '../../src/scan/file-scanner.js';
import { SignatureRefresh } from '../../src/scan/signature-refresh.js';
import { BuiltinEngine } from '../../src/svm/engines/builtin.js';
import { MemoryVerdictCache } from '../../src/svm/memory-verdict-cache.js';
import { SvmServer } from '../../src/svm/server.js';
import { SvmLink } from '../../src/svm-link/index.js';
import { hdbLine, noise } from '../helpers/fixtures.js';
import { tempDir } from '../helpers/procs.js';
import { metric } from '../svm/helpers.js';

const N = 30;
const dir = tempDir('la-refresh-');
const files = path.join(dir, 'files');
const sigFile = path.join(dir, 'sigs.hdb');
const lstat = (p: string) => fs.lstatSync(p, { bigint: true });
const XCONTENT = Buffer.concat([Buffer.from('turns bad with the next signatures '), noise(3000, 99)]);

interface Guest {
  link: SvmLink;
  cache: VerdictCache;
  scanner: FileScanner;
  refresh: SignatureRefresh;
  judged: ScanResult[];
}

let svm: SvmServer;
const guests: Guest[] = [];

async function guest(name: string, pauseMs = 0, batchSize?: number): Promise<Guest> {
  const link = new SvmLink({
    url: svm.url,
    token: 't',
    agentId: name,
    host: name,
    os: 'linux',
    agentVersion: '0',
    deadlineMs: 5000,
    features: [FEATURES.lookupBatch],
  });
  await link.connect();
  const cache = await VerdictCache.open({ seed: 7n, capacity: 1000, generation: link.generation });
  link.on('generation', (g) => cache.setGeneration(g));
  const scanner = new FileScanner({ link, cache, maxFileSize: 1 << 20, deadlineMs: 5000 });
  const judged: ScanResult[] = [];
  const refresh = new SignatureRefresh({
    cache,
    link,
    scan: (p, st) => scanner.scanPath(p, st, 'background'),
    judge: async (_p, scan) => {
      const r = await scan();
      judged.push(r);
      return r;
    },
    roots: () => [files],
    pauseMs,
    ...(batchSize ? { batchSize } : {}),
  });
  const g = { link, cache, scanner, refresh, judged };
  guests.push(g);
  return g;
}

before(async () => {
  configureLogging({ file: path.join(dir, 'log.jsonl'), level: 'warn' });
  fs.mkdirSync(files);
  for (let i = 0; i < N; i++) fs.writeFileSync(path.join(files, `f${i}.bin`), noise(1000 + i * 37, i + 1));
  fs.writeFileSync(path.join(files, 'x.bin'), XCONTENT);
  fs.writeFileSync(path.join(files, 'c.bin'), noise(2048, 500));
  fs.writeFileSync(sigFile, `${hdbLine('nothing here', 'Test.Unrelated')}\n`);
  svm = await SvmServer.start({
    host: '127.0.0.1',
    port: 0,
    tokens: [{ tenant: 'a', token: 't' }],
    engine: new BuiltinEngine({ signatureFiles: [sigFile] }),
    cache: new MemoryVerdictCache(10_000),
    closeGraceMs: 500,
  });
});
after(async () => {
  for (const g of guests) g.link.close();
  await svm?.close();
  await closeLogging();
  fs.rmSync(dir, { recursive: true, force: true });
});

const names = () => fs.readdirSync(files).map((f) => path.join(files, f));
const cleanNames = () => names().filter((p) => /f\d+\.bin$/.test(p));
const svmWork = async () => ({
  lookups: await metric(svm, 'lightagent_svm_lookups_total'),
  uploads: await metric(svm, 'lightagent_svm_uploads_total'),
  bytes: await metric(svm, 'lightagent_svm_bytes_received_total'),
});

describe('signature refresh (real SVM, real files, through the scanner)', () => {
  it('brings clean verdicts to the new generation: uploads only the unknown, promotes for a second guest with 0 bytes', async () => {
    // Slow enough (2 hashes per batch, 150 ms apart) that an open lands while it runs.
    const a = await guest('guest-a', 150, 2);
    const b = await guest('guest-b');
    for (const g of [a, b]) for (const p of names()) assert.equal((await g.scanner.scanPath(p)).outcome, 'clean', p);
    // Guest b goes away (its cache stays as it is) until guest a has refreshed.
    const cleanBytes = cleanNames().reduce((n, p) => n + fs.statSync(p).size, 0);

    // c.bin changes after it was judged (same size, mtime set back: only ctime tells).
    const c = path.join(files, 'c.bin');
    const before = fs.statSync(c);
    fs.writeFileSync(c, noise(2048, 501));
    fs.utimesSync(c, before.atime, before.mtime);

    const oldGen = a.link.generation!;
    fs.appendFileSync(sigFile, `${hdbLine(XCONTENT, 'Test.NewlyBad')}\n`);
    const reload = await svm.reloadSignatures();
    assert.notEqual(reload.generation, oldGen);
    for (const g of [a, b]) while (g.cache.generation !== reload.generation) await new Promise((r) => setTimeout(r, 10));
    assert.equal(a.cache.countStaleClean(), N + 2, 'every clean verdict is stale now');

    const runA = a.refresh.start();
    assert.equal(a.refresh.status().state, 'running');
    // An open during the refresh: judged by the SVM under the new signatures, as without a refresh.
    const during = await a.scanner.scanPath(path.join(files, 'x.bin'), undefined, 'foreground');
    assert.equal(a.refresh.status().state, 'running', 'the open was judged while the refresh ran');
    assert.equal(during.outcome, 'infected');
    assert.equal(during.threat, 'Test.NewlyBad');
    assert.notEqual(during.source, 'cache-identity');
    await runA;

    const sa = a.refresh.status();
    assert.equal(sa.state, 'done', JSON.stringify(sa));
    assert.equal(sa.generation, reload.generation);
    assert.equal(sa.promoted, 0, 'the SVM knew nothing of the new generation yet');
    assert.equal(sa.total, N + 2);
    assert.equal(sa.uploaded, N, 'the clean files were read and uploaded; x.bin was judged by its open, c.bin changed');
    assert.equal(sa.bytes, cleanBytes);
    assert.ok(sa.batches >= Math.ceil((N + 1) / 2), `batches of 2: ${sa.batches}`);

    // The next opens are local hits: no SVM request at all.
    const w0 = await svmWork();
    for (const p of cleanNames()) {
      const hit = a.cache.lookupIdentity(lstat(p));
      assert.ok(hit && hit.verdict === 'clean' && !hit.stale, p);
      assert.equal((await a.scanner.scanPath(p, lstat(p), 'foreground')).source, 'cache-identity');
    }
    assert.deepEqual(await svmWork(), w0, 'no SVM request for the refreshed files');
    // The changed file was not promoted: its identity has no verdict; its open asks the SVM.
    assert.equal(a.cache.lookupIdentity(lstat(c)), undefined);
    const cr = await a.scanner.scanPath(c, undefined, 'foreground');
    assert.equal(cr.outcome, 'clean');
    assert.ok(cr.source === 'svm-scan' || cr.source === 'svm-cache');
    // Infected under the new signatures: the cache says so, the next open is denied.
    const xh = a.cache.lookupIdentity(lstat(path.join(files, 'x.bin')));
    assert.equal(xh?.verdict, 'infected');

    // The second guest, after the same change: every clean verdict promoted, not a byte sent.
    const w1 = await svmWork();
    await b.refresh.start();
    const sb = b.refresh.status();
    assert.equal(sb.state, 'done', JSON.stringify(sb));
    assert.equal(sb.promoted, N, 'the clean files: promoted without reading them');
    assert.equal(sb.infected, 1, 'x.bin: recorded infected from the batch answer and one lookup');
    assert.equal(sb.uploaded, 0);
    assert.equal(sb.bytes, 0);
    const w2 = await svmWork();
    assert.equal(w2.bytes, w1.bytes, 'the SVM received no bytes from the second guest');
    assert.equal(w2.uploads, w1.uploads);
    assert.equal(b.cache.lookupIdentity(lstat(path.join(files, 'x.bin')))?.threat, 'Test.NewlyBad');
    // x.bin went through the caller's background path (the daemon quarantines and reports there).
    assert.ok(b.judged.some((r) => r.path.endsWith('x.bin') && r.outcome === 'infected'));
    for (const p of cleanNames()) assert.equal(b.cache.lookupIdentity(lstat(p))?.stale, false, p);
  });

  it('a newer generation cancels a run; an SVM without lookup-batch leaves the stale verdicts to their opens', async () => {
    const g = await guest('guest-c', 300, 1);
    for (const p of cleanNames().slice(0, 5)) await g.scanner.scanPath(p);
    fs.appendFileSync(sigFile, `${hdbLine('one more', 'Test.More1')}\n`);
    const r1 = await svm.reloadSignatures();
    while (g.cache.generation !== r1.generation) await new Promise((r) => setTimeout(r, 10));
    const run = g.refresh.start();
    fs.appendFileSync(sigFile, `${hdbLine('and another', 'Test.More2')}\n`);
    const r2 = await svm.reloadSignatures();
    while (g.cache.generation !== r2.generation) await new Promise((r) => setTimeout(r, 10));
    await run;
    assert.equal(g.refresh.status().state, 'cancelled');
    assert.equal(g.refresh.status().generation, r1.generation);
    // The SVM stops speaking the feature (an older SVM): nothing is asked, nothing promoted.
    svm.core.features.splice(svm.core.features.indexOf(FEATURES.lookupBatch), 1);
    try {
      g.link.close();
      const h = await guest('guest-d');
      for (const p of cleanNames().slice(0, 3)) await h.scanner.scanPath(p);
      fs.appendFileSync(sigFile, `${hdbLine('third', 'Test.More3')}\n`);
      const r3 = await svm.reloadSignatures();
      while (h.cache.generation !== r3.generation) await new Promise((r) => setTimeout(r, 10));
      await h.refresh.start();
      const st = h.refresh.status();
      assert.equal(st.state, 'unsupported', JSON.stringify(st));
      assert.equal(st.promoted + st.uploaded, 0);
      assert.equal(h.cache.countStaleClean(), 3, 'left stale: each is re-checked at its next open');
    } finally {
      svm.core.features.push(FEATURES.lookupBatch);
    }
  });
});
