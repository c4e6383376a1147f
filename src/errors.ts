/**
 * Every error a user or a peer can see. One base class, one subclass per failure, each with a
 * stable `code` (documented in docs/errors.md) and a `hint` that says what to do about it.
 * Codes never change meaning once released; add new ones instead.
 */
export class LightagentError extends Error {
  readonly code: string;
  readonly hint: string | undefined;
  constructor(code: string, message: string, hint?: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
    this.hint = hint;
  }
  /** One line for a terminal: what happened, then what to do. */
  toUserString(): string {
    return this.hint ? `${this.message} (${this.code})\n  -> ${this.hint}` : `${this.message} (${this.code})`;
  }
}

/** A configuration file or flag is invalid. `issues` lists every problem at once, each with its key path. */
export class ConfigError extends LightagentError {
  readonly issues: readonly string[];
  constructor(source: string, issues: readonly string[]) {
    super(
      'LA_ERR_CONFIG',
      `invalid configuration in ${source}:\n${issues.map((i) => `  - ${i}`).join('\n')}`,
      'fix the settings listed above; `--help` lists every option',
    );
    this.issues = issues;
  }
}

/** Wire-protocol errors. The receiver closes with CloseCode.PROTOCOL (protocol/messages.ts), or OVERSIZED for that code. */
export type ProtocolErrorCode =
  'LA_ERR_PROTO_MALFORMED' | 'LA_ERR_PROTO_OVERSIZED' | 'LA_ERR_PROTO_UNEXPECTED' | 'LA_ERR_PROTO_VERSION' | 'LA_ERR_PROTO_UPLOAD';

export class ProtocolError extends LightagentError {
  declare readonly code: ProtocolErrorCode;
  constructor(code: ProtocolErrorCode, message: string) {
    super(code, message, 'the peer sent a frame this version does not accept; check that agent and SVM versions match');
  }
}

export class AuthError extends LightagentError {
  constructor(message: string) {
    super('LA_ERR_AUTH', message, 'check the tenant token configured on the agent (`token`, LIGHTAGENT_TOKEN) against the SVM');
  }
}

export class SvmUnavailableError extends LightagentError {
  constructor(url: string, detail: string, options?: { cause?: unknown }) {
    super(
      'LA_ERR_SVM_UNAVAILABLE',
      `no SVM reachable at ${url}: ${detail}`,
      'check that lightagent-svm runs and that `svm` points at it',
      options,
    );
  }
}

export class DeadlineError extends LightagentError {
  constructor(what: string, ms: number) {
    super(
      'LA_ERR_DEADLINE',
      `${what} did not finish within ${ms} ms`,
      'the SVM is slow or overloaded; raise `deadline` or add SVM capacity',
    );
  }
}

/** The SVM answered a request with an error verdict (engine failure, upload cap, rate limit). */
export class ScanFailedError extends LightagentError {
  constructor(code: string, message: string) {
    super(code, message, 'see the SVM log for the cause; the file was not judged');
  }
}

export class FileAccessError extends LightagentError {
  constructor(path: string, detail: string, options?: { cause?: unknown }) {
    super('LA_ERR_FILE', `${path}: ${detail}`, 'check that the path exists and that the agent may read it', options);
  }
}

export class SignatureFileError extends LightagentError {
  constructor(file: string, line: number, detail: string) {
    super(
      'LA_ERR_SIGNATURES',
      line > 0 ? `${file}:${line}: ${detail}` : `${file}: ${detail}`,
      line > 0 ? 'fix or remove that line; the rest of the file was loaded' : 'check the file named in `signatures` (--signatures)',
    );
  }
}

export class PlatformError extends LightagentError {
  constructor(code: string, message: string, hint?: string, options?: { cause?: unknown }) {
    super(code, message, hint, options);
  }
}

/** Lift anything thrown into something with a code and a message. */
export function describeError(err: unknown): { code: string; message: string } {
  if (err instanceof LightagentError) return { code: err.code, message: err.message };
  if (err instanceof Error) {
    const code = (err as NodeJS.ErrnoException).code;
    return { code: typeof code === 'string' ? code : 'LA_ERR_INTERNAL', message: err.message };
  }
  return { code: 'LA_ERR_INTERNAL', message: String(err) };
}

/** A crash-safe journal (deferred-scan queue, quarantine index) cannot be opened, written or grown. */
export type JournalErrorCode = 'LA_ERR_JOURNAL' | 'LA_ERR_JOURNAL_FULL' | 'LA_ERR_JOURNAL_LOCKED';

export class JournalError extends LightagentError {
  declare readonly code: JournalErrorCode;
  constructor(code: JournalErrorCode, file: string, detail: string, hint?: string, options?: { cause?: unknown }) {
    super(
      code,
      `${file}: ${detail}`,
      hint ?? 'check the disk (space, errors in the kernel log) and the permissions of the state directory',
      options,
    );
  }
}

/** A quarantine operation failed: the item is unknown, or a restore was refused to stay safe. */
export type QuarantineErrorCode =
  'LA_ERR_QUARANTINE' | 'LA_ERR_QUARANTINE_NOT_FOUND' | 'LA_ERR_RESTORE_SYMLINK' | 'LA_ERR_RESTORE_EXISTS' | 'LA_ERR_NOT_ROOT';

export class QuarantineError extends LightagentError {
  declare readonly code: QuarantineErrorCode;
  constructor(code: QuarantineErrorCode, message: string, hint: string, options?: { cause?: unknown }) {
    super(code, message, hint, options);
  }
}

/** The local verdict cache's secret seed file is unsafe (readable or writable by others, foreign owner) or unreadable. */
export class CacheSeedError extends LightagentError {
  constructor(file: string, detail: string, options?: { cause?: unknown }) {
    super(
      'LA_ERR_CACHE_SEED',
      `cache seed ${file}: ${detail}`,
      `run \`chmod 600 ${file}\` and make it owned by the agent's user, or delete it (a new one is made and the cache starts empty)`,
      options,
    );
  }
}

/** The persisted verdict cache (cache.v1) cannot be read or written. Logged, never fatal: the cache starts empty. */
export class CacheFileError extends LightagentError {
  constructor(file: string, detail: string, options?: { cause?: unknown }) {
    super(
      'LA_ERR_CACHE_FILE',
      `verdict cache ${file}: ${detail}`,
      'nothing to do if it happens once (the cache is rebuilt); if it repeats, check the disk and the state directory',
      options,
    );
  }
}

/** The daemon as a service and its local sockets. */
export type ServiceErrorCode =
  | 'LA_ERR_ALREADY_RUNNING'
  | 'LA_ERR_SOCKET_DIR'
  | 'LA_ERR_CONTROL_REQUEST'
  | 'LA_ERR_CONTROL_DENIED'
  | 'LA_ERR_CONTROL_UNAVAILABLE'
  | 'LA_ERR_RELOAD'
  | 'LA_ERR_SEAL'
  | 'LA_ERR_SCAN_BUSY'
  | 'LA_ERR_SCAN_PATH';

export class ServiceError extends LightagentError {
  declare readonly code: ServiceErrorCode;
  constructor(code: ServiceErrorCode, message: string, hint?: string, options?: { cause?: unknown }) {
    super(code, message, hint, options);
  }
}

/** The agent's TLS handshake with an SVM failed for a reason retrying cannot fix. */
export type SvmTlsErrorCode = 'LA_ERR_TLS_UNTRUSTED' | 'LA_ERR_TLS_CLIENT_CERT';

export class SvmTlsError extends LightagentError {
  declare readonly code: SvmTlsErrorCode;
  constructor(code: SvmTlsErrorCode, message: string, hint: string, options?: { cause?: unknown }) {
    super(code, message, hint, options);
  }
}

/** The SVM discovery URL could not be read or returned something that is not a valid SVM list. */
export class SvmDiscoveryError extends LightagentError {
  constructor(url: string, detail: string, options?: { cause?: unknown }) {
    super(
      'LA_ERR_SVM_DISCOVERY',
      `SVM discovery at ${url}: ${detail}`,
      'check `svm_discovery` and the service behind it; the agent keeps the SVMs it knew (and the static `svm:` list)',
      options,
    );
  }
}

/**
 * `lightagent-svm backup` / `restore`: a backup could not be made (LA_ERR_BACKUP), an archive is
 * damaged or hostile and nothing was written (LA_ERR_BACKUP_INVALID), or a restore was refused or
 * failed while writing (LA_ERR_BACKUP_RESTORE).
 */
export type BackupErrorCode = 'LA_ERR_BACKUP' | 'LA_ERR_BACKUP_INVALID' | 'LA_ERR_BACKUP_RESTORE';

export class BackupError extends LightagentError {
  declare readonly code: BackupErrorCode;
  constructor(code: BackupErrorCode, message: string, hint: string, options?: { cause?: unknown }) {
    super(code, message, hint, options);
  }
}
