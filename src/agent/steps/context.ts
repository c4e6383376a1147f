/**
 * What the daemon's start-up steps share: the options it was started with, the parts each step
 * adds, and the daemon's own API (steps call it: the sockets serve it, recovery restarts through
 * it). Types only, so the steps never import the daemon that composes them.
 */
import type { AgentConfig } from '../../config/agent.js';
import type { ExclusionsConfig } from '../../config/exclusions.js';
import type { ProtectionSnapshot, ProtectionState } from '../../control/protection-state.js';
import type { LocalSockets } from '../../control/local-sockets.js';
import type { SdNotify } from '../../platform/linux/sd-notify.js';
import type { ProcessMonitor } from '../../processes/process-monitor.js';
import type { FileScanner } from '../../scan/file-scanner.js';
import type { OnAccessHandler } from '../../scan/on-access.js';
import type { RefreshStatus, SignatureRefresh } from '../../scan/signature-refresh.js';
import type { ScanJobRunner, ScanJobStatus } from '../../scan/scan-jobs.js';
import type { DeferredQueue } from '../../store/deferred-queue.js';
import type { Detection, DetectionLog } from '../../store/detections.js';
import type { Quarantine } from '../../store/quarantine.js';
import type { SvmClient, WindowStats } from '../../svm-link/index.js';
import type { ScanJobReport } from '../../protocol/index.js';
import type { ProtectionBackend, ProtectionMode } from '../../watchers/protection.js';
import type { LocalCache } from '../local-cache.js';
import type { PolicyLayer, PolicyStatus } from '../policy-layer.js';
import type { PolicyMsg } from '../../protocol/index.js';
import type { HeapTrimStats } from '../../heap-trim.js';

export interface DaemonOptions {
  config: AgentConfig;
  /** Force a backend (tests, `--mode`); default: fanotify when it can run, else the watcher. */
  mode?: 'fanotify' | 'watcher' | undefined;
  /** Read the configuration again (SIGHUP, `reload` on the control socket). */
  reloadConfig?: (() => AgentConfig) | undefined;
  /** Open the status and control sockets (default true). */
  sockets?: boolean;
  /**
   * Run as the machine's service (`lightagent run`, `lightagent service run`): sd_notify
   * READY/WATCHDOG/RELOADING/STOPPING, SIGHUP reloads, SIGUSR2 writes <state_dir>/status.json,
   * SIGINT/SIGTERM stop. Absent for a daemon embedded in another program (demo, tests).
   */
  service?: ServiceOptions | undefined;
}

export interface ServiceOptions {
  /** $NOTIFY_SOCKET by default; sd_notify is Linux only. */
  notifySocket?: string | undefined;
  /** $WATCHDOG_USEC / $WATCHDOG_PID by default. */
  env?: NodeJS.ProcessEnv;
  /** What the service did that the caller shows (terminal, event log); never throws. */
  report(e: ServiceEvent): void;
}

export type ServiceEvent =
  | { event: 'reloaded'; result: ReloadResult }
  | { event: 'reload-failed'; error: unknown }
  | { event: 'stopping'; signal: NodeJS.Signals }
  /** Something that did not stop the service: an sd_notify send, the status snapshot file. */
  | { event: 'problem'; message: string };

/** What a reload applied, and what it could not (those settings need a restart). */
export interface ReloadResult {
  applied: string[];
  needRestart: string[];
  mode: ProtectionMode;
  protect: string[];
}

export interface DaemonStatus {
  version: string;
  /** src/platform/host-info.ts: kvm, qemu, vmware, hyper-v, xen...; absent on bare metal. */
  hypervisor?: string | undefined;
  pid: number;
  startedAt: string;
  mode: ProtectionMode;
  protection: ProtectionSnapshot;
  protect: string[];
  /** exclude.paths (what `status` showed before the other kinds existed). */
  exclude: string[];
  /**
   * The exclusions in force (src/config/exclusions.ts); processes and SHA-256 only counted: the
   * status socket answers any local user, who has no business knowing which executables are exempt.
   */
  exclusions: Pick<ExclusionsConfig, 'paths' | 'extensions' | 'threats'> & { processes: number; sha256: number };
  reloads: number;
  /** Times the protection backend stopped on its own and was started again. */
  recoveries: number;
  svm: {
    url: string;
    state: string;
    svmId?: string | undefined;
    generation?: string | undefined;
    /** Feature signature-age: when the SVM's signatures were made, their age now, and whether past the SVM's max_signature_age. */
    signaturesAt?: string | undefined;
    signatureAgeSeconds?: number | undefined;
    signaturesMaxAge?: number | undefined;
    signaturesStale?: boolean | undefined;
    load: number;
    latencyMs: number;
    /** The link's in-flight window per class (foreground: decisions; background: the rest), and background scans raised by an open. */
    window?: (WindowStats & { raised: number }) | undefined;
  };
  cache: Record<string, number> | undefined;
  /** The signature refresh: clean verdicts brought up to a new generation in the background (docs/cache.md). */
  refresh?: RefreshStatus | undefined;
  deferredQueue: number;
  detections: { total: number; recent: ReturnType<DetectionLog['recent']> };
  counts: OnAccessHandler['counts'];
  backend: Record<string, number>;
  /** The process watcher's counters (events by type, lost, resyncs, execGone, the table's); absent when it is off. */
  processes?: Record<string, number> | undefined;
  /** KiB: the whole process's resident set (every thread); the main thread's V8 heap in use; its heap trims (src/heap-trim.ts). */
  memory: { rssKb: number; heapUsedKb: number; heapTrims: number };
  /** The central layer (feature policy, docs/policies.md): the policy in force and where each central key comes from. */
  policy?: PolicyStatus | undefined;
  /** The scan job running, else the last one (docs/scans.md); absent before the first. */
  scan?: ScanJobStatus | undefined;
}

/** The daemon as its steps see it (src/agent/daemon.ts implements it). */
export interface DaemonApi {
  readonly mode: ProtectionMode;
  readonly socketDir: string;
  protectedPaths(): string[];
  status(): DaemonStatus;
  reload(next?: AgentConfig): Promise<ReloadResult>;
  /** Apply a policy from the SVM over the local settings (make-before-break); refused: the settings in force stay. */
  applyPolicy(msg: PolicyMsg): Promise<void>;
  recover(): Promise<void>;
  rescan(paths: string[]): Promise<string>;
  subscribe(on: { detection(d: Detection): void; state(now: ProtectionSnapshot, before: ProtectionSnapshot): void }): () => void;
  stop(): Promise<void>;
}

/** Filled in step by step; a step may use what the steps before it set. */
export interface DaemonContext {
  /** The configuration in force: the local one with the policy over it. */
  cfg: AgentConfig;
  /** The local configuration (file, environment, flags) as last loaded. */
  local: AgentConfig;
  policy?: PolicyLayer;
  opts: DaemonOptions;
  daemon: DaemonApi;
  notify?: SdNotify;
  link?: SvmClient;
  cache?: LocalCache;
  quarantine?: Quarantine;
  deferred?: DeferredQueue;
  detections?: DetectionLog;
  scanner?: FileScanner;
  handler?: OnAccessHandler;
  backend?: ProtectionBackend;
  refresh?: SignatureRefresh;
  processes?: ProcessMonitor;
  state?: ProtectionState;
  sockets?: LocalSockets;
  scanJobs?: ScanJobRunner;
  /** The last scan job (or refused SVM scan command) for the state report; onScanReport: it changed. */
  scanReport?: () => ScanJobReport | undefined;
  onScanReport?: () => void;
  /** The main thread's heap trims (steps/heap-trim.ts). */
  heapTrim?: HeapTrimStats;
}
