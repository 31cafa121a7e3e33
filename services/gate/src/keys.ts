import { createHash, hash as sha256Once, randomBytes } from 'node:crypto';
import { privateFile } from '@dlog/runtime';

export interface HmacKey {
  id: string;
  secret: Buffer;
}

export interface KeyRing {
  /** The key new hashes are made with; its id is stamped on every record. */
  readonly active: HmacKey;
  readonly all: readonly HmacKey[];
  /** Hex HMAC-SHA256 of `domain:value` with the active key. */
  hmac(domain: string, value: string): string;
}

export class KeyError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'KeyError';
  }
}

function pads(secret: Buffer): { ipad: Buffer; opad: Buffer } {
  const block = 64;
  const key = secret.length > block ? createHash('sha256').update(secret).digest() : secret;
  const ipad = Buffer.alloc(block, 0x36);
  const opad = Buffer.alloc(block, 0x5c);
  for (let i = 0; i < key.length; i++) {
    ipad[i]! ^= key[i]!;
    opad[i]! ^= key[i]!;
  }
  return { ipad, opad };
}

/**
 * Parses `kid:base64secret[,kid:base64secret...]`; the first is active and makes every token.
 * The others are only parsed and checked (so a rotation can list the old key next to the new
 * one without a restart failing); tokens carry their key id (`hmac:<kid>:…`), and a rotation
 * starts new tokens: a value hashed before it does not match its new token. Error messages
 * name key ids, never key material.
 */
export function parseKeyRing(spec: string): KeyRing {
  const keys: HmacKey[] = [];
  for (const [i, part] of spec.split(',').map((p) => p.trim()).filter(Boolean).entries()) {
    const sep = part.indexOf(':');
    const id = sep > 0 ? part.slice(0, sep) : '';
    if (!/^[A-Za-z0-9._-]{1,32}$/.test(id)) {
      throw new KeyError(`PII key #${i + 1}: expected <key-id>:<base64 secret> with a key id of letters, digits, . _ -`);
    }
    const secret = Buffer.from(part.slice(sep + 1), 'base64');
    if (secret.length < 32) throw new KeyError(`PII key ${id}: the secret must be at least 32 bytes (base64), got ${secret.length}`);
    if (keys.some((k) => k.id === id)) throw new KeyError(`PII key ${id} is listed twice`);
    keys.push({ id, secret });
  }
  const active = keys[0];
  if (!active) throw new KeyError('No PII key configured: set DLOG_PII_KEYS or DLOG_PII_KEYS_FILE to <key-id>:<base64 secret>');
  const { ipad, opad } = pads(active.secret);
  const outerIn = Buffer.allocUnsafe(64 + 32);
  opad.copy(outerIn, 0);
  // Tokens repeat (the same customer, the same email): a bounded cache skips the hashing.
  const cache = new Map<string, string>();
  return {
    active,
    all: keys,
    hmac(domain, value) {
      const key = `${domain}:${value}`;
      const hit = cache.get(key);
      if (hit !== undefined) return hit;
      // HMAC-SHA256 (RFC 2104) from precomputed pads with one-shot hashes: much cheaper than
      // setting up a keyed HMAC object for every field of every event.
      const inner = sha256Once('sha256', Buffer.concat([ipad, Buffer.from(key)]), 'buffer');
      inner.copy(outerIn, 64);
      const out = sha256Once('sha256', outerIn, 'hex');
      if (cache.size >= 100_000) cache.clear();
      cache.set(key, out);
      return out;
    },
  };
}

/**
 * For local runs without configured keys: a random key kept in a 0600 file, so hashes stay
 * stable across restarts of the same local pipeline. Production sets DLOG_PII_KEYS(_FILE).
 */
export function localKeyRing(file: string): { ring: KeyRing; created: boolean; spec: string } {
  const { content, created } = privateFile(file, () => `local-${randomBytes(3).toString('hex')}:${randomBytes(32).toString('base64')}\n`);
  return { ring: parseKeyRing(content), created, spec: content.trim() };
}
