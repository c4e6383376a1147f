/**
 * The agent's side of TLS against the real SvmServer: wss:// with the SVM's CA pinned by `ca:`,
 * a wrong CA refused at once with LA_ERR_TLS_UNTRUSTED (final: no reconnect loop), mutual TLS
 * with `tls_cert`/`tls_key`, and an SVM that requires a client certificate refusing an agent
 * without one (or with one from another CA) with LA_ERR_TLS_CLIENT_CERT. Certificates are made
 * by openssl per run (test/svm/certs.ts).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { loadAgentConfig } from '../../src/config/agent.js';
import { svmLinkFor, svmPoolFor } from '../../src/agent/svm-connection.js';
import { ConfigError, SvmTlsError } from '../../src/errors.js';
import type { SvmServer } from '../../src/svm/server.js';
import type { SvmClient } from '../../src/svm-link/index.js';
import { makeTestPki, needOpenssl, type TestPki } from '../svm/certs.js';
import { TOKEN, startTestSvm } from '../svm/helpers.js';

const skip = needOpenssl();
const SHA = 'c'.repeat(64);

describe('agent TLS (wss://, pinned CA, mutual TLS)', { skip }, () => {
  let pki: TestPki;
  let plain: SvmServer; // TLS, no client certificate asked
  let mutual: SvmServer; // TLS, client certificate from pki.caCert required
  const links: SvmClient[] = [];
  before(async () => {
    pki = makeTestPki();
    plain = await startTestSvm({ tls: { cert: pki.read(pki.serverCert), key: pki.read(pki.serverKey) } });
    mutual = await startTestSvm({
      tls: { cert: pki.read(pki.serverCert), key: pki.read(pki.serverKey), ca: pki.read(pki.caCert), requestCert: true },
    });
  });
  after(async () => {
    for (const l of links) l.close();
    await Promise.all([plain?.close(), mutual?.close()]);
    if (pki) fs.rmSync(pki.dir, { recursive: true, force: true });
  });

  function agent(svm: string, extra: string[] = []): SvmClient {
    const f = path.join(pki.dir, `agent-${links.length}.yaml`);
    fs.writeFileSync(f, [`svm: ${svm}`, `token: ${TOKEN}`, `state_dir: ${pki.dir}`, ...extra].join('\n'));
    const l = svmLinkFor(loadAgentConfig({ file: f, env: {} }), { backoffMinMs: 20, backoffMaxMs: 50, connectTimeoutMs: 3000 });
    links.push(l);
    return l;
  }

  it('connects over wss:// with the SVM CA pinned by `ca:`', async () => {
    assert.match(plain.url, /^wss:/);
    const l = agent(plain.url, [`ca: ${pki.caCert}`]);
    await l.connect();
    const v = await l.lookup(SHA, 1);
    assert.equal(v.verdict, 'unknown');
  });

  it('refuses an SVM whose certificate the pinned CA did not sign: LA_ERR_TLS_UNTRUSTED, at once and for good', async () => {
    const l = agent(plain.url, [`ca: ${pki.otherCaCert}`]);
    const t0 = performance.now();
    const e = await l.connect().then(
      () => undefined,
      (x: unknown) => x,
    );
    assert.ok(e instanceof SvmTlsError, String(e));
    assert.equal(e.code, 'LA_ERR_TLS_UNTRUSTED');
    assert.match(e.message, /pinned CA did not sign/);
    assert.match(e.hint ?? '', /`ca:`/);
    assert.ok(performance.now() - t0 < 2000, 'not after the connect timeout');
    assert.equal(l.state, 'refused');
    // Final: requests fail with the same error, no reconnect loop.
    await assert.rejects(l.lookup(SHA, 1), (x: unknown) => x instanceof SvmTlsError && x.code === 'LA_ERR_TLS_UNTRUSTED');
  });

  it('without a pinned CA the system CAs do not know a private CA: refused too', async () => {
    const l = agent(plain.url);
    await assert.rejects(
      l.connect(),
      (x: unknown) => x instanceof SvmTlsError && x.code === 'LA_ERR_TLS_UNTRUSTED' && /pin the SVM CA/.test(x.hint ?? ''),
    );
  });

  it('mutual TLS: connects with tls_cert/tls_key signed by the CA the SVM trusts', async () => {
    const l = agent(mutual.url, [`ca: ${pki.caCert}`, `tls_cert: ${pki.clientCert}`, `tls_key: ${pki.clientKey}`]);
    await l.connect();
    assert.equal((await l.lookup(SHA, 1)).verdict, 'unknown');
  });

  it('mutual TLS: an agent without a client certificate is refused with LA_ERR_TLS_CLIENT_CERT', async () => {
    const l = agent(mutual.url, [`ca: ${pki.caCert}`]);
    const e = await l.connect().then(
      () => undefined,
      (x: unknown) => x,
    );
    assert.ok(e instanceof SvmTlsError, String(e));
    assert.equal(e.code, 'LA_ERR_TLS_CLIENT_CERT');
    assert.match(e.message, /requires a client certificate/);
    assert.equal(l.state, 'refused');
  });

  it('mutual TLS: a client certificate from another CA is refused with LA_ERR_TLS_CLIENT_CERT', async () => {
    const l = agent(mutual.url, [`ca: ${pki.caCert}`, `tls_cert: ${pki.otherClientCert}`, `tls_key: ${pki.otherClientKey}`]);
    await assert.rejects(
      l.connect(),
      (x: unknown) =>
        x instanceof SvmTlsError &&
        x.code === 'LA_ERR_TLS_CLIENT_CERT' &&
        /does not trust that certificate/.test(x.message) &&
        l.state === 'refused',
    );
  });

  it('a pool skips an SVM it cannot trust and uses the next one', async () => {
    const f = path.join(pki.dir, 'pool.yaml');
    fs.writeFileSync(
      f,
      [`svm:`, `  - ${mutual.url}`, `  - ${plain.url}`, `token: ${TOKEN}`, `state_dir: ${pki.dir}`, `ca: ${pki.caCert}`].join('\n'),
    );
    const p = svmPoolFor(loadAgentConfig({ file: f, env: {} }), { backoffMinMs: 20, backoffMaxMs: 50 });
    links.push(p);
    await p.connect();
    await p.settled(2000);
    assert.equal(p.url, plain.url);
    const st = p.status();
    assert.equal(st.find((s) => s.url === mutual.url)?.error?.code, 'LA_ERR_TLS_CLIENT_CERT');
  });

  it('config: tls_cert without tls_key, an unreadable CA file, and plain ws:// to another host are errors naming the key', () => {
    const cfg = (lines: string[]) => {
      const f = path.join(pki.dir, 'bad.yaml');
      fs.writeFileSync(f, [`token: ${TOKEN}`, `state_dir: ${pki.dir}`, ...lines].join('\n'));
      return loadAgentConfig({ file: f, env: {} });
    };
    assert.throws(
      () => svmLinkFor(cfg([`svm: ${plain.url}`, `tls_cert: ${pki.clientCert}`])),
      (e: unknown) => e instanceof ConfigError && /tls_key: mutual TLS needs both/.test(e.message),
    );
    assert.throws(
      () => svmLinkFor(cfg([`svm: ${plain.url}`, `ca: ${pki.dir}/missing.crt`])),
      (e: unknown) => e instanceof ConfigError && /ca: cannot read .*missing\.crt/.test(e.message),
    );
    assert.throws(
      () => svmLinkFor(cfg(['svm: ws://10.1.2.3:7443'])),
      (e: unknown) => e instanceof ConfigError && /plain ws:\/\/ to another host.*allow_plain_ws/.test(e.message),
    );
    assert.ok(svmLinkFor(cfg(['svm: ws://10.1.2.3:7443', 'allow_plain_ws: true'])));
  });
});
