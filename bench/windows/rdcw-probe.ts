/**
 * Runs inside node.exe (under Wine, for bench/windows/rdcw-vs-fswatch.ts): watches one root with
 * ONE event source and reports which files it saw, when, and what it cost.
 *
 *   --source fs-watch   Node's fs.watch(root, { recursive: true }) (libuv: ReadDirectoryChangesW
 *                       on an overlapped handle completed on the loop's I/O completion port)
 *   --source rdcw       ReadDirectoryChangesW through koffi in a worker_thread: overlapped handle,
 *                       a manual-reset event, WaitForSingleObject with a 500 ms timeout so the
 *                       loop sees the stop flag (a SharedArrayBuffer) within 500 ms; stop =
 *                       CancelIoEx + a bounded wait for the cancelled request.
 *
 * Sequence: arm the source, optionally open every existing directory under the root once
 * (--prime: see docs/windows.md, Wine watches an existing sub-folder only after a Windows process
 * opened it), take CPU time, write --ready (JSON with this process's pid). Then count events and
 * the distinct files whose name matches the writer's pattern (f<digits>.txt) until --expect of
 * them were seen or nothing came for --idle-ms, write --out, and wait (at most 10 s) for the file
 * <out>.release so the driver can read this process's CPU from /proc before it exits.
 *
 * Not a product module: koffi's .node is loaded from --koffi with process.dlopen. The driver copies
 * this file, notify-records.js and ../lib/cli.js into the Wine prefix, in the same layout.
 */
import fs from 'node:fs';
import path from 'node:path';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { benchArgs } from '../lib/cli.js';
import { parseNotifyRecords } from './notify-records.js';

/** The koffi module loaded from the .node file the probe is given (not resolved from node_modules). */
type Koffi = typeof import('koffi');

function loadKoffi(file: string): Koffi {
  const mod = { exports: {} as Record<string, unknown> };
  process.dlopen(mod, file);
  return mod.exports as unknown as Koffi;
}

interface WorkerIn {
  root: string;
  koffi: string;
  bufBytes: number;
  stop: SharedArrayBuffer;
}
type WorkerOut =
  | { kind: 'armed' }
  | { kind: 'batch'; buf: Uint8Array; bytes: number }
  | { kind: 'overflow'; status: number }
  | { kind: 'error'; what: string; code: number }
  | { kind: 'stopped'; completions: number; waits: number; why: string };

const WAIT_TIMEOUT = 0x102;
const STATUS_NOTIFY_ENUM_DIR = 0x10c;

function rdcwWorker(w: WorkerIn): void {
  const post = (m: WorkerOut, transfer?: ArrayBuffer[]) => parentPort!.postMessage(m, transfer ?? []);
  const koffi = loadKoffi(w.koffi);
  const k = koffi.load('kernel32.dll');
  const CreateFileW = k.func(
    'intptr_t __stdcall CreateFileW(const char16_t *name, uint32_t access, uint32_t share, void *sa, uint32_t disp, uint32_t flags, intptr_t tmpl)',
  );
  const CreateEventW = k.func('intptr_t __stdcall CreateEventW(void *sa, int manual, int initial, const char16_t *name)');
  const ReadDirectoryChangesW = k.func(
    'int __stdcall ReadDirectoryChangesW(intptr_t h, void *buf, uint32_t len, int subtree, uint32_t filter, void *ret, void *ov, void *cr)',
  );
  const WaitForSingleObject = k.func('uint32_t __stdcall WaitForSingleObject(intptr_t h, uint32_t ms)');
  const GetOverlappedResult = k.func('int __stdcall GetOverlappedResult(intptr_t h, void *ov, _Out_ uint32_t *n, int wait)');
  const CancelIoEx = k.func('int __stdcall CancelIoEx(intptr_t h, void *ov)');
  const ResetEvent = k.func('int __stdcall ResetEvent(intptr_t h)');
  const CloseHandle = k.func('int __stdcall CloseHandle(intptr_t h)');
  const GetLastError = k.func('uint32_t __stdcall GetLastError()');
  const stop = new Int32Array(w.stop);
  // FILE_LIST_DIRECTORY; share read|write|delete; OPEN_EXISTING; BACKUP_SEMANTICS | OVERLAPPED
  const h = CreateFileW(w.root, 0x1, 0x7, null, 3, 0x02000000 | 0x40000000, 0);
  if (h === -1) return post({ kind: 'error', what: 'CreateFileW', code: GetLastError() });
  const ev = CreateEventW(null, 1, 0, null);
  if (!ev) return post({ kind: 'error', what: 'CreateEventW', code: GetLastError() });
  // koffi.alloc: memory that does not move while the request is pending (a Buffer may)
  const buf = koffi.alloc('uint8_t', w.bufBytes);
  const ov = koffi.alloc('uint8_t', 32); // OVERLAPPED on x64: Internal, InternalHigh, Offset, OffsetHigh, hEvent
  const ovView = new DataView(koffi.view(ov, 32));
  const bufView = new Uint8Array(koffi.view(buf, w.bufBytes));
  const n = [0];
  // FILE_NAME | DIR_NAME | SIZE | LAST_WRITE | CREATION (libuv asks for these and more)
  const filter = 0x1 | 0x2 | 0x8 | 0x10 | 0x40;
  let completions = 0;
  let waits = 0;
  let armed = false;
  const finish = (pending: boolean, why: string) => {
    if (pending) {
      CancelIoEx(h, ov);
      WaitForSingleObject(ev, 2000); // the cancelled request completes; bounded all the same
    }
    CloseHandle(h);
    CloseHandle(ev);
    post({ kind: 'stopped', completions, waits, why });
  };
  for (;;) {
    for (let i = 0; i < 32; i++) ovView.setUint8(i, 0);
    ovView.setBigUint64(24, BigInt(ev), true);
    ResetEvent(ev);
    if (!ReadDirectoryChangesW(h, buf, w.bufBytes, 1, filter, null, ov, null)) {
      const code = GetLastError();
      post({ kind: 'error', what: 'ReadDirectoryChangesW', code });
      return finish(false, `ReadDirectoryChangesW failed: ${code}`);
    }
    if (!armed) {
      armed = true;
      post({ kind: 'armed' });
    }
    let r = WAIT_TIMEOUT;
    while (r === WAIT_TIMEOUT && Atomics.load(stop, 0) === 0) {
      waits++;
      r = WaitForSingleObject(ev, 500);
    }
    if (r !== 0) {
      const why = r === WAIT_TIMEOUT ? 'stop flag' : `WaitForSingleObject returned ${r} (error ${GetLastError()})`;
      if (r !== WAIT_TIMEOUT) post({ kind: 'error', what: 'WaitForSingleObject', code: r });
      return finish(true, why);
    }
    completions++;
    const ok = GetOverlappedResult(h, ov, n, 0);
    const status = Number(ovView.getBigUint64(0, true));
    if (!ok && status !== STATUS_NOTIFY_ENUM_DIR) {
      const code = GetLastError();
      post({ kind: 'error', what: 'GetOverlappedResult', code });
      return finish(false, `GetOverlappedResult failed: ${code}, status ${status}`);
    }
    const bytes = ok ? n[0]! : 0;
    if (bytes === 0) post({ kind: 'overflow', status });
    else {
      const copy = bufView.slice(0, Math.min(bytes, w.bufBytes));
      post({ kind: 'batch', buf: copy, bytes: copy.byteLength }, [copy.buffer as ArrayBuffer]);
    }
    if (Atomics.load(stop, 0) !== 0) return finish(false, 'stop flag after a completion');
  }
}

/** The options, all checked before anything is armed; the driver passes every one. */
function probeArgs() {
  const { values: a, usageError } = benchArgs(
    {
      name: 'bench/windows/rdcw-probe',
      summary: `Runs inside node.exe under Wine, started by bench/windows/rdcw-vs-fswatch.js: watches one root
with ONE event source, counts the f<digits>.txt files it sees and when, and what that cost in CPU.
docs/windows.md, "ReadDirectoryChangesW via koffi vs Node's fs.watch".`,
    },
    {
      source: { type: 'string', arg: 'SRC', help: 'rdcw (ReadDirectoryChangesW through koffi, in a worker) or fs-watch; required' },
      root: { type: 'string', arg: 'DIR', help: 'the directory to watch; required' },
      expect: { type: 'string', arg: 'N', number: 'int', min: 1, help: 'stop once N distinct f<digits>.txt files were seen; required' },
      ready: { type: 'string', arg: 'FILE', help: "written once the source is armed: JSON with this process's pid; required" },
      out: { type: 'string', arg: 'FILE', help: 'the result as JSON; then wait (at most 10 s) for FILE.release; required' },
      koffi: { type: 'string', arg: 'FILE', help: "koffi's win32 .node, loaded with process.dlopen; required with --source rdcw" },
      buf: { type: 'string', default: '65536', arg: 'BYTES', number: 'int', min: 1, help: "rdcw's buffer" },
      'idle-ms': { type: 'string', default: '3000', arg: 'MS', number: 'int', min: 1, help: 'stop after MS without an event' },
      'max-ms': { type: 'string', default: '60000', arg: 'MS', number: 'int', min: 1, help: 'stop after MS since ready' },
      prime: {
        type: 'string',
        default: '0',
        arg: '0|1',
        number: 'int',
        min: 0,
        max: 1,
        help: '1: open every existing directory under the root once after arming',
      },
    },
  );
  for (const k of ['source', 'root', 'expect', 'ready', 'out'] as const) if (a[k] === undefined) usageError(`--${k} is required`);
  if (a.source !== 'rdcw' && a.source !== 'fs-watch') usageError(`--source ${a.source}: rdcw or fs-watch`);
  if (a.source === 'rdcw' && a.koffi === undefined) usageError('--koffi is required with --source rdcw');
  return a as typeof a & Required<Pick<typeof a, 'source' | 'root' | 'expect' | 'ready' | 'out'>>;
}
type ProbeArgs = ReturnType<typeof probeArgs>;

async function main(a: ProbeArgs): Promise<void> {
  const { source, root, out } = a;
  const expect = Number(a.expect);
  const idleMs = Number(a['idle-ms']);
  const maxMs = Number(a['max-ms']);
  const seen = new Map<string, number>(); // relative name, lower case -> first Date.now()
  const c = { events: 0, overflows: 0, batches: 0, parseErrors: 0, errors: [] as string[] };
  let lastEvent = 0;
  const pattern = /(^|\\)f\d+\.txt$/i;
  const onName = (name: string | null) => {
    c.events++;
    lastEvent = Date.now();
    if (name === null) {
      c.overflows++;
      return;
    }
    const key = name.toLowerCase();
    if (pattern.test(key) && !seen.has(key)) seen.set(key, lastEvent);
  };

  let stopSource: () => Promise<unknown>;
  let workerStats: unknown;
  if (source === 'fs-watch') {
    const w = fs.watch(root, { recursive: true }, (_t, name) => onName(name === null ? null : String(name)));
    w.on('error', (e) => c.errors.push(`fs.watch: ${e.message}`));
    stopSource = async () => w.close();
  } else if (source === 'rdcw') {
    const stop = new SharedArrayBuffer(4);
    const worker = new Worker(new URL(import.meta.url), {
      workerData: { root, koffi: a.koffi!, bufBytes: Number(a.buf), stop } satisfies WorkerIn,
    });
    let stopped: (v: unknown) => void = () => {};
    const done = new Promise((r) => (stopped = r));
    const armed = new Promise<void>((resolve, reject) => {
      worker.on('message', (m: WorkerOut) => {
        if (m.kind === 'armed') resolve();
        else if (m.kind === 'batch') {
          c.batches++;
          const p = parseNotifyRecords(m.buf, m.bytes);
          if (p.error && ++c.parseErrors <= 3)
            c.errors.push(`batch of ${m.bytes} bytes: ${p.error}: ${Buffer.from(m.buf.subarray(0, 96)).toString('hex')}`);
          for (const r of p.records) onName(r.name);
        } else if (m.kind === 'overflow') onName(null);
        else if (m.kind === 'error') {
          c.errors.push(`${m.what} failed: ${m.code}`);
          reject(new Error(`${m.what} failed: ${m.code}`));
        } else if (m.kind === 'stopped') {
          workerStats = m;
          stopped(m);
        }
      });
      worker.on('error', (e) => reject(e));
    });
    await armed;
    stopSource = async () => {
      Atomics.store(new Int32Array(stop), 0, 1);
      await Promise.race([done, new Promise((r) => setTimeout(r, 3000))]);
      await worker.terminate();
    };
  } else throw new Error(`--source ${source}: rdcw or fs-watch`);

  let primedDirs = 0;
  if (Number(a.prime) === 1) {
    const stack = [root];
    while (stack.length > 0) {
      const d = stack.pop()!;
      primedDirs++;
      for (const e of fs.readdirSync(d, { withFileTypes: true })) if (e.isDirectory()) stack.push(path.join(d, e.name));
    }
  }
  await new Promise((r) => setTimeout(r, 300));
  const cpu0 = process.cpuUsage();
  const tReady = Date.now();
  fs.writeFileSync(a.ready, JSON.stringify({ pid: process.pid, at: tReady }));
  while (seen.size < expect && Date.now() - tReady < maxMs && !(lastEvent > 0 && Date.now() - lastEvent > idleMs)) {
    await new Promise((r) => setTimeout(r, 50));
  }
  const cpu = process.cpuUsage(cpu0);
  const tStop = Date.now();
  await stopSource();
  const stopMs = Date.now() - tStop;
  const times = [...seen.values()];
  fs.writeFileSync(
    out,
    JSON.stringify({
      source,
      primedDirs,
      ready: tReady,
      seen: seen.size,
      seenTop: [...seen.keys()].filter((k) => !k.includes('\\')).length,
      lastSeen: times.length > 0 ? Math.max(...times) : null,
      cpuUserMs: cpu.user / 1000,
      cpuSystemMs: cpu.system / 1000,
      stopMs,
      ...c,
      worker: workerStats,
    }),
  );
  const release = `${out}.release`;
  const until = Date.now() + 10_000;
  while (!fs.existsSync(release) && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
}

if (!isMainThread) rdcwWorker(workerData as WorkerIn);
else {
  const a = probeArgs();
  main(a).catch((e: Error) => {
    fs.writeFileSync(a.out, JSON.stringify({ fatal: e.stack ?? String(e) }));
    process.exitCode = 1;
  });
}
