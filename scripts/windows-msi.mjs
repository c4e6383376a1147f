// The MSI from installers/windows/lightagent.wxs, for scripts/release-windows.mjs and the upgrade
// test under Wine (test/windows/wine-upgrade.test.ts): wixl (Debian wixl), then one change to the
// Upgrade table with msibuild (Debian msitools) that wixl cannot express.
//
// The change: the MajorUpgrade row's Remove column is set to the product's one feature,
// "Complete" (wixl leaves it empty). RemoveExistingProducts then removes the older product with
// REMOVE=Complete instead of REMOVE=ALL: every feature, so the whole product, as before. It
// matters for the wxs's RemoveState action (`service cleanup`, which deletes the config), whose
// condition is REMOVE="ALL" AND NOT UPGRADINGPRODUCTCODE: Windows sets UPGRADINGPRODUCTCODE in
// that removal, but Wine's msi runs it as `msiexec /qn /i {old} REMOVE=<Remove column or ALL>`
// without it, so with the empty column an upgrade under Wine deleted the config, B's configure
// then wrote a config without SVM, token and folders, B's service failed to start and the
// install rolled back with A already gone: nothing installed (test/windows/wine-upgrade.test.ts).
import { spawnSync } from 'node:child_process';
import path from 'node:path';

/**
 * Build `out` for the executable `exe` with ProductVersion `version`. Throws with the tool's
 * output when a step fails.
 */
export function buildMsi({ root, exe, out, version }) {
  const run = (cmd, argv) => {
    const r = spawnSync(cmd, argv, { cwd: root, encoding: 'utf8', timeout: 300_000, maxBuffer: 64 << 20 });
    if (r.error)
      throw new Error(`${cmd} failed to start: ${r.error.message}${r.error.code === 'ENOENT' ? ' (apt-get install wixl msitools)' : ''}`);
    if (r.status !== 0) throw new Error(`${cmd} ${argv.join(' ')} exited ${r.status}\n${r.stdout ?? ''}${r.stderr ?? ''}`);
    return r.stdout;
  };
  const wxs = path.join(root, 'installers/windows/lightagent.wxs');
  run('wixl', ['-a', 'x64', '-D', `Version=${version}`, '-D', `ExePath=${path.relative(root, exe)}`, '-o', out, path.relative(root, wxs)]);
  run('msibuild', [out, '-q', "UPDATE `Upgrade` SET `Remove` = 'Complete' WHERE `ActionProperty` = 'WIX_UPGRADE_DETECTED'"]);
  const upgrade = run('msiinfo', ['export', out, 'Upgrade']);
  if (!/\tComplete\tWIX_UPGRADE_DETECTED/.test(upgrade))
    throw new Error(`${out}: the Upgrade table's Remove column was not set:\n${upgrade}`);
}
