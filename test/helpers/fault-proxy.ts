/**
 * A TCP proxy on port 0 between an agent and an SVM that injects faults on command:
 * `pause()` holds every byte (a frozen SVM or network), `delay(ms)` slows each chunk,
 * `cut()` resets every connection (a cable pulled mid-upload), `resume()` restores service.
 */
import net from 'node:net';
import type { AddressInfo } from 'node:net';

export class FaultProxy {
  private readonly server: net.Server;
  private readonly pairs = new Set<[net.Socket, net.Socket]>();
  private paused = false;
  private delayMs = 0;
  private refusing = false;
  bytesUp = 0;

  private constructor(private readonly target: { host: string; port: number }) {
    this.server = net.createServer((client) => this.onClient(client));
  }

  static async start(targetPort: number, targetHost = '127.0.0.1'): Promise<FaultProxy> {
    const p = new FaultProxy({ host: targetHost, port: targetPort });
    await new Promise<void>((r) => p.server.listen(0, '127.0.0.1', () => r()));
    return p;
  }

  get port(): number {
    return (this.server.address() as AddressInfo).port;
  }
  get url(): string {
    return `ws://127.0.0.1:${this.port}`;
  }

  pause(): void {
    this.paused = true;
    for (const [a, b] of this.pairs) {
      a.pause();
      b.pause();
    }
  }
  resume(): void {
    this.paused = false;
    this.refusing = false;
    this.delayMs = 0;
    for (const [a, b] of this.pairs) {
      a.resume();
      b.resume();
    }
  }
  delay(ms: number): void {
    this.delayMs = ms;
  }
  /** Reset every open connection; with `refuse`, new ones are reset too until resume(). */
  cut(refuse = false): void {
    this.refusing = refuse;
    for (const [a, b] of this.pairs) {
      a.resetAndDestroy();
      b.resetAndDestroy();
    }
    this.pairs.clear();
  }

  async close(): Promise<void> {
    this.cut();
    await new Promise<void>((r) => this.server.close(() => r()));
  }

  private onClient(client: net.Socket): void {
    if (this.refusing) {
      client.resetAndDestroy();
      return;
    }
    const upstream = net.connect(this.target.port, this.target.host);
    const pair: [net.Socket, net.Socket] = [client, upstream];
    this.pairs.add(pair);
    const pipe = (from: net.Socket, to: net.Socket, up: boolean) => {
      from.on('data', (d: Buffer) => {
        if (up) this.bytesUp += d.length;
        if (this.delayMs > 0) {
          from.pause();
          setTimeout(() => {
            if (!to.destroyed) to.write(d);
            if (!this.paused) from.resume();
          }, this.delayMs);
        } else if (!to.destroyed) to.write(d);
      });
    };
    pipe(client, upstream, true);
    pipe(upstream, client, false);
    if (this.paused) {
      client.pause();
      upstream.pause();
    }
    const end = () => {
      this.pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('close', end);
    upstream.on('close', end);
    client.on('error', end);
    upstream.on('error', end);
  }
}
