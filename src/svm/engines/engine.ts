import { LightagentError } from '../../errors.js';

/**
 * The seam between the SVM and whatever judges file content. Every implementation runs the one
 * conformance suite in test/svm/engines/conformance.ts.
 */
export interface EngineResult {
  infected: boolean;
  /** Threat name when infected, e.g. `Eicar-Test-Signature`. */
  threat?: string;
  /**
   * Where inside a container the threat sits, members joined by `!` (`docs/report.zip!a.exe`);
   * absent for the file itself. The threat name then ends with ` in <member>`.
   */
  member?: string;
}

export interface ScanEngine {
  /** Short stable name reported in verdicts: `builtin`, `clamav`. */
  readonly name: string;
  /**
   * Signature generation: an opaque string that changes whenever the signatures change. Verdicts
   * are cached under (sha256, generation); a new generation makes cached clean verdicts stale.
   */
  generation(): string;
  /**
   * Judge one complete file. Must not throw on any content; throws only for engine failure, or
   * EngineLimitError when the content is beyond what the engine will judge (e.g. over clamd's
   * StreamMaxLength): the file is neither clean nor infected, and nothing is cached.
   * `known.sha256`, when given, is the SHA-256 the SVM already computed over these bytes.
   */
  scan(content: Buffer, known?: { sha256?: string }): Promise<EngineResult>;
  /** Health for /healthz: false when the engine cannot scan right now. */
  healthy(): boolean;
  /**
   * Reload the signatures (SIGHUP). Resolves with the generation after the reload. Optional:
   * an engine without it is told nothing on SIGHUP.
   */
  reload?(): Promise<{ generation: string; [k: string]: unknown }> | { generation: string; [k: string]: unknown };
  close(): Promise<void>;
}

/** The content is beyond what the engine judges (size, nesting): no verdict, an error verdict to the agent. */
export class EngineLimitError extends LightagentError {
  constructor(
    message: string,
    hint = 'such files are not scanned: raise the engine limit (clamd StreamMaxLength) or lower max_file_size so agents do not upload them',
  ) {
    super('LA_ERR_ENGINE_LIMIT', message, hint);
  }
}

/** The engine could not scan (unreachable, timed out, protocol failure): not a verdict about the file. */
export class EngineError extends LightagentError {
  constructor(message: string, hint = 'see the SVM log; check that the engine (clamd) runs and answers', options?: { cause?: unknown }) {
    super('LA_ERR_ENGINE', message, hint, options);
  }
}

/**
 * Unpacking one file took longer than the engine allows (archives.timeout): no verdict, and
 * nothing cached, since the time depends on the SVM's load. The agent treats it as any error
 * verdict: on access its on_svm_unavailable policy answers, and the file is queued for a rescan.
 */
export class ArchiveTimeoutError extends LightagentError {
  constructor(ms: number) {
    super(
      'LA_ERR_ARCHIVE_TIMEOUT',
      `unpacking the file took longer than ${ms} ms`,
      'the SVM is overloaded or the file is built to be slow: raise archives.timeout, or add SVM capacity',
    );
  }
}
