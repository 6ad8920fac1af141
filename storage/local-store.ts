/**
 * The embedded default object store: a local directory.
 *
 * Atomicity: every write goes to a temp file under `_sluice/tmp/`, is fsync'd, renamed into
 * place, and the target directory is fsync'd, so a reader (or a crash) sees the old object or
 * the new one, never a partial one. Staged objects live under `_sluice/staging/<key>` and are
 * published by rename.
 */
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { link, mkdir, open, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { classifyError, externalError, userError, type SluiceError } from '../common/errors.js';
import type { ObjectInfo, ObjectStore, StagedObject } from './object-store.js';

export const STAGING_PREFIX = '_sluice/staging/';
const TMP_PREFIX = '_sluice/tmp/';

export class LocalObjectStore implements ObjectStore {
  readonly url: string;
  readonly root: string;

  constructor(root: string) {
    this.root = resolve(root);
    this.url = `file://${this.root}`;
  }

  private path(key: string): string {
    if (key.startsWith('/') || key.split('/').includes('..') || key === '') throw userError('invalid_key', `object key must be relative without "..", got "${key}"`);
    return join(this.root, ...key.split('/'));
  }

  /**
   * Writes `body` to a new fsync'd temp file, then `place`s it at `target` (rename: replace; link:
   * only if absent, false when something is there) and fsyncs the directory. No temp outlives it.
   */
  private async writeAtomic(target: string, body: Uint8Array, place: 'rename' | 'link' = 'rename'): Promise<boolean> {
    const tmp = this.path(`${TMP_PREFIX}${randomBytes(8).toString('hex')}`);
    await mkdir(dirname(tmp), { recursive: true });
    await mkdir(dirname(target), { recursive: true });
    try {
      const fh = await open(tmp, 'w');
      try {
        await fh.writeFile(body);
        await fh.sync();
      } finally {
        await fh.close();
      }
      if (place === 'rename') await rename(tmp, target);
      else {
        try {
          await link(tmp, target);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
          throw err;
        } finally {
          await rm(tmp, { force: true });
        }
      }
    } catch (err) {
      // A half-written temp (a full disk) would keep the disk full: remove it before reporting.
      await rm(tmp, { force: true }).catch(() => undefined);
      throw err;
    }
    await syncDir(dirname(target));
    return true;
  }

  async put(key: string, body: Uint8Array): Promise<void> {
    try {
      await this.writeAtomic(this.path(key), body);
    } catch (err) {
      throw storeFailure('write', key, this.root, err);
    }
  }

  async create(key: string, body: Uint8Array): Promise<boolean> {
    try {
      return await this.writeAtomic(this.path(key), body, 'link');
    } catch (err) {
      throw storeFailure('write', key, this.root, err);
    }
  }

  async get(key: string): Promise<Uint8Array | undefined> {
    try {
      return new Uint8Array(await readFile(this.path(key)));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw storeFailure('read', key, this.root, err);
    }
  }

  async list(prefix: string): Promise<ObjectInfo[]> {
    // Walk only the deepest directory the prefix names, then filter by the full prefix.
    const dirPart = prefix.includes('/') ? prefix.slice(0, prefix.lastIndexOf('/')) : '';
    const start = dirPart === '' ? this.root : this.path(dirPart);
    const out: ObjectInfo[] = [];
    const includeMeta = prefix.startsWith('_sluice/');
    const walk = async (dir: string, rel: string): Promise<void> => {
      let entries;
      try {
        entries = await readdir(dir, { withFileTypes: true });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ENOTDIR') return;
        throw err;
      }
      for (const e of entries) {
        const key = rel === '' ? e.name : `${rel}/${e.name}`;
        if (!includeMeta && (key === '_sluice' || key.startsWith('_sluice/'))) continue;
        if (e.isDirectory()) {
          if (key.startsWith(prefix) || prefix.startsWith(`${key}/`)) await walk(join(dir, e.name), key);
        } else if (key.startsWith(prefix)) {
          // Another writer may rename or delete it between readdir and stat: then it is not listed.
          const st = await stat(join(dir, e.name)).catch((err: NodeJS.ErrnoException) => {
            if (err.code === 'ENOENT') return undefined;
            throw err;
          });
          if (st) out.push({ key, size: st.size, mtimeMs: st.mtimeMs });
        }
      }
    };
    await walk(start, dirPart);
    return out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  async delete(key: string): Promise<void> {
    try {
      await rm(this.path(key), { force: true });
    } catch (err) {
      throw storeFailure('delete', key, this.root, err);
    }
  }

  async stage(key: string, body: Uint8Array): Promise<StagedObject> {
    const stagingKey = `${STAGING_PREFIX}${key}`;
    try {
      await this.writeAtomic(this.path(stagingKey), body);
    } catch (err) {
      throw storeFailure('stage', key, this.root, err);
    }
    return { key, stagingKey, size: body.byteLength };
  }

  async publish(staged: StagedObject): Promise<void> {
    const from = this.path(staged.stagingKey);
    const to = this.path(staged.key);
    try {
      await mkdir(dirname(to), { recursive: true });
      await rename(from, to);
    } catch (err) {
      // Already published by an earlier attempt: the staged copy is gone and the final one exists.
      if ((err as NodeJS.ErrnoException).code === 'ENOENT' && existsSync(to)) return;
      throw storeFailure('publish', staged.key, this.root, err);
    }
    try {
      // Both directory entries changed: make the new one and the removal durable.
      await syncDir(dirname(to));
      await syncDir(dirname(from));
    } catch (err) {
      throw storeFailure('publish', staged.key, this.root, err);
    }
  }

  async discardStaged(keep: ReadonlySet<string>, filter: (stagingKey: string) => boolean = () => true): Promise<number> {
    let n = 0;
    for (const o of await this.list(STAGING_PREFIX)) {
      if (keep.has(o.key) || !filter(o.key)) continue;
      await this.delete(o.key);
      n++;
    }
    return n;
  }

  localPath(key: string): string | undefined {
    return this.path(key);
  }

  async close(): Promise<void> {}
}

/**
 * A failed file operation as a SluiceError: `disk_full` when the disk is full, else
 * `store_<what>_failed`; both external and worth retrying with backoff.
 */
function storeFailure(what: 'write' | 'read' | 'delete' | 'stage' | 'publish', key: string, root: string, err: unknown): SluiceError {
  const c = classifyError(err, `cannot ${what} ${key} under ${root}`);
  if (c.code === 'disk_full') return c;
  return externalError(`store_${what}_failed`, `cannot ${what} ${key} under ${root}: ${(err as Error)?.message ?? String(err)}`, err);
}

async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
