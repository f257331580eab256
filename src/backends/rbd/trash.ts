import type { Logger } from 'pino';
import type { RbdApi } from './rbd-api.js';

/**
 * Images that clones still depend on wait in the RBD trash; once their last
 * clone is gone they can be purged. Purging runs in the background after a
 * delete, coalesced per pool, and is safe to repeat or to lose in a crash:
 * the next delete in the pool sweeps again.
 */

const OURS = /^csi-(vol|snap)-[0-9a-f]{32}$/;

/**
 * Purges our trashed images until a pass frees nothing (a purge can free its
 * parent). Returns how many of ours are left in the trash.
 */
export async function purgeTrash(rbd: RbdApi, pool: string, log: Logger): Promise<number> {
  let entries: Array<{ id: string; name: string }> = [];
  for (let pass = 0; pass < 16; pass++) {
    entries = (await rbd.trashList(pool)).filter((e) => OURS.test(e.name));
    let freed = 0;
    for (const e of entries) if (await rbd.trashRemove(pool, e.id)) freed++;
    if (freed) log.debug({ pool, freed }, 'purged trashed images');
    if (!freed) break;
  }
  return entries.length;
}

/** Runs one job per key at a time; requests while it runs coalesce into one more run. */
export class Debounced {
  private readonly state = new Map<string, 'running' | 'again'>();

  schedule(key: string, job: () => Promise<void>, onError: (e: unknown) => void = () => {}): void {
    if (this.state.has(key)) {
      this.state.set(key, 'again');
      return;
    }
    this.state.set(key, 'running');
    const loop = async (): Promise<void> => {
      do {
        this.state.set(key, 'running');
        await job().catch(onError);
      } while (this.state.get(key) === 'again');
      this.state.delete(key);
    };
    void loop();
  }

  get idle(): boolean {
    return this.state.size === 0;
  }
}
