/**
 * Coalescing of refreshes: many triggers (stream events, clicks, timers) for
 * the same key within `interval` ms become one call, the first right away
 * (leading) and one more at the end of the window (trailing) if triggered
 * again meanwhile; never two calls of one key in flight at once.
 */
export class Coalescer<K = string> {
  private last = new Map<K, number>();
  private timers = new Map<K, ReturnType<typeof setTimeout>>();
  private running = new Set<K>();
  private again = new Set<K>();
  private disposed = false;

  constructor(
    private readonly run: (key: K) => Promise<void> | void,
    public interval = 1000,
    private readonly clock: () => number = () => Date.now()
  ) {}

  /** Ask for a call of `run(key)`: now, or once the window of the last call is over. */
  trigger(key: K): void {
    if (this.disposed) {
      return;
    }
    if (this.running.has(key)) {
      this.again.add(key);
      return;
    }
    if (this.timers.has(key)) {
      return; // a trailing call is already scheduled
    }
    const wait = (this.last.get(key) ?? -Infinity) + this.interval - this.clock();
    if (wait <= 0) {
      void this.fire(key);
    } else {
      this.timers.set(
        key,
        setTimeout(() => {
          this.timers.delete(key);
          void this.fire(key);
        }, wait)
      );
    }
  }

  private async fire(key: K): Promise<void> {
    if (this.disposed) {
      return;
    }
    this.last.set(key, this.clock());
    this.running.add(key);
    try {
      await this.run(key);
    } catch {
      // the caller reports its own errors
    } finally {
      this.running.delete(key);
      if (this.again.delete(key)) {
        this.trigger(key);
      }
    }
  }

  pending(key: K): boolean {
    return this.timers.has(key) || this.running.has(key);
  }

  dispose(): void {
    this.disposed = true;
    for (const t of this.timers.values()) {
      clearTimeout(t);
    }
    this.timers.clear();
  }
}

/** Reconnect delays: exponential from `base` ms to `max` ms, with ±`jitter` spread. */
export function backoffDelay(
  attempt: number,
  base = 1000,
  max = 30000,
  jitter = 0.2,
  rand: () => number = Math.random
): number {
  const d = Math.min(max, base * Math.pow(2, Math.max(0, attempt)));
  return Math.round(d * (1 - jitter + 2 * jitter * rand()));
}
