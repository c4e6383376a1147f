/**
 * `lightagent-svm backup` / `restore` (src/svm/backup.ts) against the real CLI: a configured SVM
 * (token file, TLS, signatures, a state_dir) is backed up, wiped, restored, and starts again with
 * the same tokens (an agent with the old token is welcomed); hostile and corrupted archives are
 * refused with LA_ERR_BACKUP_INVALID / LA_ERR_BACKUP_RESTORE before anything is written.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import zlib from 'node:zlib';
import tar from 'tar-stream';
import { SVM_CLI, spawnNode, tempDir, waitFor } from '../helpers/procs.js';
import { rawAgent } from './helpers.js';

const OLD_TOKEN = 'old-tenant-token-1234';

function cli(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [SVM_CLI, ...args], { encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Every file under `dir` (relative path -> content), for "nothing was written" checks. */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else out[path.relative(dir, p)] = fs.readFileSync(p, 'latin1');
    }
  };
  walk(dir);
  return out;
}

interface Member {
  name: string;
  body?: Buffer;
  type?: 'file' | 'symlink' | 'directory' | 'link';
  linkname?: string;
  size?: number;
}

/** A tar.gz made member by member: what a hostile archive looks like. */
async function makeArchive(file: string, members: Member[]): Promise<void> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  const gz = zlib.createGzip();
  pack.pipe(gz);
  gz.on('data', (d: Buffer) => chunks.push(d));
  const done = new Promise((r) => gz.on('end', r));
  for (const m of members) {
    await new Promise<void>((resolve, reject) => {
      const header = { name: m.name, type: m.type ?? 'file', mode: 0o644, ...(m.linkname ? { linkname: m.linkname } : {}) };
      if (m.type && m.type !== 'file') pack.entry(header, (e) => (e ? reject(e) : resolve()));
      else pack.entry({ ...header, size: m.body!.length }, m.body!, (e) => (e ? reject(e) : resolve()));
    });
  }
  pack.finalize();
  await done;
  fs.writeFileSync(file, Buffer.concat(chunks));
}

/** The members of a tar.gz, in order. */
async function readArchive(file: string): Promise<Array<{ name: string; body: Buffer }>> {
  const ex = tar.extract();
  const out: Array<{ name: string; body: Buffer }> = [];
  zlib.createGunzip().end(fs.readFileSync(file)).pipe(ex);
  for await (const e of ex) {
    const parts: Buffer[] = [];
    for await (const c of e) parts.push(c as Buffer);
    out.push({ name: e.header.name, body: Buffer.concat(parts) });
  }
  return out;
}

const sha = (b: Buffer | string) => crypto.createHash('sha256').update(b).digest('hex');

function manifest(roots: object[], entries: object[]): Buffer {
  return Buffer.from(
    JSON.stringify({ format: 'lightagent-svm-backup/1', version: '0', created: '', host: 'h', config: '/x', roots, entries }),
  );
}

describe('lightagent-svm backup and restore', () => {
  let dir: string;
  let etc: string;
  let state: string;
  let config: string;
  let archive: string;

  before(() => {
    dir = tempDir('la-backup-');
    etc = path.join(dir, 'etc');
    state = path.join(dir, 'state');
    fs.mkdirSync(etc);
    fs.mkdirSync(path.join(state, 'inventory'), { recursive: true });
    const openssl = spawnSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:P-256',
        '-nodes',
        '-keyout',
        path.join(etc, 'svm.key'),
        '-out',
      ].concat([path.join(etc, 'svm.crt'), '-days', '2', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1']),
      { encoding: 'utf8', timeout: 30_000 },
    );
    assert.equal(openssl.status, 0, openssl.stderr);
    fs.chmodSync(path.join(etc, 'svm.key'), 0o600);
    fs.copyFileSync(path.join(etc, 'svm.crt'), path.join(etc, 'siem-ca.pem'));
    fs.writeFileSync(path.join(etc, 'tokens.yaml'), `- {tenant: acme, token: ${OLD_TOKEN}}\n`, { mode: 0o600 });
    fs.writeFileSync(path.join(etc, 'local.hdb'), '44d88612fea8a8f36de82e1278abb02f:68:Eicar-Test-Signature\n');
    fs.writeFileSync(path.join(state, 'inventory', 'agents.json'), JSON.stringify({ agents: ['a', 'b'] }), { mode: 0o600 });
    fs.writeFileSync(path.join(state, 'policies.json'), '{}\n', { mode: 0o640 });
    // What the single binary unpacks into the unit's state directory: not backed up.
    fs.mkdirSync(path.join(state, 'lightagent-4242-AbC123'));
    fs.writeFileSync(path.join(state, 'lightagent-4242-AbC123', 'koffi.node'), 'native');
    config = path.join(etc, 'svm.yaml');
    fs.writeFileSync(
      config,
      [
        'listen: 127.0.0.1:0',
        `token_file: ${path.join(etc, 'tokens.yaml')}`,
        `tls: {cert: ${path.join(etc, 'svm.crt')}, key: ${path.join(etc, 'svm.key')}}`,
        `signatures: [${path.join(etc, 'local.hdb')}]`,
        `state_dir: ${state}`,
        // A list of settings with TLS material in each item (the SIEM export): walked too.
        `siem: [{address: 'tls://127.0.0.1:6514', ca: ${path.join(etc, 'siem-ca.pem')}}]`,
        '',
      ].join('\n'),
      { mode: 0o640 },
    );
    archive = path.join(dir, 'svm-backup.tar.gz');
  });

  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  async function agentWelcomed(): Promise<void> {
    const svm = spawnNode(SVM_CLI, ['--config', config, '--json'], { watchdogMs: 60_000 });
    try {
      const m = await waitFor(svm, /"url":"(wss:\/\/[^"]+)"/);
      const a = await rawAgent(m[1]!, OLD_TOKEN, true, { ca: fs.readFileSync(path.join(etc, 'svm.crt')) });
      const w = await a.next((x) => x.t === 'welcome' || x.t === 'error');
      assert.equal(w.t, 'welcome', JSON.stringify(w));
      a.ws.close();
    } finally {
      await svm.stop();
    }
  }

  it('backs up a configured SVM, which after a wipe and a restore takes the old token again', async () => {
    await agentWelcomed();
    const b = cli(['backup', '--config', config, '--out', archive, '--json']);
    assert.equal(b.status, 0, b.stderr);
    const r = JSON.parse(b.stdout) as { files: number; roots: Array<{ key: string; path: string }>; skipped: Array<{ path: string }> };
    assert.deepEqual(
      r.skipped.map((x) => path.basename(x.path)),
      ['lightagent-4242-AbC123'],
    );
    assert.deepEqual(r.roots.map((x) => x.key).sort(), [
      'config',
      'siem.0.ca',
      'signatures.0',
      'state_dir',
      'tls.cert',
      'tls.key',
      'token_file',
    ]);
    // 8 files of the config and its state_dir, plus the inventory the SVM kept there while the agent was welcomed.
    assert.equal(r.files, 9);
    assert.equal(fs.statSync(archive).mode & 0o777, 0o600, 'the archive holds secrets');
    const members = await readArchive(archive);
    assert.ok(
      members.some((x) => x.name.endsWith('/inventory.json')),
      `the agent inventory is backed up: ${members.map((x) => x.name).join(', ')}`,
    );
    assert.equal(members[0]!.name, 'manifest.json', 'the manifest comes first');
    const m = JSON.parse(members[0]!.body.toString()) as { entries: Array<{ path: string; sha256?: string; size: number }> };
    for (const e of m.entries.filter((x) => x.sha256)) {
      const body = members.find((x) => x.name === `files${e.path}`)?.body;
      assert.ok(body, e.path);
      assert.equal(sha(body), e.sha256);
    }

    fs.rmSync(path.join(state, 'lightagent-4242-AbC123'), { recursive: true });
    const before = snapshot(dir);
    fs.rmSync(etc, { recursive: true });
    fs.rmSync(state, { recursive: true });

    const dry = cli(['restore', archive, '--dry-run', '--allow-root', dir, '--json']);
    assert.equal(dry.status, 0, dry.stderr);
    const plan = JSON.parse(dry.stdout) as { actions: Array<{ action: string }>; written: number };
    assert.ok(plan.actions.every((a) => a.action === 'create'));
    assert.equal(plan.written, 0);
    assert.equal(fs.existsSync(etc), false, '--dry-run writes nothing');

    const res = cli(['restore', archive, '--allow-root', dir]);
    assert.equal(res.status, 0, res.stderr);
    assert.match(res.stdout, /restored 9 files/);
    assert.deepEqual(snapshot(dir), before, 'every file back, byte for byte');
    const mode = (p: string) => fs.statSync(p).mode & 0o777;
    assert.equal(mode(path.join(etc, 'svm.key')), 0o600);
    assert.equal(mode(path.join(etc, 'tokens.yaml')), 0o600);
    assert.equal(mode(config), 0o640, 'modes as they were: the config stays readable by its group');
    assert.equal(mode(path.join(etc, 'local.hdb')), 0o644);
    assert.equal(mode(path.join(state, 'inventory', 'agents.json')), 0o600);
    assert.equal(mode(path.join(state, 'policies.json')), 0o640);
    assert.equal(fs.readdirSync(etc).filter((n) => n.includes('la-restore')).length, 0, 'no temporary file left');
    await agentWelcomed();

    // Restoring again over the same files: nothing to change; a changed file is overwritten.
    fs.writeFileSync(path.join(etc, 'tokens.yaml'), '- {tenant: acme, token: a-new-token-5678}\n', { mode: 0o600 });
    const again = cli(['restore', archive, '--dry-run', '--allow-root', dir]);
    assert.equal(again.status, 0, again.stderr);
    // The token file changed by hand, and the inventory the SVM rewrote when the agent came back.
    assert.match(
      again.stdout,
      /would change 2\n\s+would overwrite file \S+tokens\.yaml \(mode 0600\)\n\s+would overwrite file \S+inventory\.json/,
    );
  });

  it('refuses a root outside the allowed directories, naming it, and writes nothing', () => {
    const r = cli(['restore', archive]);
    assert.equal(r.status, 2);
    assert.match(r.stderr, /root \S+svm\.yaml \(config\) is outside the directories a restore may write .*LA_ERR_BACKUP_RESTORE/);
  });

  it('refuses a corrupted member before anything is written', async () => {
    const members = await readArchive(archive);
    // The corrupted member last: a restore that wrote as it went would have written the others.
    const victim = members.find((x) => x.name.endsWith('agents.json'))!;
    const rest = members.filter((x) => x !== victim);
    const broken = Buffer.from(victim.body);
    broken[0] ^= 0xff;
    const file = path.join(dir, 'corrupt.tar.gz');
    await makeArchive(file, [...rest, { name: victim.name, body: broken }]);
    fs.rmSync(state, { recursive: true });
    fs.writeFileSync(path.join(etc, 'tokens.yaml'), 'changed since the backup\n', { mode: 0o600 });
    const before = snapshot(dir);
    const r = cli(['restore', file, '--allow-root', dir]);
    assert.equal(r.status, 2, r.stdout);
    assert.match(r.stderr, /agents\.json: its SHA-256 is not the manifest's .*nothing was written \(LA_ERR_BACKUP_INVALID\)/s);
    assert.deepEqual(snapshot(dir), before, 'nothing written, nothing left behind');
    assert.equal(fs.existsSync(state), false);
  });

  describe('hostile archives are refused with a clear error', () => {
    const root = () => ({ path: path.join(dir, 'h'), kind: 'dir', key: 'state_dir' });
    const entry = (p: string, body: Buffer) => ({
      path: p,
      kind: 'file',
      size: body.length,
      sha256: sha(body),
      mode: 0o644,
      uid: 0,
      gid: 0,
    });
    const cases: Array<[string, () => Member[], RegExp]> = [
      [
        'a manifest path with ..',
        () => {
          const b = Buffer.from('x');
          const p = `${path.join(dir, 'h')}/../escaped`;
          return [
            { name: 'manifest.json', body: manifest([root()], [entry(p, b)]) },
            { name: `files${p}`, body: b },
          ];
        },
        /an absolute normalized path without \.\. is expected.*LA_ERR_BACKUP_INVALID/s,
      ],
      [
        'a member with an absolute name not in the manifest',
        () => [
          { name: 'manifest.json', body: manifest([root()], []) },
          { name: '/etc/cron.d/evil', body: Buffer.from('* * * * * root sh\n') },
        ],
        /member "\/etc\/cron\.d\/evil" is not in the manifest.*LA_ERR_BACKUP_INVALID/s,
      ],
      [
        'a member ../ out of files/',
        () => [
          { name: 'manifest.json', body: manifest([root()], []) },
          { name: `files${path.join(dir, 'h')}/../../x`, body: Buffer.from('x') },
        ],
        /is not in the manifest/,
      ],
      [
        'a symbolic link',
        () => [
          { name: 'manifest.json', body: manifest([root()], []) },
          { name: `files${path.join(dir, 'h')}/link`, type: 'symlink', linkname: '/etc/shadow' },
        ],
        /is a symlink, only regular files are accepted.*LA_ERR_BACKUP_INVALID/s,
      ],
      [
        'a path outside the roots',
        () => {
          const b = Buffer.from('x');
          const p = path.join(dir, 'elsewhere');
          return [
            { name: 'manifest.json', body: manifest([root()], [entry(p, b)]) },
            { name: `files${p}`, body: b },
          ];
        },
        /elsewhere is outside the manifest's roots/,
      ],
      [
        'a huge member (more than --max-size)',
        () => {
          const b = Buffer.alloc(2 * 1024 * 1024);
          const p = path.join(dir, 'h', 'big');
          return [
            { name: 'manifest.json', body: manifest([root()], [entry(p, b)]) },
            { name: `files${p}`, body: b },
          ];
        },
        /add up to more than 1048576 bytes \(--max-size\)/,
      ],
      [
        'a member larger than the manifest says',
        () => {
          const b = Buffer.from('small');
          const p = path.join(dir, 'h', 'f');
          return [
            { name: 'manifest.json', body: manifest([root()], [entry(p, b)]) },
            { name: `files${p}`, body: Buffer.alloc(100_000) },
          ];
        },
        /has 100000 bytes, the manifest says 5/,
      ],
      [
        'no manifest first',
        () => [{ name: 'files/etc/passwd', body: Buffer.from('x') }],
        /the first member is "files\/etc\/passwd", not manifest\.json/,
      ],
    ];
    for (const [what, members, re] of cases) {
      it(what, async () => {
        const file = path.join(dir, `hostile-${crypto.randomBytes(4).toString('hex')}.tar.gz`);
        await makeArchive(file, members());
        const r = cli(['restore', file, '--allow-root', dir, '--max-size', '1 MiB']);
        assert.equal(r.status, 2, r.stdout);
        assert.match(r.stderr, re);
        assert.match(r.stderr, /nothing was written/);
        assert.equal(fs.existsSync(path.join(dir, 'h')), false);
        assert.equal(fs.existsSync(path.join(dir, 'escaped')), false);
      });
    }

    it('not a tar.gz at all', () => {
      const file = path.join(dir, 'garbage.tar.gz');
      fs.writeFileSync(file, crypto.randomBytes(4096));
      const r = cli(['restore', file, '--allow-root', dir]);
      assert.equal(r.status, 2);
      assert.match(r.stderr, /not a readable tar\.gz .*LA_ERR_BACKUP_INVALID/s);
    });

    it('a gzip bomb stops at the bound', async () => {
      // 64 MiB of zeros in one unlisted member, ~64 KiB compressed: refused at its header, unread.
      const file = path.join(dir, 'bomb.tar.gz');
      await makeArchive(file, [
        { name: 'manifest.json', body: manifest([root()], []) },
        { name: 'files/zeros', body: Buffer.alloc(64 * 1024 * 1024) },
      ]);
      const t0 = performance.now();
      const r = cli(['restore', file, '--allow-root', dir, '--max-size', '1 MiB']);
      assert.equal(r.status, 2);
      assert.match(r.stderr, /not in the manifest|unpacks to more than/);
      assert.ok(performance.now() - t0 < 20_000);
    });

    it('a symbolic link on the way to a target', async () => {
      const b = Buffer.from('x');
      const real = path.join(dir, 'real');
      fs.mkdirSync(real);
      fs.symlinkSync(real, path.join(dir, 'h'));
      try {
        const p = path.join(dir, 'h', 'f');
        const file = path.join(dir, 'via-link.tar.gz');
        await makeArchive(file, [
          { name: 'manifest.json', body: manifest([root()], [entry(p, b)]) },
          { name: `files${p}`, body: b },
        ]);
        const r = cli(['restore', file, '--allow-root', dir]);
        assert.equal(r.status, 2);
        assert.match(r.stderr, /h is a symbolic link \(on the way to \S+\/h\/f\); a restore follows none .*LA_ERR_BACKUP_RESTORE/s);
        assert.deepEqual(fs.readdirSync(real), []);
      } finally {
        fs.rmSync(path.join(dir, 'h'));
      }
    });
  });
});
