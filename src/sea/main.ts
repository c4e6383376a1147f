/**
 * Entry point of the single executable (dist/lightagent-linux-x64, built by scripts/release.mjs).
 *
 * One binary holds every program: `lightagent <command>` (daemon, scan, quarantine, tray...)
 * and `lightagent svm ...` (the Security VM server, also reached when the binary is invoked as
 * `lightagent-svm` through a link). Before any command runs, the native pieces the bundle cannot
 * hold as JavaScript are unpacked from the executable's assets into a fresh private directory
 * (mkdtemp, mode 0700, removed at exit): koffi's .node (loaded by src/platform/native.ts) and the
 * fanotify worker thread's own bundle (started by src/watchers/fanotify-gate.ts).
 */
import path from 'node:path';
import { err, exitAfterFlush, out } from '../cli/output.js';
import { unpackAssets } from './unpack.js';

const SVM_NAMES = new Set(['lightagent-svm', 'lightagent-svm-linux-x64']);

function main(): void {
  const args = process.argv.slice(2);
  const invokedAs = path.basename(process.argv0 || process.argv[0] || '');
  const svm = SVM_NAMES.has(invokedAs) || args[0] === 'svm';
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
