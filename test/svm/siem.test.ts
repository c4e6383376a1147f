/**
 * SIEM export against a real rsyslogd started here: a detection sent by an agent over the
 * WebSocket arrives over UDP, TCP and TLS in RFC 5424 and CEF; every other kind published on the
 * bus arrives whole, hostile strings included; with rsyslog down the SVM scans on, events queue
 * and reach rsyslog once it is back on the same port; past the bound the oldest are dropped,
 * counted in /metrics and logged; a receiver whose certificate the pinned CA did not sign gets
 * nothing.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { closeLogging, configureLogging } from '../../src/log.js';
import { encodeMessage } from '../../src/protocol/index.js';
import type { SvmEvent } from '../../src/svm/events.js';
import { SvmEventBus } from '../../src/svm/events.js';
import { SvmMetrics } from '../../src/svm/metrics.js';
import { SiemExport, type SiemDestination } from '../../src/svm/siem/export.js';
import type { SvmServer } from '../../src/svm/server.js';
import { EICAR_BYTES as EICAR } from '../helpers/fixtures.js';
import { eventually, run, startSvmProcess, SVM_CLI, tempDir } from '../helpers/procs.js';
import { makeTestPki, needOpenssl, type TestPki } from './certs.js';
import { rawAgent, startTestSvm, upload, type RawAgent } from './helpers.js';
import { needRsyslog, startRsyslog, type Received, type Rsyslog } from './siem-rsyslog.js';

const skip = needRsyslog() ?? needOpenssl();

const dest = (over: Partial<SiemDestination> & Pick<SiemDestination, 'name' | 'protocol' | 'port'>): SiemDestination => ({
  host: '127.0.0.1',
  format: 'rfc5424',
  events: ['detection', 'protection', 'agent-silent', 'policy', 'signatures'],
  buffer: { events: 10_000, bytes: 8 << 20 },
  facility: 16,
  appName: over.name,
  maxMessage: 8192,
  ...over,
});

/** A family's series from GET /metrics, by destination. */
async function series(s: SvmServer, name: string): Promise<Record<string, number>> {
  const text = await (await fetch(`${s.httpUrl}/metrics`)).text();
  const out: Record<string, number> = {};
  for (const m of text.matchAll(new RegExp(`^${name}\\{destination="([^"]+)"\\} (\\S+)$`, 'gm'))) out[m[1]!] = Number(m[2]);
  return out;
}

function sendDetection(a: RawAgent, p: string, threat = 'Eicar-Test-Signature'): void {
  a.ws.send(
    encodeMessage({
      t: 'event',
      kind: 'detection',
      time: new Date().toISOString(),
      path: p,
      threat,
      action: 'quarantined',
      process: { pid: 42, exe: '/usr/bin/cat' },
    }),
  );
}

const T = () => new Date().toISOString();

describe('SIEM export to a real rsyslog', { skip, timeout: 180_000 }, () => {
  let pki: TestPki;
  let rs: Rsyslog;
  const logDir = tempDir('la-siem-log-');
  const logFile = path.join(logDir, 'svm.log');

  /** A line of the SVM's log with this code and destination, within 10 s. */
  const logged = (code: string, destination: string) =>
    eventually(
      () => {
        try {
          return fs
            .readFileSync(logFile, 'utf8')
            .split('\n')
            .some((l) => l.includes(`"code":"${code}"`) && l.includes(`"destination":"${destination}"`));
        } catch {
          return false;
        }
      },
      10_000,
      `${code} logged for ${destination}`,
    );

  before(async () => {
    pki = makeTestPki();
    rs = await startRsyslog(pki);
    configureLogging({ file: logFile, level: 'info' });
  });
  after(async () => {
    await rs?.server.stop();
    await closeLogging();
  });

  it('delivers a detection sent by an agent over UDP, TCP and TLS, in RFC 5424 and CEF', async () => {
    const destinations: SiemDestination[] = [];
    for (const protocol of ['udp', 'tcp', 'tls'] as const)
      for (const format of ['rfc5424', 'cef'] as const)
        destinations.push(
          dest({ name: `${protocol}-${format}`, protocol, port: rs[protocol], format, ...(protocol === 'tls' ? { ca: pki.caCert } : {}) }),
        );
    const s = await startTestSvm({ siem: destinations, siemExport: { hostname: 'svm-test', backoffMs: { min: 100, max: 500 } } });
    try {
      await waitConnected(
        s,
        destinations.map((d) => d.name),
      );
      const a = await rawAgent(s.url);
      await a.next((m) => m.t === 'welcome');
      sendDetection(a, '/home/u/eicar.com');
      const got = await rs.waitFor((r) => r.msgid === 'detection', 6);
      assert.equal(got.length, 6, 'one message per destination, no more');
      for (const d of destinations) {
        const r = got.find((x) => x.app === d.name);
        assert.ok(r, `${d.name} arrived`);
        assert.equal(r.input, d.protocol);
        assert.equal(r.pri, String(16 * 8 + 2), 'local0.crit');
        assert.equal(r.hostname, 'svm-test');
        assert.equal(r.procid, String(process.pid));
        if (d.format === 'rfc5424') {
          assert.match(
            r.sd,
            /^\[lightagent@32473 kind="detection" tenant="a" agentId="raw-agent" host="test" path="\/home\/u\/eicar.com" /,
          );
          const body = JSON.parse(r.msg) as Record<string, unknown>;
          assert.equal(body.kind, 'detection');
          assert.equal(body.tenant, 'a');
          assert.equal(body.path, '/home/u/eicar.com');
          assert.equal(body.threat, 'Eicar-Test-Signature');
          assert.equal(body.action, 'quarantined');
          assert.equal(body.pid, 42);
        } else {
          assert.equal(r.sd, '-');
          assert.match(r.msg, /^CEF:0\|lightagent\|lightagent-svm\|[\d.]+\|detection\|Malware detected\|8\|rt=\d+ dvchost=svm-test /);
          assert.match(r.msg, / cs1Label=tenant cs1=a /);
          assert.match(r.msg, / filePath=\/home\/u\/eicar.com fname=eicar.com /);
          assert.match(r.msg, / act=quarantined /);
        }
      }
      const sent = await series(s, 'lightagent_svm_siem_sent_total');
      for (const d of destinations) assert.equal(sent[d.name], 1, `${d.name} counted as sent`);
      assert.deepEqual(
        Object.values(await series(s, 'lightagent_svm_siem_dropped_total')),
        destinations.map(() => 0),
      );
    } finally {
      await s.close();
    }
  });

  it('lightagent-svm reads siem: from its config file, exports, flushes on SIGTERM; a missing ca file is exit 2', async () => {
    const cfg = path.join(logDir, 'svm.yaml');
    fs.writeFileSync(
      cfg,
      [
        'siem:',
        `  - {address: "tls://127.0.0.1:${rs.tls}", ca: "${pki.caCert}", format: cef, name: cli-tls, app_name: cli-tls}`,
        `  - {address: "udp://127.0.0.1:${rs.udp}", events: [detection], app_name: cli-udp}`,
        '',
      ].join('\n'),
    );
    const svm = await startSvmProcess(['--config', cfg]);
    try {
      const a = await rawAgent(svm.url, 'test-token');
      await a.next((m) => m.t === 'welcome');
      sendDetection(a, '/srv/cli/eicar.com');
      const [tls] = await rs.waitFor((r) => r.app === 'cli-tls');
      assert.match(tls!.msg, /^CEF:0\|lightagent\|.* filePath=\/srv\/cli\/eicar.com /);
      await rs.waitFor((r) => r.app === 'cli-udp');
      const metrics = await (await fetch(`http://127.0.0.1:${svm.port}/metrics`)).text();
      assert.match(metrics, /^lightagent_svm_siem_sent_total\{destination="cli-tls"\} 1$/m);
      assert.match(metrics, /^lightagent_svm_siem_sent_total\{destination="127.0.0.1:\d+"\} 1$/m);
      a.ws.close();
    } finally {
      assert.equal(await svm.stop('SIGTERM'), 0);
    }
    fs.writeFileSync(cfg, 'siem: [{address: "tls://127.0.0.1:6514", ca: /nonexistent/ca.pem}]\n');
    const r = run(process.execPath, [SVM_CLI, '--config', cfg, '--listen', '127.0.0.1:0', '--token', 'test-token'], 20_000);
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, /siem\.0\.ca: \/nonexistent\/ca\.pem: cannot read the file \(ENOENT\)/);
  });

  it('exports every kind of event, hostile strings from agents included, one message each', async () => {
    const d = dest({ name: 'kinds', protocol: 'tcp', port: rs.tcp });
    const c = dest({ name: 'kinds-cef', protocol: 'tls', port: rs.tls, ca: pki.caCert, format: 'cef' });
    const s = await startTestSvm({ siem: [d, c], siemExport: { backoffMs: { min: 100, max: 500 } } });
    try {
      await waitConnected(s, [d.name, c.name]);
      const evil = 'x\n<13>1 2026-01-01T00:00:00Z forged app - - - injected\u0000"] \\ | = \r\n';
      const base = { time: T(), tenant: 'a', agentId: `agent${evil}`, host: `host${evil}` };
      const events: SvmEvent[] = [
        { kind: 'protection', ...base, state: 'degraded', previous: 'protected', reasons: [`fanotify lost${evil}`, 'svm down'] },
        { kind: 'protection', ...base, state: 'protected', previous: 'degraded', reasons: [] },
        { kind: 'agent-silent', ...base, lastSeen: T() },
        { kind: 'agent-back', ...base, lastSeen: T() },
        { kind: 'policy', time: T(), tenant: 'a', policy: `strict${evil}`, change: 'set', version: '7' },
        { kind: 'signatures', time: T(), engine: 'clamav', generation: 'g2', previous: 'g1' },
        { kind: 'signatures-stale', time: T(), engine: 'clamav', generation: 'g2', ageSeconds: 900_000 },
        { kind: 'detection', ...base, path: `/tmp/${'long/'.repeat(3000)}${evil}`, threat: evil, action: 'denied' },
      ];
      for (const e of events) s.core.events.publish(e);
      const got = await rs.waitFor((r) => r.app === 'kinds', events.length);
      const cef = await rs.waitFor((r) => r.app === 'kinds-cef', events.length);
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(rs.received().filter((r) => r.app === 'kinds').length, events.length, 'nothing split into extra messages');
      assert.equal(rs.received().filter((r) => r.app === 'kinds-cef').length, events.length);
      assert.equal(rs.received().filter((r) => r.msgid === 'injected' || r.app === 'forged').length, 0, 'no forged message');
      assert.deepEqual(
        got.map((r) => r.msgid),
        events.map((e) => e.kind),
        'in order',
      );
      for (const [i, r] of got.entries()) {
        const e = events[i]!;
        const body = JSON.parse(r.msg) as Record<string, unknown>;
        assert.equal(body.kind, e.kind);
        assert.ok(r.raw.length <= 8192, 'bounded');
        if ('agentId' in e) assert.equal(body.agentId, e.agentId, 'exact value in the JSON body');
        assert.match(r.sd, /tenant="(a|\*)"/);
      }
      const detection = JSON.parse(got.at(-1)!.msg) as { path: string };
      assert.ok(detection.path.endsWith('\u2026'), 'a 15 KiB path is cut to fit');
      for (const r of cef) {
        assert.match(r.msg, /^CEF:0\|lightagent\|lightagent-svm\|/);
        assert.doesNotMatch(r.msg, /[\n\r\0]/);
      }
    } finally {
      await s.close();
    }
  });

  it('with rsyslog down: scanning goes on, events queue, and reach rsyslog restarted on the same port', async () => {
    const d = dest({ name: 'outage', protocol: 'tcp', port: rs.tcp });
    const s = await startTestSvm({ siem: [d], siemExport: { backoffMs: { min: 100, max: 400 } } });
    try {
      await waitConnected(s, [d.name]);
      const a = await rawAgent(s.url);
      await a.next((m) => m.t === 'welcome');
      await rs.server.kill();
      await until(async () => (await series(s, 'lightagent_svm_siem_connected'))[d.name] === 0, 10_000, 'the exporter to see rsyslog gone');
      for (let i = 1; i <= 5; i++) sendDetection(a, `/home/u/outage-${i}.com`);
      const t0 = performance.now();
      const v = await upload(a, 1, EICAR);
      const ms = performance.now() - t0;
      assert.equal(v.verdict, 'infected');
      // Bounded well below the exporter's 10 s connect timeout and its backoff: nothing waited for the receiver.
      assert.ok(ms < 2000, `the verdict came at once (${ms.toFixed(0)} ms) with the receiver down`);
      await until(async () => (await series(s, 'lightagent_svm_siem_queue_events'))[d.name] === 5, 5000, '5 events queued');
      assert.ok((await series(s, 'lightagent_svm_siem_queue_bytes'))[d.name]! > 500);
      await rs.server.start();
      const got = await rs.waitFor((r) => r.app === 'outage' && r.msgid === 'detection', 5, 20_000);
      assert.deepEqual(
        got.map((r) => (JSON.parse(r.msg) as { path: string }).path),
        [1, 2, 3, 4, 5].map((i) => `/home/u/outage-${i}.com`),
        'all five, in order',
      );
      await until(async () => (await series(s, 'lightagent_svm_siem_queue_events'))[d.name] === 0, 5000, 'the queue empty');
      assert.equal((await series(s, 'lightagent_svm_siem_dropped_total'))[d.name], 0);
      assert.equal((await series(s, 'lightagent_svm_siem_connected'))[d.name], 1);
    } finally {
      await s.close();
    }
  });

  it('past the bound drops the oldest events of the tenant holding the most, counts them in /metrics, logs LA_ERR_SIEM_DROPPED', async () => {
    const d = dest({ name: 'bounded', protocol: 'tcp', port: rs.tcp, buffer: { events: 3, bytes: 1 << 20 } });
    const s = await startTestSvm({ siem: [d], siemExport: { backoffMs: { min: 100, max: 400 } } });
    try {
      await waitConnected(s, [d.name]);
      await rs.server.kill();
      await until(async () => (await series(s, 'lightagent_svm_siem_connected'))[d.name] === 0, 10_000, 'the exporter to see rsyslog gone');
      const t0 = performance.now();
      s.core.events.publish({ kind: 'policy', time: T(), tenant: 'b', policy: 'p0', change: 'set', version: '0' });
      for (let i = 1; i <= 10; i++)
        s.core.events.publish({ kind: 'policy', time: T(), tenant: 'a', policy: `p${i}`, change: 'set', version: String(i) });
      assert.ok(performance.now() - t0 < 500, 'publishing never waits for the receiver');
      assert.equal((await series(s, 'lightagent_svm_siem_dropped_total'))[d.name], 8, "tenant a's oldest");
      assert.equal((await series(s, 'lightagent_svm_siem_queue_events'))[d.name], 3);
      await logged('LA_ERR_SIEM_DROPPED', 'bounded');
      await rs.server.start();
      const got = await rs.waitFor((r) => r.app === 'bounded', 3, 20_000);
      assert.deepEqual(
        got.map((r) => (JSON.parse(r.msg) as { policy: string }).policy),
        ['p0', 'p9', 'p10'],
        "tenant b's one event kept through tenant a's burst, then a's newest two",
      );
    } finally {
      await s.close();
    }
  });

  it('mutual TLS: with cert and key the receiver takes the events; without, it takes none', async () => {
    const withCert = dest({ name: 'mtls-cert', protocol: 'tls', port: rs.mtls, ca: pki.caCert, cert: pki.clientCert, key: pki.clientKey });
    const without = dest({ name: 'mtls-nocert', protocol: 'tls', port: rs.mtls, ca: pki.caCert });
    const s = await startTestSvm({ siem: [withCert, without], siemExport: { backoffMs: { min: 100, max: 400 } } });
    try {
      await waitConnected(s, [withCert.name]);
      s.core.events.publish({ kind: 'agent-silent', time: T(), tenant: 'a', agentId: 'x', host: 'h', lastSeen: T() });
      const [r] = await rs.waitFor((x) => x.app === 'mtls-cert');
      assert.equal(r!.input, 'mtls');
      await new Promise((res) => setTimeout(res, 1000));
      assert.equal(rs.received().filter((x) => x.app === 'mtls-nocert').length, 0, 'refused without a client certificate');
    } finally {
      await s.close();
    }
  });

  it('sends nothing to a TLS receiver whose certificate does not name the host of the address', async () => {
    const d = dest({ name: 'wrong-name', protocol: 'tls', host: '127.0.0.2', port: rs.tlsWrongName, ca: pki.caCert });
    const s = await startTestSvm({ siem: [d], siemExport: { backoffMs: { min: 100, max: 400 } } });
    try {
      s.core.events.publish({ kind: 'signatures', time: T(), engine: 'builtin', generation: 'g9' });
      await logged('LA_ERR_SIEM_TLS', 'wrong-name');
      assert.equal((await series(s, 'lightagent_svm_siem_connected'))[d.name], 0);
      assert.equal(rs.received().filter((r: Received) => r.app === 'wrong-name').length, 0);
    } finally {
      await s.close();
    }
  });

  it('refuses at start a client key that does not match its certificate, or a file that is not PEM', () => {
    const notPem = path.join(logDir, 'not-a-cert.pem');
    fs.writeFileSync(notPem, 'not a certificate\n');
    const bad = [
      dest({ name: 'mismatch', protocol: 'tls', port: rs.tls, ca: pki.caCert, cert: pki.clientCert, key: pki.serverKey }),
      dest({ name: 'not-pem', protocol: 'tls', port: rs.tls, ca: notPem }),
    ];
    assert.throws(
      () => new SiemExport(bad, new SvmEventBus(), new SvmMetrics('builtin')),
      (e: Error & { code?: string; issues?: string[] }) =>
        e.code === 'LA_ERR_CONFIG' &&
        /^siem\.0: the TLS files cannot be used \(.*\); check ca, cert and key$/.test(e.issues![0]!) &&
        /^siem\.1\.ca: .* is not PEM/.test(e.issues![1]!),
    );
  });

  it('sends nothing to a TLS receiver whose certificate the pinned CA did not sign', async () => {
    const d = dest({ name: 'wrong-ca', protocol: 'tls', port: rs.tls, ca: pki.otherCaCert });
    const s = await startTestSvm({ siem: [d], siemExport: { backoffMs: { min: 100, max: 400 } } });
    try {
      s.core.events.publish({ kind: 'signatures', time: T(), engine: 'builtin', generation: 'g9' });
      await logged('LA_ERR_SIEM_TLS', 'wrong-ca');
      assert.equal((await series(s, 'lightagent_svm_siem_connected'))[d.name], 0);
      assert.equal((await series(s, 'lightagent_svm_siem_queue_events'))[d.name], 1);
      assert.equal(rs.received().filter((r: Received) => r.app === 'wrong-ca').length, 0);
    } finally {
      await s.close();
    }
    assert.equal(s.siem.exporters[0]!.dropped, 1, 'what was still queued at close is counted as dropped');
  });
});

async function until(fn: () => Promise<boolean>, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!(await fn())) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function waitConnected(s: SvmServer, names: string[]): Promise<void> {
  await until(
    async () => {
      const c = await series(s, 'lightagent_svm_siem_connected');
      return names.every((n) => c[n] === 1);
    },
    10_000,
    `${names.join(', ')} connected`,
  );
}
