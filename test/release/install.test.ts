/**
 * installers/linux/install.sh in scratch roots (--root): install, re-install, settings from the
 * environment and from a config file, upgrade, uninstall with a removal password, purge. Checks
 * files, modes, the one-line summary and exit codes, and that no file of the user's is touched.
 * The service is never started here (--root never starts one).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { BINARY, ROOT, ensureBinary } from './binary.js';
import { tempDir } from '../helpers/procs.js';

const SCRIPT = path.join(ROOT, 'installers/linux/install.sh');
const CA_PEM = '-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUQ2E=\n-----END CERTIFICATE-----\n';

interface Result {
  status: number | null;
  stdout: string;
  stderr: string;
  summary: string;
}

function install(args: string[], env: Record<string, string> = {}): Result {
  const clean: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('LIGHTAGENT_')) clean[k] = v;
  const r = spawnSync('sh', [SCRIPT, ...args], { encoding: 'utf8', timeout: 60_000, killSignal: 'SIGKILL', env: { ...clean, ...env } });
  const lines = (r.stdout ?? '').trim().split('\n');
  return { status: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '', summary: lines[lines.length - 1] ?? '' };
}

/** Every file under dir (relative path -> sha256 or 'dir'/'link'), for before/after comparisons. */
function snapshot(dir: string, rel = ''): Map<string, string> {
  const m = new Map<string, string>();
  for (const e of fs.readdirSync(path.join(dir, rel), { withFileTypes: true })) {
    const r = path.join(rel, e.name);
    if (e.isSymbolicLink()) m.set(r, `link:${fs.readlinkSync(path.join(dir, r))}`);
    else if (e.isDirectory()) {
      m.set(r, `dir:${(fs.statSync(path.join(dir, r)).mode & 0o7777).toString(8)}`);
      for (const [k, v] of snapshot(dir, r)) m.set(k, v);
    } else
      m.set(
        r,
        `${(fs.statSync(path.join(dir, r)).mode & 0o7777).toString(8)}:${crypto
          .createHash('sha256')
          .update(fs.readFileSync(path.join(dir, r)))
          .digest('hex')}`,
      );
  }
  return m;
}

/** Every file and directory that was there before is still there, unchanged (new siblings are fine). */
function assertUntouched(now: Map<string, string>, before: Map<string, string>): void {
  const changed = [...before].filter(([k, v]) => now.get(k) !== v).map(([k]) => k);
  assert.deepEqual(changed, [], 'user files changed or removed');
}

const mode = (p: string) => (fs.statSync(p).mode & 0o7777).toString(8);

/** A scratch root with some files of "the user" that the installer must never touch. */
function userRoot(): { root: string; userFiles: () => Map<string, string> } {
  const root = tempDir('la-install-');
  fs.chmodSync(root, 0o755);
  const put = (p: string, body: string, m = 0o644) => {
    fs.mkdirSync(path.dirname(path.join(root, p)), { recursive: true });
    fs.writeFileSync(path.join(root, p), body, { mode: m });
  };
  put('etc/hosts', '127.0.0.1 localhost\n');
  put('etc/xdg/autostart/other-app.desktop', '[Desktop Entry]\nExec=other\n');
  put('etc/systemd/system/other.service', '[Service]\nExecStart=/bin/true\n');
  put('usr/local/bin/other-tool', '#!/bin/sh\necho mine\n', 0o755);
  put('var/lib/other/data.db', 'user data');
  put('home/user/.bashrc', 'alias ll="ls -l"\n', 0o600);
  const ours =
    /^(etc\/lightagent|var\/lib\/lightagent|var\/log\/lightagent|usr\/local\/bin\/lightagent|opt\/lightagent|etc\/systemd\/system\/lightagent\.service|etc\/xdg\/autostart\/lightagent-tray\.desktop)/;
  return {
    root,
    userFiles: () => {
      const all = snapshot(root);
      for (const k of [...all.keys()]) if (ours.test(k) || !/\//.test(k)) all.delete(k); // top-level dirs may gain siblings
      return all;
    },
  };
}

describe('install.sh', () => {
  const roots: string[] = [];
  let caFile: string;
  before(() => {
    ensureBinary();
    caFile = path.join(tempDir('la-ca-'), 'ca.pem');
    fs.writeFileSync(caFile, CA_PEM);
  });
  after(() => {
    for (const r of roots) fs.rmSync(r, { recursive: true, force: true });
    fs.rmSync(path.dirname(caFile), { recursive: true, force: true });
  });
  const newRoot = () => {
    const u = userRoot();
    roots.push(u.root);
    return u;
  };
  const settings = (root: string) => [
    '--root',
    root,
    '--binary',
    BINARY,
    '--svm',
    'wss://svm.example:7443',
    '--token',
    'tenant-token-1234',
    '--ca',
    caFile,
  ];

  it('installs binary, 0600 config, unit and tray entry; twice gives the same result; user files untouched', () => {
    const { root, userFiles } = newRoot();
    const before = userFiles();
    const r = install([...settings(root), '--fail-closed']);
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.match(
      r.summary,
      /^lightagent-install: ok action=install version=\d+\.\d+\.\d+ bin=\/usr\/local\/bin\/lightagent config=\/etc\/lightagent\/agent\.yaml service=not-started\(--root\) root=\S+ host=\S+ seconds=\d+$/,
    );

    const bin = path.join(root, 'usr/local/bin/lightagent');
    assert.equal(mode(bin), '755');
    assert.equal(fs.statSync(bin).size, fs.statSync(BINARY).size);
    assert.equal(mode(path.join(root, 'etc/lightagent')), '700');
    const conf = path.join(root, 'etc/lightagent/agent.yaml');
    assert.equal(mode(conf), '600');
    const text = fs.readFileSync(conf, 'utf8');
    assert.match(text, /^svm: "wss:\/\/svm\.example:7443"$/m);
    assert.match(text, /^token: "tenant-token-1234"$/m);
    assert.match(text, /^ca: \/etc\/lightagent\/ca\.pem$/m);
    assert.match(text, /^on_svm_unavailable: deny$/m);
    assert.equal(fs.readFileSync(path.join(root, 'etc/lightagent/ca.pem'), 'utf8'), CA_PEM);
    const unit = fs.readFileSync(path.join(root, 'etc/systemd/system/lightagent.service'), 'utf8');
    assert.match(unit, /^ExecStart=\/usr\/local\/bin\/lightagent run --config \/etc\/lightagent\/agent\.yaml$/m);
    assert.equal(mode(path.join(root, 'etc/systemd/system/lightagent.service')), '644');
    const desktop = fs.readFileSync(path.join(root, 'etc/xdg/autostart/lightagent-tray.desktop'), 'utf8');
    assert.match(desktop, /^Exec=\/usr\/local\/bin\/lightagent tray$/m);
    assert.equal(fs.existsSync(path.join(root, 'etc/lightagent/removal.hash')), false, 'no password, no hash');
    assert.match(fs.readFileSync(path.join(root, 'var/log/lightagent/install.log'), 'utf8'), /lightagent-install: ok action=install/);

    const first = snapshot(root);
    const again = install([...settings(root), '--fail-closed']);
    assert.equal(again.status, 0, again.stderr);
    const second = snapshot(root);
    second.delete('var/log/lightagent/install.log');
    first.delete('var/log/lightagent/install.log');
    second.delete('etc/lightagent/install.env'); // holds the install time
    first.delete('etc/lightagent/install.env');
    assert.deepEqual(second, first, 'a second identical install changes nothing');
    assertUntouched(userFiles(), before);
  });

  it(
    'the installed unit passes systemd-analyze verify',
    { skip: spawnSync('systemd-analyze', ['--version']).status === 0 ? false : 'no systemd-analyze' },
    () => {
      const { root } = newRoot();
      assert.equal(install(settings(root)).status, 0);
      // verify resolves ExecStart on this machine: point it at the binary inside the scratch root.
      const unit = fs
        .readFileSync(path.join(root, 'etc/systemd/system/lightagent.service'), 'utf8')
        .replace('ExecStart=/usr/local/bin/lightagent ', `ExecStart=${root}/usr/local/bin/lightagent `);
      const probe = path.join(root, 'lightagent.service');
      fs.writeFileSync(probe, unit);
      const v = spawnSync('systemd-analyze', ['verify', probe], { encoding: 'utf8', timeout: 30_000 });
      assert.equal(v.status, 0, v.stdout + v.stderr);
      assert.equal(v.stderr.trim(), '', 'no warnings');
      // The scheduled-scan timer and its service are installed beside it (disabled; docs/scans.md).
      for (const f of ['lightagent-scan.service', 'lightagent-scan.timer'])
        fs.writeFileSync(
          path.join(root, f),
          fs
            .readFileSync(path.join(root, 'etc/systemd/system', f), 'utf8')
            .replace('ExecStart=/usr/local/bin/lightagent ', `ExecStart=${root}/usr/local/bin/lightagent `),
        );
      const t = spawnSync(
        'systemd-analyze',
        ['verify', path.join(root, 'lightagent-scan.timer'), path.join(root, 'lightagent-scan.service')],
        {
          encoding: 'utf8',
          timeout: 30_000,
          cwd: root,
        },
      );
      assert.equal(t.status, 0, t.stdout + t.stderr);
      assert.equal(t.stderr.trim(), '', 'no warnings');
    },
  );

  it('takes its settings from the environment, with --prefix /opt/lightagent and a token file', () => {
    const { root } = newRoot();
    const tokenFile = path.join(root, 'token');
    fs.writeFileSync(tokenFile, 'from-a-file-5678\n');
    const r = install([], {
      LIGHTAGENT_ROOT: root,
      LIGHTAGENT_BINARY: BINARY,
      LIGHTAGENT_SVM_URL: 'wss://10.0.0.5:7443',
      LIGHTAGENT_TOKEN_FILE: tokenFile,
      LIGHTAGENT_PREFIX: '/opt/lightagent',
    });
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.match(r.summary, /bin=\/opt\/lightagent\/bin\/lightagent /);
    assert.ok(fs.existsSync(path.join(root, 'opt/lightagent/bin/lightagent')));
    const text = fs.readFileSync(path.join(root, 'etc/lightagent/agent.yaml'), 'utf8');
    assert.match(text, /^svm: "wss:\/\/10\.0\.0\.5:7443"$/m);
    assert.match(text, /^token: "from-a-file-5678"$/m);
    assert.doesNotMatch(text, /on_svm_unavailable/);
    assert.match(
      fs.readFileSync(path.join(root, 'etc/systemd/system/lightagent.service'), 'utf8'),
      /^ExecStart=\/opt\/lightagent\/bin\/lightagent run /m,
    );
    // The uninstall finds the binary where the install put it.
    const u = install(['--root', root, '--uninstall']);
    assert.equal(u.status, 0, u.stderr);
    assert.equal(fs.existsSync(path.join(root, 'opt/lightagent/bin/lightagent')), false);
  });

  it('--config FILE: flags replace its keys, the rest is kept; an invalid config installs nothing (exit 3)', () => {
    const { root } = newRoot();
    const cfg = path.join(root, 'mine.yaml');
    fs.writeFileSync(cfg, 'svm: wss://old.example:1\ntoken: old-token-000\nprotect:\n  - /home\n  - /srv\ndeadline: 3s\n');
    const r = install(['--root', root, '--binary', BINARY, '--config', cfg, '--token', 'new-token-1234']);
    assert.equal(r.status, 0, r.stdout + r.stderr);
    const text = fs.readFileSync(path.join(root, 'etc/lightagent/agent.yaml'), 'utf8');
    assert.match(text, /^svm: wss:\/\/old\.example:1$/m);
    assert.match(text, /^token: "new-token-1234"$/m);
    assert.doesNotMatch(text, /old-token/);
    assert.match(text, /^protect:\n {2}- \/home\n {2}- \/srv$/m);
    assert.match(text, /^deadline: 3s$/m);

    const { root: root2, userFiles } = newRoot();
    const beforeFiles = userFiles();
    const bad = path.join(root2, 'bad.yaml');
    fs.writeFileSync(bad, 'svm: wss://svm.example:7443\ntoken: t-12345678\nno_such_setting: 1\n');
    const b = install(['--root', root2, '--binary', BINARY, '--config', bad]);
    assert.equal(b.status, 3, b.stdout + b.stderr);
    assert.match(b.summary, /^lightagent-install: FAILED exit=3 action=install .*no_such_setting/);
    assert.equal(fs.existsSync(path.join(root2, 'usr/local/bin/lightagent')), false, 'nothing installed');
    assert.equal(fs.existsSync(path.join(root2, 'etc/lightagent/agent.yaml')), false);
    assertUntouched(userFiles(), beforeFiles);
  });

  it('usage and settings errors: exit 2 and 3 with a FAILED summary', () => {
    const { root } = newRoot();
    const none = install(['--root', root, '--binary', BINARY]);
    assert.equal(none.status, 3);
    assert.match(none.summary, /FAILED exit=3 action=install .*no settings/);
    const badUrl = install(['--root', root, '--binary', BINARY, '--svm', 'https://svm.example', '--token', 'x-12345678']);
    assert.equal(badUrl.status, 3);
    const badFlag = install(['--root', root, '--frobnicate']);
    assert.equal(badFlag.status, 2);
    assert.match(badFlag.summary, /FAILED exit=2 .*unknown option --frobnicate/);
    const newline = install(['--root', root, '--binary', BINARY, '--svm', 'wss://a:1', '--token', 'abc\ninjected: 1']);
    assert.equal(newline.status, 3);
    const notInstalled = install(['--root', root, '--upgrade', '--binary', BINARY]);
    assert.equal(notInstalled.status, 4);
    assert.equal(install(['--root', root, '--uninstall']).status, 4);
  });

  describe('upgrade and uninstall', () => {
    let root: string;
    let userFiles: () => Map<string, string>;
    let userBefore: Map<string, string>;
    const state = () => path.join(root, 'var/lib/lightagent');
    before(() => {
      ({ root, userFiles } = newRoot());
      userBefore = userFiles();
      const r = install([...settings(root), '--removal-password', 'correct horse']);
      assert.equal(r.status, 0, r.stderr);
      // What a running agent leaves in its state directory.
      fs.mkdirSync(path.join(state(), 'quarantine'), { recursive: true, mode: 0o700 });
      fs.mkdirSync(path.join(state(), 'deferred'), { recursive: true, mode: 0o700 });
      fs.writeFileSync(path.join(state(), 'quarantine/q1.bin'), 'infected, kept');
      fs.writeFileSync(path.join(state(), 'deferred/queue.journal'), 'queued');
      fs.writeFileSync(path.join(state(), 'cache.v1'), 'cache');
      fs.writeFileSync(path.join(state(), 'agent-id'), 'vm-1');
    });

    it('stores the removal password hashed (0600), never in clear', () => {
      const h = path.join(root, 'etc/lightagent/removal.hash');
      assert.equal(mode(h), '600');
      const line = fs.readFileSync(h, 'utf8');
      assert.match(line, /^scrypt\$15\$8\$1\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+\n$/);
      assert.doesNotMatch(line, /correct horse/);
    });

    it('--upgrade replaces the binary and keeps config, cache, queue and quarantine', () => {
      const keep = [
        'etc/lightagent/agent.yaml',
        'etc/lightagent/removal.hash',
        'etc/lightagent/ca.pem',
        'var/lib/lightagent/cache.v1',
        'var/lib/lightagent/deferred/queue.journal',
        'var/lib/lightagent/quarantine/q1.bin',
        'var/lib/lightagent/agent-id',
      ];
      const beforeKeep = keep.map((k) => fs.readFileSync(path.join(root, k), 'utf8'));
      const ino = fs.statSync(path.join(root, 'usr/local/bin/lightagent')).ino;
      const r = install(['--root', root, '--upgrade', '--binary', BINARY]);
      assert.equal(r.status, 0, r.stdout + r.stderr);
      assert.match(r.summary, /^lightagent-install: ok action=upgrade .*service=unchanged/);
      assert.notEqual(fs.statSync(path.join(root, 'usr/local/bin/lightagent')).ino, ino, 'a new file (a running daemon keeps the old one)');
      assert.deepEqual(
        keep.map((k) => fs.readFileSync(path.join(root, k), 'utf8')),
        beforeKeep,
      );
      const withSettings = install(['--root', root, '--upgrade', '--binary', BINARY, '--svm', 'wss://other:1']);
      assert.equal(withSettings.status, 2, 'an upgrade never changes settings');
    });

    it('--uninstall refuses without or with a wrong password and then removes nothing', () => {
      const snap = snapshot(root);
      snap.delete('var/log/lightagent/install.log');
      for (const pw of [[], ['--removal-password', 'wrong horse']]) {
        const r = install(['--root', root, '--uninstall', ...pw]);
        assert.equal(r.status, 5, r.stdout + r.stderr);
        assert.match(r.summary, /^lightagent-install: FAILED exit=5 action=uninstall /);
      }
      const after = snapshot(root);
      after.delete('var/log/lightagent/install.log');
      assert.deepEqual(after, snap);
      const env = install(['--root', root, '--uninstall'], { LIGHTAGENT_REMOVAL_PASSWORD: 'nope' });
      assert.equal(env.status, 5);
    });

    it('--uninstall with the password removes everything but the quarantine; user files untouched', () => {
      const r = install(['--root', root, '--uninstall'], { LIGHTAGENT_REMOVAL_PASSWORD: 'correct horse' });
      assert.equal(r.status, 0, r.stdout + r.stderr);
      assert.match(r.summary, /^lightagent-install: ok action=uninstall .*service=removed/);
      for (const gone of [
        'usr/local/bin/lightagent',
        'etc/lightagent',
        'etc/systemd/system/lightagent.service',
        'etc/xdg/autostart/lightagent-tray.desktop',
        'var/lib/lightagent/cache.v1',
        'var/lib/lightagent/deferred',
        'var/lib/lightagent/agent-id',
      ]) {
        assert.equal(fs.existsSync(path.join(root, gone)), false, `${gone} removed`);
      }
      assert.equal(fs.readFileSync(path.join(state(), 'quarantine/q1.bin'), 'utf8'), 'infected, kept');
      assertUntouched(userFiles(), userBefore);
    });

    it('--uninstall --purge removes the quarantine and logs too', () => {
      const r = install(['--root', root, '--uninstall', '--purge']);
      assert.equal(r.status, 0, r.stdout + r.stderr);
      assert.match(r.summary, /action=uninstall purge=yes/);
      assert.equal(fs.existsSync(state()), false);
      assert.equal(fs.existsSync(path.join(root, 'var/log/lightagent')), false);
      assertUntouched(userFiles(), userBefore);
      assert.equal(install(['--root', root, '--uninstall', '--purge']).status, 4, 'nothing left');
    });
  });
});
