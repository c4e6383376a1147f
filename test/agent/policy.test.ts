/**
 * Policies applied by a real agent (`lightagent run`, fanotify as root on a tmpfs made here) from
 * a real SVM (port 0, feature policy; docs/policies.md): the central exclusion and deadline take
 * effect (an excluded EICAR file opens, another is denied), status says where each central key
 * came from and the inventory shows the policy; a reload on the SVM reaches the agent; a key in
 * `local_keys` keeps the file's value; a policy the agent refuses leaves the settings in force
 * (an EICAR file is still denied) and is reported as `policy-refused`; a restart without the SVM
 * runs the saved policy.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { DaemonStatus } from '../../src/agent/daemon.js';
import YAML from 'yaml';
import { PolicyBook } from '../../src/svm/policies.js';
import { startAgent, type Agent } from '../helpers/agent.js';
import { CLI, EICAR, eventually, needRoot, run, scratchMount, spawnNode, SVM_CLI, tempDir, waitFor, type Proc } from '../helpers/procs.js';
import { api, eventuallyAsync } from '../svm/inventory-helpers.js';

const ADMIN = 'admin-token-0123456789';
const skip = needRoot();

describe('agent: policies from the SVM (fanotify)', { skip }, () => {
  // Its own process: `cat` below blocks this one's event loop while the gate asks the SVM.
  let svm: Proc;
  let svmUrl: string;
  let httpUrl: string;
  let svmConfig: string;
  let reloads = 0;
  let current: Record<string, unknown>;
  let agent: Agent;
  let mnt: ReturnType<typeof scratchMount>;
  let stateDir: string;
  let skipDir: string;
  const policy = (settings: Record<string, unknown>) => ({ acme: { name: 'fleet', ...settings } });
  const version = () => new PolicyBook(current).list('acme')[0]!.version;
  const writeSvmConfig = (policies: Record<string, unknown>) => {
    current = policies;
    fs.writeFileSync(
      svmConfig,
      YAML.stringify({ listen: '127.0.0.1:0', tokens: [{ tenant: 'acme', token: 'test-token' }], admin_tokens: [ADMIN], policies }),
    );
  };
  /** Rewrite the SVM's config and SIGHUP it, as an admin would. */
  const reloadSvm = async (policies: Record<string, unknown>) => {
    writeSvmConfig(policies);
    svm.child.kill('SIGHUP');
    reloads++;
    await eventually(() => (svm.output().match(/"event":"reloaded"/g) ?? []).length >= reloads, 20_000, `SVM reload ${reloads}`);
  };
  const status = () => agent.status();
  const until = (pred: (s: DaemonStatus) => boolean, what: string) =>
    eventuallyAsync(
      async () => {
        const s = await status();
        return pred(s) ? s : undefined;
      },
      15_000,
      what,
    );
  /** Refused by the gate (not a file gone missing). */
  const denied = (f: string) => {
    const r = run('cat', [f]);
    assert.match(r.stderr, /Operation not permitted/, `${f}: status ${r.status}`);
    return r.status !== 0;
  };

  before(async () => {
    mnt = scratchMount();
    skipDir = path.join(mnt.dir, 'skip');
    fs.mkdirSync(skipDir);
    // There before the agent: no close-write scan quarantines them behind the test's back; the
    // first open of each is judged by the gate.
    for (const f of ['skip/eicar.com', 'eicar.com', 'skip/eicar2.com', 'eicar3.com']) fs.writeFileSync(path.join(mnt.dir, f), EICAR);
    svmConfig = path.join(tempDir('la-svm-'), 'svm.yaml');
    writeSvmConfig(policy({ deadline: '3s', exclude: { paths: [skipDir] } }));
    svm = spawnNode(SVM_CLI, ['--config', svmConfig, '--json'], { watchdogMs: 170_000 });
    svmUrl = (await waitFor(svm, /"url"\s*:\s*"(ws:\/\/[^"]+)"/))[1]!;
    httpUrl = svmUrl.replace(/^ws/, 'http');
    stateDir = tempDir('la-state-');
    agent = await startAgent({
      svm: svmUrl,
      protect: mnt.dir,
      stateDir,
      mode: 'fanotify',
      settings: { deadline: '1s' },
      watchdogMs: 170_000,
    });
  });
  after(async () => {
    await agent?.stop();
    await svm?.stop();
    mnt?.unmount();
  });

  it('applies the central exclusion and deadline; status says where each key came from; the inventory shows the policy', async () => {
    const s = await until((x) => x.policy?.version === version(), 'the policy applied');
    assert.equal(s.policy!.name, 'fleet');
    assert.equal(s.policy!.source, 'svm');
    assert.equal(s.policy!.keys.exclude, 'central');
    assert.equal(s.policy!.keys.deadline, 'central');
    assert.equal(s.policy!.keys.on_detect, 'local');
    assert.equal(s.policy!.keys.scan_schedule, 'local');
    assert.equal(s.policy!.values.deadline, 3000, "central wins over the file's 1s");
    assert.deepEqual(s.exclusions.paths, [skipDir]);
    const text = run(process.execPath, [CLI, 'status', '--socket-dir', agent.socketDir]).stdout;
    assert.match(text, new RegExp(`policy: +fleet version ${version()} \\(from the SVM\\)`));
    assert.match(text, /settings: +central exclude, deadline; the rest local/);
    const r = run('cat', [path.join(skipDir, 'eicar.com')]);
    assert.equal(r.status, 0, `the excluded file opens: ${r.stderr}`);
    assert.ok(denied(path.join(mnt.dir, 'eicar.com')), 'the other is denied');
    const row = await eventuallyAsync(
      async () => {
        const x = await api(httpUrl, '/api/agents', ADMIN);
        const a = x.body?.agents?.[0];
        return a?.policy?.version === version() ? a : undefined;
      },
      10_000,
      'the inventory row with the policy',
    );
    assert.equal(row.policy.name, 'fleet');
  });

  it('a reload of the policies on the SVM reaches the agent: the exclusion goes, the deadline changes', async () => {
    await reloadSvm(policy({ deadline: '4s', on_detect: 'deny-and-kill', scan_schedule: { every: '1d', at: '02:30' } }));
    const s = await until((x) => x.policy?.version === version(), 'the new policy');
    assert.equal(s.policy!.values.deadline, 4000);
    assert.equal(s.policy!.values.on_detect, 'deny-and-kill');
    assert.equal(s.policy!.keys.scan_schedule, 'central', 'the central scan schedule is in force (docs/scans.md)');
    assert.equal(s.policy!.keys.exclude, 'local');
    assert.deepEqual(s.exclusions.paths, []);
    assert.ok(denied(path.join(skipDir, 'eicar2.com')), 'no longer excluded');
  });

  it('a key listed in local_keys keeps the local value (after a local SIGHUP, the central layer goes over the file again)', async () => {
    agent.reconfigure({ deadline: '1500ms', local_keys: ['deadline'] });
    agent.child.kill('SIGHUP');
    const s = await until((x) => x.policy?.keys.deadline === 'local_keys', 'local_keys in force');
    assert.equal(s.policy!.values.deadline, 1500);
    assert.equal(s.policy!.version, version(), 'the policy stays in force for its other keys');
    // Without local_keys the central value comes back at the next local reload.
    agent.reconfigure({ deadline: '1500ms' });
    agent.child.kill('SIGHUP');
    const t = await until((x) => x.policy?.keys.deadline === 'central', 'central again');
    assert.equal(t.policy!.values.deadline, 4000);
  });

  it('a policy the agent refuses (it would exclude the protected mount) leaves protection as it was, reported policy-refused', async () => {
    const before = version();
    await reloadSvm(policy({ deadline: '9s', exclude: { paths: [`${mnt.dir}/**`] } }));
    const s = await until((x) => x.policy?.refused !== undefined, 'the refusal');
    assert.match(s.policy!.refused!.reason, /would exclude a protected path whole/);
    assert.equal(s.policy!.version, before, 'the policy in force stays');
    assert.equal(s.policy!.values.deadline, 4000);
    assert.deepEqual(s.exclusions.paths, []);
    assert.equal(s.mode, 'fanotify');
    assert.ok(denied(path.join(mnt.dir, 'eicar3.com')), 'still denied under fanotify');
    assert.match(agent.logs(), /LA_ERR_POLICY_REFUSED/);
    assert.match(
      run(process.execPath, [CLI, 'status', '--socket-dir', agent.socketDir]).stdout,
      /REFUSED: +fleet version [0-9a-f]{16} at .*would exclude/,
    );
    const row = await eventuallyAsync(
      async () => {
        const x = await api(httpUrl, '/api/agents', ADMIN);
        const a = x.body?.agents?.[0];
        return a?.reasons?.includes('policy-refused') ? a : undefined;
      },
      10_000,
      'policy-refused in the inventory',
    );
    assert.equal(row.policy.version, before);
  });

  it('a restart without the SVM runs the saved policy', async () => {
    await reloadSvm(policy({ deadline: '3s', exclude: { paths: [skipDir] } }));
    const applied = await until((x) => x.policy?.version === version() && !x.policy.refused, 'the good policy again');
    assert.ok(fs.existsSync(path.join(stateDir, 'policy.json')));
    await agent.stop();
    await svm.stop();
    agent = await startAgent({ svm: svmUrl, protect: mnt.dir, stateDir, mode: 'fanotify', settings: { deadline: '1s' } });
    const s = await status();
    assert.equal(s.policy!.source, 'saved');
    assert.equal(s.policy!.version, applied.policy!.version);
    assert.equal(s.policy!.values.deadline, 3000);
    assert.deepEqual(s.exclusions.paths, [skipDir]);
    // The SVM back with the same policy: it confirms the saved one (nothing re-applied).
    const port = new URL(svmUrl).port;
    fs.writeFileSync(svmConfig, fs.readFileSync(svmConfig, 'utf8').replace('127.0.0.1:0', `127.0.0.1:${port}`));
    svm = spawnNode(SVM_CLI, ['--config', svmConfig, '--json'], { watchdogMs: 120_000 });
    await waitFor(svm, /"event":"listening"/);
    const back = await until((x) => x.policy?.source === 'svm', 'the SVM confirms the saved policy');
    assert.equal(back.policy!.version, applied.policy!.version);
    assert.equal(back.reloads, s.reloads, 'no reload for the same policy');
  });
});
