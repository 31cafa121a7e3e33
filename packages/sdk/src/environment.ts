import { createRequire } from 'node:module';
import os from 'node:os';
import { hash } from 'node:crypto';
import { canonicalJson } from '@dlog/contracts';

/**
 * What a decision ran on, captured once per process. Only what changes the computation goes in
 * (hardware, OS, runtime, library versions): no host name, pid or start time, so replicas of the
 * same build on the same kind of node share one digest and the artifact registry holds one
 * entry for them. Nodes of another type (CPU model, memory, kernel) get their own.
 */
export interface EnvironmentSnapshot {
  hardware: Record<string, string>;
  os: Record<string, string>;
  runtime: Record<string, string>;
  libraries: Record<string, string>;
}

export interface Environment {
  snapshot: EnvironmentSnapshot;
  /** RFC 8785 canonical JSON of the snapshot: what the digest is computed over. */
  canonical: string;
  /** sha256:<hex> of `canonical`, stamped on every event as environment_digest. */
  digest: string;
  /** Artifact ref the snapshot is registered under. */
  ref: string;
}

export interface EnvironmentOptions {
  /** Versions the host knows and we cannot see (torch, onnxruntime, CUDA, model server ...). */
  libraries?: Record<string, string>;
  /** Hardware facts the host knows (GPU model, accelerator driver ...). */
  hardware?: Record<string, string>;
}

const require = createRequire(import.meta.url);

/** Libraries the SDK itself runs on; read from their package.json, absent if not resolvable. */
const detected = ['kafkajs', 'avsc', '@kafkajs/confluent-schema-registry'];

function packageVersion(name: string): string | undefined {
  try {
    return (require(`${name}/package.json`) as { version?: string }).version;
  } catch {
    return undefined;
  }
}

export function captureEnvironment(opts: EnvironmentOptions = {}): Environment {
  const cpus = os.cpus();
  const libraries: Record<string, string> = {};
  for (const name of detected) {
    const v = packageVersion(name);
    if (v) libraries[name] = v;
  }
  Object.assign(libraries, opts.libraries);
  const snapshot: EnvironmentSnapshot = {
    hardware: {
      arch: os.arch(),
      cpu_model: cpus[0]?.model.trim() ?? 'unknown',
      cpu_count: String(cpus.length),
      memory_bytes: String(os.totalmem()),
      endianness: os.endianness(),
      ...opts.hardware,
    },
    os: { platform: os.platform(), type: os.type(), release: os.release(), version: os.version() },
    runtime: {
      name: 'node',
      node: process.versions.node,
      v8: process.versions.v8,
      uv: process.versions.uv ?? '',
      openssl: process.versions.openssl ?? '',
      abi: process.versions.modules ?? '',
    },
    libraries,
  };
  const canonical = canonicalJson(snapshot);
  const digest = `sha256:${hash('sha256', canonical, 'hex')}`;
  return { snapshot, canonical, digest, ref: `registry://environments/${digest}` };
}

/** Flattens the snapshot into the artifact's string map: `runtime.node` = `20.20.2` ... */
export function environmentMetadata(env: Environment): Record<string, string> {
  const out: Record<string, string> = { snapshot_json: env.canonical };
  for (const [group, values] of Object.entries(env.snapshot) as [string, Record<string, string>][]) {
    for (const [k, v] of Object.entries(values)) out[`${group}.${k}`] = v;
  }
  return out;
}
