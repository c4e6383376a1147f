/**
 * The agent's checks of a policy and the merge with its file (src/agent/policy-layer.ts,
 * src/config/policy.ts), without a daemon: every problem listed, a policy that would exclude a
 * protected path whole refused (POSIX and Windows paths), the version checked against the
 * content, central over local except local_keys, keys this agent does not know left alone, and
 * the saved copy checked again at start (a tampered file is ignored).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { PolicyLayer, PolicyRefusedError } from '../../src/agent/policy-layer.js';
import { agentConfigSchema } from '../../src/config/agent.js';
import { mergePolicy, policyVersion } from '../../src/config/policy.js';
import type { PolicyMsg } from '../../src/protocol/index.js';
import { tempDir } from '../helpers/procs.js';

const local = agentConfigSchema.parse({ deadline: '1s', exclude: ['/srv/local'], local_keys: ['on_detect'] });
const msg = (settings: Record<string, unknown>, name = 'fleet'): PolicyMsg => ({
  t: 'policy',
  name,
  version: policyVersion(name, settings),
  settings,
});
const refusal = (layer: PolicyLayer, m: PolicyMsg, protect: string[]) => {
  try {
    layer.check(m, protect);
  } catch (e) {
    assert.ok(e instanceof PolicyRefusedError);
    assert.equal(e.code, 'LA_ERR_POLICY_REFUSED');
    return e.message;
  }
  return undefined;
};

describe('agent policy layer', () => {
  it('lists every problem of a policy, with the key paths of the agent config', () => {
    const layer = new PolicyLayer(tempDir('la-pol-'), local);
    const why = refusal(layer, msg({ deadline: 'soon', on_detect: 'nuke', exclude: { paths: ['rel'] } }), ['/srv']);
    assert.ok(why);
    assert.match(why, /deadline: "soon" is not a duration/);
    assert.match(why, /on_detect: /);
    assert.match(why, /exclude\.paths\.0: "rel" must be an absolute path/);
    const forged = { ...msg({ deadline: '3s' }), version: '0123456789abcdef' };
    assert.match(refusal(layer, forged, ['/srv'])!, /does not match the settings/);
  });

  it('refuses a policy that would exclude a protected path whole, and only that', () => {
    const layer = new PolicyLayer(tempDir('la-pol-'), local);
    for (const [p, protect] of [
      ['/', ['/srv/data']],
      ['/**', ['/srv/data']],
      ['/srv', ['/srv/data']],
      ['/srv/**', ['/srv/data']],
      ['/srv/data/', ['/srv/data']],
      ['/**', []],
      ['C:\\**', ['C:\\Users']],
      ['c:\\users', ['C:\\Users']],
    ] as const)
      assert.match(refusal(layer, msg({ exclude: { paths: [p] } }), [...protect]) ?? '', /would exclude a protected path whole/, p);
    for (const [p, protect] of [
      ['/srv/data/cache', ['/srv/data']],
      ['/srv/other', ['/srv/data']],
      ['C:\\Users\\ann\\cache', ['C:\\Users']],
    ] as const)
      assert.equal(refusal(layer, msg({ exclude: { paths: [p] } }), [...protect]), undefined, p);
  });

  it('central wins unless local_keys; keys the policy leaves out stay local; scan_schedule is applied', () => {
    const m = mergePolicy(local, {
      deadline: 3000,
      on_detect: 'deny-and-kill',
      exclude: { paths: ['/srv/central'], extensions: [], processes: [], sha256: [], threats: [] },
      scan_schedule: { every: 86_400_000 },
    });
    assert.equal(m.config.deadline, 3000);
    assert.deepEqual(m.config.exclude.paths, ['/srv/central'], 'a key is taken whole');
    assert.equal(m.config.on_detect, 'deny', 'kept by local_keys');
    assert.equal(m.config.on_svm_unavailable, 'allow');
    assert.deepEqual(m.config.scan_schedule, { every: 86_400_000 }, 'the agent knows scan_schedule (docs/scans.md)');
    assert.deepEqual(m.sources, {
      exclude: 'central',
      on_svm_unavailable: 'local',
      deadline: 'central',
      max_file_size: 'local',
      on_detect: 'local_keys',
      scan_schedule: 'central',
    });
  });

  it('keeps the applied policy in the state dir (0600); a tampered copy is ignored at start', () => {
    const dir = tempDir('la-pol-');
    const layer = new PolicyLayer(dir, local);
    const m = msg({ deadline: '3s' });
    layer.commit(layer.check(m, ['/srv']), local);
    const file = path.join(dir, 'policy.json');
    assert.equal(fs.statSync(file).mode & 0o777, 0o600);
    const again = new PolicyLayer(dir, local);
    assert.deepEqual(again.loadSaved(local, ['/srv']), { deadline: 3000 });
    assert.equal(again.status(local).source, 'saved');
    assert.equal(again.status(local).version, m.version);
    const doc = JSON.parse(fs.readFileSync(file, 'utf8')) as { settings: Record<string, unknown> };
    doc.settings.deadline = '1ms';
    fs.writeFileSync(file, JSON.stringify(doc));
    const tampered = new PolicyLayer(dir, local);
    assert.equal(tampered.loadSaved(local, ['/srv']), undefined);
    assert.equal(tampered.status(local).source, 'none');
    // No policy any more: the layer and the file go.
    layer.commit(undefined, local);
    assert.equal(fs.existsSync(file), false);
  });
});
