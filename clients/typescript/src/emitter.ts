/** A typed event emitter. A listener that throws does not stop the others or the SDK: its error
 * is rethrown on a fresh task, where the host reports it as uncaught. */
export class Emitter<E extends object> {
  private readonly listeners = new Map<keyof E, Set<(ev: never) => void>>();

  on<K extends keyof E>(type: K, fn: (ev: E[K]) => void): () => void {
    let set = this.listeners.get(type);
    if (set === undefined) {
      set = new Set();
      this.listeners.set(type, set);
    }
    set.add(fn as (ev: never) => void);
    return () => {
      set.delete(fn as (ev: never) => void);
    };
  }

  emit<K extends keyof E>(type: K, ev: E[K]): void {
    const set = this.listeners.get(type);
    if (set === undefined) return;
    for (const fn of [...set]) {
      try {
        (fn as (ev: E[K]) => void)(ev);
      } catch (err) {
        setTimeout(() => {
          throw err;
        }, 0);
      }
    }
  }
}
