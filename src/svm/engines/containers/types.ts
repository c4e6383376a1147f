import type { UnpackBudget } from './budget.js';

/** One member taken out of a container, unpacked. */
export interface Member {
  /** Its name inside the container (untrusted: the walker cleans it before it is shown). */
  name: string;
  data: Buffer;
}

export interface ReadContext {
  budget: UnpackBudget;
  /** The full member path of `name` inside the scanned file, for findings. */
  pathOf(name: string): string;
  /** An encrypted member named `name` was met (a detection unless archives.alert_encrypted is off). */
  encrypted(name: string, format: string): void;
}

/**
 * A container format's reader: yields members one at a time, so only one member per level is
 * held. Damaged input ends the iteration quietly (what came before it was judged); crossing a
 * limit throws LimitExceeded. Before yielding a member it has called budget.member() and take().
 */
export type ContainerReader = (buf: Buffer, ctx: ReadContext) => AsyncGenerator<Member, void, undefined>;
