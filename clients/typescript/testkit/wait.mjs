// Bounded waits: every wait has a deadline, so a hang fails fast with what was awaited.

/** `promise`, or a rejection naming `what` after `ms`. */
export async function within(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** The next `type` event of `client` that satisfies `pred`. */
export function next(client, type, pred = () => true, ms = 10_000) {
  let off;
  const p = new Promise((resolve) => {
    off = client.on(type, (ev) => {
      if (pred(ev)) resolve(ev);
    });
  });
  return within(p, ms, `a "${type}" event`).finally(() => off());
}

/** Every `type` event of `client` from now on. */
export function record(client, type) {
  const seen = [];
  client.on(type, (ev) => seen.push(ev));
  return seen;
}

/** Resolves once `cond()` is true (checked every 10 ms). */
export function until(cond, ms, what) {
  return within(
    new Promise((resolve) => {
      const tick = () => (cond() ? resolve() : setTimeout(tick, 10));
      tick();
    }),
    ms,
    what,
  );
}
