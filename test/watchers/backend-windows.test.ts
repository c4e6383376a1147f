/**
 * The conformance suite against the Windows directory watcher, on Linux: the files are real, the
 * change notifications are the ReadDirectoryChangesW records Windows gives for each change, parsed
 * by the same reader as the RDCW probe (bench/windows/notify-records.ts).
 */
import { tempDir } from '../helpers/procs.js';
import { runBackendConformance } from './backend-conformance.js';

runBackendConformance('windows directory watcher (recorded notifications)', {
  kind: 'windows',
  base: () => tempDir('la-conf-windows-'),
  recorded: true,
  blocksOpens: false,
});
