/**
 * The round-trip trace (src/trace.ts): off without LIGHTAGENT_RTT_TRACE (nothing written), on it
 * appends each process's marks under the directory at exit; and bench/onaccess/rtt-breakdown.ts
 * joins an agent's and an SVM's marks of one open into the hops of docs/benchmarks.md.
 * Real child processes write the files, as the agent and the SVM do.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { breakdown } from '../bench/onaccess/rtt-breakdown.js';

const TRACE = new URL('../src/trace.js', import.meta.url).href;
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'la-trace-'));
after(() => fs.rmSync(work, { recursive: true, force: true }));

/** Run `marks` (hop, key, us) through src/trace.ts in a child process with LIGHTAGENT_RTT_TRACE = dir (unset: undefined). */
function child(dir: string | undefined, marks: Array<[string, string, number]>): string {
  const env = { ...process.env };
  delete env.LIGHTAGENT_RTT_TRACE;
  if (dir) env.LIGHTAGENT_RTT_TRACE = dir;
  const code = `const { RTT_TRACE, rttMark } = await import(${JSON.stringify(TRACE)});
for (const [h, k, us] of ${JSON.stringify(marks)}) if (RTT_TRACE) rttMark(h, k, us);
process.stdout.write(String(RTT_TRACE));`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', code], { env, encoding: 'utf8', timeout: 30_000 });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout;
}

describe('round-trip trace', () => {
  it('writes nothing without LIGHTAGENT_RTT_TRACE', () => {
    const dir = path.join(work, 'off');
    fs.mkdirSync(dir);
    assert.equal(child(undefined, [['w.read', '/f', 1]]), 'false');
    assert.deepEqual(fs.readdirSync(dir), []);
  });

  it('appends the marks of each thread to <pid>-<thread>.jsonl at exit', () => {
    const dir = path.join(work, 'on');
    fs.mkdirSync(dir);
    assert.equal(
      child(dir, [
        ['w.read', '/f', 10],
        ['m.recv', '/f', 25],
      ]),
      'true',
    );
    const files = fs.readdirSync(dir);
    assert.equal(files.length, 1);
    assert.match(files[0]!, /^\d+-0\.jsonl$/);
    const marks = fs
      .readFileSync(path.join(dir, files[0]!), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as [string, string, number])
      .filter(([h]) => !h.startsWith('gc.'));
    assert.deepEqual(marks, [
      ['w.read', '/f', 10],
      ['m.recv', '/f', 25],
    ]);
  });

  it('rtt-breakdown joins the agent and the SVM by path and SHA-256 into hops', () => {
    const dir = path.join(work, 'join');
    const sha = 'a'.repeat(64);
    const f = '/mnt/d0/f1.txt';
    // One second-guest open: the SVM's marks lie inside the agent's send -> receive window.
    child(path.join(dir, 'second-guest'), [
      ['w.read', f, 1000],
      ['w.post', f, 1010],
      ['m.recv', f, 1030],
      ['s.hashed', `${f}|${sha}`, 1100],
      ['l.lookup', sha, 1101],
      ['l.sending', sha, 1120],
      ['l.sent', sha, 1125],
      ['l.recv', sha, 1300],
      ['m.decided', f, 1350],
      ['m.responded', f, 1360],
      ['m.marked', f, 1380],
    ]);
    child(path.join(dir, 'svm'), [
      // Another guest's lookup of the same content, earlier: not this open's.
      ['v.lookup', sha, 500],
      ['v.answer', sha, 540],
      ['v.lookup', sha, 1150],
      ['v.answer', sha, 1200],
    ]);
    const hops = new Map(breakdown(dir, 'second-guest').map((r) => [r.hop.split(' ')[0], r]));
    const p50 = (h: string) => hops.get(h)?.p50;
    assert.equal(p50('1'), 10);
    assert.equal(p50('2'), 20);
    assert.equal(p50('3'), 70);
    assert.equal(p50('4'), 20);
    assert.equal(p50('4b'), 5);
    assert.equal(p50('5'), 30, 'sending -> the SVM decoded it');
    assert.equal(p50('6'), 50, "the SVM's own lookup, not the earlier one");
    assert.equal(p50('7'), 100);
    assert.equal(p50('13'), 50);
    assert.equal(p50('14'), 10, 'decided -> response written');
    assert.equal(p50('15'), 20, 'the mark after the answer');
    assert.equal(p50('total:'), 360);
    assert.equal(hops.get('8'), undefined, 'no upload');
  });
});
