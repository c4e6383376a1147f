/**
 * Security refusals, each a test. What test/svm/tenants.test.ts and test/svm/server.test.ts
 * already prove (wrong/empty/missing token at the frame level, expired and revoked tokens, a
 * tenant-A lookup of tenant B's hash, an agent `verdict` frame) is not repeated here; these add:
 * near-miss tokens, an oversized token, a hello replayed on a live connection to switch tenant,
 * an agent sending every other SVM-only message (welcome, generation, load, error), an agent
 * process without a token or with a wrong one (the CLI end to end), and an agent that pins a
 * CA the SVM certificate does not chain to.
 */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CloseCode, encodeChunk, encodeMessage } from '../../src/protocol/index.js';
import { BuiltinEngine } from '../../src/svm/engines/builtin.js';
import { MemoryVerdictCache } from '../../src/svm/memory-verdict-cache.js';
import { SvmServer } from '../../src/svm/server.js';
import { EICAR } from '../helpers/fixtures.js';
import { CLI, run, spawnNode, tempDir } from '../helpers/procs.js';
import { makeTestPki, needOpenssl, type TestPki } from '../svm/certs.js';
import { metric, rawAgent, TOKEN, upload } from '../svm/helpers.js';

const TOKEN_B = 'tenant-b-token-0123';
/** An empty agent config file: no token or SVM from the machine's /etc/lightagent leaks into these runs. */
const EMPTY_CONFIG = path.join(tempDir('la-sec-cfg-'), 'agent.yaml');
fs.writeFileSync(EMPTY_CONFIG, '{}\n');

function startTwoTenants(): Promise<SvmServer> {
  return SvmServer.start({
    host: '127.0.0.1',
    port: 0,
    tokens: [
      { tenant: 'a', token: TOKEN },
      { tenant: 'b', token: TOKEN_B },
    ],
    engine: new BuiltinEngine(),
    cache: new MemoryVerdictCache(1000),
    closeGraceMs: 300,
    helloTimeoutMs: 2000,
  });
}

describe('security: authentication refusals', () => {
  let s: SvmServer;
  before(async () => {
    s = await startTwoTenants();
  });
  after(() => s.close());

  const nearMisses: Array<[string, string]> = [
    ['the token with a trailing newline', `${TOKEN}\n`],
    ['the token with a leading space', ` ${TOKEN}`],
    ['the token in upper case', TOKEN.toUpperCase()],
    ['the token minus its last character', TOKEN.slice(0, -1)],
    ['the token with its last character changed', `${TOKEN.slice(0, -1)}${TOKEN.endsWith('x') ? 'y' : 'x'}`],
    ['the token plus one character', `${TOKEN}a`],
    ['the token with a Cyrillic look-alike (а for a)', TOKEN.replace('a', '\u0430')],
    ['the token with a NUL inside', `${TOKEN.slice(0, 3)}\u0000${TOKEN.slice(3)}`],
    ["the two tenants' tokens concatenated", `${TOKEN}${TOKEN_B}`],
    ['the SHA-256 of the token (what the SVM stores)', crypto.createHash('sha256').update(TOKEN).digest('hex')],
  ];
  for (const [what, token] of nearMisses) {
    it(`wrong token: ${what} is refused with 4001 and never gets a welcome or a verdict`, async () => {
      const failures = await metric(s, 'lightagent_svm_auth_failures_total');
      const a = await rawAgent(s.url, token);
      a.ws.send(encodeMessage({ t: 'scan', id: 1, size: EICAR.length }));
      a.ws.send(encodeChunk(1, 0, true, Buffer.from(EICAR)));
      assert.equal(await a.closed, CloseCode.AUTH);
      assert.ok(!a.msgs.some((m) => m.t === 'welcome' || m.t === 'verdict'), JSON.stringify(a.msgs));
      assert.equal(await metric(s, 'lightagent_svm_auth_failures_total'), failures + 1);
    });
  }

  it('an oversized token (8 KiB, over the 4,096-character field bound) is refused before any token check, with no welcome', async () => {
    const a = await rawAgent(s.url, 'x'.repeat(8192));
    const code = await a.closed;
    assert.ok(code === CloseCode.OVERSIZED || code === CloseCode.AUTH || code === CloseCode.PROTOCOL, `closed ${code}`);
    assert.ok(!a.msgs.some((m) => m.t === 'welcome'));
  });

  it('a hello replayed on an authenticated connection (tenant B token after tenant A welcome) is refused (4000) and switches nothing', async () => {
    // Tenant B learns the hash of content it scanned; tenant A's connection then tries to become B.
    const content = Buffer.from(`tenant b secret ${Math.random()}\n${EICAR}`);
    const sha = crypto.createHash('sha256').update(content).digest('hex');
    const b = await rawAgent(s.url, TOKEN_B);
    assert.equal((await upload(b, 1, content)).verdict, 'infected');
    const a = await rawAgent(s.url, TOKEN);
    await a.next((m) => m.t === 'welcome');
    a.ws.send(JSON.stringify({ t: 'hello', v: 1, agentId: 'replayed', token: TOKEN_B, host: 'h', os: 'linux', agentVersion: '0' }));
    a.ws.send(encodeMessage({ t: 'lookup', id: 9, sha256: sha, size: content.length }));
    assert.equal(await a.closed, CloseCode.PROTOCOL);
    assert.ok(!a.msgs.some((m) => m.t === 'verdict'), 'nothing answered after the replayed hello');
    assert.equal(a.msgs.filter((m) => m.t === 'welcome').length, 1, 'no second welcome');
    // And a fresh tenant-A connection still does not see B's verdict.
    const a2 = await rawAgent(s.url, TOKEN);
    a2.ws.send(encodeMessage({ t: 'lookup', id: 1, sha256: sha, size: content.length }));
    assert.equal((await a2.verdict(1)).verdict, 'unknown');
    for (const x of [a2, b]) x.ws.close();
  });

  const svmOnly: Array<[string, Record<string, unknown>]> = [
    [
      'welcome',
      { t: 'welcome', v: 1, svmId: 'evil', generation: 'evil-gen', load: 0, limits: { maxFileSize: 1, maxChunk: 1, maxInFlight: 1 } },
    ],
    ['generation', { t: 'generation', generation: 'evil-gen' }],
    ['load', { t: 'load', load: 1, queue: 999 }],
    ['error', { t: 'error', code: 'LA_ERR_AUTH', message: 'forged' }],
  ];
  for (const [type, msg] of svmOnly) {
    it(`an agent sending an SVM-only "${type}" message is refused (4000) and changes nothing on the SVM`, async () => {
      const gen = s.core.generation();
      const a = await rawAgent(s.url, TOKEN);
      await a.next((m) => m.t === 'welcome');
      a.ws.send(JSON.stringify(msg));
      assert.equal(await a.closed, CloseCode.PROTOCOL);
      assert.equal(s.core.generation(), gen, 'generation unchanged');
      const other = await rawAgent(s.url, TOKEN);
      const w = await other.next((m) => m.t === 'welcome');
      assert.ok(w.t === 'welcome' && w.generation === gen && w.load < 1, `other agents see the real state: ${JSON.stringify(w)}`);
      other.ws.close();
    });
  }
});

describe('security: the agent CLI against an SVM that refuses it', () => {
  let svm: SvmServer;
  let dir: string;
  before(async () => {
    svm = await startTwoTenants();
    dir = tempDir('la-sec-');
    fs.writeFileSync(path.join(dir, 'eicar.com'), EICAR);
  });
  after(async () => {
    await svm.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const noConfig = { ...process.env, LIGHTAGENT_CONFIG: EMPTY_CONFIG, LIGHTAGENT_TOKEN: '', LIGHTAGENT_SVM_URL: '' };

  it('no token: `lightagent scan` refuses to start (exit 2, names the token setting) and never connects', async () => {
    const agents = await metric(svm, 'lightagent_svm_auth_failures_total');
    const r = run(process.execPath, [CLI, 'scan', '--svm', svm.url, '--no-cache', dir], 20_000);
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, /token/i);
    assert.equal(await metric(svm, 'lightagent_svm_auth_failures_total'), agents, 'nothing reached the SVM');
  });

  it('wrong token: `lightagent scan` fails with LA_ERR_AUTH (exit 2) and reports no file as clean', async () => {
    const p = spawnNode(CLI, ['scan', '--svm', svm.url, '--token', 'not-the-token', '--no-cache', '--json', dir], {
      env: noConfig,
      watchdogMs: 30_000,
    });
    const code = await new Promise<number | null>((r) => p.child.once('exit', (c) => r(c)));
    assert.equal(code, 2, p.output());
    assert.match(p.output(), /LA_ERR_AUTH/);
    assert.doesNotMatch(p.output(), /"clean":\s*[1-9]/, 'no file reported clean');
  });

  it('no token for the daemon: `lightagent run` refuses to start (exit 2) naming the token setting', async () => {
    const r = run(
      process.execPath,
      [CLI, 'run', '--svm', svm.url, '--protect', dir, '--state-dir', path.join(dir, 'state'), '--mode', 'watcher'],
      20_000,
    );
    assert.equal(r.status, 2, r.stdout + r.stderr);
    assert.match(r.stderr, /token/i);
  });
});

describe('security: wrong CA', { skip: needOpenssl() }, () => {
  let pki: TestPki;
  let svm: SvmServer;
  before(async () => {
    pki = makeTestPki();
    svm = await SvmServer.start({
      host: '127.0.0.1',
      port: 0,
      tokens: [{ tenant: 'a', token: TOKEN }],
      engine: new BuiltinEngine(),
      cache: new MemoryVerdictCache(100),
      closeGraceMs: 300,
      tls: { cert: pki.read(pki.serverCert), key: pki.read(pki.serverKey) },
    });
  });
  after(async () => {
    await svm?.close();
    fs.rmSync(pki.dir, { recursive: true, force: true });
  });

  it('an agent that pins another CA refuses the SVM (LA_ERR_TLS_UNTRUSTED, exit 2): no token is sent, no file judged', async () => {
    const dir = tempDir('la-sec-ca-');
    fs.writeFileSync(path.join(dir, 'eicar.com'), EICAR);
    try {
      const failures = svm.metrics['lightagent_svm_auth_failures_total'] ?? 0;
      const p = spawnNode(CLI, ['scan', '--svm', svm.url, '--token', TOKEN, '--no-cache', '--json', dir], {
        env: { LIGHTAGENT_CONFIG: EMPTY_CONFIG, LIGHTAGENT_CA: pki.otherCaCert },
        watchdogMs: 30_000,
      });
      const code = await new Promise<number | null>((r) => p.child.once('exit', (c) => r(c)));
      assert.equal(code, 2, p.output());
      assert.match(p.output(), /LA_ERR_TLS_UNTRUSTED|certificate|LA_ERR_SVM_UNAVAILABLE/);
      assert.equal(svm.metrics['lightagent_svm_agents_connected'] ?? 0, 0);
      assert.equal(svm.metrics['lightagent_svm_auth_failures_total'] ?? 0, failures, 'the token never reached the SVM');
      // The right CA works (the refusal was about the CA, not the setup).
      const ok = spawnNode(CLI, ['scan', '--svm', svm.url, '--token', TOKEN, '--no-cache', '--json', dir], {
        env: { LIGHTAGENT_CONFIG: EMPTY_CONFIG, LIGHTAGENT_CA: pki.caCert },
        watchdogMs: 30_000,
      });
      assert.equal(
        await new Promise<number | null>((r) => ok.child.once('exit', (c) => r(c))),
        1,
        `infected found over the pinned CA: ${ok.output()}`,
      );
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
