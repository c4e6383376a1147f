/**
 * The MSI's major upgrade under Wine: version A installed silently with properties, then a
 * higher version B (the same Wine-variant exe, only the MSI's ProductVersion and ProductCode
 * differ) installed silently without properties. Exactly one lightagent product must be
 * registered afterwards (B), the config must keep A's values, the service and the tray's Run
 * value must be there once; A over B must be refused (downgrade); `msiexec /x` of B removes it all.
 *
 * With CI=true a missing wine/wixl fails; locally it skips with the reason.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { eventually, inCi, tempDir } from '../helpers/procs.js';
import { buildWineVariant, root, WinePrefix, wineExe, wineMissing, wineMsi, type WineResult } from '../helpers/wine.js';

const why = wineMissing();
if (why && inCi) throw new Error(`Windows tests under Wine cannot run: ${why}`);
if (why) process.stderr.write(`\n*** SKIPPING test/windows/wine-upgrade.test.ts: ${why} ***\n\n`);

const SVM_URL = 'ws://127.0.0.1:7443';
const TOKEN = 'upgrade-token-from-A';
const C_LOG = 'msiexec log C:\\';
const UNINSTALL_KEY = 'HKLM\\Software\\Microsoft\\Windows\\CurrentVersion\\Uninstall';

/** `reg query /s` output as keys with their values. */
function regKeys(out: string): { key: string; values: Map<string, string> }[] {
  const keys: { key: string; values: Map<string, string> }[] = [];
  for (const line of out.split(/\r?\n/)) {
    if (/^HKEY_/.test(line)) keys.push({ key: line.trim(), values: new Map() });
    const v = /^\s+(.+?)\s+(REG_[A-Z_]+)(?:\s+(.*))?$/.exec(line);
    if (v && keys.length) keys[keys.length - 1]!.values.set(v[1]!, (v[3] ?? '').trim());
  }
  return keys;
}

/** The Windows Installer's packed form of a GUID (as under ...\Installer\UpgradeCodes). */
function packedGuid(guid: string): string {
  const h = guid.replace(/[{}-]/g, '').toUpperCase();
  const rev = (s: string) => [...s].reverse().join('');
  const pairs = h.slice(16).match(/../g)!.map(rev).join('');
  return rev(h.slice(0, 8)) + rev(h.slice(8, 12)) + rev(h.slice(12, 16)) + pairs;
}

describe('MSI major upgrade and downgrade under Wine', { skip: why, timeout: 300_000 }, () => {
  let prefix: WinePrefix;
  let work = '';
  let msiB = '';
  const versionA = (JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as { version: string }).version;
  const [maj, min, patch] = versionA.split('.').map(Number) as [number, number, number];
  const versionB = `${maj}.${min}.${patch + 1}`;
  const upgradeCode = /UpgradeCode="([0-9A-F-]+)"/i.exec(
    fs.readFileSync(path.join(root, 'installers/windows/lightagent.wxs'), 'utf8'),
  )![1]!;

  const wine = (args: string[], timeoutMs?: number): WineResult => prefix.run(args, timeoutMs);
  /** The lightagent products in the Uninstall keys, and the product codes registered under the UpgradeCode. */
  const products = () => {
    const entries = regKeys(wine(['reg', 'query', UNINSTALL_KEY, '/s']).stdout)
      .filter((k) => k.values.get('DisplayName') === 'lightagent')
      .map((k) => ({ code: /\{[0-9A-F-]+\}$/i.exec(k.key)?.[0] ?? k.key, version: k.values.get('DisplayVersion') }));
    const related = [
      ...regKeys(wine(['reg', 'query', `HKLM\\Software\\Classes\\Installer\\UpgradeCodes\\${packedGuid(upgradeCode)}`]).stdout).flatMap(
        (k) => [...k.values.keys()],
      ),
    ];
    return { entries, related };
  };
  /** Service keys whose ImagePath runs the lightagent executable. */
  const services = () =>
    regKeys(wine(['reg', 'query', 'HKLM\\System\\CurrentControlSet\\Services', '/s']).stdout)
      .filter((k) => /lightagent-win-x64\.exe/i.test(k.values.get('ImagePath') ?? ''))
      .map((k) => k.key);
  const configFile = () => prefix.driveC('ProgramData/lightagent/agent.yaml');
  const installed = () => prefix.driveC('Program Files/lightagent/lightagent-win-x64.exe');
  let logs = 0;
  /** msiexec /qn with a verbose log; a failed step's message carries the log's failed actions and errors. */
  const msiexec = (args: string[], what: string) => {
    const log = `msi-${++logs}.log`;
    const t0 = performance.now();
    const r = wine(['msiexec', ...args, '/qn', '/l*v', `C:\\${log}`], 120_000);
    process.stderr.write(`wine-upgrade: ${what}: exit ${r.status} in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);
    const text = fs.existsSync(prefix.driveC(log)) ? fs.readFileSync(prefix.driveC(log), 'latin1') : '(no log)';
    const failed = text
      .split(/\r?\n/)
      .filter((l) => /Return value 0\.|error|failed|Note:/i.test(l))
      .slice(0, 20)
      .join('\n');
    return { ...r, stdout: `${r.stdout}${r.stderr}\n${C_LOG}${log}:\n${failed}` };
  };
  const expectA = (cfg: string) => {
    assert.match(cfg, /^svm: ws:\/\/127\.0\.0\.1:7443$/m, cfg);
    assert.match(cfg, new RegExp(`^token: ${TOKEN}$`, 'm'), cfg);
    assert.match(cfg, /^ {2}- C:\\upgraded$/m, cfg);
    assert.match(cfg, /^on_svm_unavailable: allow$/m, cfg);
  };

  before(async () => {
    buildWineVariant();
    work = tempDir('la-wine-upg-msi-');
    msiB = path.join(work, `lightagent-${versionB}.msi`);
    const { buildMsi } = (await import(pathToFileURL(path.join(root, 'scripts/windows-msi.mjs')).href)) as {
      buildMsi: (o: { root: string; exe: string; out: string; version: string }) => void;
    };
    buildMsi({ root, exe: wineExe, out: msiB, version: versionB });
    prefix = WinePrefix.create('la-wine-upg-');
    fs.mkdirSync(prefix.driveC('upgraded'), { recursive: true });
  });

  after(() => {
    prefix?.dispose();
    if (work) fs.rmSync(work, { recursive: true, force: true });
  });

  it(`installs A (${versionA}) with properties, upgrades to B without properties keeping the config, refuses A over B, uninstalls B`, async () => {
    const a = msiexec(
      ['/i', wineMsi, `SVM_URL=${SVM_URL}`, `TOKEN=${TOKEN}`, 'PROTECT=C:\\upgraded', 'FAIL_CLOSED=0'],
      `install ${versionA}`,
    );
    assert.equal(a.status, 0, `msiexec /i A: ${a.stdout}`);
    expectA(fs.readFileSync(configFile(), 'utf8'));
    const first = products();
    assert.equal(first.entries.length, 1, JSON.stringify(first));
    assert.equal(first.entries[0]!.version, versionA);
    assert.equal(first.related.length, 1, JSON.stringify(first));
    await eventually(() => /STATE\s+:\s+4\s+RUNNING/.test(wine(['sc', 'query', 'lightagent']).stdout), 30_000, 'the service of A to run');

    // A's service is stopped first, as before the uninstall below. Left running, the upgrade
    // rolled back (exit 1627, nothing installed) in 6 of 11 runs here: B's StartServices failed
    // ("StartServices. Return value 0" in the msiexec log) while A's service was still stopping
    // (its stop takes ~1.1 s under Wine; the log shows B's start only after A's "service stopped"
    // in the runs that passed). Windows Installer's StopServices waits for the stop; under Wine
    // the upgrade of a running service is therefore not tested (docs/windows.md).
    await prefix.quiesceService();
    // B over A, no properties: MajorUpgrade removes A, B's `service configure` gets empty values
    const b = msiexec(['/i', msiB], `upgrade ${versionA} -> ${versionB} without properties`);
    const after1 = products();
    const cfg = fs.existsSync(configFile()) ? fs.readFileSync(configFile(), 'utf8') : '(no config file)';
    assert.equal(b.status, 0, `msiexec /i B: exit ${b.status} ${b.stdout}; products now ${JSON.stringify(after1)}; config now:\n${cfg}`);
    assert.equal(after1.entries.length, 1, `exactly one lightagent product: ${JSON.stringify(after1)}`);
    assert.equal(after1.entries[0]!.version, versionB);
    assert.notEqual(after1.entries[0]!.code, first.entries[0]!.code, 'B has its own ProductCode: A is gone');
    assert.deepEqual(after1.related, [packedGuid(after1.entries[0]!.code)], 'the UpgradeCode relates to B only');
    expectA(cfg);
    assert.ok(fs.existsSync(installed()), 'the exe is installed');
    assert.deepEqual(services(), ['HKEY_LOCAL_MACHINE\\System\\CurrentControlSet\\Services\\lightagent'], 'one service runs the exe');
    await eventually(() => /STATE\s+:\s+4\s+RUNNING/.test(wine(['sc', 'query', 'lightagent']).stdout), 30_000, 'the service of B to run');
    assert.match(prefix.trayRunValue() ?? '(none)', /^"C:\\Program Files\\lightagent\\lightagent-win-x64\.exe" tray$/);

    // A over B: a downgrade, refused by the launch condition (ERROR_INSTALL_FAILURE 1603; Wine's
    // exit status is its low byte), nothing changes
    const d = msiexec(['/i', wineMsi], `downgrade ${versionB} -> ${versionA}`);
    assert.equal(d.status, 1603 & 0xff, `msiexec /i A over B: exit ${d.status} ${d.stdout}`);
    assert.deepEqual(products(), after1, 'still only B');
    expectA(fs.readFileSync(configFile(), 'utf8'));
    assert.deepEqual(services(), ['HKEY_LOCAL_MACHINE\\System\\CurrentControlSet\\Services\\lightagent']);

    // msiexec /x of B removes the program, its service, the Run value and the config
    await prefix.quiesceService();
    const x = msiexec(['/x', msiB], `uninstall ${versionB}`);
    assert.equal(x.status, 0, `msiexec /x B: ${x.stdout}`);
    assert.ok(!fs.existsSync(installed()), 'the exe is removed');
    assert.ok(!fs.existsSync(configFile()), 'the config is removed');
    assert.deepEqual(services(), [], 'no service runs the exe');
    assert.doesNotMatch(wine(['sc', 'query', 'lightagent']).stdout, /RUNNING|STOPPED/, 'the service is deleted');
    assert.equal(prefix.trayRunValue(), undefined, 'the Run value is removed');
    assert.deepEqual(products(), { entries: [], related: [] }, 'no lightagent product is registered');
  });
});
