/**
 * installers/cloud-init/user-data.yaml: valid YAML and cloud-config (cloud-init's own schema check
 * when cloud-init is installed), and its runcmd really installs: the file's write_files are
 * written into a scratch dir, its commands run as written with only the URLs pointed at a local
 * HTTP server (serving install.sh and the release binary, with the binary's real SHA-256) and
 * `--root` added, so the download, checksum and settings paths of install.sh all run.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parseDocument } from 'yaml';
import { findBinary, needPackage, tempDir } from '../helpers/procs.js';
import { BINARY, ROOT, ensureBinary } from './binary.js';

const FILE = path.join(ROOT, 'installers/cloud-init/user-data.yaml');

/** Without LIGHTAGENT_* and proxies (the local server must be reached directly). */
function cleanEnv(): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('LIGHTAGENT_') && !/_proxy$/i.test(k)));
}

/** Like spawnSync, but the event loop (and the test's HTTP server) keeps running. */
function runAsync(cmd: string, args: string[], timeoutMs = 120_000): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { env: cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const t = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('close', (status) => {
      clearTimeout(t);
      resolve({ status, stdout, stderr });
    });
  });
}

interface WriteFile {
  path: string;
  owner?: string;
  permissions: string;
  content: string;
}
interface UserData {
  write_files: WriteFile[];
  runcmd: string[][];
}

function load(): UserData {
  const text = fs.readFileSync(FILE, 'utf8');
  assert.equal(text.split('\n')[0], '#cloud-config', 'cloud-init reads user data as cloud-config only with this first line');
  const doc = parseDocument(text, { uniqueKeys: true, strict: true });
  assert.deepEqual(doc.errors, []);
  assert.deepEqual(doc.warnings, []);
  return doc.toJS() as UserData;
}

describe('cloud-init user-data', () => {
  let server: http.Server;
  let base: string;
  let work: string;
  before(async () => {
    ensureBinary();
    work = tempDir('la-cloud-');
    server = http.createServer((req, res) => {
      const files: Record<string, string> = {
        '/lightagent/install.sh': path.join(ROOT, 'installers/linux/install.sh'),
        '/lightagent/lightagent-linux-x64': BINARY,
      };
      const f = files[req.url ?? ''];
      if (!f) {
        res.writeHead(404).end();
        return;
      }
      res.writeHead(200, { 'content-length': fs.statSync(f).size });
      fs.createReadStream(f).pipe(res);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(async () => {
    await new Promise((r) => server.close(r));
    fs.rmSync(work, { recursive: true, force: true });
  });

  it('is cloud-config with only the keys and shapes cloud-init expects', () => {
    const ud = load();
    assert.deepEqual(Object.keys(ud).sort(), ['runcmd', 'write_files']);
    for (const w of ud.write_files) {
      assert.ok(path.isAbsolute(w.path), w.path);
      assert.match(w.permissions, /^0[0-7]{3}$/, `${w.path}: permissions as a quoted octal string`);
      assert.equal(typeof w.content, 'string');
    }
    const token = ud.write_files.find((w) => w.path.endsWith('/token'));
    assert.equal(token?.permissions, '0600', 'the token file is private');
    for (const c of ud.runcmd) {
      assert.ok(
        Array.isArray(c) && c.every((a) => typeof a === 'string'),
        `runcmd entries are argv arrays (no shell): ${JSON.stringify(c)}`,
      );
    }
    const inst = ud.runcmd.find((c) => c[1]?.endsWith('install.sh'));
    assert.ok(inst, 'runcmd runs install.sh');
    assert.ok(!inst.includes('--token'), 'the token never appears on a command line (ps)');
    assert.equal(ud.runcmd[ud.runcmd.length - 1]![0], 'rm', 'the token is removed last');
  });

  it(
    'passes `cloud-init schema`',
    { skip: needPackage(findBinary('cloud-init', ['/usr/bin/cloud-init']), 'cloud-init', 'the cloud-init schema check') ?? false },
    () => {
      const r = spawnSync('cloud-init', ['schema', '--config-file', FILE], { encoding: 'utf8', timeout: 60_000 });
      assert.equal(r.status, 0, r.stdout + r.stderr);
      assert.match(r.stdout + r.stderr, /Valid cloud-config/);
    },
  );

  it('its write_files + runcmd install the agent (download, checksum, token file, CA)', async () => {
    const ud = load();
    const target = path.join(work, 'root');
    fs.mkdirSync(target, { mode: 0o755 });
    const staging = path.join(work, 'staging');
    const map = (p: string) => p.replace('/run/lightagent-install', staging);
    for (const w of ud.write_files) {
      fs.mkdirSync(path.dirname(map(w.path)), { recursive: true });
      fs.writeFileSync(map(w.path), w.content, { mode: parseInt(w.permissions, 8) });
    }
    const sha = crypto.createHash('sha256').update(fs.readFileSync(BINARY)).digest('hex');
    for (const cmd of ud.runcmd) {
      let argv = cmd.map((a) => map(a.replace('https://repo.example', base)));
      if (argv[1]?.endsWith('install.sh')) {
        const i = argv.indexOf('--sha256');
        argv[i + 1] = sha;
        argv = [...argv, '--root', target];
      }
      const r = await runAsync(argv[0]!, argv.slice(1));
      assert.equal(r.status, 0, `${argv.join(' ')}: ${r.stdout}${r.stderr}`);
      if (argv[1]?.endsWith('install.sh')) assert.match(r.stdout, /^lightagent-install: ok action=install /m);
    }
    assert.equal(fs.existsSync(staging), false, 'the token staging dir is gone');
    const conf = fs.readFileSync(path.join(target, 'etc/lightagent/agent.yaml'), 'utf8');
    assert.match(conf, /^svm: "wss:\/\/svm\.example:7443"$/m);
    assert.match(conf, /^token: "replace-with-the-tenant-token"$/m);
    assert.match(conf, /^ca: \/etc\/lightagent\/ca\.pem$/m);
    assert.equal(
      spawnSync('cmp', [BINARY, path.join(target, 'usr/local/bin/lightagent')]).status,
      0,
      'the downloaded binary is the release binary',
    );
  });

  it('install.sh refuses a download whose checksum differs (exit 7), installs nothing', async () => {
    const target = fs.mkdtempSync(path.join(work, 'bad-'));
    const r = await runAsync('sh', [
      path.join(ROOT, 'installers/linux/install.sh'),
      '--root',
      target,
      '--svm',
      'wss://svm.example:7443',
      '--token',
      'tok-12345678',
      '--binary-url',
      `${base}/lightagent/lightagent-linux-x64`,
      '--sha256',
      '0'.repeat(64),
    ]);
    assert.equal(r.status, 7, r.stdout + r.stderr);
    assert.match(r.stdout, /FAILED exit=7 .*checksum/);
    assert.equal(fs.existsSync(path.join(target, 'usr/local/bin/lightagent')), false);
    assert.deepEqual(fs.readdirSync(path.join(target, 'usr/local/bin')), [], 'no temp file left behind');
  });
});
