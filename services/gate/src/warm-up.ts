import { AvroDecoder, inputHash, type InferenceEventRecord } from '@dlog/contracts';
import type { KafkaMessage } from 'kafkajs';
import { processBatch, type GateDeps, type GateStats } from './gate.js';

/**
 * Runs synthetic events through `processBatch` before the gate takes traffic, so the first real
 * batches meet compiled code instead of the interpreter: a cold thread handles its first few
 * thousand events several times slower, which showed as seconds of extra latency right after a
 * start. Nothing leaves: the outputs are dropped and no stats are kept. The events carry the kinds
 * of personal data the policy handles (fields to hash, redact and drop, free text to scrub) so the
 * same paths are compiled; the values are made up and only reach the keyed-hash cache.
 */
export async function warmUp(deps: GateDeps, events = 3_000): Promise<GateStats> {
  const schemaId = 0;
  const type = deps.inputType;
  const schemas = new AvroDecoder<unknown>(type, async () => JSON.stringify(type.schema()));
  const messages: KafkaMessage[] = [];
  const now = Date.now();
  for (let i = 0; i < events; i++) {
    const input = {
      applicant: { email: `warm${i}@example.invalid`, name: `Warm ${i}`, phone: `+44 20 7946 ${String(i % 10_000).padStart(4, '0')}`, ssn: '000-00-0000', iban: 'GB82 WEST 1234 5698 7654 32' },
      features: { amount: 1000 + i, months: i % 60, region: 'warm-up', scores: [0.1, 0.2, 0.3] },
      notes: `synthetic warm-up event ${i}; no personal data`,
    };
    const event: InferenceEventRecord = {
      event_id: `warm-up-${i}`,
      request_id: `warm-up-${i}`,
      ts: now,
      endpoint: 'warm-up',
      decision_type: i % 2 ? 'classification' : 'agent_step',
      tenant: null,
      model: { name: 'warm-up', version: '0', digest: null },
      image: null,
      config: null,
      preprocessing: null,
      environment_digest: null,
      input_json: JSON.stringify(input),
      input_hash: inputHash(input),
      output: { decision: i % 3 ? 'yes' : 'no', confidence: 0.5, scores: { yes: 0.5, no: 0.5 }, token_logprobs: null, output_json: null },
      trajectory: i % 2 ? null : { trace_id: `warm-up-trace-${i >> 2}`, step: i % 4, parent_event_id: null, tool_name: null, tool_args_hash: null },
      producer: { service: 'warm-up', sdk: 'warm-up', host: null },
      attributes: { source: 'warm-up' },
    };
    const body = type.toBuffer(event);
    const value = Buffer.allocUnsafe(body.length + 5);
    value[0] = 0;
    value.writeInt32BE(schemaId, 1);
    body.copy(value, 5);
    messages.push({ key: null, value, headers: {}, offset: String(i), timestamp: String(now), attributes: 0 });
  }
  await schemas.prepare([messages[0]!.value]);
  const warmDeps: GateDeps = { ...deps, schemas };
  // Counted only so a test can tell the events went the way real ones do, not to dead letters.
  const stats: GateStats = { kept: 0, dropped: 0, deadLettered: 0, byReason: {} };
  for (let i = 0; i < messages.length; i += 500) processBatch(messages.slice(i, i + 500), { topic: 'warm-up', partition: 0 }, warmDeps, stats);
  return stats;
}
