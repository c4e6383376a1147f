/**
 * The .deb (installers/deb/build.sh): metadata and contents, then real dpkg runs into a scratch
 * root. Not `dpkg -i` on this machine: postinst would start an agent protecting every local disk
 * of the host. Instead `dpkg --root=DIR --force-script-chrootless` (dpkg runs the maintainer
 * scripts with DPKG_ROOT=DIR, which they honour) and --force-depends (the scratch root's dpkg
 * database is empty, so libc6 & co. are "missing").
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { BINARY, ROOT, ensureBinary } from './binary.js';
import { tempDir } from '../helpers/procs.js';

const haveDpkg = spawnSync('dpkg-deb', ['--version']).status === 0;
const pkgVersion = (JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
const clean = (): NodeJS.ProcessEnv => Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('LIGHTAGENT_')));

function sh(cmd: string, args: string[], env: NodeJS.ProcessEnv = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 120_000, killSignal: 'SIGKILL', env: { ...clean(), ...env } });
  return { status: r.status, out: (r.stdout ?? '') + (r.stderr ?? '') };
}

describe('.deb package', { skip: haveDpkg ? false : process.env.CI === 'true' ? false : 'no dpkg-deb' }, () => {
  let work: string;
  let deb: string;
  before(() => {
    ensureBinary();
    work = tempDir('la-deb-');
    const r = sh('sh', [path.join(ROOT, 'installers/deb/build.sh'), BINARY, work, pkgVersion], { LIGHTAGENT_DEB_GZIP_LEVEL: '1' });
    assert.equal(r.status, 0, r.out);
    deb = r.out.trim().split('\n').pop()!;
    assert.equal(deb, path.join(work, `lightagent_${pkgVersion}_amd64.deb`));
  });
  after(() => fs.rmSync(work, { recursive: true, force: true }));

  /** A scratch root with an empty dpkg database. */
  function scratchRoot(): string {
    const r = fs.mkdtempSync(path.join(work, 'root-'));
    fs.mkdirSync(path.join(r, 'var/lib/dpkg/info'), { recursive: true });
    fs.mkdirSync(path.join(r, 'var/lib/dpkg/updates'), { recursive: true });
    fs.writeFileSync(path.join(r, 'var/lib/dpkg/status'), '');
    fs.writeFileSync(path.join(r, 'var/lib/dpkg/available'), '');
    return r;
  }
  const dpkg = (root: string, args: string[], env: NodeJS.ProcessEnv = {}) =>
    sh('dpkg', [`--root=${root}`, '--force-script-chrootless', '--force-depends', ...args], env);
  const status = (root: string) => /^Status: (.*)$/m.exec(sh('dpkg', [`--root=${root}`, '-s', 'lightagent']).out)?.[1];
  const preseed = (root: string, body: string, mode = 0o600) => {
    fs.mkdirSync(path.join(root, 'etc/lightagent'), { recursive: true, mode: 0o700 });
    fs.writeFileSync(path.join(root, 'etc/lightagent/preseed'), body, { mode });
    fs.chmodSync(path.join(root, 'etc/lightagent/preseed'), mode);
  };

  it('dpkg-deb --info: name, version from package.json, amd64, library dependencies', () => {
    const r = sh('dpkg-deb', ['--info', deb]);
    assert.equal(r.status, 0, r.out);
    assert.match(r.out, /^ Package: lightagent$/m);
    assert.match(r.out, new RegExp(`^ Version: ${pkgVersion.replace(/\./g, '\\.')}$`, 'm'));
    assert.match(r.out, /^ Architecture: amd64$/m);
    assert.match(r.out, /^ Depends: libc6 \(>= 2\.28\), libstdc\+\+6/m);
    for (const s of ['postinst', 'prerm', 'postrm']) assert.match(r.out, new RegExp(`\\d+ bytes, +\\d+ lines +\\* +${s} +#!/bin/sh`));
  });

  it('dpkg-deb --contents: binary, svm link, every unit of installers/systemd (ExecStart in /usr/bin), tray entry, install.sh', () => {
    const r = sh('dpkg-deb', ['--contents', deb]);
    assert.equal(r.status, 0, r.out);
    const line = (p: string) => r.out.split('\n').find((l) => l.endsWith(` ./${p}`) || l.includes(` ./${p} -> `));
    assert.match(line('usr/bin/lightagent') ?? '', /^-rwxr-xr-x root\/root +\d{8,} /);
    assert.match(line('usr/bin/lightagent-svm') ?? '', /^lrwxrwxrwx root\/root .* -> lightagent$/);
    assert.match(line('etc/xdg/autostart/lightagent-tray.desktop') ?? '', /^-rw-r--r-- root\/root/);
    assert.match(line('usr/share/lightagent/install.sh') ?? '', /^-rwxr-xr-x root\/root/);
    const units = fs.readdirSync(path.join(ROOT, 'installers/systemd')).filter((f) => f.endsWith('.service'));
    assert.ok(units.includes('lightagent.service'));
    for (const u of units) assert.match(line(`lib/systemd/system/${u}`) ?? '', /^-rw-r--r-- root\/root/, u);
    const x = fs.mkdtempSync(path.join(work, 'x-'));
    assert.equal(sh('dpkg-deb', ['-x', deb, x]).status, 0);
    for (const u of units) {
      const text = fs.readFileSync(path.join(x, 'lib/systemd/system', u), 'utf8');
      assert.doesNotMatch(text, /\/usr\/local\//, u);
      const exec = /^ExecStart=(\/usr\/bin\/lightagent(?:-svm)?) /m.exec(text);
      assert.ok(exec, `${u}: ExecStart runs /usr/bin/lightagent or its lightagent-svm link`);
      assert.ok(fs.existsSync(path.join(x, exec[1]!)), `${u}: ${exec[1]} is in the package`);
    }
    const same = sh('cmp', [path.join(x, 'usr/bin/lightagent'), BINARY]);
    assert.equal(same.status, 0, 'the packaged binary is the release binary');
  });

  it('installs non-interactively from /etc/lightagent/preseed (then deleted); removal needs the password; purge removes all', () => {
    const root = scratchRoot();
    preseed(
      root,
      '# pre-seeded\nLIGHTAGENT_SVM_URL=wss://svm.example:7443\nLIGHTAGENT_TOKEN="preseeded-token-1"\nLIGHTAGENT_FAIL_CLOSED=1\nLIGHTAGENT_REMOVAL_PASSWORD=remove-me\n',
    );
    const i = dpkg(root, ['-i', deb], { LIGHTAGENT_FAIL_CLOSED: '' });
    assert.equal(i.status, 0, i.out);
    assert.equal(status(root), 'install ok installed');
    const conf = path.join(root, 'etc/lightagent/agent.yaml');
    assert.equal(fs.statSync(conf).mode & 0o777, 0o600);
    const text = fs.readFileSync(conf, 'utf8');
    assert.match(text, /^svm: "wss:\/\/svm\.example:7443"$/m);
    assert.match(text, /^token: "preseeded-token-1"$/m);
    assert.match(text, /^on_svm_unavailable: deny$/m);
    assert.equal(fs.existsSync(path.join(root, 'etc/lightagent/preseed')), false, 'the preseed (with its token) is gone');
    assert.match(fs.readFileSync(path.join(root, 'etc/lightagent/removal.hash'), 'utf8'), /^scrypt\$/);

    fs.mkdirSync(path.join(root, 'var/lib/lightagent/quarantine'), { recursive: true });
    fs.writeFileSync(path.join(root, 'var/lib/lightagent/quarantine/q1'), 'kept');
    fs.writeFileSync(path.join(root, 'var/lib/lightagent/cache.v1'), 'cache');

    const refused = dpkg(root, ['-r', 'lightagent']);
    assert.notEqual(refused.status, 0);
    assert.match(refused.out, /removal refused: this installation is protected by a removal password/);
    const wrong = dpkg(root, ['-r', 'lightagent'], { LIGHTAGENT_REMOVAL_PASSWORD: 'guess' });
    assert.notEqual(wrong.status, 0);
    assert.match(wrong.out, /wrong removal password/);
    assert.ok(fs.existsSync(path.join(root, 'usr/bin/lightagent')), 'still installed');

    const rm = dpkg(root, ['-r', 'lightagent'], { LIGHTAGENT_REMOVAL_PASSWORD: 'remove-me' });
    assert.equal(rm.status, 0, rm.out);
    assert.equal(fs.existsSync(path.join(root, 'usr/bin/lightagent')), false);
    assert.equal(fs.existsSync(path.join(root, 'var/lib/lightagent/cache.v1')), false);
    assert.equal(fs.readFileSync(path.join(root, 'var/lib/lightagent/quarantine/q1'), 'utf8'), 'kept');
    assert.ok(fs.existsSync(conf), 'remove keeps /etc/lightagent (dpkg convention), purge removes it');

    const purge = dpkg(root, ['--purge', 'lightagent']);
    assert.equal(purge.status, 0, purge.out);
    for (const p of ['etc/lightagent', 'var/lib/lightagent', 'var/log/lightagent', 'etc/xdg/autostart/lightagent-tray.desktop'])
      assert.equal(fs.existsSync(path.join(root, p)), false, p);
  });

  it('environment at install wins over the preseed file; a preseed others can write is ignored', () => {
    const root = scratchRoot();
    preseed(root, 'LIGHTAGENT_SVM_URL=wss://from-file:1\nLIGHTAGENT_TOKEN=file-token-123\n');
    const i = dpkg(root, ['-i', deb], { LIGHTAGENT_SVM_URL: 'wss://from-env:2' });
    assert.equal(i.status, 0, i.out);
    const text = fs.readFileSync(path.join(root, 'etc/lightagent/agent.yaml'), 'utf8');
    assert.match(text, /^svm: "wss:\/\/from-env:2"$/m);
    assert.match(text, /^token: "file-token-123"$/m);

    const root2 = scratchRoot();
    preseed(root2, 'LIGHTAGENT_SVM_URL=wss://attacker:1\nLIGHTAGENT_TOKEN=attacker-token-1\n', 0o666);
    const j = dpkg(root2, ['-i', deb]);
    assert.equal(j.status, 0, j.out);
    assert.match(j.out, /must belong to root and not be writable by group or others.*ignored/);
    assert.match(j.out, /installed but not configured/);
    assert.equal(fs.existsSync(path.join(root2, 'etc/lightagent/agent.yaml')), false);
  });

  it('invalid pre-seeded settings fail the configuration (visible to deployment tools), nothing half-written', () => {
    const root = scratchRoot();
    preseed(root, 'LIGHTAGENT_SVM_URL=https://not-a-websocket\nLIGHTAGENT_TOKEN=t-12345678\n');
    const i = dpkg(root, ['-i', deb]);
    assert.notEqual(i.status, 0);
    assert.match(i.out, /pre-seeded settings were not applied/);
    assert.equal(status(root), 'install ok half-configured');
    assert.equal(fs.existsSync(path.join(root, 'etc/lightagent/agent.yaml')), false);
  });
});
