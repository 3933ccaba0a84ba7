/** Exponential backoff with full jitter: attempt n waits uniformly in [0, min(max, initial·2ⁿ)]. */
export class Backoff {
  private attempt = 0;

  constructor(
    private readonly initialMs: number,
    private readonly maxMs: number,
    private readonly random: () => number = Math.random,
  ) {}

  /** The delay before the next attempt; each call doubles the ceiling. */
  next(): number {
    const ceiling = Math.min(this.maxMs, this.initialMs * 2 ** Math.min(this.attempt, 30));
    this.attempt++;
    return Math.floor(this.random() * ceiling);
  }

  /** Back to the initial ceiling (a connection stayed up). */
  reset(): void {
    this.attempt = 0;
  }
}
