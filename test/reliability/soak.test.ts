/**
 * Soak (opt-in: LIGHTAGENT_SOAK=1; LIGHTAGENT_SOAK_MINUTES, default 10): a real fanotify agent
 * under a mixed load (opens, rewrites, execs, new EICAR files) while the SVM is SIGKILLed and
 * restarted on the same port every fifth of the run. The agent's RSS is sampled every 10 s.
 * Promises: zero hung operations, bounded RSS (no growth trend), every EICAR file written during
 * the run ends in quarantine (nothing lost across SVM restarts).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { eventually, isRoot, restartSvmProcess, scratchMount, spawnNode, startSvmProcess, tempDir, waitFor } from '../helpers/procs.js';
import { quarantineList as quarantined, startAgent, type StartAgentOptions } from '../helpers/agent.js';

/** The reliability tests' agent: fanotify, with a longer watchdog than most (they load it). */
const fanotifyAgent = (svm: string, protect: string, stateDir: string, o: Omit<StartAgentOptions, 'svm' | 'protect' | 'stateDir'> = {}) =>
  startAgent({ svm, protect, stateDir, mode: 'fanotify', watchdogMs: 240_000, ...o });

const enabled = process.env.LIGHTAGENT_SOAK === '1';
const minutes = Number(process.env.LIGHTAGENT_SOAK_MINUTES ?? 10);
const skip = !enabled
  ? 'soak is opt-in: LIGHTAGENT_SOAK=1 (LIGHTAGENT_SOAK_MINUTES=10 by default)'
  : !isRoot
    ? 'the soak needs root (fanotify)'
    : undefined;

function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? NaN;
};

describe('soak', { skip }, () => {
  it(
    `${minutes} min of mixed opens, writes, execs and SVM restarts: zero hung operations, bounded agent RSS, no detection lost`,
    { timeout: (minutes + 5) * 60_000 },
    async (t) => {
      const seconds = Math.round(minutes * 60);
      let svm = await startSvmProcess();
      const port = svm.port;
      const mnt = scratchMount('la-soak-');
      const stateDir = tempDir('la-soak-state-');
      const logFile = path.join(stateDir, '..', `la-soak-${process.pid}.log`);
      const agent = await fanotifyAgent(svm.url, mnt.dir, stateDir, {
        args: ['--deadline', '1s', '--log-file', logFile],
        watchdogMs: (seconds + 240) * 1000,
      });
      const samples: Array<{ s: number; rss: number }> = [];
      const t0 = Date.now();
      let restarts = 0;
      try {
        const load = spawnNode(new URL('./fixtures/soak-load.js', import.meta.url).pathname, [mnt.dir, String(seconds)], {
          watchdogMs: (seconds + 120) * 1000,
        });
        const sampler = setInterval(() => samples.push({ s: Math.round((Date.now() - t0) / 1000), rss: rssMiB(agent.pid) }), 10_000);
        const restartEvery = Math.max(20_000, (seconds * 1000) / 5);
        let restarting: Promise<void> = Promise.resolve();
        const restarter = setInterval(() => {
          restarting = restarting.then(async () => {
            await svm.stop('SIGKILL');
            await new Promise((r) => setTimeout(r, 1000));
            svm = await restartSvmProcess(port);
            restarts++;
          });
        }, restartEvery);
        let summary: { summary: Record<string, number>; eicarFiles: string[] };
        try {
          const m = await waitFor(load, /\{"summary":.*\}\n/, (seconds + 90) * 1000);
          summary = JSON.parse(m[0]);
        } finally {
          clearInterval(restarter);
          clearInterval(sampler);
          await restarting; // a restart in flight finishes before the SVM is looked at again
        }
        await new Promise((r) => setTimeout(r, 1500));
        if (svm.child.exitCode !== null || svm.child.signalCode !== null) svm = await restartSvmProcess(port);
        const st = summary.summary;
        const third = Math.max(1, Math.floor(samples.length / 3));
        const early = median(samples.slice(1, 1 + third).map((x) => x.rss)); // after the first sample (start-up)
        const late = median(samples.slice(-third).map((x) => x.rss));
        const report = {
          minutes,
          ops: st.ops,
          opens: st.opens,
          writes: st.writes,
          execs: st.execs,
          eicar: st.eicar,
          hung: st.hung,
          failed: st.failed,
          slowestOpMs: Math.round(st.maxMs!),
          over2s: st.over2s,
          svmRestarts: restarts,
          rssMiB: { first: samples[0]?.rss, earlyMedian: early, lateMedian: late, max: Math.max(...samples.map((x) => x.rss)) },
          samples: samples.map((x) => `${x.s}s:${x.rss.toFixed(0)}`).join(' '),
        };
        t.diagnostic(`soak: ${JSON.stringify(report)}`);
        process.stderr.write(`soak summary: ${JSON.stringify(report)}\n`);
        // Every EICAR file written during the run is quarantined once an SVM is there.
        await eventually(() => summary.eicarFiles.every((f) => !fs.existsSync(f)), 120_000, 'every EICAR file to be quarantined').catch(
          (e: Error) => {
            const left = summary.eicarFiles.filter((f) => fs.existsSync(f));
            throw new Error(
              `${e.message}: ${left.length} of ${summary.eicarFiles.length} still in place (${left.slice(0, 3).join(', ')}); see the agent log ${logFile}`,
            );
          },
        );
        const tl = performance.now();
        const q = new Set(quarantined(stateDir, 180_000).map((r) => r.originalPath));
        const listMs = performance.now() - tl;
        const lost = summary.eicarFiles.filter((f) => !q.has(f));
        process.stderr.write(
          `soak: ${summary.eicarFiles.length} EICAR files written, ${summary.eicarFiles.length - lost.length} in quarantine (quarantine list took ${listMs.toFixed(0)} ms)\n`,
        );
        assert.equal(st.hung, 0, 'no operation hung (10 s)');
        assert.ok(restarts >= 2, `SVM restarted ${restarts} times`);
        assert.equal(lost.length, 0, `EICAR files not in quarantine: ${lost.join(', ')}`);
        assert.ok(late - early < Math.max(32, early * 0.25), `RSS grew from ${early.toFixed(0)} to ${late.toFixed(0)} MiB`);
        assert.equal(agent.child.exitCode, null, 'agent still running');
        fs.rmSync(logFile, { force: true }); // kept when the soak fails
      } finally {
        await agent.stop();
        await svm.stop();
        mnt.unmount();
        fs.rmSync(stateDir, { recursive: true, force: true });
      }
    },
  );
});
