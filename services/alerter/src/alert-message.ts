import type { Message } from 'kafkajs';
import type { AlertRecord } from '@dlog/contracts';
import { capText, maxSummaryBytes } from './evaluate.js';

/**
 * Largest alert record written as it is, key included. The broker refuses records over 1 MiB
 * (message.max.bytes); one refused fails its batch's transaction every time the batch is tried
 * again, and the alerter reads nothing after it. Room is left for the batch framing and headers.
 */
export const maxAlertBytes = 900 * 1024;

/** Identifiers in a shrunk alert that is still too large (the event limit makes it unlikely). */
const maxIdentifierBytes = 4096;

export interface AlertMessage {
  message: Message;
  /** Bytes of the record as the rules made it, when it had to be shrunk to fit. */
  shrunkFrom?: number;
}

/**
 * The alert as a record of alerts.v1. The rules already bound what they put in an alert
 * (`maxEvidenceJsonBytes`, `maxSummaryBytes`); this is the backstop for anything they miss: a
 * record over `maxAlertBytes` keeps its core fields (id, rule, subject, window, a short summary)
 * and says in its evidence that the rest was left out, so it always goes out.
 */
export function toAlertMessage(a: AlertRecord, encode: (a: AlertRecord) => Buffer): AlertMessage {
  const message = build(a, encode);
  const bytes = size(message);
  if (bytes <= maxAlertBytes) return { message };
  const note = `alert record of ${bytes} bytes was over the ${maxAlertBytes}-byte limit: evidence left out`;
  let core: AlertRecord = {
    ...a,
    summary: capText(a.summary, maxSummaryBytes),
    evidence: { shrunk: note, window_start: new Date(a.window_start).toISOString(), window_end: new Date(a.window_end).toISOString() },
    evidence_json: JSON.stringify({ shrunk: note }),
    scope_command: capText(a.scope_command, maxIdentifierBytes),
  };
  let shrunk = build(core, encode);
  if (size(shrunk) > maxAlertBytes) {
    const cut = (s: string | null) => (s === null ? null : capText(s, maxIdentifierBytes));
    core = { ...core, endpoint: cut(core.endpoint), model_name: cut(core.model_name), model_version: cut(core.model_version) };
    shrunk = build(core, encode);
  }
  return { message: shrunk, shrunkFrom: bytes };
}

function build(a: AlertRecord, encode: (a: AlertRecord) => Buffer): Message {
  return { key: a.model_name !== null ? `${a.model_name}:${a.model_version ?? ''}` : a.rule, value: encode(a) };
}

function size(m: Message): number {
  const key = m.key === null || m.key === undefined ? 0 : typeof m.key === 'string' ? Buffer.byteLength(m.key) : m.key.length;
  const value = m.value === null || m.value === undefined ? 0 : typeof m.value === 'string' ? Buffer.byteLength(m.value) : m.value.length;
  return key + value;
}
