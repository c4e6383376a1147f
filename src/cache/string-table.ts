/**
 * A small interning table: a few distinct strings (signature generations, threat names) get
 * dense numeric ids that fit in a record's meta word. Bounded: past `max` ids, `id()` returns
 * undefined and the caller decides what to do (compact, or fall back to a generic name).
 */
export class StringTable {
  private names: string[];
  private ids: Map<string, number>;

  constructor(
    readonly max: number,
    initial: readonly string[] = [''],
  ) {
    this.names = [...initial];
    this.ids = new Map(this.names.map((n, i) => [n, i]));
  }

  id(name: string): number | undefined {
    const known = this.ids.get(name);
    if (known !== undefined) return known;
    if (this.names.length >= this.max) return undefined;
    this.names.push(name);
    this.ids.set(name, this.names.length - 1);
    return this.names.length - 1;
  }

  name(id: number): string | undefined {
    return this.names[id];
  }

  get size(): number {
    return this.names.length;
  }

  all(): readonly string[] {
    return this.names;
  }

  reset(names: readonly string[]): void {
    this.names = [...names];
    this.ids = new Map(this.names.map((n, i) => [n, i]));
  }
}
