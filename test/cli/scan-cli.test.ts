/**
 * `lightagent scan` as a user runs it: the compiled CLI against a real SVM process.
 */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { EICAR } from '../helpers/fixtures.js';
import { CLI, run, startSvmProcess, tempDir } from '../helpers/procs.js';

async function metric(port: number, name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  return Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)![1]);
}

describe('lightagent scan', () => {
  let svm: Awaited<ReturnType<typeof startSvmProcess>>;
  const tree = tempDir('la-scan-');
  const copy = `${tree}-copy`;
  const state = tempDir('la-scan-state-');
  before(async () => {
    svm = await startSvmProcess();
    fs.mkdirSync(path.join(tree, 'a/b/c'), { recursive: true });
    for (let i = 0; i < 30; i++) fs.writeFileSync(path.join(tree, `a/f${i}.txt`), crypto.randomBytes(2000 + i));
    fs.writeFileSync(path.join(tree, 'a/b/c/eicar.com'), EICAR);
    fs.writeFileSync(path.join(tree, 'big-with-eicar.bin'), Buffer.concat([crypto.randomBytes(3 << 20), Buffer.from(EICAR)]));
    fs.symlinkSync(tree, path.join(tree, 'a/loop'));
    fs.cpSync(tree, copy, { recursive: true, verbatimSymlinks: true });
  });
  after(async () => {
    await svm.stop();
    for (const d of [tree, copy, state]) fs.rmSync(d, { recursive: true, force: true });
  });

  const scan = (args: string[], env: NodeJS.ProcessEnv = {}) => {
    const r = run(process.execPath, [CLI, 'scan', ...args], 60_000);
    void env;
    return r;
  };

  it('--json: exits 1 and names every infected file, nested and inside a multi-chunk file', () => {
    const r = scan(['--svm', svm.url, '--token', 'test-token', '--json', '--cache-file', path.join(state, 'one/cache.v1'), tree]);
    assert.equal(r.status, 1, r.stderr);
    const doc = JSON.parse(r.stdout);
    const infected = doc.infected.map((i: { path: string }) => path.relative(tree, i.path)).sort();
    assert.deepEqual(infected, ['a/b/c/eicar.com', 'big-with-eicar.bin']);
    assert.equal(doc.infected[0].threat, 'Eicar-Test-Signature');
    assert.equal(doc.files, 32);
    assert.ok(doc.skipped.some((s: { code: string }) => s.code === 'LA_SKIP_SYMLINK'));
  });

  it("the config's exclusions: globs and extensions skipped, an excluded SHA-256 clean, an excluded threat reported (exit 0)", () => {
    const big = crypto
      .createHash('sha256')
      .update(fs.readFileSync(path.join(tree, 'big-with-eicar.bin')))
      .digest('hex');
    const config = path.join(state, 'exclusions.yaml');
    fs.writeFileSync(config, [`exclude:`, `  paths: ["${tree}/a/*.txt"]`, `  extensions: [.COM]`, `  sha256: [${big}]`, ''].join('\n'));
    const args = ['--svm', svm.url, '--token', 'test-token', '--json', '--config', config, '--no-cache', tree];
    const r = scan(args);
    assert.equal(r.status, 0, r.stdout + r.stderr);
    const doc = JSON.parse(r.stdout);
    assert.deepEqual(doc.infected, []);
    assert.equal(doc.clean, 1, 'only big-with-eicar.bin is scanned, and its hash is excluded');
    const excluded = doc.skipped
      .filter((s: { code: string }) => s.code === 'LA_SKIP_EXCLUDED')
      .map((s: { path: string }) => path.relative(tree, s.path));
    assert.equal(excluded.length, 31, '30 *.txt and eicar.com');
    assert.ok(excluded.includes('a/b/c/eicar.com'));
    fs.writeFileSync(config, [`exclude:`, `  threats: [Eicar-*]`, ''].join('\n'));
    const t = scan(args);
    assert.equal(t.status, 0, t.stdout + t.stderr);
    const reported = JSON.parse(t.stdout)
      .reported.map((i: { path: string }) => path.relative(tree, i.path))
      .sort();
    assert.deepEqual(reported, ['a/b/c/eicar.com', 'big-with-eicar.bin']);
  });

  it('a second agent (new process, empty local cache) scanning a copy uploads zero bytes', async () => {
    const before = await metric(svm.port, 'lightagent_svm_bytes_received_total');
    const r = scan(['--svm', svm.url, '--token', 'test-token', '--json', '--cache-file', path.join(state, 'two/cache.v1'), copy]);
    assert.equal(r.status, 1);
    const doc = JSON.parse(r.stdout);
    assert.equal(doc.uploadedBytes, 0);
    assert.equal(await metric(svm.port, 'lightagent_svm_bytes_received_total'), before, 'the SVM received nothing');
  });

  it('the second scan of an unchanged tree reads no file and asks the SVM nothing', async () => {
    const lookups = await metric(svm.port, 'lightagent_svm_lookups_total');
    const r = scan(['--svm', svm.url, '--token', 'test-token', '--json', '--cache-file', path.join(state, 'one/cache.v1'), tree]);
    const doc = JSON.parse(r.stdout);
    assert.equal(doc.readBytes, 0);
    assert.deepEqual(Object.keys(doc.bySource), ['cache-identity']);
    assert.equal(await metric(svm.port, 'lightagent_svm_lookups_total'), lookups);
  });

  it('exits 0 on a clean tree, and 2 with a clear message without a token or SVM', () => {
    const clean = path.join(tree, 'a/b');
    fs.rmSync(path.join(clean, 'c/eicar.com'));
    assert.equal(scan(['--svm', svm.url, '--token', 'test-token', '--no-cache', clean]).status, 0);
    const noToken = scan(['--svm', svm.url, clean]);
    assert.equal(noToken.status, 2);
    assert.match(noToken.stderr, /token: no tenant token/);
    const wrong = scan(['--svm', svm.url, '--token', 'nope-nope', clean]);
    assert.equal(wrong.status, 2);
    assert.match(wrong.stderr, /LA_ERR_AUTH/);
    const down = scan(['--svm', 'ws://127.0.0.1:1', '--token', 'x', clean]);
    assert.equal(down.status, 2);
    assert.match(down.stderr, /LA_ERR_SVM_UNAVAILABLE/);
  });

  it('prints --help and rejects bad arguments', () => {
    const h = run(process.execPath, [CLI, 'scan', '--help']);
    assert.equal(h.status, 0);
    assert.match(h.stdout, /Usage: lightagent scan/);
    assert.equal(run(process.execPath, [CLI, 'scan', '--jobs', 'lots', tree]).status, 2);
    assert.equal(run(process.execPath, [CLI, 'frobnicate']).status, 2);
  });
});
