/**
 * Which part of the single executable runs. scripts/release.mjs builds the program twice: the SEA
 * main script is the daemon's part (this entry, the command line and `run`'s modules: 0.9 of the
 * 2.1 MB bundle) and the asset FULL_PROGRAM_ASSET is the whole program. Node copies its main
 * script into the heap and the copy's pages stay mapped, so an idle daemon holding the SVM, tray
 * and demo code it never runs paid ~4 MB of RSS for them. Every other invocation hands off to the
 * full part before anything else loads, so no module ever exists in both parts in one process.
 */
import path from 'node:path';
import vm from 'node:vm';
import { FULL_PROGRAM_ASSET, FULL_PROGRAM_CACHE_ASSET } from '../platform/native-assets.js';
import { seaApi } from '../platform/private-dir.js';

/** Set by scripts/release.mjs (esbuild `define`): undefined in any other build, which is whole. */
declare const __LIGHTAGENT_SEA_PART__: 'daemon' | 'full' | undefined;

const SVM_NAMES = new Set(['lightagent-svm', 'lightagent-svm-linux-x64']);

/** `lightagent svm ...`, or the binary invoked as lightagent-svm through a link. */
export function invokedAsSvm(args: readonly string[]): boolean {
  const invokedAs = path.basename(process.argv0 || process.argv[0] || '');
  return SVM_NAMES.has(invokedAs) || args[0] === 'svm';
}

/** True when this is the daemon's part and `args` ask for something else: run the full part instead. */
export function needsFullPart(args: readonly string[]): boolean {
  const part = typeof __LIGHTAGENT_SEA_PART__ === 'undefined' ? undefined : __LIGHTAGENT_SEA_PART__;
  return part === 'daemon' && (args[0] !== 'run' || invokedAsSvm(args));
}

/** The full part's CommonJS wrapper: called with the main script's own arguments, it runs the program. */
export type FullPart = (exports: object, require: NodeJS.Require, module: object, filename: string, dirname: string) => void;

/**
 * Compile the full part. Its code cache was made by the same Node at build time; V8 checks it and
 * compiles from source when it does not match.
 */
export function loadFullPart(dirname: string): FullPart {
  const sea = seaApi();
  if (!sea) throw new Error('the full program part exists only inside the single executable');
  const source = new TextDecoder().decode(sea.getRawAsset(FULL_PROGRAM_ASSET));
  const script = new vm.Script(source, {
    filename: path.join(dirname, 'lightagent-full.cjs'),
    cachedData: new Uint8Array(sea.getRawAsset(FULL_PROGRAM_CACHE_ASSET)),
  });
  return script.runInThisContext() as FullPart;
}
