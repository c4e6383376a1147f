/**
 * The systemd alternative to `scan_schedule`: installers/systemd/lightagent-scan.{service,timer}
 * pass `systemd-analyze verify`, spread clones with RandomizedDelaySec (stable per machine), and
 * the service's ExecStart, run against a real daemon, starts a scan job there and returns.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startAgent, type Agent } from '../helpers/agent.js';
import { eventuallyAsync } from '../svm/inventory-helpers.js';
import { CLI, inCi, needRoot, run, startSvmProcess, tempDir } from '../helpers/procs.js';
import { ROOT } from './binary.js';

const UNITS = path.join(ROOT, 'installers/systemd');
const hasAnalyze = spawnSync('systemd-analyze', ['--version']).status === 0;

function unit(name: string): string {
  return fs.readFileSync(path.join(UNITS, name), 'utf8');
}

describe('lightagent-scan.timer', () => {
  it('both units pass systemd-analyze verify', { skip: hasAnalyze || inCi ? false : 'no systemd-analyze' }, () => {
    const dir = tempDir('la-units-');
    // verify resolves ExecStart: point it at an executable that exists here.
    const bin = path.join(dir, 'lightagent');
    fs.writeFileSync(bin, '#!/bin/sh\nexit 0\n', { mode: 0o755 });
    for (const f of ['lightagent.service', 'lightagent-scan.service', 'lightagent-scan.timer'])
      fs.writeFileSync(path.join(dir, f), unit(f).replaceAll('/usr/local/bin/lightagent', bin));
    const v = spawnSync('systemd-analyze', ['verify', path.join(dir, 'lightagent-scan.timer'), path.join(dir, 'lightagent-scan.service')], {
      encoding: 'utf8',
      timeout: 30_000,
      cwd: dir,
    });
    assert.equal(v.status, 0, v.stdout + v.stderr);
    assert.equal(v.stderr.trim(), '', 'no warnings');
  });

  it('spreads clones: a randomized delay, fixed per machine, and a missed run caught up once', () => {
    const t = unit('lightagent-scan.timer');
    assert.match(t, /^RandomizedDelaySec=\S+/m);
    assert.match(t, /^FixedRandomDelay=yes$/m);
    assert.match(t, /^Persistent=yes$/m);
    assert.doesNotMatch(unit('lightagent-scan.service'), /^\[Install\]/m, 'only the timer is enabled');
  });

  describe('its ExecStart against a real daemon', { skip: needRoot() }, () => {
    let svm: Awaited<ReturnType<typeof startSvmProcess>>;
    let agent: Agent;
    before(async () => {
      svm = await startSvmProcess();
      const tree = tempDir('la-timer-tree-');
      for (let i = 0; i < 5; i++) fs.writeFileSync(path.join(tree, `f${i}.txt`), `file ${i}\n`);
      agent = await startAgent({ svm: svm.url, protect: tree, mode: 'watcher' });
    });
    after(async () => {
      await agent?.stop();
      await svm?.stop();
    });

    it('asks the daemon for a job and returns at once; the daemon scans', async () => {
      const exec = /^ExecStart=(\S+) (.*)$/m.exec(unit('lightagent-scan.service'))!;
      assert.equal(exec[1], '/usr/local/bin/lightagent');
      const args = exec[2]!.split(' ').map((a) => (a === '/etc/lightagent/agent.yaml' ? agent.configFile : a));
      const r = run(process.execPath, [CLI, ...args], 20_000);
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stdout, /^started job manual-/);
      const s = await eventuallyAsync(
        async () => {
          const st = await agent.status();
          return st.scan?.state === 'done' ? st : undefined;
        },
        20_000,
        'the job to finish',
      );
      assert.equal(s.scan!.counters.scanned, 5);
    });
  });
});
