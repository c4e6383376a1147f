/** The conformance suite against the fanotify gate, as root, on a tmpfs mounted for it. */
import { needRoot, scratchMount } from '../helpers/procs.js';
import { runBackendConformance } from './backend-conformance.js';

const skip = needRoot();
runBackendConformance('fanotify', { kind: 'fanotify', base: () => scratchMount('la-conf-fan-').dir, blocksOpens: true, skip });
