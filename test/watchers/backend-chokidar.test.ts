/** The conformance suite against the portable watcher (chokidar) on a temp dir. */
import { tempDir } from '../helpers/procs.js';
import { runBackendConformance } from './backend-conformance.js';

runBackendConformance('chokidar', { kind: 'chokidar', base: () => tempDir('la-conf-chokidar-'), blocksOpens: false });
