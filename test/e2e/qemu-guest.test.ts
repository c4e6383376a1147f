/**
 * The agent inside a real QEMU guest, installed the way installers/cloud-init/user-data.yaml does.
 *
 * Runs under CI=true or with LIGHTAGENT_E2E_QEMU=1 (locally opt-in): a TCG guest (no /dev/kvm here) takes minutes, and the first run
 * builds a Debian root filesystem with debootstrap. Needs root and the Debian packages
 * qemu-system-x86, linux-image-amd64 (its /boot/vmlinuz-* and /boot/initrd.img-* boot the guest),
 * debootstrap, e2fsprogs and openssl. Bounded: the whole test is killed after
 * LIGHTAGENT_E2E_TIMEOUT_S (default 900 s).
 *
 * The guest: Debian bookworm minbase (+ curl, ca-certificates, kmod, iproute2), cached in
 * LIGHTAGENT_E2E_CACHE (default /var/cache/lightagent-e2e), on a virtio-blk ext4 disk, with a
 * virtio-net NIC on QEMU user-mode networking with restrict=on: the guest reaches nothing but
 * 10.0.2.100:7443 (the SVM, wss) and 10.0.2.100:8080 (an HTTP server with install.sh and the
 * release binary), both forwarded by guestfwd to the host's loopback. Its PID 1 is a small script:
 * it brings the network up, runs the user-data's write_files + runcmd (as cloud-init would, with
 * the URLs, token, CA and checksum filled in), waits for the agent to protect, then `cat`s an
 * EICAR file and a clean file that were on the disk before the install, and powers off.
 *
 * Shows: the silent install succeeds (install.sh summary), EICAR `cat` fails with EPERM, the
 * detection reaches the SVM on the host, the clean file opens, the hello names the hypervisor.
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
import { EICAR } from '../helpers/fixtures.js';
import { type Proc, tempDir, waitFor } from '../helpers/procs.js';
import { BINARY, ROOT, ensureBinary, spawnBinary } from '../release/binary.js';

// Under CI=true it always runs: no integration test may skip there.
const ENABLED = process.env.LIGHTAGENT_E2E_QEMU === '1' || process.env.CI === 'true';
const CACHE = process.env.LIGHTAGENT_E2E_CACHE ?? '/var/cache/lightagent-e2e';
const TIMEOUT_S = Number(process.env.LIGHTAGENT_E2E_TIMEOUT_S ?? 900);
const TOKEN = 'e2e-guest-token-123';
const GUEST_SVM = '10.0.2.100';

function sh(cmd: string, args: string[], timeoutMs = 120_000): { status: number | null; out: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 64 * 1024 * 1024 });
  return { status: r.status, out: (r.stdout ?? '') + (r.stderr ?? '') };
}

function skipReason(): string | false {
  if (!ENABLED) return 'opt-in: LIGHTAGENT_E2E_QEMU=1 (boots a TCG guest, minutes)';
  const missing: string[] = [];
  if (process.getuid?.() !== 0) missing.push('root');
  for (const c of ['qemu-system-x86_64', 'debootstrap', 'mkfs.ext4', 'openssl'])
    if (sh('sh', ['-c', `command -v ${c}`]).status !== 0) missing.push(c);
  if (!kernel()) missing.push('/boot/vmlinuz-* and /boot/initrd.img-* (apt-get install linux-image-amd64)');
  if (missing.length)
    throw new Error(
      `LIGHTAGENT_E2E_QEMU=1 but missing: ${missing.join(', ')} (apt-get install -y qemu-system-x86 linux-image-amd64 debootstrap e2fsprogs openssl)`,
    );
  return false;
}

/** The newest kernel with an initrd in /boot, and its modules directory. */
function kernel(): { vmlinuz: string; initrd: string; modules: string } | undefined {
  let names: string[];
  try {
    names = fs.readdirSync('/boot');
  } catch {
    return undefined;
  }
  const versions = names
    .filter((n) => n.startsWith('vmlinuz-'))
    .map((n) => n.slice('vmlinuz-'.length))
    .filter((v) => names.includes(`initrd.img-${v}`) && fs.statSync(`/boot/initrd.img-${v}`).size > 0 && fs.existsSync(`/lib/modules/${v}`))
    .sort();
  const v = versions[versions.length - 1];
  return v ? { vmlinuz: `/boot/vmlinuz-${v}`, initrd: `/boot/initrd.img-${v}`, modules: `/lib/modules/${v}` } : undefined;
}

/** The Debian mirror apt uses here (first URI of the deb822 or one-line sources), or LIGHTAGENT_E2E_MIRROR. */
function mirror(): string {
  if (process.env.LIGHTAGENT_E2E_MIRROR) return process.env.LIGHTAGENT_E2E_MIRROR;
  const files = [
    '/etc/apt/sources.list',
    ...(fs.existsSync('/etc/apt/sources.list.d')
      ? fs.readdirSync('/etc/apt/sources.list.d').map((f) => `/etc/apt/sources.list.d/${f}`)
      : []),
  ];
  for (const f of files.filter((x) => /\.(sources|list)$/.test(x) && fs.existsSync(x))) {
    const text = fs.readFileSync(f, 'utf8');
    const m = /^URIs:\s*(\S+\/debian)\/?\s*$/m.exec(text) ?? /^deb\s+(?:\[[^\]]*\]\s+)?(\S+\/debian)\/?\s+/m.exec(text);
    if (m) return m[1]!;
  }
  return 'http://deb.debian.org/debian';
}

/** The cached guest root filesystem, built by debootstrap the first time (a few minutes). */
function guestRootfs(): string {
  const dir = path.join(CACHE, 'rootfs-bookworm');
  if (fs.existsSync(path.join(dir, '.complete'))) return dir;
  const tmp = `${dir}.tmp`;
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(CACHE, { recursive: true, mode: 0o700 });
  const r = sh('debootstrap', ['--variant=minbase', '--include=curl,ca-certificates,kmod,iproute2', 'bookworm', tmp, mirror()], 900_000);
  if (r.status !== 0) throw new Error(`debootstrap failed (${r.status}): ${r.out.slice(-3000)}`);
  fs.writeFileSync(path.join(tmp, '.complete'), new Date().toISOString());
  fs.rmSync(dir, { recursive: true, force: true });
  fs.renameSync(tmp, dir);
  return dir;
}

/** A CA and an SVM certificate for IP 10.0.2.100 (what the guest dials). */
function pki(dir: string): { ca: string; cert: string; key: string } {
  const o = (args: string[]) => {
    const r = sh('openssl', args);
    if (r.status !== 0) throw new Error(`openssl ${args.join(' ')}: ${r.out}`);
  };
  const p = (f: string) => path.join(dir, f);
  o([
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-keyout',
    p('ca.key'),
    '-out',
    p('ca.pem'),
    '-days',
    '2',
    '-subj',
    '/CN=lightagent e2e CA',
  ]);
  o([
    'req',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-keyout',
    p('svm.key'),
    '-out',
    p('svm.csr'),
    '-subj',
    '/CN=svm.e2e',
  ]);
  fs.writeFileSync(
    p('ext.cnf'),
    `subjectAltName=IP:${GUEST_SVM},DNS:svm.e2e\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n`,
  );
  o([
    'x509',
    '-req',
    '-in',
    p('svm.csr'),
    '-CA',
    p('ca.pem'),
    '-CAkey',
    p('ca.key'),
    '-CAcreateserial',
    '-out',
    p('svm.pem'),
    '-days',
    '2',
    '-extfile',
    p('ext.cnf'),
  ]);
  return { ca: p('ca.pem'), cert: p('svm.pem'), key: p('svm.key') };
}

const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

/** The user-data's write_files + runcmd as the shell script cloud-init would amount to. */
function firstBootScript(vals: { svmUrl: string; repo: string; token: string; caPem: string; sha256: string }): string {
  const ud = parseDocument(fs.readFileSync(path.join(ROOT, 'installers/cloud-init/user-data.yaml'), 'utf8')).toJS() as {
    write_files: { path: string; permissions: string; content: string }[];
    runcmd: string[][];
  };
  const lines = ['#!/bin/sh', '# generated from installers/cloud-init/user-data.yaml'];
  for (const w of ud.write_files) {
    let content = w.content;
    if (w.path.endsWith('/token')) content = `${vals.token}\n`;
    if (w.path.endsWith('.pem')) content = vals.caPem;
    lines.push(
      `mkdir -p ${q(path.dirname(w.path))}`,
      `echo ${Buffer.from(content).toString('base64')} | base64 -d > ${q(w.path)}`,
      `chmod ${w.permissions} ${q(w.path)}`,
    );
  }
  for (const cmd of ud.runcmd) {
    const argv = cmd.map((a) => a.replace('https://repo.example', vals.repo).replace('wss://svm.example:7443', vals.svmUrl));
    const i = argv.indexOf('--sha256');
    if (i >= 0) argv[i + 1] = vals.sha256;
    lines.push(argv.map(q).join(' '));
  }
  return `${lines.join('\n')}\n`;
}

const GUEST_INIT = `#!/bin/sh
# PID 1 of the e2e guest.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev 2>/dev/null
mkdir -p /dev/pts /run /tmp; mount -t tmpfs -o mode=0755 tmpfs /run; mount -t tmpfs tmpfs /tmp
mount -o remount,rw /
hostname e2e-guest
say() { echo "E2E: $*"; }
say "booted $(uname -r) in $(cut -d' ' -f1 /proc/uptime) s"
for m in failover net_failover virtio_net; do insmod /lightagent-e2e/$m.ko 2>/dev/null; done
ip link set lo up
dev=$(ls /sys/class/net | grep -v '^lo$' | head -n 1)
ip link set "$dev" up && ip addr add 10.0.2.15/24 dev "$dev" && ip route add default via 10.0.2.2
say "network $dev up"
t0=$(cut -d' ' -f1 /proc/uptime)
sh /lightagent-e2e/firstboot.sh > /lightagent-e2e/firstboot.log 2>&1
rc=$?
say "firstboot rc=$rc in $(awk -v t0="$t0" '{ printf "%.1f", $1 - t0 }' /proc/uptime) s (uptime $(cut -d' ' -f1 /proc/uptime))"
sed 's/^/E2E-FIRSTBOOT: /' /lightagent-e2e/firstboot.log
i=0
grep -q 'lightagent-install: ok' /lightagent-e2e/firstboot.log || i=300 # the install failed: no agent to wait for
while ! grep -q '"message":"protecting"' /var/log/lightagent/agent.log 2>/dev/null && [ $i -lt 300 ]; do sleep 1; i=$((i + 1)); done
say "agent protecting after $i s (uptime $(cut -d' ' -f1 /proc/uptime))"
err=$(cat /srv/eicar.com 2>&1 >/dev/null); rc=$?
say "eicar rc=$rc err=$err"
out=$(cat /srv/clean.txt 2>&1); rc=$?
say "clean rc=$rc out=$out"
sleep 2
say "agent log:"
sed 's/^/E2E-AGENT: /' /var/log/lightagent/agent.log | tail -n 40
say "done"
sync
echo o > /proc/sysrq-trigger
sleep 30
`;

/** Forward stdin/stdout to 127.0.0.1:PORT: QEMU runs this per guest connection (guestfwd cmd:). */
const FORWARDER = `const net = require('node:net');
const s = net.connect(Number(process.argv[2]), '127.0.0.1');
process.stdin.pipe(s); s.pipe(process.stdout);
s.on('error', () => process.exit(1)); s.on('close', () => process.exit(0)); process.stdin.on('end', () => s.end());
`;

describe('agent in a QEMU guest (TCG)', { skip: skipReason() }, () => {
  let work: string;
  let svm: Proc & { url: string };
  let server: http.Server;
  let serial = '';
  let guestMs = 0;

  before(async () => {
    ensureBinary();
    const rootfs = guestRootfs();
    const k = kernel()!;
    work = tempDir('la-e2e-');
    const certs = pki(work);
    // A copy: a rebuild of dist/ while the guest downloads would change its checksum.
    const binary = path.join(work, 'lightagent-linux-x64');
    fs.copyFileSync(BINARY, binary);
    fs.chmodSync(binary, 0o755);

    svm = await (async () => {
      const p = spawnBinary(
        ['svm', '--listen', '127.0.0.1:0', '--token', TOKEN, '--tls-cert', certs.cert, '--tls-key', certs.key, '--json'],
        { watchdogMs: TIMEOUT_S * 1000, file: binary },
      );
      const m = await waitFor(p, /"url"\s*:\s*"(wss:\/\/[^"]+)"/);
      return { ...p, url: m[1]! };
    })();
    server = http.createServer((req, res) => {
      const files: Record<string, string> = {
        '/lightagent/install.sh': path.join(ROOT, 'installers/linux/install.sh'),
        '/lightagent/lightagent-linux-x64': binary,
      };
      const f = files[req.url ?? ''];
      if (!f) return void res.writeHead(404).end();
      res.writeHead(200, { 'content-length': fs.statSync(f).size });
      fs.createReadStream(f).pipe(res);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const httpPort = (server.address() as AddressInfo).port;
    const svmPort = Number(new URL(svm.url).port);

    // The guest disk: the cached rootfs + the e2e files, as a sparse ext4 image.
    const tree = path.join(work, 'rootfs');
    assert.equal(sh('cp', ['-a', rootfs, tree], 300_000).status, 0);
    const e2e = path.join(tree, 'lightagent-e2e');
    fs.mkdirSync(e2e, { mode: 0o700 });
    for (const [m, rel] of [
      ['failover', 'kernel/net/core/failover.ko'],
      ['net_failover', 'kernel/drivers/net/net_failover.ko'],
      ['virtio_net', 'kernel/drivers/net/virtio_net.ko'],
    ] as const) {
      fs.copyFileSync(path.join(k.modules, rel), path.join(e2e, `${m}.ko`));
    }
    fs.writeFileSync(path.join(e2e, 'init'), GUEST_INIT, { mode: 0o755 });
    const sha = crypto.createHash('sha256').update(fs.readFileSync(binary)).digest('hex');
    fs.writeFileSync(
      path.join(e2e, 'firstboot.sh'),
      firstBootScript({
        svmUrl: `wss://${GUEST_SVM}:7443`,
        repo: `http://${GUEST_SVM}:8080`,
        token: TOKEN,
        caPem: fs.readFileSync(certs.ca, 'utf8'),
        sha256: sha,
      }),
      { mode: 0o700 },
    );
    fs.mkdirSync(path.join(tree, 'srv'), { recursive: true });
    fs.writeFileSync(path.join(tree, 'srv/eicar.com'), EICAR);
    fs.writeFileSync(path.join(tree, 'srv/clean.txt'), 'a clean file\n');
    const img = path.join(work, 'disk.img');
    const mk = sh('mkfs.ext4', ['-q', '-F', '-L', 'e2e-root', '-d', tree, img, '1536M'], 300_000);
    assert.equal(mk.status, 0, mk.out);
    fs.rmSync(tree, { recursive: true, force: true });

    const fwd = path.join(work, 'fwd.cjs');
    fs.writeFileSync(fwd, FORWARDER);
    const args = [
      '-accel',
      'tcg',
      '-machine',
      'q35',
      '-cpu',
      'max',
      '-smp',
      '2',
      '-m',
      '1536',
      '-kernel',
      k.vmlinuz,
      '-initrd',
      k.initrd,
      '-append',
      'root=/dev/vda rw console=ttyS0 panic=-1 quiet init=/lightagent-e2e/init',
      '-drive',
      `file=${img},if=virtio,format=raw`,
      '-netdev',
      `user,id=n0,restrict=on,guestfwd=tcp:${GUEST_SVM}:7443-cmd:${process.execPath} ${fwd} ${svmPort},guestfwd=tcp:${GUEST_SVM}:8080-cmd:${process.execPath} ${fwd} ${httpPort}`,
      '-device',
      'virtio-net-pci,netdev=n0',
      '-nographic',
      '-no-reboot',
      '-serial',
      'stdio',
      '-monitor',
      'none',
    ];
    const t0 = performance.now();
    const qemu = spawn('qemu-system-x86_64', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    qemu.stdout.on('data', (d: Buffer) => (serial += d.toString()));
    qemu.stderr.on('data', (d: Buffer) => (serial += d.toString()));
    const killer = setTimeout(() => qemu.kill('SIGKILL'), TIMEOUT_S * 1000);
    await new Promise((r) => qemu.once('close', r));
    clearTimeout(killer);
    guestMs = performance.now() - t0;
    process.stderr.write(
      `guest ran ${(guestMs / 1000).toFixed(0)} s\n${serial
        .split('\n')
        .filter((l) => l.startsWith('E2E'))
        .join('\n')}\n`,
    );
  });

  after(async () => {
    await svm?.stop();
    await new Promise((r) => (server ? server.close(r) : r(undefined)));
    if (work) fs.rmSync(work, { recursive: true, force: true });
  });

  it('boots, and the cloud-init steps install the agent silently', () => {
    assert.match(serial, /E2E: network \S+ up/, serial.slice(-4000));
    assert.match(serial, /E2E: firstboot rc=0 /, serial.slice(-4000));
    assert.match(
      serial,
      /E2E-FIRSTBOOT: lightagent-install: ok action=install version=\S+ bin=\/usr\/local\/bin\/lightagent .*service=started\(direct,no-systemd\)/,
    );
    assert.match(serial, /E2E: agent protecting after \d+ s/);
    assert.match(serial, /E2E: done/, `the guest finished within ${TIMEOUT_S} s`);
  });

  it('every part of the binary works in the guest (no missing worker, no fallback)', () => {
    assert.doesNotMatch(serial, /E2E-AGENT: .*(Cannot find module|MODULE_NOT_FOUND|FALLING BACK)/);
    assert.match(serial, /E2E-AGENT: .*"message":"on-access protection by fanotify/);
  });

  it('EICAR `cat` inside the guest fails with EPERM', () => {
    assert.match(serial, /E2E: eicar rc=1 err=cat: \/srv\/eicar\.com: Operation not permitted/);
  });

  it('the detection reaches the SVM on the host, from the guest', () => {
    const lines = svm
      .output()
      .split('\n')
      .filter((l) => l.includes('agent reported a detection'));
    assert.ok(lines.length >= 1, svm.output().slice(-3000));
    const d = JSON.parse(lines[0]!) as { host?: string; path?: string; threat?: string };
    assert.equal(d.host, 'e2e-guest');
    assert.equal(d.path, '/srv/eicar.com');
    assert.equal(d.threat, 'Eicar-Test-Signature');
  });

  it('a clean file opens', () => {
    assert.match(serial, /E2E: clean rc=0 out=a clean file/);
  });

  it('the hello names the hypervisor: QEMU emulation (TCG)', () => {
    const line = svm
      .output()
      .split('\n')
      .find((l) => l.includes('agent connected') && l.includes('e2e-guest'));
    assert.ok(line, svm.output().slice(-3000));
    assert.equal((JSON.parse(line) as { hypervisor?: string }).hypervisor, 'qemu');
  });
});
