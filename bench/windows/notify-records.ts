/**
 * FILE_NOTIFY_INFORMATION records as ReadDirectoryChangesW leaves them in its buffer
 * (learn.microsoft.com, "FILE_NOTIFY_INFORMATION structure"): each record is
 *
 *   DWORD NextEntryOffset   bytes from this record to the next, 0 for the last
 *   DWORD Action            FILE_ACTION_ADDED 1, REMOVED 2, MODIFIED 3, RENAMED_OLD_NAME 4, RENAMED_NEW_NAME 5
 *   DWORD FileNameLength    bytes (not characters) of FileName
 *   WCHAR FileName[]        UTF-16LE, not NUL-terminated, relative to the watched directory
 *
 * Windows aligns each record to a DWORD; Wine 8.0 does not (a record of 12 + 14 bytes followed by
 * the next at offset 26), so nothing here assumes alignment (DataView reads any offset).
 *
 * The buffer comes from the kernel (or from Wine's server), but nothing here trusts it: every
 * offset and length is checked against the number of bytes the call reported, and parsing stops
 * at the first record that does not fit, saying why, with the records before it kept.
 */

export interface NotifyRecord {
  action: number;
  /** Path relative to the watched root, `\`-separated as Windows gives it. */
  name: string;
}

export interface ParsedNotify {
  records: NotifyRecord[];
  /** Set when a record did not fit or was malformed; records holds what came before it. */
  error?: string;
}

const HEADER = 12;
/** Windows paths are at most 32,767 UTF-16 units long. */
const MAX_NAME_BYTES = 32_767 * 2;

export function parseNotifyRecords(buf: Uint8Array, bytes: number): ParsedNotify {
  const records: NotifyRecord[] = [];
  if (!Number.isInteger(bytes) || bytes < 0 || bytes > buf.byteLength) {
    return { records, error: `reported length ${bytes} is outside the ${buf.byteLength}-byte buffer` };
  }
  const view = new DataView(buf.buffer, buf.byteOffset, bytes);
  const text = new TextDecoder('utf-16le', { fatal: false });
  let off = 0;
  // a next offset is checked to be at least this record's size: off only grows, the loop ends
  for (;;) {
    if (off + HEADER > bytes) return { records, error: `record at ${off} has no room for its header (${bytes} bytes)` };
    const next = view.getUint32(off, true);
    const action = view.getUint32(off + 4, true);
    const nameBytes = view.getUint32(off + 8, true);
    if (nameBytes % 2 !== 0 || nameBytes > MAX_NAME_BYTES)
      return { records, error: `record at ${off}: file name length ${nameBytes} is not a UTF-16 length` };
    if (off + HEADER + nameBytes > bytes) return { records, error: `record at ${off}: file name of ${nameBytes} bytes runs past ${bytes}` };
    // Windows aligns records to DWORDs; Wine 8 packs them (NextEntryOffset 26 seen): no alignment assumed
    if (next !== 0 && next < HEADER + nameBytes) return { records, error: `record at ${off}: next offset ${next} points inside it` };
    records.push({ action, name: text.decode(buf.subarray(off + HEADER, off + HEADER + nameBytes)) });
    if (next === 0) return { records };
    off += next;
  }
}
