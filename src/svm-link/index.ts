export { SvmLink, type SvmLinkOptions, type ChunkReader, type LinkState } from './svm-link.js';
