/** Helpers for benchmarks that start the SVM and the agent as child processes. */
import type { ChildProcess } from 'node:child_process';

/** Resolve with the first match of `re` in the child's stdout; reject on exit or after `ms`. */
export function waitLine(child: ChildProcess, re: RegExp, ms = 30_000): Promise<string> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const t = setTimeout(() => reject(new Error(`no ${re} within ${ms} ms; output: ${buf.slice(-500)}`)), ms);
    child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      const m = re.exec(buf);
      if (m) {
        clearTimeout(t);
        resolve(m[0]);
      }
    });
    child.once('exit', (code) => {
      clearTimeout(t);
      reject(new Error(`exited with ${code}: ${buf.slice(-500)}`));
    });
  });
}
