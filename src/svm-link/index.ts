export { SvmLink, type SvmLinkOptions, type SvmLinkEvents, type ChunkReader, type LinkState } from './svm-link.js';
export { SvmPool, type SvmPoolOptions, type SvmMemberStatus } from './svm-pool.js';
export type { SvmClient } from './client.js';
export { fetchSvmList, parseSvmList, isLoopbackUrl, DISCOVERY_LIMITS, type SvmEntry } from './discovery.js';
