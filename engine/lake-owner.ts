/**
 * One data directory per lake, for engines on local segment logs. A shard's files and commit
 * records are named from its log's offsets (`part-s{shard}-{first}-{last}`, `s{shard}-{first}-{last}`),
 * and those start at 0 in every new data directory. So a second data directory writing the same
 * lake — a second `sluice serve --data other` on it, or the same lake after its data directory was
 * deleted — overwrote the first one's files and commit records: acknowledged events gone, and
 * `sluice quality` found nothing wrong.
 *
 * Each data directory has an id (`<data>/data-id.json`, made at its first start); the lake records
 * the id of the data directory that writes it (`_sluice/owner.json`). An engine starting on a lake
 * owned by another id is refused, as is a new data directory on a lake that already holds shard
 * commits but no owner record (written before the record existed). A data directory that had
 * already run (its coordinator state exists) adopts such a lake. The record is created only if
 * absent (`ObjectStore.create`), so of two servers started at the same moment on a new lake one is
 * refused — atomically on a local directory and on S3 with conditional writes; on an S3 server
 * without them (s3rver) both can pass, and the next start of either finds the other's record.
 *
 * Engines on JetStream logs are not checked: offsets are the stream's sequences, shared by every
 * node writing the lake.
 */
import { randomUUID } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { userError } from '../common/errors.js';
import { writeFileDurably } from '../storage/erasure-store.js';
import type { ObjectStore } from '../storage/object-store.js';

export const LAKE_OWNER_KEY = '_sluice/owner.json';
const DATA_ID_FILE = 'data-id.json';
/** A shard flush's commit record (`_sluice/commits/s{shard}-{first}-{last}.json`): what a new data directory would overwrite. */
const SHARD_COMMIT = /\/s\d+-\d+-\d+\.json$/;

interface OwnerRecord {
  dataId: string;
  since: string;
}

function readDataId(dataDir: string): string | undefined {
  try {
    const id = (JSON.parse(readFileSync(join(dataDir, DATA_ID_FILE), 'utf8')) as { id?: unknown }).id;
    return typeof id === 'string' && id !== '' ? id : undefined;
  } catch {
    return undefined;
  }
}

async function readOwner(store: ObjectStore): Promise<OwnerRecord | undefined> {
  const bytes = await store.get(LAKE_OWNER_KEY);
  if (bytes === undefined) return undefined;
  const o = JSON.parse(Buffer.from(bytes).toString('utf8')) as Partial<OwnerRecord>;
  if (typeof o.dataId !== 'string') throw userError('lake_owner_corrupt', `${LAKE_OWNER_KEY} in the lake does not name a data directory id; restore it or remove it (the next start records the data directory that starts)`);
  return o as OwnerRecord;
}

/**
 * Checks that the data directory `dataDir` may write `lake` (`store`), and records it as the lake's
 * writer when the lake has none. Throws a user error naming both otherwise.
 */
export async function claimLake(store: ObjectStore, dataDir: string, lake: string): Promise<void> {
  let dataId = readDataId(dataDir);
  const owner = await readOwner(store);
  if (dataId === undefined) {
    const ranBefore = existsSync(join(dataDir, 'coordinator.mdb'));
    if (owner === undefined && !ranBefore && (await store.list('_sluice/commits/')).some((o) => SHARD_COMMIT.test(o.key))) {
      throw userError(
        'lake_in_use',
        `lake ${lake} holds shard commits of another data directory, and ${dataDir} is new: its files would be overwritten (they are named from each shard log's offsets). Pass the --data that wrote this lake, or another --lake`,
      );
    }
    dataId = randomUUID();
    await writeFileDurably(join(dataDir, DATA_ID_FILE), `${JSON.stringify({ id: dataId })}\n`);
  }
  const inUse = (other: OwnerRecord) =>
    userError(
      'lake_in_use',
      `lake ${lake} is written by another data directory (id ${other.dataId}, since ${other.since}; ${dataDir} is ${dataId}): a second server or a new --data on one lake would overwrite its files. Pass the --data that writes this lake, or another --lake`,
    );
  if (owner !== undefined) {
    if (owner.dataId !== dataId) throw inUse(owner);
    return;
  }
  // Create-if-absent: of two servers starting at once on a new lake, one records itself, the other is refused.
  if (await store.create(LAKE_OWNER_KEY, Buffer.from(`${JSON.stringify({ dataId, since: new Date().toISOString() } satisfies OwnerRecord)}\n`))) return;
  const winner = await readOwner(store);
  if (winner !== undefined && winner.dataId !== dataId) throw inUse(winner);
}
