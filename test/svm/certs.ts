/**
 * Throwaway PKI for TLS tests, made with the system's `openssl` into a temp dir: a CA, a server
 * certificate for 127.0.0.1/localhost, an agent (client) certificate signed by that CA, and a
 * second, unrelated CA with its own agent certificate (the "wrong CA" cases). EC P-256 keys,
 * valid for two days. `makeTestPki()` returns undefined (after a loud note) when openssl is
 * missing locally; under CI=true it throws.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { tempDir } from '../helpers/procs.js';

export interface TestPki {
  dir: string;
  /** Paths of PEM files. */
  caCert: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
  otherCaCert: string;
  otherClientCert: string;
  otherClientKey: string;
  read(file: string): Buffer;
}

function openssl(cwd: string, args: string[]): void {
  const r = spawnSync('openssl', args, { cwd, timeout: 20_000 });
  if (r.status !== 0) throw new Error(`openssl ${args.join(' ')} failed (${r.status}): ${r.stderr?.toString()}`);
}

function hasOpenssl(): boolean {
  return spawnSync('openssl', ['version'], { timeout: 5000 }).status === 0;
}

/** Skip reason when openssl is missing (locally), else undefined. */
export function needOpenssl(): string | undefined {
  if (hasOpenssl()) return undefined;
  if (process.env.CI === 'true')
    throw new Error('CI=true: the TLS tests need the openssl command (Debian package openssl) and may not skip');
  process.stderr.write('\n*** SKIPPING: TLS tests need the openssl command (apt-get install openssl) ***\n\n');
  return 'openssl missing';
}

export function makeTestPki(): TestPki {
  const dir = tempDir('la-pki-');
  const key = (name: string) => openssl(dir, ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', name]);
  const ca = (name: string, cn: string) => {
    key(`${name}.key`);
    openssl(dir, [
      'req',
      '-x509',
      '-new',
      '-key',
      `${name}.key`,
      '-out',
      `${name}.crt`,
      '-days',
      '2',
      '-subj',
      `/CN=${cn}`,
      '-addext',
      'basicConstraints=critical,CA:TRUE',
      '-addext',
      'keyUsage=critical,keyCertSign,cRLSign',
    ]);
  };
  const leaf = (name: string, cn: string, caName: string, ext: string) => {
    key(`${name}.key`);
    openssl(dir, ['req', '-new', '-key', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${cn}`]);
    fs.writeFileSync(path.join(dir, `${name}.ext`), ext);
    openssl(dir, [
      'x509',
      '-req',
      '-in',
      `${name}.csr`,
      '-CA',
      `${caName}.crt`,
      '-CAkey',
      `${caName}.key`,
      '-CAcreateserial',
      '-out',
      `${name}.crt`,
      '-days',
      '2',
      '-extfile',
      `${name}.ext`,
    ]);
  };
  ca('ca', 'lightagent test CA');
  ca('other-ca', 'some other CA');
  leaf('server', 'localhost', 'ca', 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n');
  leaf('client', 'agent-007', 'ca', 'extendedKeyUsage=clientAuth\n');
  leaf('other-client', 'agent-intruder', 'other-ca', 'extendedKeyUsage=clientAuth\n');
  const p = (f: string) => path.join(dir, f);
  return {
    dir,
    caCert: p('ca.crt'),
    serverCert: p('server.crt'),
    serverKey: p('server.key'),
    clientCert: p('client.crt'),
    clientKey: p('client.key'),
    otherCaCert: p('other-ca.crt'),
    otherClientCert: p('other-client.crt'),
    otherClientKey: p('other-client.key'),
    read: (f) => fs.readFileSync(f),
  };
}
