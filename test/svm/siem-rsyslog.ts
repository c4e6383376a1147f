/**
 * A real rsyslogd for the SIEM tests, in the foreground with its own config, work dir and pid
 * file: imudp and imtcp on free loopback ports, imtcp with the gtls driver and the test CA for
 * TLS (any client; clients with a certificate of the test CA only, `mtls`; and on 127.0.0.2,
 * which the server certificate does not name, `tlsWrongName`), every message written as one JSON object per line (rsyslog's own parse: pri, hostname,
 * app-name, procid, msgid, structured data, msg, and which input got it). Ready once a UDP probe
 * it received is in the file; kill() and start() again keep the same ports.
 */
import dgram from 'node:dgram';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { findBinary, needPackage, tempDir } from '../helpers/procs.js';
import { freePort, startServer, type ServerProcess } from '../helpers/server-process.js';
import type { TestPki } from './certs.js';

export const RSYSLOGD = findBinary('rsyslogd', ['/usr/sbin/rsyslogd']);

/** The gtls network stream driver (Debian package rsyslog-gnutls). */
function gtlsDriver(): string | undefined {
  for (const dir of ['/usr/lib/x86_64-linux-gnu/rsyslog', '/usr/lib/aarch64-linux-gnu/rsyslog', '/usr/lib/rsyslog', '/usr/lib64/rsyslog']) {
    const f = path.join(dir, 'lmnsd_gtls.so');
    if (fs.existsSync(f)) return f;
  }
  return undefined;
}

/** Skip reason when rsyslog or rsyslog-gnutls is missing (locally); under CI=true a missing one throws. */
export function needRsyslog(): string | undefined {
  return (
    needPackage(RSYSLOGD, 'rsyslog', 'the SIEM export tests against rsyslog') ??
    needPackage(gtlsDriver(), 'rsyslog-gnutls', 'the SIEM export tests against rsyslog (TLS)')
  );
}

/** One message as rsyslog parsed it. */
export interface Received {
  input: 'udp' | 'tcp' | 'tls' | 'mtls' | 'tls-wrong-name';
  pri: string;
  hostname: string;
  app: string;
  procid: string;
  msgid: string;
  sd: string;
  msg: string;
  raw: string;
}

export interface Rsyslog {
  udp: number;
  tcp: number;
  tls: number;
  mtls: number;
  /** On 127.0.0.2. */
  tlsWrongName: number;
  server: ServerProcess;
  /** Every message received so far (probes left out). */
  received(): Received[];
  /** Resolves with the messages once `pred` holds for at least `n` of them, within `ms`. */
  waitFor(pred: (r: Received) => boolean, n?: number, ms?: number): Promise<Received[]>;
}

const tcpOpen = (port: number, host = '127.0.0.1') =>
  new Promise<boolean>((resolve) => {
    const s = net.connect({ host, port }, () => {
      s.destroy();
      resolve(true);
    });
    s.on('error', () => resolve(false));
    s.setTimeout(1000, () => {
      s.destroy();
      resolve(false);
    });
  });

export async function startRsyslog(pki: TestPki): Promise<Rsyslog> {
  const dir = tempDir('la-rsyslog-');
  const work = path.join(dir, 'work');
  fs.mkdirSync(work);
  const out = path.join(dir, 'received.jsonl');
  const pidFile = path.join(dir, 'rsyslogd.pid');
  const [udp, tcp, tls, mtls, tlsWrongName] = [await freePort(), await freePort(), await freePort(), await freePort(), await freePort()];
  const gtls = (mode: string) =>
    `streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="${mode}" streamDriver.CAFile="${pki.caCert}" ` +
    `streamDriver.CertFile="${pki.serverCert}" streamDriver.KeyFile="${pki.serverKey}"`;
  const prop = (outname: string, name: string) => `  property(outname="${outname}" name="${name}" format="jsonf")`;
  fs.writeFileSync(
    path.join(dir, 'rsyslog.conf'),
    [
      `global(workDirectory="${work}" maxMessageSize="64k")`,
      'module(load="imudp")',
      'module(load="imtcp")',
      `input(type="imudp" port="${udp}" address="127.0.0.1" name="udp")`,
      `input(type="imtcp" port="${tcp}" address="127.0.0.1" name="tcp")`,
      `input(type="imtcp" port="${tls}" address="127.0.0.1" name="tls" ${gtls('anon')})`,
      `input(type="imtcp" port="${mtls}" address="127.0.0.1" name="mtls" ${gtls('x509/certvalid')})`,
      `input(type="imtcp" port="${tlsWrongName}" address="127.0.0.2" name="tls-wrong-name" ${gtls('anon')})`,
      'template(name="json" type="list" option.jsonf="on") {',
      prop('input', 'inputname'),
      prop('pri', 'pri'),
      prop('hostname', 'hostname'),
      prop('app', 'app-name'),
      prop('procid', 'procid'),
      prop('msgid', 'msgid'),
      prop('sd', 'structured-data'),
      prop('msg', 'msg'),
      prop('raw', 'rawmsg'),
      '}',
      `*.* action(type="omfile" file="${out}" template="json")`,
      '',
    ].join('\n'),
  );
  const all = (): Received[] => {
    let text: string;
    try {
      text = fs.readFileSync(out, 'utf8');
    } catch {
      return [];
    }
    return text
      .split('\n')
      .filter((l) => l !== '')
      .map((l) => JSON.parse(l) as Received);
  };
  let probes = 0;
  const server = await startServer({
    name: 'rsyslogd',
    bin: RSYSLOGD!,
    args: ['-n', '-f', path.join(dir, 'rsyslog.conf'), '-i', pidFile],
    startTimeoutMs: 20_000,
    pollMs: 200,
    beforeStart: () => fs.rmSync(pidFile, { force: true }),
    ready: async () => {
      for (const [port, host] of [[tcp], [tls], [mtls], [tlsWrongName, '127.0.0.2']] as const)
        if (!(await tcpOpen(port, host))) return false;
      // imudp binds on its own thread: ready once a datagram sent now was written out.
      const id = `probe-${++probes}`;
      const s = dgram.createSocket('udp4');
      await new Promise<void>((r) => s.send(`<14>1 - - probe - ${id} - ready`, udp, '127.0.0.1', () => r()));
      s.close();
      await new Promise((r) => setTimeout(r, 100));
      return all().some((x) => x.msgid === id);
    },
  });
  const received = () => all().filter((x) => x.app !== 'probe');
  return {
    udp,
    tcp,
    tls,
    mtls,
    tlsWrongName,
    server,
    received,
    waitFor: async (pred, n = 1, ms = 20_000) => {
      const end = Date.now() + ms;
      for (;;) {
        const got = received().filter(pred);
        if (got.length >= n) return got;
        if (Date.now() > end)
          throw new Error(
            `rsyslog: ${got.length} of ${n} messages within ${ms} ms; it has ${JSON.stringify(received()).slice(0, 3000)}\n` +
              server.output().slice(-2000),
          );
        await new Promise((r) => setTimeout(r, 50));
      }
    },
  };
}
