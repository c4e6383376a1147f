/**
 * Names shared by the single executable's build (scripts/release.mjs), its entry point
 * (src/sea/main.ts) and the native loader (src/platform/native.ts). No imports, no side effects:
 * src/platform/native.ts loads koffi when it is imported, so constants cannot live there.
 */

/** Environment variable naming the executable's private native directory; inherited by worker threads. */
export const SEA_DIR_ENV = 'LIGHTAGENT_SEA_DIR';

/** koffi's native module: asset name and file name in the private directory. */
export const KOFFI_ASSET = 'koffi.node';

/** JSON list of the worker-thread bundles' asset names = paths in the private directory (src/....js). */
export const WORKERS_MANIFEST = 'workers.json';

/**
 * The file URL (with a trailing slash) of the private directory. In the main bundle, each module's
 * `import.meta.url` is this + its own source-relative path (scripts/release.mjs), so
 * `new URL('../sea/fanotify-worker.js', import.meta.url)` names the unpacked worker bundle.
 */
export const META_ROOT_GLOBAL = '__LIGHTAGENT_SEA_ROOT';

/** Prefix of private directories: `lightagent-<pid>-XXXXXX`, so a later start can remove a dead process's. */
export const DIR_PREFIX = 'lightagent-';

/**
 * The whole program as a second bundle, for every invocation but `lightagent run` (src/sea/part.ts):
 * CommonJS source already wrapped as `(function (exports, require, module, __filename, __dirname) {...})`,
 * and V8's code cache for it made by the same Node at build time.
 */
export const FULL_PROGRAM_ASSET = 'program/full.cjs';
export const FULL_PROGRAM_CACHE_ASSET = 'program/full.cjs.cache';
