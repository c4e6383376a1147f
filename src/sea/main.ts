/**
 * Entry point of the single executable (dist/lightagent-linux-x64, built by scripts/release.mjs).
 *
 * One binary holds every program: `lightagent <command>` (daemon, scan, quarantine, tray...)
 * and `lightagent svm ...` (the Security VM server, also reached when the binary is invoked as
 * `lightagent-svm` through a link). Before any command runs, the native pieces the bundle cannot
 * hold as JavaScript are unpacked from the executable's assets into a fresh private directory
 * (mkdtemp, mode 0700, removed at exit): koffi's .node (loaded by src/platform/native.ts) and the
 * fanotify worker thread's own bundle (started by src/watchers/fanotify-gate.ts). The main script
 * of the release build holds only the daemon's part; anything but `lightagent run` hands off to the
 * whole program first (src/sea/part.ts).
 */
import { err, exitAfterFlush, out } from '../cli/output.js';
import { invokedAsSvm, loadFullPart, needsFullPart, type FullPart } from './part.js';
import { unpackAssets } from './unpack.js';

function main(): void {
  const args = process.argv.slice(2);
  if (needsFullPart(args)) {
    let full: FullPart;
    try {
      full = loadFullPart(__dirname);
    } catch (e) {
      err(`lightagent: the executable's program part does not load: ${(e as Error).message}`);
      exitAfterFlush(2);
      return;
    }
    // The SEA's require (built-in modules only), as the main script has it.
    const mod = { exports: {} };
    full.call(mod.exports, mod.exports, require, mod, __filename, __dirname);
    return;
  }
  const svm = invokedAsSvm(args);
  if (args[0] === 'install-helper') {
    void import('./install-helper.js').then(
      async (m) => exitAfterFlush(await m.installHelper(args.slice(1))),
      (e: unknown) => {
        err(`lightagent: ${(e as Error).message}`);
        exitAfterFlush(2);
      },
    );
    return;
  }
  try {
    unpackAssets();
  } catch (e) {
    err(`lightagent: ${(e as Error).message}`);
    exitAfterFlush(2);
    return;
  }
  if (svm) {
    const rest = args[0] === 'svm' ? args.slice(1) : args;
    process.argv = [process.argv[0]!, 'lightagent-svm', ...rest];
    void import('../cli/lightagent-svm.js');
    return;
  }
  if (args.length === 0 || args[0] === 'help' || args[0] === '--help' || args[0] === '-h') {
    out(
      'lightagent single executable: every `lightagent` command below, and `lightagent svm [options]`\n' +
        '(the Security VM server, same as lightagent-svm; `lightagent svm --help`).\n',
    );
  }
  process.argv = [process.argv[0]!, 'lightagent', ...args];
  void import('../cli/lightagent.js');
}

main();
