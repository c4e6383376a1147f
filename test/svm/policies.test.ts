/**
 * Policies on the SVM (docs/policies.md): the `policies:` block is checked with the agent's own
 * validators and every problem is listed with its path; a policy's version is its content hash;
 * groups pick agents by id or host glob; a real SVM sends the policy (feature policy) right after
 * welcome only to agents that listed the feature, and a SIGHUP of a real `lightagent-svm` with a
 * changed policy reaches the connected agents, while a bad one is refused whole.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import YAML from 'yaml';
import { ConfigError } from '../../src/errors.js';
import type { PolicyMsg, SvmMessage } from '../../src/protocol/index.js';
import { loadSvmConfig } from '../../src/svm/config.js';
import { PolicyBook } from '../../src/svm/policies.js';
import { SVM_CLI, spawnNode, tempDir, waitFor } from '../helpers/procs.js';
import { rawAgent, startTestSvm, TOKEN } from './helpers.js';
import { api, eventuallyAsync } from './inventory-helpers.js';

function writeConfig(doc: unknown): string {
  const file = path.join(tempDir('la-svm-policy-'), 'svm.yaml');
  fs.writeFileSync(file, YAML.stringify(doc));
  return file;
}

/** A raw agent that says hello with `features` and collects what the SVM sends. */
async function agentWith(url: string, features: string[], agentId = 'agent-1', host = 'web-01') {
  const a = await rawAgent(url, TOKEN, false);
  a.ws.send(JSON.stringify({ t: 'hello', v: 1, agentId, token: TOKEN, host, os: 'linux', agentVersion: '0', features }));
  await a.next((m) => m.t === 'welcome');
  return a;
}
const policies = (msgs: SvmMessage[]) => msgs.filter((m): m is PolicyMsg => m.t === 'policy');

describe('SVM policies: the config', () => {
  it('a bad policies block refuses the config with every problem listed, each with its path', () => {
    const file = writeConfig({
      tokens: [{ tenant: 'acme', token: 'acme-token-123' }],
      policies: {
        acme: {
          deadline: 'soon',
          on_svm_unavailable: 'maybe',
          max_file_size: '12 parsecs',
          exclude: { paths: ['/srv/cache/**', 'relative/path', '/a/../b'], extensions: ['*.log'] },
          on_detect: 'kill',
          scan_schedule: { every: '10s', at: '25:00' },
          protect: ['/'],
          groups: [
            { name: 'build', deadline: 'x' },
            { name: 'bad name!', hosts: ['b*'] },
          ],
        },
      },
    });
    let err: ConfigError | undefined;
    try {
      loadSvmConfig({ file, env: {} });
    } catch (e) {
      err = e as ConfigError;
    }
    assert.ok(err instanceof ConfigError, 'refused');
    assert.equal(err.code, 'LA_ERR_CONFIG');
    const want = [
      'policies.acme.deadline: "soon" is not a duration',
      'policies.acme.on_svm_unavailable:',
      'policies.acme.max_file_size: "12 parsecs" is not a size',
      'policies.acme.exclude.paths.1: "relative/path" must be an absolute path',
      'policies.acme.exclude.paths.2: "/a/../b" must be a normalized path',
      'policies.acme.exclude.extensions.0: "*.log" is not a file extension',
      'policies.acme.on_detect:',
      // The agent's own scan_schedule validator (src/config/scan-schedule.ts): one validator, both sides.
      'policies.acme.scan_schedule.every: must be between 1h and 31d',
      'policies.acme.scan_schedule.at: must be a local time HH:MM',
      'policies.acme.scan_schedule.at: goes with an `every` of whole days',
      'policies.acme: Unrecognized key: "protect"',
      'policies.acme.groups.0.deadline: "x" is not a duration',
      'policies.acme.groups.0: a group chooses its members',
      'policies.acme.groups.1.name: a policy or group name',
    ];
    for (const w of want)
      assert.ok(
        err.issues.some((i) => i.startsWith(w)),
        `listed: ${w}\n${err.issues.join('\n')}`,
      );
    assert.equal(err.issues.length, want.length, err.issues.join('\n'));
    assert.match(err.message, new RegExp(file.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')), 'the error names the file');
  });

  it('a policy for a tenant no token names is refused', () => {
    const file = writeConfig({ tokens: [{ tenant: 'acme', token: 'acme-token-123' }], policies: { acmee: { deadline: '3s' } } });
    assert.throws(
      () => loadSvmConfig({ file, env: {} }),
      (e: unknown) => e instanceof ConfigError && e.issues.some((i) => i.startsWith('policies.acmee: no token of tenant acmee')),
    );
  });

  it('keeps settings as written; versions are content hashes; groups by agent id, then host glob, else the tenant policy', () => {
    const doc = {
      tokens: [{ tenant: 'acme', token: 'acme-token-123' }],
      policies: {
        acme: {
          name: 'standard',
          deadline: '3s',
          exclude: ['/srv/cache'],
          groups: [
            { name: 'pinned', agents: ['agent-7'], deadline: '9s' },
            { name: 'build', hosts: ['BUILD-??', 'ci-*'], on_svm_unavailable: 'deny' },
          ],
        },
      },
    };
    const cfg = loadSvmConfig({ file: writeConfig(doc), env: {} });
    const book = new PolicyBook(cfg.policies);
    const base = book.resolve('acme', 'agent-1', 'web-01')!;
    assert.deepEqual(base.settings, { deadline: '3s', exclude: ['/srv/cache'] }, 'as written, for the agent to validate');
    assert.equal(base.name, 'standard');
    assert.match(base.version, /^[0-9a-f]{16}$/);
    const build = book.resolve('acme', 'agent-2', 'build-12')!;
    assert.equal(build.name, 'standard/build');
    assert.deepEqual(build.settings, { deadline: '3s', exclude: ['/srv/cache'], on_svm_unavailable: 'deny' });
    assert.equal(book.resolve('acme', 'agent-3', 'ci-runner')!.name, 'standard/build');
    assert.equal(book.resolve('acme', 'agent-3', 'build-123')!.name, 'standard', '?? is exactly two characters');
    assert.equal(book.resolve('acme', 'agent-7', 'build-12')!.name, 'standard/pinned', 'the first group that lists it');
    assert.equal(book.resolve('other', 'agent-1', 'web-01'), undefined);
    // Same content in another key order: same version; any change: another.
    const reordered = new PolicyBook({ acme: { exclude: ['/srv/cache'], deadline: '3s', name: 'standard' } });
    assert.equal(reordered.resolve('acme', 'x', 'y')!.version, base.version);
    const changed = new PolicyBook({ acme: { name: 'standard', deadline: '4s', exclude: ['/srv/cache'] } });
    assert.notEqual(changed.resolve('acme', 'x', 'y')!.version, base.version);
    // Host globs are matched in linear time, whatever the guest calls itself.
    const slow = new PolicyBook({ acme: { groups: [{ name: 'g', hosts: ['*a*a*a*a*a*a*a*a*a*a*a*b'], deadline: 1 }] } });
    const t0 = performance.now();
    assert.equal(slow.resolve('acme', 'x', 'a'.repeat(255))!.name, 'acme');
    assert.ok(performance.now() - t0 < 100, 'no backtracking');
  });
});

describe('SVM policies: sent to agents (feature policy)', () => {
  it('after welcome to an agent that listed the feature; never to one that did not; a reload sends only changes', async () => {
    const s = await startTestSvm({
      tokens: [{ tenant: 'a', token: TOKEN }],
      policies: { a: { deadline: '3s', groups: [{ name: 'build', hosts: ['build-*'], deadline: '10s' }] } },
    });
    try {
      const modern = await agentWith(s.url, ['policy'], 'agent-1', 'web-01');
      const builder = await agentWith(s.url, ['policy', 'state-report'], 'agent-2', 'build-01');
      const old = await agentWith(s.url, ['state-report'], 'agent-3', 'web-02');
      const p1 = (await modern.next((m) => m.t === 'policy')) as PolicyMsg;
      assert.deepEqual(p1.settings, { deadline: '3s' });
      assert.equal(p1.name, 'a');
      const p2 = (await builder.next((m) => m.t === 'policy')) as PolicyMsg;
      assert.equal(p2.name, 'a/build');
      assert.deepEqual(p2.settings, { deadline: '10s' });
      // A change of the group only: the builder hears it, the other agent does not.
      const changes: string[] = [];
      const off = s.core.events.subscribe((e) => e.kind === 'policy' && changes.push(`${e.change} ${e.policy} ${e.version}`));
      const r = s.reloadPolicies({ a: { deadline: '3s', groups: [{ name: 'build', hosts: ['build-*'], deadline: '20s' }] } });
      off();
      assert.equal(r.agentsSent, 1);
      const p3 = (await builder.next((m) => m.t === 'policy' && m !== p2)) as PolicyMsg;
      assert.deepEqual(p3.settings, { deadline: '20s' });
      assert.notEqual(p3.version, p2.version);
      assert.deepEqual(changes, [`set a/build ${p3.version}`], 'an event for the group that changed only');
      // The tenant's policy removed: the layer is cleared with an empty name. An event per policy.
      const events: string[] = [];
      const stop = s.core.events.subscribe((e) => e.kind === 'policy' && events.push(`${e.change} ${e.policy}`));
      s.reloadPolicies({});
      stop();
      const cleared = (await modern.next((m) => m.t === 'policy' && m !== p1)) as PolicyMsg;
      assert.deepEqual(cleared, { t: 'policy', name: '', version: '', settings: {} });
      assert.deepEqual(events, ['removed a', 'removed a/build']);
      await new Promise((res) => setTimeout(res, 300));
      assert.equal(policies(old.msgs).length, 0, 'an agent without the feature never gets a policy frame');
      assert.equal(policies(modern.msgs).length, 2);
      for (const a of [modern, builder, old]) a.ws.close();
    } finally {
      await s.close();
    }
  });

  it('SIGHUP of lightagent-svm: a changed policy reaches the connected agent; a bad one is refused whole, listing its problems', async () => {
    const doc = (deadline: unknown) => ({
      listen: '127.0.0.1:0',
      tokens: [{ tenant: 'a', token: TOKEN }],
      policies: { a: { name: 'fleet', deadline } },
    });
    const file = writeConfig(doc('3s'));
    const svm = spawnNode(SVM_CLI, ['--config', file, '--json'], { watchdogMs: 60_000 });
    try {
      const url = (await waitFor(svm, /"url"\s*:\s*"(ws:\/\/[^"]+)"/))[1]!;
      const a = await agentWith(url, ['policy']);
      const first = (await a.next((m) => m.t === 'policy')) as PolicyMsg;
      assert.deepEqual(first.settings, { deadline: '3s' });
      fs.writeFileSync(file, YAML.stringify(doc('5s')));
      svm.child.kill('SIGHUP');
      const second = (await a.next((m) => m.t === 'policy' && m !== first, 10_000)) as PolicyMsg;
      assert.deepEqual(second.settings, { deadline: '5s' });
      assert.equal(second.name, 'fleet');
      await waitFor(svm, /"agentsSent":1/);
      // A bad policy: the whole reload is refused, the problems named; the agents keep what they run.
      fs.writeFileSync(file, YAML.stringify({ ...doc('later'), policies: { a: { name: 'fleet', deadline: 'later', on_detect: 'nuke' } } }));
      svm.child.kill('SIGHUP');
      await waitFor(svm, /reload of the configuration \(tokens, policies, TLS\) failed/);
      const out = svm.output();
      assert.match(out, /policies\.a\.deadline: "later" is not a duration/);
      assert.match(out, /policies\.a\.on_detect:/);
      await new Promise((res) => setTimeout(res, 500));
      assert.equal(policies(a.msgs).length, 2, 'nothing sent for a refused config');
      a.ws.close();
    } finally {
      await svm.stop();
    }
  });

  it('GET /api/policies: admin sees all, a viewer its tenant only; agent rows say whether they run the current policy', async () => {
    const ADMIN = 'admin-token-0123456789';
    const VIEWER = 'viewer-b-token-0123456789';
    const s = await startTestSvm({
      tokens: [
        { tenant: 'a', token: TOKEN },
        { tenant: 'b', token: 'tenant-b-token' },
      ],
      adminTokens: [
        { token: ADMIN, role: 'admin' },
        { token: VIEWER, role: 'viewer', tenant: 'b' },
      ],
      policies: {
        a: { deadline: '3s', groups: [{ name: 'g', agents: ['agent-2'], deadline: '5s' }] },
        b: { name: 'desk', on_detect: 'deny' },
      },
    });
    try {
      const all = await api(s.httpUrl, '/api/policies', ADMIN);
      assert.equal(all.status, 200);
      assert.deepEqual(
        all.body.policies.map((p: { tenant: string; name: string; group: string | null }) => [p.tenant, p.name, p.group]),
        [
          ['a', 'a', null],
          ['a', 'a/g', 'g'],
          ['b', 'desk', null],
        ],
      );
      assert.deepEqual(all.body.policies[1].settings, { deadline: '5s' });
      const mine = await api(s.httpUrl, '/api/policies', VIEWER);
      assert.deepEqual(
        mine.body.policies.map((p: { name: string }) => p.name),
        ['desk'],
      );
      assert.deepEqual((await api(s.httpUrl, '/api/policies?tenant=a', VIEWER)).body.policies, [], "another tenant's: nothing");
      assert.equal((await api(s.httpUrl, '/api/policies?tenant=a', ADMIN)).body.policies.length, 2);
      assert.equal((await api(s.httpUrl, '/api/policies?tenant=%3Cx%3E', ADMIN)).status, 400);
      // An agent that reports the policy it was sent is current; one that reports an older one is not.
      const sent = s.core.policies.resolve('a', 'agent-1', 'web-01')!;
      const report = (policy?: { name: string; version: string }) =>
        JSON.stringify({
          t: 'state',
          mode: 'fanotify',
          state: 'protected',
          reasons: [],
          since: new Date().toISOString(),
          agentVersion: '0',
          os: 'linux',
          cache: { entries: 0, hits: 0, misses: 0 },
          deferred: 0,
          detections: 0,
          ...(policy ? { policy } : {}),
        });
      const one = await agentWith(s.url, ['policy', 'state-report'], 'agent-1', 'web-01');
      const two = await agentWith(s.url, ['policy', 'state-report'], 'agent-2', 'web-02');
      one.ws.send(report({ name: sent.name, version: sent.version }));
      two.ws.send(report({ name: 'a', version: sent.version }));
      const rows = await eventuallyAsync(async () => {
        const x = await api(s.httpUrl, '/api/agents', ADMIN);
        return x.body?.agents?.length === 2 && x.body.agents.every((r: { policy: unknown }) => r.policy) ? x.body.agents : undefined;
      });
      const by = (id: string) => rows.find((r: { agentId: string }) => r.agentId === id);
      assert.equal(by('agent-1').policyCurrent, true);
      assert.deepEqual(by('agent-1').policyExpected, { name: 'a', version: sent.version });
      assert.equal(by('agent-2').policyCurrent, false, 'agent-2 belongs to group g');
      assert.equal(by('agent-2').policyExpected.name, 'a/g');
      one.ws.close();
      two.ws.close();
    } finally {
      await s.close();
    }
  });
});
