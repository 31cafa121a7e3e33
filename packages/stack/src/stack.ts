import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Config } from '@dlog/config';
import { createKafka, ensureTopics, loadTopicDefinitions } from '@dlog/kafka';
import type { Logger } from 'pino';
import type { Component } from './component.js';
import { stackMarker } from './component.js';
import { kafkaComponent } from './kafka.js';
import {
  isAlive,
  isOurs,
  portIsFree,
  readPidRecord,
  removePidRecord,
  spawnDetached,
  stopProcess,
  tail,
  writePidRecord,
} from './processes.js';
import { registryComponent, registryUrl } from './registry.js';

export class StackError extends Error {
  constructor(
    message: string,
    readonly component: string,
  ) {
    super(message);
    this.name = 'StackError';
  }
}

export type ComponentState = 'ready' | 'starting' | 'stopped' | 'foreign';

export interface ComponentStatus {
  name: string;
  state: ComponentState;
  pid?: number;
  ports: number[];
  logFile: string;
  /** Started by this `up` call (false when an earlier `up` had started it). */
  started?: boolean;
  readyMs?: number;
}

export type StackConfig = Pick<Config, 'stackDir' | 'kafkaPort' | 'kafkaControllerPort' | 'registryPort' | 'stackStartTimeoutMs'> & {
  /**
   * Where data, logs and pid files live; defaults to stackDir. Downloads always stay in stackDir,
   * so a test can run a private broker next to the shared one without fetching anything again.
   */
  runDir?: string;
  /** Which components to manage; all by default. */
  only?: string[];
};

function runDirOf(config: StackConfig): string {
  return config.runDir ?? config.stackDir;
}

export function stackComponents(config: StackConfig): Component[] {
  const runDir = runDirOf(config);
  const all = [
    kafkaComponent({ stackDir: config.stackDir, runDir, port: config.kafkaPort, controllerPort: config.kafkaControllerPort }),
    registryComponent({ stackDir: config.stackDir, runDir, port: config.registryPort }),
  ];
  return config.only ? all.filter((c) => config.only?.includes(c.name)) : all;
}

function pidFile(stackDir: string, name: string): string {
  return path.join(stackDir, 'run', `${name}.json`);
}

/** Where clients should point to reach the local stack. */
export function stackEndpoints(config: StackConfig): { kafkaBrokers: string[]; schemaRegistryUrl: string } {
  return { kafkaBrokers: [`127.0.0.1:${config.kafkaPort}`], schemaRegistryUrl: registryUrl(config.registryPort) };
}

async function statusOf(config: StackConfig, c: Component): Promise<ComponentStatus> {
  const record = readPidRecord(pidFile(runDirOf(config), c.name));
  const base = { name: c.name, ports: c.ports.map((p) => p.port), logFile: c.logFile };
  if (record && isOurs(record)) {
    return { ...base, pid: record.pid, state: (await c.probe()) ? 'ready' : 'starting' };
  }
  for (const p of c.ports) {
    if (!(await portIsFree(p.port))) return { ...base, state: 'foreign' };
  }
  return { ...base, state: 'stopped' };
}

export async function stackStatus(config: StackConfig): Promise<ComponentStatus[]> {
  return Promise.all(stackComponents(config).map((c) => statusOf(config, c)));
}

async function waitReady(c: Component, pid: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (!isAlive(pid)) {
      throw new StackError(
        `${c.name} exited while starting; its log is ${c.logFile}. Last lines:\n${tail(c.logFile)}`,
        c.name,
      );
    }
    if (await c.probe()) return;
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new StackError(
    `${c.name} did not become ready within ${Math.round(timeoutMs / 1000)} s (pid ${pid}, ports ${c.ports.map((p) => p.port).join(', ')}); its log is ${c.logFile}. Last lines:\n${tail(c.logFile)}`,
    c.name,
  );
}

/**
 * Starts what is not running, reuses what an earlier `up` started, and refuses a port that some
 * other process holds. Components start in parallel (Kafka and the registry do not depend on each
 * other); topics are ensured once Kafka answers.
 */
export async function stackUp(config: StackConfig, log: Logger): Promise<ComponentStatus[]> {
  return withUpLock(config, log, () => up(config, log));
}

/**
 * One `up` at a time per stack directory, across processes. Two at once (`npm start` in one
 * terminal while `npm test` starts the stack in another) each found the components stopped and
 * started them: the second process died on the first's lock or port, yet passed its readiness
 * check against the first and overwrote its pid file, leaving a live process that `stack down`
 * no longer knew. The one waiting now plans after the first is done, and reuses what it started.
 * Downloads live in stackDir too, so a second fetch cannot unpack over the first.
 */
async function withUpLock<T>(config: StackConfig, log: Logger, fn: () => Promise<T>): Promise<T> {
  mkdirSync(config.stackDir, { recursive: true });
  const lock = path.join(config.stackDir, 'up.lock');
  const deadline = Date.now() + 15 * 60_000;
  let told = false;
  for (;;) {
    try {
      writeFileSync(lock, String(process.pid), { flag: 'wx', mode: 0o600 });
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    let holder = Number.NaN;
    try {
      holder = Number(readFileSync(lock, 'utf8'));
    } catch {
      continue; // released in between
    }
    // An empty file is a holder between creating and writing it; a dead holder crashed.
    if (Number.isInteger(holder) && holder > 0 && !isAlive(holder)) {
      rmSync(lock, { force: true });
      continue;
    }
    if (Date.now() > deadline) {
      throw new StackError(`Another dlog (pid ${holder}) has been starting the local stack for 15 minutes; if it is gone, delete ${lock}.`, 'stack');
    }
    if (!told) {
      log.info({ pid: holder }, 'another dlog is starting the local stack: waiting for it');
      told = true;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  try {
    return await fn();
  } finally {
    rmSync(lock, { force: true });
  }
}

async function up(config: StackConfig, log: Logger): Promise<ComponentStatus[]> {
  const components = stackComponents(config);
  // Check every port before starting anything, so a conflict leaves nothing half-started.
  const plans: { c: Component; reuse: number | undefined }[] = [];
  for (const c of components) {
    const record = readPidRecord(pidFile(runDirOf(config), c.name));
    if (record && isOurs(record)) {
      plans.push({ c, reuse: record.pid });
      continue;
    }
    if (record) removePidRecord(pidFile(runDirOf(config), c.name));
    for (const p of c.ports) {
      if (!(await portIsFree(p.port))) {
        throw new StackError(
          `Port ${p.port} on 127.0.0.1 is already taken by another process, so ${c.name} cannot start. Stop that process, or pick a free port with ${p.env}=<port>.`,
          c.name,
        );
      }
    }
    plans.push({ c, reuse: undefined });
  }
  // Maven runs one at a time: two builds writing the same local repository can corrupt it.
  for (const { c, reuse } of plans) {
    if (reuse === undefined) await c.provision((msg) => log.info({ component: c.name }, msg));
  }

  const statuses = await Promise.all(
    plans.map(async ({ c, reuse }): Promise<ComponentStatus> => {
      const t0 = Date.now();
      const base = { name: c.name, ports: c.ports.map((p) => p.port), logFile: c.logFile };
      if (reuse !== undefined) {
        await waitReady(c, reuse, config.stackStartTimeoutMs);
        log.info({ component: c.name, pid: reuse }, 'already running: reused');
        return { ...base, state: 'ready', pid: reuse, started: false, readyMs: Date.now() - t0 };
      }
      await c.prepare();
      const pid = spawnDetached(c.spawnSpec());
      writePidRecord(pidFile(runDirOf(config), c.name), {
        name: c.name,
        pid,
        ports: base.ports,
        startedAt: new Date().toISOString(),
        marker: stackMarker(c.name, runDirOf(config)),
      });
      try {
        await waitReady(c, pid, config.stackStartTimeoutMs);
      } catch (err) {
        await stopProcess(pid, 5_000);
        removePidRecord(pidFile(runDirOf(config), c.name));
        throw err;
      }
      log.info({ component: c.name, pid, ms: Date.now() - t0 }, 'started');
      return { ...base, state: 'ready', pid, started: true, readyMs: Date.now() - t0 };
    }),
  );

  if (!components.some((c) => c.name === 'kafka')) return statuses;
  const kafka = createKafka({ brokers: stackEndpoints(config).kafkaBrokers, clientId: 'dlog-stack', log });
  const admin = kafka.admin();
  await admin.connect();
  try {
    const created = await ensureTopics(admin, loadTopicDefinitions());
    if (created.length > 0) log.info({ topics: created }, 'topics created');
  } finally {
    await admin.disconnect();
  }
  return statuses;
}

/** Stops only the processes that `stack up` started, in reverse order of dependence. */
export async function stackDown(config: StackConfig, log: Logger, only?: string[]): Promise<string[]> {
  const stopped: string[] = [];
  for (const c of stackComponents(config).reverse()) {
    if (only && !only.includes(c.name)) continue;
    const file = pidFile(runDirOf(config), c.name);
    const record = readPidRecord(file);
    if (!record) continue;
    if (isOurs(record)) {
      const how = await stopProcess(record.pid, c.stopGraceMs);
      log.info({ component: c.name, pid: record.pid, how }, 'stopped');
      stopped.push(c.name);
    }
    removePidRecord(file);
  }
  return stopped;
}
