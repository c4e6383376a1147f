/**
 * A hostile tenant with hundreds of agents — 20 flooding complete uploads, 100 stalling, 100
 * trickling slowly — beside a quiet agent of another tenant, all against one `lightagent-svm`
 * process (shipped defaults) with the noise in a process of its own. The SVM's one thread is
 * what they share: with read back-pressure by tenant (fair_read_bytes, src/svm/read-gate.ts) the
 * quiet agent's verdict latency stays within a bound of its own latency alone, measured in the
 * same test before and after the noise.
 *
 * The bounds (p50 15x, p90 60x; p99 is printed, not asserted) are far wider than the 2x target
 * (DESIGN.md): this machine has 2 cores shared by the SVM, the noise process, the test and other
 * work, and what is left beside a flood is the SVM's garbage collection (docs/svm.md, Fairness).
 * They are still far below what
 * the SVM gives without the gate: run with LA_TEST_FAIR_READ_BYTES=0 (the gate off) it fails
 * (quiet p50 ~90-4,000x alone: 2 to 28 verdicts in the whole noise phase).
 */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { encodeMessage } from '../../src/protocol/index.js';
import { zeroMask } from '../../src/svm-link/svm-link.js';
import { rawAgent, sendUpload, type RawAgent } from '../svm/helpers.js';
import { SVM_CLI, spawnNode, spawnWatched, tempDir, waitFor } from '../helpers/procs.js';

const NOISY = 'noisy-tenant-token';
const QUIET = 'quiet-tenant-token';
const LOAD = new URL('./fixtures/noisy-tenant-load.js', import.meta.url).pathname;
const PHASE_MS = 4000;
/** Quiet p50 and p90 beside the noise, over the same alone: the test's bounds (see above). */
const P50_BOUND = 15;
const P90_BOUND = 60;

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(p * s.length))]!;
}

/** Upload a distinct 16 KiB file, then look up a known hash, every 20 ms: each verdict's latency. */
async function quiet(a: RawAgent, ms: number, known: { sha256: string; size: number }, ids: { n: number }) {
  const lat: number[] = [];
  const errors: string[] = [];
  const end = performance.now() + ms;
  while (performance.now() < end) {
    let t = performance.now();
    sendUpload(a, ++ids.n, crypto.randomBytes(16 << 10));
    let v = await a.verdict(ids.n, 30_000);
    if (v.verdict === 'error') errors.push(v.code ?? 'error');
    else lat.push(performance.now() - t);
    t = performance.now();
    a.ws.send(encodeMessage({ t: 'lookup', id: ++ids.n, sha256: known.sha256, size: known.size }));
    v = await a.verdict(ids.n, 30_000);
    if (v.verdict === 'error') errors.push(`lookup ${v.code ?? 'error'}`);
    else lat.push(performance.now() - t);
    await new Promise((r) => setTimeout(r, 20));
  }
  return { lat, errors };
}

describe('fair reads: a flooding tenant cannot take the SVM from a quiet one', () => {
  it('20 flooding, 100 stalled and 100 slow uploaders beside a quiet agent of another tenant', { timeout: 240_000 }, async () => {
    const dir = tempDir('la-fair-');
    const cfg = path.join(dir, 'svm.yaml');
    const fair = process.env.LA_TEST_FAIR_READ_BYTES || undefined;
    fs.writeFileSync(
      cfg,
      `${fair === undefined ? '' : `fair_read_bytes: ${Number(fair)}\n`}tokens:\n  - {tenant: noisy, token: ${NOISY}}\n  - {tenant: quiet, token: ${QUIET}}\n`,
    );
    // spawnNode: the SVM as it ships, with its V8 flags (they decide how long a flood's collections pause it).
    const svm = spawnNode(SVM_CLI, ['--config', cfg, '--listen', '127.0.0.1:0', '--json', '--log-level', 'error'], { watchdogMs: 200_000 });
    let noise: ReturnType<typeof spawnWatched> | undefined;
    try {
      const url = (await waitFor(svm, /"url"\s*:\s*"(ws:\/\/[^"]+)"/))[1]!;
      const a = await rawAgent(url, QUIET, true, { generateMask: zeroMask });
      await a.next((m) => m.t === 'welcome');
      const known = crypto.randomBytes(16 << 10);
      const ids = { n: 0 };
      sendUpload(a, ++ids.n, known);
      assert.equal((await a.verdict(ids.n)).verdict, 'clean');
      const k = { sha256: crypto.createHash('sha256').update(known).digest('hex'), size: known.length };
      await quiet(a, 1000, k, ids); // warm-up: JIT, connections
      const alone1 = await quiet(a, PHASE_MS, k, ids);

      noise = spawnWatched(process.execPath, [LOAD, url, NOISY, '20', '100', '100', '180000'], { watchdogMs: 200_000 });
      await waitFor(noise, /^ready$/m, 120_000);
      await new Promise((r) => setTimeout(r, 500)); // the noise under way
      const noisy = await quiet(a, PHASE_MS, k, ids);
      const line = waitFor(noise, /^\{.*\}$/m, 30_000);
      noise.child.kill('SIGTERM');
      const codes = JSON.parse((await line)[0]) as Record<string, number>;
      await noise.stop();
      noise = undefined;
      await new Promise((r) => setTimeout(r, 1000));
      const alone2 = await quiet(a, PHASE_MS, k, ids);

      const alone = [...alone1.lat, ...alone2.lat];
      const r = {
        alone: { p50: pct(alone, 0.5), p99: pct(alone, 0.99), n: alone.length },
        noisy: { p50: pct(noisy.lat, 0.5), p99: pct(noisy.lat, 0.99), n: noisy.lat.length },
        noise: codes,
      };
      const ratio = {
        p50: r.noisy.p50 / r.alone.p50,
        p90: pct(noisy.lat, 0.9) / pct(alone, 0.9),
        p99: r.noisy.p99 / r.alone.p99,
      };
      const say = `quiet verdict ms ${JSON.stringify(r)}; ratio p50 ${ratio.p50.toFixed(2)} p90 ${ratio.p90.toFixed(2)} p99 ${ratio.p99.toFixed(2)}`;
      process.stdout.write(`# ${say}\n`);
      assert.deepEqual([...alone1.errors, ...noisy.errors, ...alone2.errors], [], 'the quiet tenant is never refused');
      assert.ok((codes.clean ?? 0) > 100, `the noise was served too (${JSON.stringify(codes)})`);
      assert.ok(ratio.p50 <= P50_BOUND, `p50 beside the noise within ${P50_BOUND}x alone: ${say}`);
      assert.ok(ratio.p90 <= P90_BOUND, `p90 beside the noise within ${P90_BOUND}x alone: ${say}`);
      a.ws.close();
    } finally {
      await noise?.stop();
      await svm.stop();
    }
  });
});
