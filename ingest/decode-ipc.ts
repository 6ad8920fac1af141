/**
 * Reading ingest's log records back: each record is one Arrow IPC stream holding one
 * `ingestSchema` RecordBatch (for the engine, replay tools and tests).
 */
import { tableFromIPC, type RecordBatch } from 'apache-arrow';
import { internalError } from '../common/errors.js';
import { ingestSchema } from '../common/schema.js';

const EXPECTED = ingestSchema.fields.map((f) => f.name).join(',');

/**
 * Decodes one log record (Arrow IPC stream bytes) into its RecordBatch. Zero-copy: the batch's
 * buffers are views of `bytes`, so keep `bytes` alive (and unmodified) while the batch is used.
 * Throws when the record is not one ingestSchema batch.
 */
export function decodeIngestBatch(bytes: Uint8Array): RecordBatch {
  const table = tableFromIPC(bytes);
  const batches = table.batches;
  const names = table.schema.fields.map((f) => f.name).join(',');
  if (names !== EXPECTED) throw internalError('log_record_schema', `log record has columns [${names}], expected ingestSchema [${EXPECTED}]`);
  if (batches.length !== 1) throw internalError('log_record_batches', `log record holds ${batches.length} record batches, expected exactly 1`);
  return batches[0]!;
}
