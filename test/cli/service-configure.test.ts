/**
 * `lightagent service configure`, the MSI's WriteConfig custom action (installers/windows/lightagent.wxs),
 * run here on the compiled sources: it is plain file work (icacls only runs on Windows). The MSI
 * path itself runs under Wine in test/windows.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import YAML from 'yaml';
import { CLI, run, tempDir } from '../helpers/procs.js';

const dir = tempDir('la-configure-');
after(() => fs.rmSync(dir, { recursive: true, force: true }));

/** What the MSI runs: every property passed, empty when not given on the msiexec command line. */
function configure(file: string, p: { svm?: string; token?: string; protect?: string; failClosed?: string } = {}) {
  return run(
    process.execPath,
    [
      CLI,
      'service',
      'configure',
      '--config',
      file,
      '--svm',
      p.svm ?? '',
      '--token',
      p.token ?? '',
      '--ca',
      '',
      '--fail-closed',
      p.failClosed ?? '',
      '--protect',
      p.protect ?? '',
    ],
    30_000,
  );
}

describe('service configure', () => {
  it('refuses a config with no SVM and no token (the MSI then rolls back), naming the MSI properties, and writes nothing', () => {
    const file = path.join(dir, 'none', 'agent.yaml');
    const r = configure(file);
    assert.equal(r.status, 2, r.stdout + r.stderr);
    assert.match(r.stderr, /LA_ERR_CONFIG/);
    assert.match(r.stderr, /svm: no SVM; give the MSI SVM_URL=/);
    assert.match(r.stderr, /token: no tenant token; give the MSI TOKEN=/);
    assert.ok(!fs.existsSync(file), 'no config written');
    assert.ok(!fs.existsSync(`${file}.new`), 'no temporary file left');
  });

  it('refuses a token without an SVM (and the reverse), and leaves an existing file as it was', () => {
    const file = path.join(dir, 'half', 'agent.yaml');
    const r1 = configure(file, { token: 'tok' });
    assert.equal(r1.status, 2);
    assert.match(r1.stderr, /svm: no SVM/);
    assert.doesNotMatch(r1.stderr, /token:/);
    const r2 = configure(file, { svm: 'wss://svm.example:7443' });
    assert.equal(r2.status, 2);
    assert.match(r2.stderr, /token: no tenant token/);
    assert.ok(!fs.existsSync(file));
  });

  it('writes a first install from the properties, then keeps it on an upgrade that passes none', () => {
    const file = path.join(dir, 'upgrade', 'agent.yaml');
    const first = configure(file, { svm: 'wss://svm.example:7443', token: 'tok-1', protect: '/srv/a; /srv/b', failClosed: '1' });
    assert.equal(first.status, 0, first.stderr);
    const written = YAML.parse(fs.readFileSync(file, 'utf8'));
    assert.equal(written.svm, 'wss://svm.example:7443');
    assert.equal(written.token, 'tok-1');
    assert.deepEqual(written.protect, ['/srv/a', '/srv/b']);
    assert.equal(written.on_svm_unavailable, 'deny');
    assert.equal(fs.statSync(file).mode & 0o777, 0o600, 'the file holds the token: owner only');
    const upgrade = configure(file);
    assert.equal(upgrade.status, 0, upgrade.stderr);
    assert.deepEqual(YAML.parse(fs.readFileSync(file, 'utf8')), written, 'empty properties keep what the file has');
  });

  it('an SVM found by discovery (svm_discovery in the file) is enough', () => {
    const file = path.join(dir, 'discovery', 'agent.yaml');
    fs.mkdirSync(path.dirname(file));
    fs.writeFileSync(file, 'svm_discovery: https://discovery.example/svms\n');
    const r = configure(file, { token: 'tok' });
    assert.equal(r.status, 0, r.stderr);
    const written = YAML.parse(fs.readFileSync(file, 'utf8'));
    assert.equal(written.svm_discovery, 'https://discovery.example/svms');
    assert.equal(written.token, 'tok');
  });
});
