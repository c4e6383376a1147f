/**
 * The agent inside real QEMU guests with systemd as PID 1 and real cloud-init: the shipped
 * installers/cloud-init/user-data.yaml installs it from a NoCloud seed and the shipped systemd unit
 * runs it; then the template is sealed and two clones boot from copy-on-write overlays of its disk.
 *
 * Runs under CI=true or with LIGHTAGENT_E2E_QEMU=1 (locally opt-in): TCG guests (no /dev/kvm
 * here) take minutes, and the first run builds a Debian root filesystem with debootstrap. Needs
 * root and the Debian packages qemu-system-x86, qemu-utils (qemu-img), cloud-image-utils
 * (cloud-localds), linux-image-amd64 (its /boot/vmlinuz-* and /boot/initrd.img-* boot the guests),
 * debootstrap, e2fsprogs, kmod (depmod), systemd (systemctl --root) and openssl. Bounded: each
 * guest is killed after LIGHTAGENT_E2E_TIMEOUT_S (default 900 s).
 *
 * The image: Debian bookworm minbase + systemd, systemd-sysv, udev, dbus, cloud-init,
 * python3-cffi-backend, curl, ca-certificates, kmod, iproute2, cached in LIGHTAGENT_E2E_CACHE (default /var/cache/lightagent-e2e)
 * as rootfs-bookworm-systemd; per run it becomes a sparse raw ext4 disk with what a TCG boot needs
 * and nothing else: the host kernel's virtio_net and isofs modules, no gettys, no apt/man/fstrim
 * timers, systemd-networkd, cloud-init with datasource_list [NoCloud, None] and only the modules
 * the user-data needs, an application tree in /srv/app, and lightagent-e2e.service: a oneshot
 * pulled in by cloud-final.service that runs the checks of its role (lightagent_e2e= on the kernel command line), writes `E2E: ...`
 * lines to the serial console and powers off. The guests' network is QEMU user-mode with
 * restrict=on: they reach nothing but 10.0.2.100:7443 (the SVM, wss) and 10.0.2.100:8080 (an HTTP
 * server with install.sh, the release binary, and the clones' barrier), forwarded by guestfwd to
 * the host's loopback. Network config (static 10.0.2.15) comes from the seed's network-config.
 *
 * 1. Template (seed: the shipped user-data with the URLs, token, CA and checksum filled in): the
 *    unit is active under Type=notify with the daemon's STATUS=, reload works, kill -9 of the main
 *    PID is restarted by systemd (Restart=on-failure), stop stops it; EICAR on the disk before the
 *    install is refused with EPERM, a clean file opens; the reload applies `protect: [/srv]` (a
 *    whole-disk seal under TCG runs past the 2 s deadline). Then `lightagent seal --allow-infected`
 *    (a second EICAR copy, never opened in the template, is sealed in as infected) and poweroff.
 * 2. Two clones at once, each on a qcow2 overlay of the template's disk with its own DMI product
 *    UUID and its own seed (instance id, hostname; no install): both agents come up, meet at a
 *    barrier on the host (the host reads the SVM's /metrics), read every file of /srv (the
 *    template's unchanged protected files), meet again (metrics again), then check EICAR and a clean file.
 *    The SVM's lookups, uploads and bytes received do not move between the barriers, and it saw
 *    two distinct agent ids for the two clones.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parseDocument } from 'yaml';
import { EICAR, type Proc, tempDir, waitFor } from '../helpers/procs.js';
import { BINARY, ROOT, ensureBinary, spawnBinary } from '../release/binary.js';

// Under CI=true it always runs: no integration test may skip there.
const ENABLED = process.env.LIGHTAGENT_E2E_QEMU === '1' || process.env.CI === 'true';
const CACHE = process.env.LIGHTAGENT_E2E_CACHE ?? '/var/cache/lightagent-e2e';
const TIMEOUT_S = Number(process.env.LIGHTAGENT_E2E_TIMEOUT_S ?? 900);
const TOKEN = 'e2e-guest-token-123';
const GUEST_SVM = '10.0.2.100';
const ROOTFS_NAME = 'rootfs-bookworm-systemd';
// python3-cffi-backend: debootstrap does not resolve python3-cryptography's virtual dependency on it.
const PACKAGES = 'systemd,systemd-sysv,udev,dbus,cloud-init,python3-cffi-backend,curl,ca-certificates,kmod,iproute2';
const CLONES = ['e2e-clone-a', 'e2e-clone-b'] as const;

function sh(cmd: string, args: string[], timeoutMs = 120_000): { status: number | null; out: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 64 * 1024 * 1024 });
  return { status: r.status, out: (r.stdout ?? '') + (r.stderr ?? '') };
}

function must(cmd: string, args: string[], timeoutMs = 120_000): string {
  const r = sh(cmd, args, timeoutMs);
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}): ${r.out.slice(-3000)}`);
  return r.out;
}

function skipReason(): string | false {
  if (!ENABLED) return 'opt-in: LIGHTAGENT_E2E_QEMU=1 (boots TCG guests, minutes)';
  const missing: string[] = [];
  if (process.getuid?.() !== 0) missing.push('root');
  for (const c of ['qemu-system-x86_64', 'qemu-img', 'cloud-localds', 'debootstrap', 'mkfs.ext4', 'depmod', 'systemctl', 'openssl']) {
    if (sh('sh', ['-c', `command -v ${c}`]).status !== 0) missing.push(c);
  }
  if (!kernel()) missing.push('/boot/vmlinuz-* and /boot/initrd.img-* (apt-get install linux-image-amd64)');
  if (missing.length) {
    throw new Error(
      `LIGHTAGENT_E2E_QEMU=1 but missing: ${missing.join(', ')} (apt-get install -y qemu-system-x86 qemu-utils cloud-image-utils linux-image-amd64 debootstrap e2fsprogs kmod systemd openssl)`,
    );
  }
  return false;
}

/** The newest kernel with an initrd in /boot, and its version. */
function kernel(): { vmlinuz: string; initrd: string; version: string } | undefined {
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
  return v ? { vmlinuz: `/boot/vmlinuz-${v}`, initrd: `/boot/initrd.img-${v}`, version: v } : undefined;
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

/** The cached systemd + cloud-init root filesystem, built by debootstrap the first time (minutes). */
function guestRootfs(): string {
  const dir = path.join(CACHE, ROOTFS_NAME);
  if (fs.existsSync(path.join(dir, '.complete'))) return dir;
  const tmp = `${dir}.tmp`;
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(CACHE, { recursive: true, mode: 0o700 });
  must('debootstrap', ['--variant=minbase', `--include=${PACKAGES}`, 'bookworm', tmp, mirror()], 1_800_000);
  must('sh', ['-c', `rm -rf '${tmp}'/var/cache/apt/archives/*.deb '${tmp}'/var/lib/apt/lists/*`]);
  fs.writeFileSync(
    path.join(tmp, '.complete'),
    `${new Date().toISOString()} debootstrap --variant=minbase --include=${PACKAGES} bookworm\n`,
  );
  fs.rmSync(dir, { recursive: true, force: true });
  fs.renameSync(tmp, dir);
  return dir;
}

/** A CA and an SVM certificate for IP 10.0.2.100 (what the guest dials). */
function pki(dir: string): { ca: string; cert: string; key: string } {
  const p = (f: string) => path.join(dir, f);
  must('openssl', [
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
  must('openssl', [
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
    `subjectAltName=IP:${GUEST_SVM},IP:127.0.0.1,DNS:svm.e2e\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n`,
  );
  must('openssl', [
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

/**
 * The shipped user-data, byte for byte but for its placeholders: the tenant token, the CA, the
 * download URLs, the SVM URL and the binary's checksum.
 */
function filledUserData(vals: { svmUrl: string; repo: string; token: string; caPem: string; sha256: string }): string {
  const shipped = fs.readFileSync(path.join(ROOT, 'installers/cloud-init/user-data.yaml'), 'utf8');
  const caIndented = vals.caPem
    .trim()
    .split('\n')
    .map((l) => `      ${l}`)
    .join('\n');
  const text = shipped
    .replace('replace-with-the-tenant-token', vals.token)
    .replace(/^ {6}-----BEGIN CERTIFICATE-----\n {6}REPLACE-WITH-THE-SVM-CA-CERTIFICATE\n {6}-----END CERTIFICATE-----$/m, caIndented)
    .replaceAll('https://repo.example', vals.repo)
    .replace('wss://svm.example:7443', vals.svmUrl)
    .replace('replace-with-the-sha256-of-lightagent-linux-x64', vals.sha256);
  const ud = parseDocument(text).toJS() as { write_files: { path: string; content: string }[]; runcmd: (string | string[])[] };
  assert.ok(text.startsWith('#cloud-config\n'));
  assert.doesNotMatch(text, /replace-with|REPLACE-WITH|\.example/i, 'every placeholder of the shipped user-data is filled');
  assert.equal(ud.write_files.find((w) => w.path.endsWith('/token'))?.content, `${vals.token}\n`);
  assert.equal(ud.write_files.find((w) => w.path.endsWith('.pem'))?.content.trim(), vals.caPem.trim());
  return text;
}

/** What the guests' network gets from the seed (v2; static: DHCP would add a TCG-slow wait). */
const NETWORK_CONFIG = `version: 2
ethernets:
  eth0:
    addresses: [10.0.2.15/24]
    gateway4: 10.0.2.2
`;

/** cloud-init, trimmed for a TCG boot: NoCloud only, and only the modules the user-data needs. */
const CLOUD_CFG = `# lightagent e2e: NoCloud seed only, no locale/apt/ssh/growpart work at boot.
datasource_list: [NoCloud, None]
system_info:
  network:
    renderers: [networkd]
cloud_init_modules: [seed_random, bootcmd, write-files, set_hostname, update_hostname, update_etc_hosts]
cloud_config_modules: [runcmd]
cloud_final_modules: [scripts-per-once, scripts-per-boot, scripts-per-instance, scripts-user, final-message]
`;

const CHECK_UNIT = `[Unit]
Description=lightagent e2e checks (writes E2E: lines to the serial console, then powers off)
After=cloud-final.service
Wants=cloud-final.service

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/lightagent-e2e-check
StandardOutput=journal+console
StandardError=journal+console
TimeoutStartSec=infinity

# Pulled in by cloud-final, not by a target: a target is ordered after what it wants, and
# cloud-final is After=multi-user.target (a cycle).
[Install]
WantedBy=cloud-final.service
`;

/** The guest side of the checks; its role comes from lightagent_e2e= on the kernel command line. */
const CHECK_SCRIPT = `#!/bin/sh
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
say() { echo "E2E: $*"; }
up() { cut -d' ' -f1 /proc/uptime; }
role=$(sed -n 's/.*lightagent_e2e=\\([a-z0-9-]*\\).*/\\1/p' /proc/cmdline)
unit() { systemctl show lightagent -p Type -p ActiveState -p SubState -p MainPID -p NRestarts -p StatusText | tr '\\n' ' '; }
main_pid() { systemctl show -p MainPID --value lightagent; }
# wait_for SECONDS COMMAND...: 0 once COMMAND succeeds, 1 when SECONDS have passed
wait_for() { n=$1; shift; i=0; while ! "$@" && [ $i -lt $n ]; do sleep 1; i=$((i + 1)); done; "$@"; }
is_active() { [ "$(systemctl is-active lightagent)" = active ]; }
journal() { journalctl -b -u lightagent -o short-monotonic --no-pager 2>&1 | tail -n "$1" | sed 's/^/E2E-JOURNAL: /'; }
finish() {
  journal 40
  grep -h -v '^$' /var/log/lightagent/*.log 2>/dev/null | tail -n 20 | sed 's/^/E2E-AGENTLOG: /'
  say "done role=$role uptime=$(up)"
  sync
  systemctl poweroff --no-block
  exit 0
}
say "role=$role pid1=$(cat /proc/1/comm) uptime=$(up) host=$(hostname) $(systemctl --version | head -n 1)"
say "product_uuid=$(cat /sys/class/dmi/id/product_uuid) machine-id=$(cat /etc/machine-id)"
at() { echo "$(( $(systemctl show -p ActiveEnterTimestampMonotonic --value "$1") / 1000000 ))"; }
say "boot seconds: userspace=$(( $(systemctl show -p UserspaceTimestampMonotonic --value) / 1000000 )) multi-user=$(at multi-user.target) cloud-final=$(at cloud-final.service) lightagent=$(at lightagent.service)"
# (not \`cloud-init status\`: a python start reads hundreds of files, each judged once: ~80 s under TCG)
say "cloud-init result $(tr -d '\\n ' < /run/cloud-init/result.json 2>&1)"
grep -h 'lightagent-install:' /var/log/cloud-init-output.log 2>/dev/null | sed 's/^/E2E-INSTALL: /'
wait_for 300 is_active
say "unit $(unit)"
say "enabled=$(systemctl is-enabled lightagent) agent-id=$(cat /var/lib/lightagent/agent-id 2>&1)"

if [ "$role" = template ]; then
  err=$(cat /srv/eicar.com 2>&1 >/dev/null); rc=$?
  say "eicar rc=$rc err=$err"
  out=$(cat /srv/clean.txt 2>&1); rc=$?
  say "clean rc=$rc out=$out"

  # The admin narrows the template's protection to its application tree (a whole-disk seal under
  # TCG ran past the 2 s deadline on /usr/local/bin/lightagent, 107 MiB), and reloads.
  printf 'protect:\\n  - /srv\\n' >> /etc/lightagent/agent.yaml
  systemctl reload lightagent; rc=$?
  wait_for 120 sh -c 'systemctl show -p StatusText --value lightagent | grep -q reloaded'
  say "reload rc=$rc unit $(unit)"

  old=$(main_pid)
  kill -9 "$old"
  wait_for 120 sh -c "[ \\"\\$(systemctl show -p MainPID --value lightagent)\\" != $old ] && [ \\"\\$(systemctl show -p MainPID --value lightagent)\\" != 0 ] && [ \\"\\$(systemctl is-active lightagent)\\" = active ]"
  say "killed pid=$old restarted unit $(unit)"

  systemctl stop lightagent; rc=$?
  say "stop rc=$rc state=$(systemctl is-active lightagent) left=$(pgrep -c -f 'lightagent run' || true)"

  t0=$(up)
  lightagent seal --allow-infected --jobs 4 --json > /root/seal.json 2>/root/seal.err; rc=$?
  say "seal rc=$rc seconds=$(awk -v t0="$t0" '{ printf "%.1f", $1 - t0 }' /proc/uptime)"
  python3 -c 'import json; s = json.load(open("/root/seal.json")); c = s.get("scan") or {}; print("E2E-SEAL: " + json.dumps({"sealed": s["sealed"], "removed": s["removed"], "cacheEntries": s.get("cacheEntries"), "quarantined": s["quarantined"], "files": c.get("files"), "bytes": c.get("bytes"), "uploadedBytes": c.get("uploadedBytes"), "seconds": c.get("seconds"), "infected": [i["path"] for i in c.get("infected", [])], "errors": len(c.get("errors", [])), "someErrors": c.get("errors", [])[:3]}))' 2>&1 | sed '/^E2E-SEAL: /!s/^/E2E-SEAL-ERR: /'

  tail -n 5 /root/seal.err | sed 's/^/E2E-SEAL-ERR: /'
  say "state dir after seal: $(ls /var/lib/lightagent | tr '\\n' ' ')"

  # The SVM under its shipped, hardened unit (installers/systemd/lightagent-svm.service, its user
  # made by systemd-sysusers as a package would): started by systemd, /healthz answers, own user.
  systemd-sysusers /usr/lib/sysusers.d/lightagent-svm.conf || say "svm sysusers failed rc=$?"
  ln -sf lightagent /usr/local/bin/lightagent-svm
  # The agent's install made /etc/lightagent 0700; the SVM's user needs to pass through it (docs/svm.md).
  chmod 0711 /etc/lightagent
  printf 'listen: 127.0.0.1:7444\\ntoken_file: /etc/lightagent/svm-tokens.yaml\\nlog: {file: /var/log/lightagent-svm/svm.log}\\n' > /etc/lightagent/svm.yaml
  printf -- '- {tenant: e2e, token: e2e-svm-token-1234}\\n' > /etc/lightagent/svm-tokens.yaml
  chown root:lightagent-svm /etc/lightagent/svm-tokens.yaml; chmod 0640 /etc/lightagent/svm-tokens.yaml
  t0=$(up)
  systemctl start lightagent-svm; rc=$?
  wait_for 120 curl -fsS -o /root/svm-healthz.json http://127.0.0.1:7444/healthz
  svmpid=$(systemctl show -p MainPID --value lightagent-svm)
  say "svm start rc=$rc seconds=$(awk -v t0="$t0" '{ printf "%.1f", $1 - t0 }' /proc/uptime) user=$(ps -o user= -p "$svmpid") healthz=$(tr -d '\\n ' < /root/svm-healthz.json 2>&1) nnp=$(sed -n 's/^NoNewPrivs:[[:space:]]*//p' /proc/"$svmpid"/status) capeff=$(sed -n 's/^CapEff:[[:space:]]*//p' /proc/"$svmpid"/status) seccomp=$(sed -n 's/^Seccomp:[[:space:]]*//p' /proc/"$svmpid"/status) state=$(stat -c %U:%a /var/lib/lightagent-svm/.) unit $(systemctl show lightagent-svm -p Type -p ActiveState -p SubState -p NRestarts | tr '\\n' ' ')"
  journalctl -b -u lightagent-svm -o cat --no-pager 2>&1 | tail -n 10 | sed 's/^/E2E-SVMLOG: /'
  systemctl stop lightagent-svm; rc=$?
  say "svm stop rc=$rc state=$(systemctl is-active lightagent-svm)"
  finish
fi

# a clone
curl -fsS --max-time 600 "http://${GUEST_SVM}:8080/e2e/sync/ready/$role" >/dev/null; rc=$?
say "barrier ready rc=$rc uptime=$(up)"
t0=$(up)
# /srv is what the template protects; /srv/kept holds its EICAR, checked below
files=$(find /srv -xdev -type f ! -path '/srv/kept/*' | wc -l)
find /srv -xdev -type f ! -path '/srv/kept/*' -print0 | xargs -0 cat > /dev/null 2>/root/read.err; rc=$?
say "read files=$files rc=$rc seconds=$(awk -v t0="$t0" '{ printf "%.1f", $1 - t0 }' /proc/uptime) errors=$(wc -l < /root/read.err)"
head -n 5 /root/read.err | sed 's/^/E2E-READ-ERR: /'
curl -fsS --max-time 600 "http://${GUEST_SVM}:8080/e2e/sync/read/$role" >/dev/null; rc=$?
say "barrier read rc=$rc"
err=$(cat /srv/kept/eicar.com 2>&1 >/dev/null); rc=$?
say "eicar rc=$rc err=$err"
out=$(cat /srv/clean.txt 2>&1); rc=$?
say "clean rc=$rc out=$out"
say "unit $(unit)"
finish
`;

/** Forward stdin/stdout to 127.0.0.1:PORT: QEMU runs this per guest connection (guestfwd cmd:). */
const FORWARDER = `const net = require('node:net');
const s = net.connect(Number(process.argv[2]), '127.0.0.1');
process.stdin.pipe(s); s.pipe(process.stdout);
s.on('error', () => process.exit(1)); s.on('close', () => process.exit(0)); process.stdin.on('end', () => s.end());
`;

/** The per-run disk tree: the cached rootfs plus what the guests need (see the file comment). */
function prepareTree(tree: string, k: { version: string }): void {
  const w = (rel: string, text: string, mode = 0o644) => {
    fs.mkdirSync(path.dirname(path.join(tree, rel)), { recursive: true });
    fs.writeFileSync(path.join(tree, rel), text, { mode });
  };
  // Modules the host initrd does not load: the NIC and the seed's ISO 9660 filesystem.
  const mods = `/lib/modules/${k.version}`;
  for (const rel of [
    'kernel/net/core/failover.ko',
    'kernel/drivers/net/net_failover.ko',
    'kernel/drivers/net/virtio_net.ko',
    'kernel/fs/isofs/isofs.ko',
    'modules.order',
    'modules.builtin',
    'modules.builtin.modinfo',
  ]) {
    const to = path.join(tree, 'usr', mods, rel);
    fs.mkdirSync(path.dirname(to), { recursive: true });
    fs.copyFileSync(path.join(mods, rel), to);
  }
  must('depmod', ['-b', path.join(tree, 'usr'), k.version]);
  w('etc/fstab', '/dev/vda / ext4 rw,errors=remount-ro 0 0\n');
  w('etc/machine-id', ''); // made at first boot, then inherited by the clones (no seal step empties it)
  fs.rmSync(path.join(tree, 'var/lib/dbus/machine-id'), { force: true }); // systemd would take debootstrap's
  w('etc/hostname', 'localhost\n');
  w('etc/cloud/cloud.cfg.d/90-lightagent-e2e.cfg', CLOUD_CFG);
  w('etc/systemd/system/lightagent-e2e.service', CHECK_UNIT);
  w('usr/local/sbin/lightagent-e2e-check', CHECK_SCRIPT, 0o755);
  // The SVM's shipped unit and its user (started by the template's checks, not enabled).
  w('etc/systemd/system/lightagent-svm.service', fs.readFileSync(path.join(ROOT, 'installers/systemd/lightagent-svm.service'), 'utf8'));
  w('usr/lib/sysusers.d/lightagent-svm.conf', fs.readFileSync(path.join(ROOT, 'installers/systemd/lightagent-svm.sysusers'), 'utf8'));
  must('systemctl', ['--root', tree, 'enable', 'systemd-networkd.service', 'lightagent-e2e.service']);
  must('systemctl', [
    '--root',
    tree,
    'mask',
    'getty@tty1.service',
    'serial-getty@ttyS0.service',
    'apt-daily.timer',
    'apt-daily-upgrade.timer',
    'dpkg-db-backup.timer',
    'e2scrub_all.timer',
    'fstrim.timer',
    'man-db.timer',
    'systemd-timesyncd.service',
  ]);
  // Data on the disk before the install: EICAR refused in the template, a second copy sealed in
  // as infected (never opened in the template) and refused in each clone, a clean file.
  w('srv/eicar.com', EICAR);
  w('srv/kept/eicar.com', EICAR);
  w('srv/clean.txt', 'a clean file\n');
  // The template's application: ~1700 files, 27 MiB (a copy of Debian's python3 dist-packages).
  must('cp', ['-a', path.join(tree, 'usr/lib/python3/dist-packages'), path.join(tree, 'srv/app')]);
}

interface Guest {
  name: string;
  serial: string;
  ms: number;
  code: number | null;
}

const running = new Set<ChildProcess>();

function boot(
  name: string,
  o: {
    disk: string;
    diskFormat: 'raw' | 'qcow2';
    seed: string;
    uuid: string;
    smp: number;
    memMb: number;
    fwd: string;
    svmPort: number;
    httpPort: number;
    k: { vmlinuz: string; initrd: string };
  },
): Promise<Guest> {
  const args = [
    '-name',
    name,
    '-accel',
    'tcg',
    '-machine',
    'q35',
    '-cpu',
    'max',
    '-smp',
    String(o.smp),
    '-m',
    String(o.memMb),
    '-uuid',
    o.uuid,
    '-smbios',
    `type=1,uuid=${o.uuid}`,
    '-kernel',
    o.k.vmlinuz,
    '-initrd',
    o.k.initrd,
    '-append',
    `root=/dev/vda rw console=ttyS0 panic=-1 quiet loglevel=3 net.ifnames=0 systemd.show_status=0 lightagent_e2e=${name === 'e2e-template' ? 'template' : name} ${process.env.LIGHTAGENT_E2E_APPEND ?? ''}`.trim(),
    '-drive',
    `file=${o.disk},if=virtio,format=${o.diskFormat}`,
    '-drive',
    `file=${o.seed},if=virtio,format=raw,readonly=on`,
    '-netdev',
    `user,id=n0,restrict=on,guestfwd=tcp:${GUEST_SVM}:7443-cmd:${process.execPath} ${o.fwd} ${o.svmPort},guestfwd=tcp:${GUEST_SVM}:8080-cmd:${process.execPath} ${o.fwd} ${o.httpPort}`,
    '-device',
    'virtio-net-pci,netdev=n0',
    '-nographic',
    '-no-reboot',
    '-serial',
    'stdio',
    '-monitor',
    'none',
  ];
  const g: Guest = { name, serial: '', ms: 0, code: null };
  const t0 = performance.now();
  const qemu = spawn('qemu-system-x86_64', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  running.add(qemu);
  // LIGHTAGENT_E2E_SERIAL_DIR: also write each guest's console to DIR/NAME.log as it runs.
  const log = process.env.LIGHTAGENT_E2E_SERIAL_DIR
    ? fs.createWriteStream(path.join(process.env.LIGHTAGENT_E2E_SERIAL_DIR, `${name}.log`))
    : undefined;
  const take = (d: Buffer) => {
    g.serial += d.toString();
    log?.write(d);
  };
  qemu.stdout.on('data', take);
  qemu.stderr.on('data', take);
  const killer = setTimeout(() => qemu.kill('SIGKILL'), TIMEOUT_S * 1000);
  return new Promise((resolve) => {
    qemu.once('close', (code) => {
      clearTimeout(killer);
      running.delete(qemu);
      log?.end();
      g.ms = performance.now() - t0;
      g.code = code;
      process.stderr.write(
        `${name} ran ${(g.ms / 1000).toFixed(0)} s (exit ${code})\n${e2e(g.serial)
          .filter((l) => !/^E2E-(JOURNAL|AGENTLOG)/.test(l))
          .map((l) => `  ${l}`)
          .join('\n')}\n`,
      );
      resolve(g);
    });
  });
}

/** The `Key=value` properties of the `systemctl show` part of a line (after ` unit `; values may hold spaces). */
function props(l: string): Record<string, string> {
  const out: Record<string, string> = {};
  const i = l.indexOf(' unit ');
  for (const m of (i < 0 ? '' : l.slice(i + 6)).matchAll(/(\w+)=(.*?)(?= \w+=|\s*$)/g)) out[m[1]!] = m[2]!;
  return out;
}

/**
 * The guest's E2E lines, without the prefix the console gives a service's output
 * (`[  212.164547] lightagent-e2e-check[449]: `).
 */
const e2e = (serial: string): string[] =>
  serial
    .split(/\r?\n/)
    .map((l) => /^(?:\[\s*[\d.]+\] [\w@.-]+\[\d+\]: )?(E2E[-A-Z]*: .*)$/.exec(l)?.[1])
    .filter((l): l is string => l !== undefined);

/** The E2E: line starting with `key`, or '' (for messages). */
const line = (g: Guest, key: string): string => e2e(g.serial).find((l) => l.startsWith(`E2E: ${key}`)) ?? '';
const tail = (g: Guest) => g.serial.slice(-6000);

type Metrics = Record<string, number>;

/** The SVM's counters, summed over their labels. */
function parseMetrics(text: string): Metrics {
  const m: Metrics = {};
  for (const l of text.split('\n')) {
    const r = /^([a-zA-Z_:][\w:]*)(?:\{[^}]*\})?\s+(\S+)$/.exec(l);
    if (r) m[r[1]!] = (m[r[1]!] ?? 0) + Number(r[2]);
  }
  return m;
}

describe('agent in QEMU guests under systemd and cloud-init (TCG): install, unit, seal, two clones', { skip: skipReason() }, () => {
  let work: string;
  let svm: Proc & { url: string; metricsUrl: string };
  let server: http.Server;
  let caPem: string;
  let template: Guest;
  let clones: Guest[] = [];
  const snapshots: Record<string, Metrics> = {};

  const metrics = (): Promise<Metrics> =>
    new Promise((resolve, reject) => {
      https
        .get(svm.metricsUrl, { ca: caPem }, (res) => {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (d: string) => (body += d));
          res.on('end', () => resolve(parseMetrics(body)));
        })
        .on('error', reject);
    });

  before(async () => {
    ensureBinary();
    const t0 = performance.now();
    const rootfs = guestRootfs();
    process.stderr.write(`guest rootfs ${rootfs} ready in ${((performance.now() - t0) / 1000).toFixed(0)} s\n`);
    const k = kernel()!;
    work = tempDir('la-e2e-');
    const certs = pki(work);
    caPem = fs.readFileSync(certs.ca, 'utf8');
    // A copy: a rebuild of dist/ while the guest downloads would change its checksum.
    const binary = path.join(work, 'lightagent-linux-x64');
    fs.copyFileSync(BINARY, binary);
    fs.chmodSync(binary, 0o755);

    svm = await (async () => {
      const p = spawnBinary(
        ['svm', '--listen', '127.0.0.1:0', '--token', TOKEN, '--tls-cert', certs.cert, '--tls-key', certs.key, '--json'],
        { watchdogMs: 4 * TIMEOUT_S * 1000, file: binary },
      );
      const m = await waitFor(p, /"url"\s*:\s*"(wss:\/\/[^"]+)".*"metrics"\s*:\s*"([^"]+)"/);
      return { ...p, url: m[1]!, metricsUrl: m[2]! };
    })();

    // install.sh and the binary; /e2e/sync/PHASE/NAME holds each clone until both arrived, then
    // reads the SVM's metrics and lets them go.
    const barriers = new Map<string, http.ServerResponse[]>();
    server = http.createServer((req, res) => {
      const sync = /^\/e2e\/sync\/(\w+)\/([\w-]+)$/.exec(req.url ?? '');
      if (sync) {
        const [, phase, who] = sync as unknown as [string, string, string];
        const waiting = barriers.get(phase) ?? [];
        barriers.set(phase, [...waiting, res]);
        process.stderr.write(`barrier ${phase}: ${who} arrived\n`);
        if (waiting.length + 1 === CLONES.length) {
          void metrics().then(
            (m) => {
              snapshots[phase] = m;
              const c = (k: string) => m[`lightagent_svm_${k}_total`];
              process.stderr.write(
                `barrier ${phase}: SVM lookups ${c('lookups')}, uploads ${c('uploads')}, bytes received ${c('bytes_received')}\n`,
              );
              for (const r of barriers.get(phase)!) r.writeHead(200).end('go\n');
            },
            (e: Error) => {
              for (const r of barriers.get(phase)!) r.writeHead(500).end(`${e.message}\n`);
            },
          );
        }
        return;
      }
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
    const fwd = path.join(work, 'fwd.cjs');
    fs.writeFileSync(fwd, FORWARDER);

    // The template's disk: the cached rootfs + the e2e files, as a sparse raw ext4 image.
    const t1 = performance.now();
    const tree = path.join(work, 'rootfs');
    must('cp', ['-a', rootfs, tree], 600_000);
    prepareTree(tree, k);
    const disk = path.join(work, 'template.img');
    must('mkfs.ext4', ['-q', '-F', '-L', 'e2e-root', '-d', tree, disk, '2G'], 600_000);
    fs.rmSync(tree, { recursive: true, force: true });

    const seed = (name: string, userData: string): string => {
      const dir = path.join(work, `seed-${name}`);
      fs.mkdirSync(dir);
      fs.writeFileSync(path.join(dir, 'user-data'), userData, { mode: 0o600 });
      fs.writeFileSync(path.join(dir, 'meta-data'), `instance-id: ${name}-${crypto.randomUUID()}\nlocal-hostname: ${name}\n`);
      fs.writeFileSync(path.join(dir, 'network-config'), NETWORK_CONFIG);
      const iso = path.join(work, `seed-${name}.iso`);
      must('cloud-localds', [
        '--network-config',
        path.join(dir, 'network-config'),
        iso,
        path.join(dir, 'user-data'),
        path.join(dir, 'meta-data'),
      ]);
      return iso;
    };
    const sha = crypto.createHash('sha256').update(fs.readFileSync(binary)).digest('hex');
    const templateSeed = seed(
      'e2e-template',
      filledUserData({ svmUrl: `wss://${GUEST_SVM}:7443`, repo: `http://${GUEST_SVM}:8080`, token: TOKEN, caPem, sha256: sha }),
    );
    process.stderr.write(`template disk and seed made in ${((performance.now() - t1) / 1000).toFixed(0)} s\n`);

    const common = { fwd, svmPort, httpPort, k };
    template = await boot('e2e-template', {
      ...common,
      disk,
      diskFormat: 'raw',
      seed: templateSeed,
      uuid: crypto.randomUUID(),
      smp: 2,
      memMb: 1280,
    });
    if (!line(template, 'done')) return; // the template's tests say why

    // Two clones at once, each on its own copy-on-write overlay, DMI UUID and seed (no install).
    clones = await Promise.all(
      CLONES.map((name) => {
        const overlay = path.join(work, `${name}.qcow2`);
        must('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', disk, '-F', 'raw', overlay]);
        return boot(name, {
          ...common,
          disk: overlay,
          diskFormat: 'qcow2',
          seed: seed(name, '#cloud-config\n{}\n'),
          uuid: crypto.randomUUID(),
          smp: 1,
          memMb: 1024,
        });
      }),
    );
  });

  after(async () => {
    for (const q of running) q.kill('SIGKILL');
    await svm?.stop();
    await new Promise((r) => (server ? server.close(r) : r(undefined)));
    if (work) fs.rmSync(work, { recursive: true, force: true });
  });

  describe('the template', () => {
    it('boots systemd as PID 1 and real cloud-init installs the agent from the NoCloud seed', () => {
      assert.match(line(template, 'role=template'), /pid1=systemd /, tail(template));
      assert.match(
        line(template, 'cloud-init result'),
        /"datasource":"DataSourceNoCloud\[seed=\/dev\/vdb\]\S*","errors":\[\]/,
        tail(template),
      );
      assert.match(
        template.serial,
        /E2E-INSTALL: .*lightagent-install: ok action=install version=\S+ bin=\/usr\/local\/bin\/lightagent .*service=started\(systemd\)/,
        tail(template),
      );
      assert.match(line(template, 'enabled='), /enabled=enabled /);
      assert.match(line(template, 'done'), /done role=template/, `the template finished within ${TIMEOUT_S} s`);
      assert.equal(template.code, 0);
    });

    it("the shipped unit is active under Type=notify with the daemon's READY status", () => {
      const u = props(line(template, 'unit '));
      assert.deepEqual([u.Type, u.ActiveState, u.SubState, u.NRestarts], ['notify', 'active', 'running', '0'], JSON.stringify(u));
      assert.match(u.StatusText ?? '', /^protecting \/ \(mode fanotify\)$/, JSON.stringify(u));
    });

    it('every part of the binary works in the guest (no missing worker, no fallback)', () => {
      assert.doesNotMatch(template.serial, /E2E-(JOURNAL|AGENTLOG): .*(Cannot find module|MODULE_NOT_FOUND|FALLING BACK)/);
    });

    it('EICAR on the disk before the install is refused with EPERM; a clean file opens', () => {
      assert.match(line(template, 'eicar'), /eicar rc=1 err=cat: \/srv\/eicar\.com: Operation not permitted/, tail(template));
      assert.match(line(template, 'clean'), /clean rc=0 out=a clean file/);
    });

    it('the detection reaches the SVM on the host, from the guest', () => {
      const d = svm
        .output()
        .split('\n')
        .filter((l) => l.includes('agent reported a detection'))
        .map((l) => JSON.parse(l) as { host?: string; path?: string; threat?: string })
        .find((x) => x.host === 'e2e-template');
      assert.ok(d, svm.output().slice(-3000));
      assert.equal(d.path, '/srv/eicar.com');
      assert.equal(d.threat, 'Eicar-Test-Signature');
    });

    it('systemctl reload works (the daemon says READY again, reloaded)', () => {
      const l = line(template, 'reload');
      assert.match(l, /^E2E: reload rc=0 unit /, tail(template));
      const u = props(l);
      assert.deepEqual([u.ActiveState, u.StatusText], ['active', 'protecting (fanotify), reloaded'], l);
      assert.match(template.serial, /"message":"configuration reloaded".*"protect":\["\/srv"\]/, 'the reload applied protect: [/srv]');
    });

    it('after kill -9 of the main PID systemd restarts it (Restart=on-failure)', () => {
      const l = line(template, 'killed');
      const u = props(l);
      const pid = /^E2E: killed pid=(\d+) /.exec(l)?.[1];
      assert.ok(pid && u.MainPID, `${l}\n${tail(template)}`);
      assert.notEqual(u.MainPID, pid);
      assert.notEqual(u.MainPID, '0');
      assert.deepEqual([u.NRestarts, u.ActiveState, u.SubState], ['1', 'active', 'running'], l);
      assert.equal(u.StatusText, 'protecting /srv (mode fanotify)', l);
    });

    it('systemctl stop stops it', () => {
      assert.match(line(template, 'stop'), /stop rc=0 state=inactive left=0/, tail(template));
    });

    it('the hardened SVM unit runs the SVM under systemd: /healthz answers, own user, no privileges', () => {
      const l = line(template, 'svm start');
      assert.match(l, /^E2E: svm start rc=0 /, `${l}\n${tail(template)}`);
      assert.match(l, / user=lightagent-svm /, l);
      assert.match(l, / healthz=\{"status":"ok"/, l);
      assert.match(l, / nnp=1 capeff=0000000000000000 seccomp=2 /, 'NoNewPrivileges, no capabilities, a seccomp filter');
      assert.match(l, / state=lightagent-svm:700 /, 'StateDirectory made for its user');
      const u = props(l);
      assert.deepEqual([u.Type, u.ActiveState, u.SubState, u.NRestarts], ['exec', 'active', 'running', '0'], l);
      assert.match(line(template, 'svm stop'), /svm stop rc=0 state=inactive/, tail(template));
    });

    it('lightagent seal scans the template, writes the cache and drops the identity', () => {
      assert.match(line(template, 'seal'), /seal rc=0 /, tail(template));
      const json = (e2e(template.serial).find((l) => l.startsWith('E2E-SEAL: ')) ?? '').slice('E2E-SEAL: '.length);
      assert.ok(json, tail(template));
      const s = JSON.parse(json) as { sealed: boolean; removed: string[]; cacheEntries: number; files: number; infected: string[] };
      assert.equal(s.sealed, true);
      assert.ok(s.removed.includes('agent-id'), json);
      assert.deepEqual(s.infected, ['/srv/kept/eicar.com']);
      assert.ok(s.files > 1000 && s.cacheEntries >= s.files - 100, json);
    });
  });

  describe('two clones of the sealed template', () => {
    it('both boot from copy-on-write overlays and the shipped unit starts the agent', () => {
      assert.equal(clones.length, 2, 'the template finished, so the clones ran');
      for (const c of clones) {
        assert.match(line(c, 'role='), /pid1=systemd /, tail(c));
        const u = props(line(c, 'unit '));
        assert.deepEqual([u.Type, u.ActiveState, u.SubState], ['notify', 'active', 'running'], tail(c));
        assert.match(line(c, 'done'), /done role=e2e-clone-/, tail(c));
        assert.equal(c.code, 0);
      }
    });

    it("reading the template's tree makes 0 SVM lookups and uploads 0 bytes", () => {
      for (const c of clones) assert.match(line(c, 'read '), /read files=\d+ rc=0 /, tail(c));
      const [a, b] = [snapshots['ready'], snapshots['read']];
      assert.ok(a && b, 'both barriers were reached');
      // The counters exist and counted the template's seal (uploads of /srv): a delta of 0 means something.
      assert.ok(
        (a['lightagent_svm_lookups_total'] ?? 0) > 1000 && (a['lightagent_svm_bytes_received_total'] ?? 0) > 1_000_000,
        JSON.stringify(a),
      );
      const delta = (k: string) => (b[k] ?? 0) - (a[k] ?? 0);
      assert.deepEqual(
        {
          lookups: delta('lightagent_svm_lookups_total'),
          uploads: delta('lightagent_svm_uploads_total'),
          bytes: delta('lightagent_svm_bytes_received_total'),
        },
        { lookups: 0, uploads: 0, bytes: 0 },
      );
    });

    it('EICAR of the template is refused in each clone; a clean file opens', () => {
      for (const c of clones) {
        assert.match(line(c, 'eicar'), /eicar rc=1 err=cat: \/srv\/kept\/eicar\.com: Operation not permitted/, tail(c));
        assert.match(line(c, 'clean'), /clean rc=0 out=a clean file/);
      }
    });

    it("the SVM saw two distinct agent ids for the two clones, neither the template's", () => {
      const hellos = svm
        .output()
        .split('\n')
        .filter((l) => l.includes('agent connected'))
        .map((l) => JSON.parse(l) as { agent?: string; host?: string; hypervisor?: string });
      const idsOf = (host: string) => new Set(hellos.filter((h) => h.host === host).map((h) => h.agent));
      const [a, b, t] = [idsOf(CLONES[0]), idsOf(CLONES[1]), idsOf('e2e-template')];
      assert.equal(a.size, 1, JSON.stringify(hellos));
      assert.equal(b.size, 1, JSON.stringify(hellos));
      assert.notDeepEqual([...a], [...b]);
      for (const id of [...a, ...b]) assert.ok(!t.has(id), "a clone does not reuse the template's id");
      assert.ok(
        hellos.every((h) => h.hypervisor === 'qemu'),
        'the hello names the hypervisor: QEMU emulation (TCG)',
      );
    });
  });
});
