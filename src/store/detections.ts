/**
 * Detections: every infected file the agent acts on becomes one DetectionEvent, logged as a JSON
 * line, reported to the SVM, and kept in a bounded ring for `status` and the tray.
 */
import { EventEmitter } from 'node:events';
import { logger } from '../log.js';
import type { DetectionEvent } from '../protocol/index.js';
import type { Attribution } from './events-file.js';

/** `attribution` (the process with its parent chain) stays local: the SVM gets `process`. */
export type Detection = Omit<DetectionEvent, 't'> & { attribution?: Attribution };

export class DetectionLog extends EventEmitter<{ detection: [Detection] }> {
  private readonly ring: Detection[] = [];
  private total = 0;
  private readonly log = logger('detections');

  constructor(
    private readonly capacity = 200,
    private readonly report?: (d: Detection) => boolean,
  ) {
    super();
  }

  add(d: Detection): void {
    this.total++;
    this.ring.push(d);
    if (this.ring.length > this.capacity) this.ring.shift();
    const { attribution: _local, ...wire } = d;
    const sent = this.report?.(wire) ?? false;
    this.log.warn('threat detected', { ...d, reportedToSvm: sent });
    this.emit('detection', d);
  }

  recent(n = 20): Detection[] {
    return this.ring.slice(-n);
  }

  get count(): number {
    return this.total;
  }
}
