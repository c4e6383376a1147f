/**
 * `lightagent seal` on a template, then its clones (copies of the sealed state directory on the
 * same files, as a block-level clone has them): the template's files are answered from the
 * inherited cache with no SVM request, each clone makes its own agent id, a changed file is
 * judged anew, and an infected file sealed in is refused in every clone.
 */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CLI, EICAR, run, startSvmProcess, tempDir } from '../helpers/procs.js';

async function metric(port: number, name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  return Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)![1]);
}

describe('lightagent seal', () => {
  let svm: Awaited<ReturnType<typeof startSvmProcess>>;
  const root = tempDir('la-seal-');
  const tree = path.join(root, 'tree');
  const config = (name: string, protect = tree) => {
    const file = path.join(root, `${name}.yaml`);
    fs.writeFileSync(file, `svm: ${svm.url}\ntoken: test-token\nstate_dir: ${path.join(root, name)}\nprotect:\n  - ${protect}\n`);
    return file;
  };
  const svmRequests = async () =>
    (await metric(svm.port, 'lightagent_svm_lookups_total')) + (await metric(svm.port, 'lightagent_svm_uploads_total'));

  before(async () => {
    svm = await startSvmProcess();
    fs.mkdirSync(path.join(tree, 'sub'), { recursive: true });
    for (let i = 0; i < 40; i++) fs.writeFileSync(path.join(tree, i % 2 ? 'sub' : '', `f${i}.bin`), crypto.randomBytes(1000 + i));
  });
  after(async () => {
    await svm.stop();
  });

  it('scans the template, writes the cache, drops the identity', () => {
    const cfg = config('tmpl');
    // The template ran the agent before: it has an id
    assert.equal(run(process.execPath, [CLI, 'scan', '--config', cfg, '--json', tree], 60_000).status, 0);
    const state = path.join(root, 'tmpl');
    const templateId = fs.readFileSync(path.join(state, 'agent-id'), 'utf8').trim();
    assert.ok(templateId.length > 8);
    const r = run(process.execPath, [CLI, 'seal', '--config', cfg, '--json'], 60_000);
    assert.equal(r.status, 0, r.stderr);
    const doc = JSON.parse(r.stdout);
    assert.equal(doc.sealed, true);
    assert.equal(doc.scan.files, 40);
    assert.equal(doc.scan.infected.length, 0);
    assert.ok(doc.cacheEntries >= 40, `cache entries ${doc.cacheEntries}`);
    assert.ok(doc.removed.includes('agent-id') && doc.removed.includes('instance.json'), doc.removed.join());
    assert.ok(!fs.existsSync(path.join(state, 'agent-id')));
    assert.ok(fs.existsSync(path.join(state, 'sealed.json')));
    assert.ok(fs.statSync(path.join(state, 'cache.v1')).size > 0);
  });

  it('clones answer the template files from the inherited cache: 0 SVM requests, 0 bytes, distinct ids', async () => {
    const ids: string[] = [];
    for (const name of ['clone1', 'clone2']) {
      fs.cpSync(path.join(root, 'tmpl'), path.join(root, name), { recursive: true });
      const before = await svmRequests();
      const bytes = await metric(svm.port, 'lightagent_svm_bytes_received_total');
      const r = run(process.execPath, [CLI, 'scan', '--config', config(name), '--json', tree], 60_000);
      assert.equal(r.status, 0, r.stderr);
      const doc = JSON.parse(r.stdout);
      assert.equal(doc.files, 40);
      assert.deepEqual(doc.bySource, { 'cache-identity': 40 });
      assert.equal(doc.uploadedBytes, 0);
      assert.equal(doc.readBytes, 0, 'identity hits read nothing');
      assert.equal(await svmRequests(), before, 'no lookup and no upload reached the SVM');
      assert.equal(await metric(svm.port, 'lightagent_svm_bytes_received_total'), bytes);
      ids.push(fs.readFileSync(path.join(root, name, 'agent-id'), 'utf8').trim());
    }
    assert.notEqual(ids[0], ids[1], 'two clones never share an agent id');
  });

  it('a file changed in a clone is judged anew', () => {
    fs.cpSync(path.join(root, 'tmpl'), path.join(root, 'clone3'), { recursive: true });
    fs.appendFileSync(path.join(tree, 'f0.bin'), 'changed in the clone');
    const r = run(process.execPath, [CLI, 'scan', '--config', config('clone3'), '--json', tree], 60_000);
    assert.equal(r.status, 0, r.stderr);
    const doc = JSON.parse(r.stdout);
    assert.equal(doc.bySource['cache-identity'], 39);
    assert.equal(doc.bySource['svm-scan'], 1, JSON.stringify(doc.bySource));
  });

  it('verdicts of an older signature generation are re-checked with the SVM, not trusted', async () => {
    const sigs = path.join(root, 'extra.hdb');
    fs.writeFileSync(sigs, `${crypto.createHash('md5').update('another signature').digest('hex')}:17:Test.Extra\n`);
    const newer = await startSvmProcess(['--signatures', sigs]);
    try {
      fs.cpSync(path.join(root, 'tmpl'), path.join(root, 'clone4'), { recursive: true });
      const file = path.join(root, 'clone4.yaml');
      fs.writeFileSync(file, `svm: ${newer.url}\ntoken: test-token\nstate_dir: ${path.join(root, 'clone4')}\nprotect:\n  - ${tree}\n`);
      const r = run(process.execPath, [CLI, 'scan', '--config', file, '--json', tree], 60_000);
      assert.equal(r.status, 0, r.stderr);
      const doc = JSON.parse(r.stdout);
      assert.notEqual(doc.svm.generation, JSON.parse(fs.readFileSync(path.join(root, 'tmpl', 'sealed.json'), 'utf8')).generation);
      assert.equal(doc.bySource['cache-identity'], undefined, JSON.stringify(doc.bySource));
      assert.ok((await metric(newer.port, 'lightagent_svm_lookups_total')) >= 40);
    } finally {
      await newer.stop();
    }
  });

  it('infected files stop the seal; --allow-infected seals them in and every clone refuses them', async () => {
    const dirty = path.join(root, 'dirty');
    fs.mkdirSync(dirty);
    fs.writeFileSync(path.join(dirty, 'ok.txt'), 'fine');
    fs.writeFileSync(path.join(dirty, 'eicar.com'), EICAR);
    const cfg = config('dirtytmpl', dirty);
    const state = path.join(root, 'dirtytmpl');
    assert.equal(run(process.execPath, [CLI, 'scan', '--config', cfg, '--json', dirty], 60_000).status, 1);
    const r = run(process.execPath, [CLI, 'seal', '--config', cfg], 60_000);
    assert.equal(r.status, 1, r.stdout + r.stderr);
    assert.match(r.stdout, /INFECTED .*eicar\.com/);
    assert.match(r.stderr, /NOT sealed/);
    assert.ok(fs.existsSync(path.join(state, 'agent-id')), 'not sealed: the identity stays');
    assert.equal(run(process.execPath, [CLI, 'seal', '--config', cfg, '--allow-infected'], 60_000).status, 0);
    assert.ok(!fs.existsSync(path.join(state, 'agent-id')));
    fs.cpSync(state, path.join(root, 'dirtyclone'), { recursive: true });
    const before = await svmRequests();
    const s = run(process.execPath, [CLI, 'scan', '--config', config('dirtyclone', dirty), '--json', dirty], 60_000);
    assert.equal(s.status, 1);
    const doc = JSON.parse(s.stdout);
    assert.equal(doc.infected.length, 1);
    assert.equal(doc.infected[0].threat, 'Eicar-Test-Signature');
    assert.equal(await svmRequests(), before, 'refused from the inherited cache');
  });

  it('files the SVM could not judge are listed and give exit 3: sealed, but those start cold in clones', async () => {
    const small = await startSvmProcess(['--max-file-size', '4KiB']);
    try {
      const dir = path.join(root, 'partly');
      fs.mkdirSync(dir);
      fs.writeFileSync(path.join(dir, 'big.bin'), crypto.randomBytes(5000));
      fs.writeFileSync(path.join(dir, 'small.txt'), 'small');
      const file = path.join(root, 'partly.yaml');
      fs.writeFileSync(file, `svm: ${small.url}\ntoken: test-token\nstate_dir: ${path.join(root, 'partly-state')}\nprotect:\n  - ${dir}\n`);
      const r = run(process.execPath, [CLI, 'seal', '--config', file], 60_000);
      assert.equal(r.status, 3, r.stdout + r.stderr);
      assert.match(r.stderr, /ERROR +.*big\.bin: .*LA_ERR_UPLOAD_TOO_LARGE/);
      assert.match(r.stderr, /1 file\(s\) could not be judged/);
      assert.match(r.stdout, /Sealed /);
      assert.ok(!fs.existsSync(path.join(root, 'partly-state', 'agent-id')));
    } finally {
      await small.stop();
    }
  });

  it('refuses while the daemon holds the state directory, and explains --help and bad options', () => {
    const cfg = config('locked');
    const state = path.join(root, 'locked');
    fs.mkdirSync(state, { recursive: true });
    fs.symlinkSync(String(process.pid), path.join(state, 'agent.lock'));
    const r = run(process.execPath, [CLI, 'seal', '--config', cfg], 30_000);
    assert.equal(r.status, 2);
    assert.match(r.stderr, /LA_ERR_ALREADY_RUNNING/);
    assert.match(r.stderr, /stop it first/);
    const h = run(process.execPath, [CLI, 'seal', '--help']);
    assert.equal(h.status, 0);
    assert.match(h.stdout, /Usage: lightagent seal/);
    assert.equal(run(process.execPath, [CLI, 'seal', '--bogus']).status, 2);
  });
});
