import type { SpawnSpec } from './processes.js';

export interface ComponentPort {
  /** The setting that changes it, named in "port taken" errors. */
  env: string;
  port: number;
}

/** One native process of the local stack. */
export interface Component {
  readonly name: string;
  readonly ports: ComponentPort[];
  readonly logFile: string;
  /** Resolves what it needs from Maven Central into the cache; a no-op when already there. */
  provision(log: (msg: string) => void): Promise<void>;
  /** One-time preparation before the first start (e.g. formatting storage). */
  prepare(): Promise<void>;
  spawnSpec(): SpawnSpec;
  /** True once the component answers like a healthy one. Never throws. */
  probe(): Promise<boolean>;
  /** How long SIGTERM may take before SIGKILL. */
  readonly stopGraceMs: number;
}

/** Marks our processes' command lines, so a reused pid is never mistaken for ours. */
export function stackMarker(name: string, stackDir: string): string {
  return `-Ddlog.stack=${name}@${stackDir}`;
}
