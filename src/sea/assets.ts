/**
 * Names shared by the single executable's build (scripts/release.mjs), its entry point
 * (src/sea/main.ts) and the native loader (src/platform/native.ts). No imports, no side effects:
 * src/platform/native.ts loads koffi when it is imported, so constants cannot live there.
 */

/** Environment variable naming the executable's private native directory; inherited by worker threads. */
export const SEA_DIR_ENV = 'LIGHTAGENT_SEA_DIR';

/** koffi's native module: asset name and file name in the private directory. */
export const KOFFI_ASSET = 'koffi.node';

/** Worker-thread bundles: asset name = file name next to the main bundle's (virtual) location. */
export const WORKER_ASSETS = ['fanotify-worker.js'] as const;

/**
 * The bundle's `import.meta.url` is this global (esbuild `define`), set by the entry point to a
 * file URL inside the private directory, so `new URL('./fanotify-worker.js', import.meta.url)`
 * names the unpacked worker bundle.
 */
export const META_URL_GLOBAL = '__LIGHTAGENT_META_URL';

/** Prefix of private directories: `lightagent-<pid>-XXXXXX`, so a later start can remove a dead process's. */
export const DIR_PREFIX = 'lightagent-';
