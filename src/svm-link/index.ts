export { SvmLink, type SvmLinkOptions, type SvmLinkEvents, type ChunkReader, type LinkState, type WindowStats } from './svm-link.js';
export { SvmPool, type SvmPoolOptions, type SvmMemberStatus } from './svm-pool.js';
export type { SvmClient } from './client.js';
export { fetchSvmList, parseSvmList, isLoopbackUrl, DISCOVERY_LIMITS, type SvmEntry } from './discovery.js';
export { Priority, Window, type PriorityClass, type PriorityLike, type WindowClassStats, type WindowOptions } from './window.js';
