/**
 * TLS on the SVM: wss:// with the SVM's CA pinned by the agent, mutual TLS (agents without a
 * certificate signed by the configured client CA never get a welcome), plain ws refused on a TLS
 * port, https /healthz, config rules and the CLI flags. Certificates are made by openssl per run.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import WebSocket from 'ws';
import { ConfigError, LightagentError } from '../../src/errors.js';
import { loadSvmConfig, readTlsFiles } from '../../src/svm/config.js';
import type { SvmServer } from '../../src/svm/server.js';
import { SVM_CLI, eventually, spawnNode, waitFor } from '../helpers/procs.js';
import { makeTestPki, needOpenssl, type TestPki } from './certs.js';
import { EICAR_BYTES as EICAR } from '../helpers/fixtures.js';
import { TOKEN, rawAgent, startTestSvm, upload } from './helpers.js';

const skip = needOpenssl();

/** What happens to a connection: `welcome` (authenticated), or how it failed. */
async function outcome(url: string, opts: WebSocket.ClientOptions): Promise<{ kind: 'welcome' } | { kind: 'failed'; why: string }> {
  const ws = new WebSocket(url, { perMessageDeflate: false, ...opts });
  return new Promise((resolve) => {
    const t = setTimeout(() => done({ kind: 'failed', why: 'timeout' }), 5000);
    const done = (r: { kind: 'welcome' } | { kind: 'failed'; why: string }) => {
      clearTimeout(t);
      ws.removeAllListeners();
      ws.on('error', () => {});
      ws.terminate();
      resolve(r);
    };
    ws.on('open', () =>
      ws.send(JSON.stringify({ t: 'hello', v: 1, agentId: 'tls-agent', token: TOKEN, host: 'h', os: 'linux', agentVersion: '0' })),
    );
    ws.on('message', (d) => {
      if ((d as Buffer).toString().includes('"welcome"')) done({ kind: 'welcome' }); // text frames: a Buffer (binaryType nodebuffer)
    });
    ws.on('error', (e) => done({ kind: 'failed', why: e.message }));
    ws.on('close', (code) => done({ kind: 'failed', why: `closed ${code}` }));
  });
}

describe('SVM TLS', { skip }, () => {
  let pki: TestPki;
  before(() => {
    pki = makeTestPki();
  });
  after(() => fs.rmSync(pki.dir, { recursive: true, force: true }));

  describe('server certificate (wss://)', () => {
    let s: SvmServer;
    before(async () => {
      s = await startTestSvm({ tls: { cert: pki.read(pki.serverCert), key: pki.read(pki.serverKey) } });
    });
    after(() => s.close());

    it('serves wss:// to an agent that pins the SVM CA, and scans over it', async () => {
      assert.match(s.url, /^wss:\/\/127\.0\.0\.1:\d+$/);
      assert.deepEqual(s.tls, { enabled: true, mutual: false });
      const a = await rawAgent(s.url, TOKEN, true, { ca: pki.read(pki.caCert) });
      await a.next((m) => m.t === 'welcome');
      const v = await upload(a, 1, Buffer.concat([Buffer.from('over tls '), EICAR]));
      assert.equal(v.verdict, 'infected');
      a.ws.close();
      await a.closed;
    });

    it('an agent that trusts another CA (or only the system CAs) never gets a welcome', async () => {
      const wrong = await outcome(s.url, { ca: pki.read(pki.otherCaCert) });
      assert.equal(wrong.kind, 'failed');
      assert.match((wrong as { why: string }).why, /certificate/i);
      const system = await outcome(s.url, {});
      assert.equal(system.kind, 'failed');
      await eventually(() => s.metrics.lightagent_svm_tls_failures_total! >= 2, 3000, 'the SVM counting the failed handshakes');
    });

    it('refuses plain ws:// on the TLS port', async () => {
      const r = await outcome(s.url.replace('wss://', 'ws://'), {});
      assert.equal(r.kind, 'failed');
    });

    it('serves /healthz over https', async () => {
      assert.match(s.httpUrl, /^https:\/\//);
      const body = await new Promise<string>((resolve, reject) => {
        import('node:https').then((https) => {
          https
            .get(`${s.httpUrl}/healthz`, { ca: pki.read(pki.caCert) }, (res) => {
              let b = '';
              res.on('data', (d: Buffer) => (b += d.toString()));
              res.on('end', () => resolve(b));
            })
            .on('error', reject);
        }, reject);
      });
      assert.equal((JSON.parse(body) as { status: string }).status, 'ok');
    });
  });

  describe('mutual TLS', () => {
    let s: SvmServer;
    before(async () => {
      s = await startTestSvm({
        tls: { cert: pki.read(pki.serverCert), key: pki.read(pki.serverKey), ca: pki.read(pki.caCert), requestCert: true },
      });
    });
    after(() => s.close());

    it('accepts an agent with a certificate signed by the client CA', async () => {
      assert.deepEqual(s.tls, { enabled: true, mutual: true });
      const a = await rawAgent(s.url, TOKEN, true, {
        ca: pki.read(pki.caCert),
        cert: pki.read(pki.clientCert),
        key: pki.read(pki.clientKey),
      });
      await a.next((m) => m.t === 'welcome');
      assert.equal((await upload(a, 1, Buffer.from('mtls clean'))).verdict, 'clean');
      a.ws.close();
      await a.closed;
    });

    it('refuses an agent without a certificate, and one whose certificate another CA signed, before any frame', async () => {
      const before = s.metrics.lightagent_svm_tls_failures_total!;
      const lookups = s.metrics.lightagent_svm_lookups_total!;
      const none = await outcome(s.url, { ca: pki.read(pki.caCert) });
      assert.equal(none.kind, 'failed', 'no client certificate');
      const foreign = await outcome(s.url, {
        ca: pki.read(pki.caCert),
        cert: pki.read(pki.otherClientCert),
        key: pki.read(pki.otherClientKey),
      });
      assert.equal(foreign.kind, 'failed', 'certificate of another CA');
      await eventually(() => s.metrics.lightagent_svm_tls_failures_total! >= before + 2, 3000, 'both handshakes failing on the SVM');
      assert.equal(s.metrics.lightagent_svm_agents_connected, 0);
      assert.equal(s.metrics.lightagent_svm_lookups_total, lookups);
    });

    it('reloads its certificate for new connections without dropping connected agents', async () => {
      const a = await rawAgent(s.url, TOKEN, true, {
        ca: pki.read(pki.caCert),
        cert: pki.read(pki.clientCert),
        key: pki.read(pki.clientKey),
      });
      await a.next((m) => m.t === 'welcome');
      // Same files, new secure context: the seam SIGHUP uses after a renewal.
      s.reloadTls({ cert: pki.read(pki.serverCert), key: pki.read(pki.serverKey), ca: pki.read(pki.caCert), requestCert: true });
      assert.throws(
        () => s.reloadTls({ cert: pki.read(pki.serverCert), key: pki.read(pki.serverKey) }),
        (e: unknown) => e instanceof LightagentError && e.code === 'LA_ERR_TLS',
      );
      assert.throws(
        () => s.reloadTls({ cert: pki.read(pki.serverCert), key: pki.read(pki.clientKey), ca: pki.read(pki.caCert), requestCert: true }),
        /TLS certificate, key or CA/,
      );
      assert.equal((await upload(a, 2, EICAR)).verdict, 'infected', 'the connected agent still scans');
      const b = await outcome(s.url, { ca: pki.read(pki.caCert), cert: pki.read(pki.clientCert), key: pki.read(pki.clientKey) });
      assert.equal(b.kind, 'welcome');
      a.ws.close();
      await a.closed;
    });
  });

  it('refuses to start with a key that does not match the certificate, or mutual TLS without a CA', async () => {
    await assert.rejects(
      startTestSvm({ tls: { cert: pki.read(pki.serverCert), key: pki.read(pki.clientKey) } }),
      (e: unknown) => e instanceof LightagentError && e.code === 'LA_ERR_TLS',
    );
    await assert.rejects(
      startTestSvm({ tls: { cert: pki.read(pki.serverCert), key: pki.read(pki.serverKey), requestCert: true } }),
      (e: unknown) => e instanceof LightagentError && e.code === 'LA_ERR_TLS' && /client_ca/.test(e.hint ?? ''),
    );
  });

  it('config: tls allows a non-loopback listen; files that cannot be read or are not PEM are named', () => {
    const c = loadSvmConfig({
      env: {},
      flags: { tokens: ['a-long-token'], listen: '0.0.0.0:7443', 'tls.cert': pki.serverCert, 'tls.key': pki.serverKey },
    });
    assert.equal(c.tls?.cert, pki.serverCert);
    assert.throws(
      () => loadSvmConfig({ env: {}, flags: { tokens: ['a-long-token'], 'tls.cert': pki.serverCert } }),
      (e: unknown) => e instanceof ConfigError && e.issues.some((i) => i.startsWith('tls.key')),
    );
    const notPem = path.join(pki.dir, 'not.pem');
    fs.writeFileSync(notPem, 'hello');
    assert.throws(
      () => readTlsFiles({ cert: path.join(pki.dir, 'missing.crt'), key: notPem }, 'svm.yaml'),
      (e: unknown) =>
        e instanceof ConfigError &&
        /tls\.cert: .*missing\.crt: cannot read the file \(ENOENT\)/.test(e.message) &&
        /tls\.key: .*not\.pem is not PEM/.test(e.message),
    );
    const files = readTlsFiles({ cert: pki.serverCert, key: pki.serverKey, client_ca: pki.caCert });
    assert.equal(files.requestCert, true);
  });

  it('lightagent-svm --tls-cert --tls-key --tls-client-ca serves mutual TLS', async () => {
    const p = spawnNode(
      SVM_CLI,
      [
        '--listen',
        '127.0.0.1:0',
        '--token',
        TOKEN,
        '--json',
        '--log-level',
        'error',
        '--tls-cert',
        pki.serverCert,
        '--tls-key',
        pki.serverKey,
        '--tls-client-ca',
        pki.caCert,
      ],
      { watchdogMs: 30_000 },
    );
    try {
      const m = await waitFor(p, /^\{"event":"listening".*\}$/m);
      const line = JSON.parse(m[0]) as { url: string; healthz: string; tls: boolean; mutualTls: boolean };
      assert.match(line.url, /^wss:\/\/127\.0\.0\.1:\d+$/);
      assert.match(line.healthz, /^https:\/\//);
      assert.equal(line.tls, true);
      assert.equal(line.mutualTls, true);
      const a = await rawAgent(line.url, TOKEN, true, {
        ca: pki.read(pki.caCert),
        cert: pki.read(pki.clientCert),
        key: pki.read(pki.clientKey),
      });
      assert.equal((await upload(a, 1, EICAR)).verdict, 'infected');
      assert.equal((await outcome(line.url, { ca: pki.read(pki.caCert) })).kind, 'failed');
      a.ws.close();
      assert.equal(await p.stop('SIGTERM'), 0);
    } finally {
      await p.stop('SIGKILL');
    }
  });
});
