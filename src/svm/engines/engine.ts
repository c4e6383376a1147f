/**
 * The seam between the SVM and whatever judges file content. Every implementation runs the one
 * conformance suite in test/svm/engines/conformance.ts.
 */
export interface EngineResult {
  infected: boolean;
  /** Threat name when infected, e.g. `Eicar-Test-Signature`. */
  threat?: string;
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
   * Judge one complete file. Must not throw on any content; throws only for engine failure.
   * `known.sha256`, when given, is the SHA-256 the SVM already computed over these bytes.
   */
  scan(content: Buffer, known?: { sha256?: string }): Promise<EngineResult>;
  /** Health for /healthz: false when the engine cannot scan right now. */
  healthy(): boolean;
  close(): Promise<void>;
}
