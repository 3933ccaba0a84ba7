/** Where the SDK keeps the last seq it delivered per room, so a reconnect or a page reload
 * resumes exactly after it. It survives what the store survives. */
export interface PositionStore {
  load(): Promise<Record<string, number>> | Record<string, number>;
  save(roomId: number, seq: number): void | Promise<void>;
}

/** Positions for the life of the process (a reconnect resumes; a reload starts from now). */
export class MemoryPositionStore implements PositionStore {
  private readonly positions: Record<string, number> = {};

  load(): Record<string, number> {
    return { ...this.positions };
  }

  save(roomId: number, seq: number): void {
    this.positions[String(roomId)] = seq;
  }
}

/** Positions in `localStorage` under `key` (browsers): a page reload resumes where it was.
 * Use one key per user (and per server): positions of another user's rooms mean nothing.
 * Tabs sharing the key merge their positions (each room keeps the highest). */
export class LocalStoragePositionStore implements PositionStore {
  constructor(private readonly key: string) {}

  load(): Record<string, number> {
    return this.read();
  }

  save(roomId: number, seq: number): void {
    // Read again: another tab may have saved other rooms since.
    const positions = this.read();
    const room = String(roomId);
    if ((positions[room] ?? -1) >= seq) return;
    positions[room] = seq;
    try {
      localStorage.setItem(this.key, JSON.stringify(positions));
    } catch {
      // Storage full or disabled (private mode): positions then last as long as the page.
    }
  }

  private read(): Record<string, number> {
    try {
      const raw = localStorage.getItem(this.key);
      const parsed: unknown = raw === null ? {} : JSON.parse(raw);
      const out: Record<string, number> = {};
      if (parsed !== null && typeof parsed === "object") {
        for (const [room, seq] of Object.entries(parsed)) {
          if (typeof seq === "number" && Number.isSafeInteger(seq) && seq >= 0) out[room] = seq;
        }
      }
      return out;
    } catch {
      return {};
    }
  }
}
