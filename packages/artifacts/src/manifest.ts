import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { isAlias, isMap, isScalar, parseDocument, type Document } from 'yaml';
import { z } from 'zod';
import { environmentRef, modelRef, registrationDifferences, type ArtifactEventRecord } from './artifact-state.js';

const kinds = ['model', 'dataset', 'image', 'config', 'code', 'environment', 'policy', 'preprocessing'] as const;

const artifactSchema = z
  .object({
    kind: z.enum(kinds),
    ref: z.string().min(3).max(500).optional(),
    name: z.string().min(1).max(200),
    version: z.string().min(1).max(100),
    // Lower-cased first, as the enricher compares decisions' digests.
    digest: z.string().toLowerCase().regex(/^sha256:[0-9a-f]{64}$/, 'must be sha256:<64 hex digits>'),
    uri: z.string().max(2000).optional(),
    metadata: z.record(z.string(), z.union([z.string(), z.number(), z.boolean()])).default({}),
    parents: z.array(z.string().min(3).max(500)).default([]),
  })
  .strict();

const manifestSchema = z.object({ artifacts: z.array(artifactSchema).min(1) }).strict();

export class ManifestError extends Error {
  constructor(
    readonly file: string,
    readonly path: string,
    message: string,
  ) {
    super(`${file}${path ? ` at ${path}` : ''}: ${message}`);
    this.name = 'ManifestError';
  }
}

/**
 * Default refs by kind, so a manifest may omit them. Models and environments must use the form a
 * decision names them by: a model by name and version, an environment by its digest alone (a
 * decision carries only `environment_digest`), so any other ref could never resolve.
 */
function refFor(a: z.infer<typeof artifactSchema>): string {
  if (a.kind === 'model') return modelRef(a.name, a.version);
  if (a.kind === 'environment') return environmentRef(a.digest);
  if (a.ref) return a.ref;
  const plural: Record<string, string> = { dataset: 'datasets', image: 'images', config: 'configs', code: 'code', environment: 'environments', policy: 'policies', preprocessing: 'preprocessing' };
  return `registry://${plural[a.kind]}/${a.name}:${a.version}`;
}

/**
 * Metadata is text, and unquoted YAML turns some text into numbers that print otherwise:
 * `0e12345` (a commit) is 0, `0.9120` is 0.912, `0x1F` is 31, a 20-digit id loses its last digits,
 * `True` is true. Stored as printed, the value is not what was written, and as versions are
 * immutable, the manifest corrected later is refused. So a number or boolean is taken only where
 * it prints as written (`rows: 1200000`, `auc: 0.912`, `enabled: true`); elsewhere the manifest is
 * refused with the quoting that keeps it.
 */
function checkMetadataAsWritten(doc: Document, text: string, file: string, i: number): void {
  const map = doc.getIn(['artifacts', i, 'metadata'], true);
  if (!isMap(map)) return;
  for (const pair of map.items) {
    const keyNode = isAlias(pair.key) ? pair.key.resolve(doc) : pair.key;
    const key = isScalar(keyNode) ? String(keyNode.value) : String(pair.key);
    const k = writtenOtherwise(keyNode, text);
    if (k) {
      throw new ManifestError(file, `artifacts.${i}.metadata`, `metadata key ${k.typed} would be stored as ${k.stored}: unquoted YAML reads it as a ${k.type}; quote it: "${k.typed}"`);
    }
    const v = writtenOtherwise(isAlias(pair.value) ? pair.value.resolve(doc) : pair.value, text);
    if (v) {
      throw new ManifestError(
        file,
        `artifacts.${i}.metadata.${key}`,
        `metadata ${key} would be stored as ${v.stored}, not ${v.typed}: unquoted YAML reads it as a ${v.type}; quote it: ${key}: "${v.typed}" (a version registered with it unquoted before this check holds "${v.stored}": write ${key}: "${v.stored}" to register that one again unchanged)`,
      );
    }
  }
}

/** A number or boolean scalar whose source text is not how it prints; undefined for any other node. */
function writtenOtherwise(node: unknown, text: string): { typed: string; stored: string; type: string } | undefined {
  if (!isScalar(node) || !node.range) return undefined;
  const v = node.value;
  if (typeof v !== 'number' && typeof v !== 'boolean' && typeof v !== 'bigint') return undefined;
  const typed = text.slice(node.range[0], node.range[1]);
  const stored = String(v);
  return typed === stored ? undefined : { typed, stored, type: typeof v };
}

/** Parses a registration manifest (YAML or JSON) into registration events. */
export function parseManifest(text: string, file: string, registeredBy: string, now = Date.now()): ArtifactEventRecord[] {
  let raw: unknown;
  const doc = parseDocument(text);
  try {
    if (doc.errors.length > 0) throw doc.errors[0]!;
    raw = doc.toJS();
  } catch (err) {
    throw new ManifestError(file, '', `not valid YAML or JSON: ${(err as Error).message}`);
  }
  const parsed = manifestSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    // `version: 1.0` is the number 1 to YAML, and `version: 2024.10` loses its trailing zero:
    // name what was typed and how to quote it, since the value read is not what they wrote.
    // Only where text is expected (a number where a list is due is no quoting matter), and not for
    // an empty value, which quoting would only turn into an empty name.
    const node = doc.getIn(issue.path as (string | number)[], true);
    if (issue.code === 'invalid_type' && issue.expected === 'string' && isScalar(node) && node.value !== null && typeof node.value !== 'string' && node.range) {
      const typed = text.slice(node.range[0], node.range[1]);
      const last = issue.path[issue.path.length - 1];
      // An item of a list (parents: [1.0]) is named by its list, not by its index.
      const inList = typeof last === 'number';
      const key = String(inList ? issue.path[issue.path.length - 2] : last);
      const quoted = inList ? `"${typed}"` : `${key}: "${typed}"`;
      throw new ManifestError(
        file,
        issue.path.join('.'),
        `${inList ? `each of ${key}` : key} must be text, and unquoted YAML reads ${typed} as a ${typeof node.value}; quote it: ${quoted}`,
      );
    }
    throw new ManifestError(file, issue.path.join('.'), issue.message);
  }
  const events = parsed.data.artifacts.map((a, i) => {
    checkMetadataAsWritten(doc, text, file, i);
    const ref = refFor(a);
    if (a.kind === 'model' && a.ref && a.ref !== ref) {
      throw new ManifestError(file, `artifacts.${i}.ref`, `a model's ref is ${ref} (from its name and version); remove ref or make it match`);
    }
    if (a.name.includes(':') && (a.kind === 'model' || (a.kind !== 'environment' && !a.ref))) {
      // registry://<kind>s/<name>:<version>: a colon in the name would let `fraud:eu` version 3
      // and `fraud` version `eu:3` be one ref. Models always have this ref; other kinds when the
      // manifest gives none (an environment's comes from its digest).
      const form = a.kind === 'model' ? 'registry://models/<name>:<version>' : `${ref.slice(0, ref.indexOf('/', 'registry://'.length) + 1)}<name>:<version>`;
      throw new ManifestError(
        file,
        `artifacts.${i}.name`,
        `a ${a.kind}'s name cannot contain ':' (its ref is ${form}); use another separator, e.g. ${a.name.replaceAll(':', '-')}${a.kind === 'model' ? '' : ', or give it a ref of its own'}`,
      );
    }
    if (a.kind === 'environment' && a.ref && a.ref !== ref) {
      throw new ManifestError(file, `artifacts.${i}.ref`, `an environment's ref is ${ref} (from its digest: decisions name it by environment_digest alone); remove ref or make it match`);
    }
    // Models and environments are looked up by these refs alone: another kind under one of them
    // would be what decisions of that model or environment resolve to.
    if (a.kind !== 'model' && ref.startsWith('registry://models/')) {
      throw new ManifestError(file, `artifacts.${i}.ref`, `registry://models/ refs are for kind model (this is a ${a.kind}); give it a ref of its own kind, or remove ref`);
    }
    if (a.kind !== 'environment' && ref.startsWith('registry://environments/')) {
      throw new ManifestError(file, `artifacts.${i}.ref`, `registry://environments/ refs are for kind environment (this is a ${a.kind}); give it a ref of its own kind, or remove ref`);
    }
    return {
      event_id: randomUUID(),
      kind: a.kind,
      ref,
      name: a.name,
      version: a.version,
      digest: a.digest,
      uri: a.uri ?? null,
      metadata: Object.fromEntries(Object.entries(a.metadata).map(([k, v]) => [k, String(v)])),
      parents: a.parents,
      registered_at: now,
      registered_by: registeredBy,
    } satisfies ArtifactEventRecord;
  });
  const seen = new Map<string, ArtifactEventRecord>();
  for (const [i, e] of events.entries()) {
    const prior = seen.get(e.ref);
    if (prior && prior.digest !== e.digest) throw new ManifestError(file, `artifacts.${i}`, `${e.ref} appears twice with different digests`);
    const fields = prior ? registrationDifferences(prior, e) : [];
    if (fields.length > 0) throw new ManifestError(file, `artifacts.${i}`, `${e.ref} appears twice with different ${fields.join(', ')}`);
    seen.set(e.ref, e);
  }
  return events;
}

export function readManifest(file: string, registeredBy: string): ArtifactEventRecord[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ManifestError(file, '', `cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  return parseManifest(text, file, registeredBy);
}
