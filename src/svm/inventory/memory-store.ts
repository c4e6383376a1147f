/**
 * The inventory in this SVM's memory, persisted to `<state_dir>/inventory.json` when a state dir
 * is configured: written at most every `flushMs` while something changed and at close, through a
 * temporary file, fsync and rename (a crash leaves the old file or the new one, never half of
 * one), mode 0600. A file that is too large or damaged is set aside (`.bad-<time>`) and the
 * inventory starts empty; rows and entries read back are validated one by one.
 */
import fs from 'node:fs';
import path from 'node:path';
import { logger } from '../../log.js';
import {
  RING,
  keyOf,
  parseDetection,
  parseHistoryEntry,
  parseStoredAgent,
  type AgentKey,
  type DetectionRecord,
  type HistoryEntry,
  type InventoryStore,
  type StoredAgent,
} from './types.js';

export interface MemoryStoreOptions {
  /** Directory of inventory.json; none: nothing is persisted. */
  stateDir?: string | undefined;
  /** Longest a change waits before it is written (default 5 s). */
  flushMs?: number;
  /** Refuse to read a larger file (default 256 MiB). */
  maxFileBytes?: number;
}

interface Entry {
  row: StoredAgent;
  history: HistoryEntry[];
  detections: DetectionRecord[];
}

export const INVENTORY_FILE = 'inventory.json';

export class MemoryInventoryStore implements InventoryStore {
  readonly kind = 'memory';
  private readonly entries = new Map<string, Entry>();
  private readonly file: string | undefined;
  private timer: NodeJS.Timeout | undefined;
  private writing: Promise<void> = Promise.resolve();
  private closed = false;
  private readonly log = logger('svm-inventory');

  constructor(private readonly o: MemoryStoreOptions = {}) {
    this.file = o.stateDir ? path.join(o.stateDir, INVENTORY_FILE) : undefined;
    if (o.stateDir) {
      try {
        fs.mkdirSync(o.stateDir, { recursive: true, mode: 0o700 });
      } catch (e) {
        this.log.error('cannot make the state dir; the inventory is kept in memory only until it exists', {
          dir: o.stateDir,
          message: (e as Error).message,
        });
      }
    }
    if (this.file) this.load(this.file);
  }

  /** Rows loaded from the file at start. */
  get size(): number {
    return this.entries.size;
  }

  healthy(): boolean {
    return true;
  }

  get(key: AgentKey): Promise<StoredAgent | undefined> {
    const e = this.entries.get(keyOf(key));
    return Promise.resolve(e ? { ...e.row } : undefined);
  }

  put(row: StoredAgent): Promise<void> {
    const k = keyOf(row);
    const e = this.entries.get(k);
    if (e) e.row = { ...row };
    else this.entries.set(k, { row: { ...row }, history: [], detections: [] });
    this.changed();
    return Promise.resolve();
  }

  list(): Promise<StoredAgent[]> {
    return Promise.resolve([...this.entries.values()].map((e) => ({ ...e.row })));
  }

  remove(keys: readonly AgentKey[]): Promise<void> {
    for (const k of keys) this.entries.delete(keyOf(k));
    this.changed();
    return Promise.resolve();
  }

  pushHistory(key: AgentKey, h: HistoryEntry): Promise<void> {
    const e = this.entries.get(keyOf(key));
    if (e) {
      e.history.unshift(h);
      if (e.history.length > RING) e.history.length = RING;
      this.changed();
    }
    return Promise.resolve();
  }

  history(key: AgentKey): Promise<HistoryEntry[]> {
    return Promise.resolve([...(this.entries.get(keyOf(key))?.history ?? [])]);
  }

  pushDetection(key: AgentKey, d: DetectionRecord): Promise<void> {
    const e = this.entries.get(keyOf(key));
    if (e) {
      e.detections.unshift(d);
      if (e.detections.length > RING) e.detections.length = RING;
      this.changed();
    }
    return Promise.resolve();
  }

  detections(keys: readonly AgentKey[]): Promise<DetectionRecord[][]> {
    return Promise.resolve(keys.map((k) => [...(this.entries.get(keyOf(k))?.detections ?? [])]));
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.timer);
    this.timer = undefined;
    await this.flush();
  }

  /** Write the file now (after the write in progress, if any). */
  flush(): Promise<void> {
    if (!this.file) return Promise.resolve();
    this.writing = this.writing.then(() => this.write(this.file!));
    return this.writing;
  }

  private changed(): void {
    if (!this.file || this.closed || this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.flush();
    }, this.o.flushMs ?? 5000);
    this.timer.unref();
  }

  private async write(file: string): Promise<void> {
    const tmp = `${file}.tmp-${process.pid}`;
    try {
      const doc = { v: 1, savedAt: new Date().toISOString(), agents: [...this.entries.values()] };
      const fh = await fs.promises.open(tmp, 'w', 0o600);
      try {
        await fh.writeFile(JSON.stringify(doc));
        await fh.sync();
      } finally {
        await fh.close();
      }
      await fs.promises.rename(tmp, file);
    } catch (e) {
      this.log.error('cannot write the inventory file; it is kept in memory and written again later', {
        file,
        message: (e as Error).message,
      });
      await fs.promises.rm(tmp, { force: true }).catch(() => {});
    }
  }

  private load(file: string): void {
    let text: string;
    try {
      const st = fs.statSync(file);
      if (st.size > (this.o.maxFileBytes ?? 256 * 1024 * 1024)) {
        this.setAside(file, `${st.size} bytes is too large`);
        return;
      }
      text = fs.readFileSync(file, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT')
        this.log.error('cannot read the inventory file; starting empty', { file, message: (e as Error).message });
      return;
    }
    let doc: unknown;
    try {
      doc = JSON.parse(text);
    } catch {
      this.setAside(file, 'not valid JSON');
      return;
    }
    const agents = (doc as { v?: unknown; agents?: unknown } | null)?.agents;
    if ((doc as { v?: unknown } | null)?.v !== 1 || !Array.isArray(agents)) {
      this.setAside(file, 'not an inventory file of version 1');
      return;
    }
    let skipped = 0;
    for (const a of agents as unknown[]) {
      const o = (a ?? {}) as { row?: unknown; history?: unknown; detections?: unknown };
      const row = parseStoredAgent(o.row);
      if (!row) {
        skipped++;
        continue;
      }
      // Nobody is connected to an SVM that just started.
      row.connected = false;
      row.conn = null;
      const list = <T>(v: unknown, parse: (x: unknown) => T | undefined): T[] =>
        (Array.isArray(v) ? v.slice(0, RING) : []).map(parse).filter((x): x is T => x !== undefined);
      this.entries.set(keyOf(row), { row, history: list(o.history, parseHistoryEntry), detections: list(o.detections, parseDetection) });
    }
    this.log.info('inventory loaded', { file, agents: this.entries.size, skipped });
  }

  private setAside(file: string, why: string): void {
    const bad = `${file}.bad-${Date.now()}`;
    try {
      fs.renameSync(file, bad);
    } catch {
      // left where it is; it is overwritten at the next write
    }
    this.log.error('the inventory file is unusable; set aside, starting empty', { file, setAside: bad, why });
  }
}
