/** Bounded polling for the tests that wait on a server, an engine or a log to reach a state. */

/**
 * Polls `check` (sync or async) every 50 ms until it holds or `ms` passed, then asks it once
 * more; returns its last answer. A check that throws fails the wait (catch inside it where a
 * failure means "not yet", e.g. a server still starting).
 */
export async function eventually(check: () => boolean | Promise<boolean>, ms = 20_000): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await check()) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return check();
}
