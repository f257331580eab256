/**
 * Per-key try-locks. The CO should send one call per volume at a time, but
 * after a sidecar restart it may not; the spec lets us answer ABORTED to the
 * second caller, which then retries with back-off.
 */
export class KeyedTryLock {
  private readonly held = new Set<string>();

  /** Takes every key or none; returns a release function, or undefined if any key is busy. */
  tryAcquire(keys: readonly string[]): (() => void) | undefined {
    const unique = [...new Set(keys)];
    if (unique.some((k) => this.held.has(k))) return undefined;
    unique.forEach((k) => this.held.add(k));
    let released = false;
    return () => {
      if (released) return;
      released = true;
      unique.forEach((k) => this.held.delete(k));
    };
  }

  get size(): number {
    return this.held.size;
  }
}
