/**
 * Opens the local verdict cache for a command or the daemon: seed and cache file under the state
 * directory. Where the state directory cannot be used (an unprivileged `lightagent scan`), the
 * cache lives in memory for this process only, with a warning.
 */
import path from 'node:path';
import { describeError } from '../errors.js';
import { logger } from '../log.js';
import { loadOrCreateSeed } from '../cache/seed.js';
import { VerdictCache } from '../cache/verdict-cache.js';
import crypto from 'node:crypto';
import type { AgentConfig } from '../config/agent.js';
import type { LocalVerdictStore } from '../scan/file-scanner.js';

export interface LocalCache {
  store: LocalVerdictStore;
  cache: VerdictCache;
  persistent: boolean;
  setGeneration(g: string): void;
  save(): Promise<boolean>;
  close(): Promise<void>;
  stats(): Record<string, number>;
}

export async function openLocalCache(
  cfg: AgentConfig,
  cacheFile: string | undefined,
  generation: string | undefined,
  shared = false,
): Promise<LocalCache> {
  const file = cacheFile ?? path.join(cfg.state_dir, 'cache.v1');
  let seed: bigint;
  let persistent = true;
  try {
    seed = loadOrCreateSeed(path.join(path.dirname(file), 'cache.seed'));
  } catch (e) {
    logger('cache').warn('local verdict cache not persistent (state directory unusable); this run keeps it in memory', {
      file,
      ...describeError(e),
    });
    seed = crypto.randomBytes(8).readBigUInt64LE(0);
    persistent = false;
  }
  const cache = await VerdictCache.open({ seed, capacity: cfg.cache.entries, file: persistent ? file : undefined, generation, shared });
  return {
    store: cache,
    cache,
    persistent,
    setGeneration: (g) => cache.setGeneration(g),
    save: () => cache.save(),
    close: () => cache.close(),
    stats: () => cache.stats(),
  };
}
