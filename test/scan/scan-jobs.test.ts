/**
 * ScanJobRunner on real trees: one job at a time, at most `concurrency` files in flight,
 * cancellable between files, counters by outcome, exclusions honoured, and paths checked against
 * the protected trees after every symbolic link is followed. The scan function is the seam the
 * daemon fills with its handler (test/agent/scan-jobs.test.ts runs that end to end).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { LightagentError } from '../../src/errors.js';
import type { ScanResult } from '../../src/scan/file-scanner.js';
import { checkJobPaths, ScanJobRunner } from '../../src/scan/scan-jobs.js';
import type { WalkEntry } from '../../src/scan/tree-walker.js';
import { tempDir } from '../helpers/procs.js';

function tree(n: number): string {
  const root = tempDir('la-jobs-');
  fs.mkdirSync(path.join(root, 'd/skip'), { recursive: true });
  for (let i = 0; i < n; i++) fs.writeFileSync(path.join(root, 'd', `f${String(i).padStart(4, '0')}.txt`), `x${i}`);
  fs.writeFileSync(path.join(root, 'd/skip/excluded.txt'), 'no');
  return root;
}

const result = (e: WalkEntry, outcome: ScanResult['outcome']): ScanResult => ({
  path: e.path,
  outcome,
  size: e.size,
  source: 'none',
  uploaded: 0,
  read: 0,
  ...(outcome === 'infected' ? { threat: 'T' } : {}),
});

const finished = (r: ScanJobRunner) => new Promise<void>((res) => r.once('finished', () => res()));

describe('scan jobs', () => {
  it('counts by outcome, honours exclusions, keeps at most `concurrency` files in flight', async () => {
    const root = tree(60);
    let inFlight = 0;
    let most = 0;
    const seen: string[] = [];
    const r = new ScanJobRunner({
      roots: () => [root],
      walkOptions: () => ({ exclude: [path.join(root, 'd/skip')] }),
      concurrency: 3,
      scan: async (e) => {
        inFlight++;
        most = Math.max(most, inFlight);
        seen.push(e.path);
        await new Promise((res) => setTimeout(res, 2));
        inFlight--;
        // The file's own name: the temp dir's random suffix may hold an `f` and a digit too.
        const n = Number(/^f(\d+)\.txt$/.exec(path.basename(e.path))![1]);
        return result(e, n === 7 ? 'infected' : n === 8 ? 'error' : n === 9 ? 'skipped' : 'clean');
      },
    });
    const done = finished(r);
    const job = r.start({ trigger: 'manual' });
    assert.equal(job.state, 'running');
    await done;
    const j = r.current!;
    assert.equal(j.state, 'done');
    assert.deepEqual(j.counters, { seen: 60, scanned: 58, skipped: 1, infected: 1, errors: 1, bytes: j.counters.bytes });
    assert.ok(j.finishedAt);
    assert.equal(most, 3);
    assert.ok(!seen.some((p) => p.includes('/skip/')));
  });

  it('one job at a time; cancel stops it between files', async () => {
    const root = tree(400);
    let scanned = 0;
    const r = new ScanJobRunner({
      roots: () => [root],
      walkOptions: () => ({}),
      scan: async (e) => {
        scanned++;
        await new Promise((res) => setTimeout(res, 5));
        return result(e, 'clean');
      },
    });
    const done = finished(r);
    r.start({ trigger: 'schedule' });
    assert.throws(
      () => r.start({ trigger: 'manual' }),
      (e: unknown) => e instanceof LightagentError && e.code === 'LA_ERR_SCAN_BUSY',
    );
    while (scanned < 10) await new Promise((res) => setTimeout(res, 5));
    assert.equal(r.cancel(), true);
    await done;
    const j = r.current!;
    assert.equal(j.state, 'cancelled');
    assert.equal(j.trigger, 'schedule');
    assert.ok(j.counters.seen < 400, `stopped early: ${j.counters.seen}`);
    assert.equal(r.cancel(), false, 'nothing left to cancel');
    // Free again: the next job starts.
    const next = finished(r);
    r.start({ trigger: 'svm', id: 'svm-next', paths: [path.join(root, 'd/f0001.txt')] });
    await next;
    assert.equal(r.current!.id, 'svm-next');
    assert.equal(r.current!.counters.scanned, 1);
  });

  it('paths must be inside the protected trees after following links', () => {
    const root = tree(1);
    const outside = tempDir('la-jobs-out-');
    fs.symlinkSync(outside, path.join(root, 'link-out'));
    fs.symlinkSync(path.join(root, 'd'), path.join(root, 'link-in'));
    assert.deepEqual(checkJobPaths([path.join(root, 'link-in')], [root]), [fs.realpathSync(path.join(root, 'd'))]);
    const refused = (p: string, re: RegExp) =>
      assert.throws(
        () => checkJobPaths([p], [root]),
        (e: unknown) => e instanceof LightagentError && e.code === 'LA_ERR_SCAN_PATH' && re.test(e.message),
        p,
      );
    refused(path.join(root, 'link-out'), /outside the protected trees/);
    refused(path.join(root, 'link-out', '..', 'x'), /cannot be resolved|outside/);
    refused(`${root}/../${path.basename(outside)}`, /outside the protected trees/);
    refused(path.join(root, 'nope'), /cannot be resolved/);
    refused('relative/path', /not an absolute path/);
    refused(`${root}/a\0b`, /not an absolute path/);
    assert.throws(
      () =>
        checkJobPaths(
          Array.from({ length: 65 }, () => root),
          [root],
        ),
      /at most 64 paths/,
    );
    // A sibling whose name starts like the root is not inside it.
    const sibling = `${root}-sibling`;
    fs.mkdirSync(sibling);
    refused(sibling, /outside the protected trees/);
  });
});
