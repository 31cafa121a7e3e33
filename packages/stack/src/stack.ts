import { createHash, randomUUID } from 'node:crypto';
import { mkdirSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import type { Config } from '@dlog/config';
import { createKafka, ensureTopics, loadTopicDefinitions } from '@dlog/kafka';
import type { Logger } from 'pino';
import type { Component, ComponentPort } from './component.js';
import { stackMarker } from './component.js';
import { kafkaComponent } from './kafka.js';
import {
  isAlive,
  type PidRecord,
  isOurs,
  portBlocked,
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

/** `elsewhere`: ours, running from an earlier `stack up` on other ports than configured now. */
export type ComponentState = 'ready' | 'starting' | 'stopped' | 'foreign' | 'elsewhere';

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

function samePorts(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((p, i) => p === b[i]);
}

/** Said when a component of ours runs on other ports than the configuration names now. */
function movedPortsError(c: Component, record: PidRecord): StackError {
  const envs = c.ports.map((p) => p.env).join(' / ');
  return new StackError(
    `${c.name} already runs (pid ${record.pid}) from an earlier \`stack up\` on port(s) ${record.ports.join(',')}, but ${envs} now say(s) ${c.ports.map((p) => p.port).join(',')}. ` +
      `Stop it first (npm run dlog -- stack down), or unset ${envs} to use it where it is.`,
    c.name,
  );
}

/**
 * Why a component cannot listen on its port, by the listen error's code, naming the setting that
 * moves it. Every code used to read "taken by another process", which sent a user whose port was
 * privileged looking for a process that did not exist.
 */
export function portError(component: string, p: ComponentPort, code: string): StackError {
  const where = `Port ${p.port} on 127.0.0.1`;
  switch (code) {
    case 'EADDRINUSE':
      return new StackError(`${where} is already taken by another process, so ${component} cannot start. Stop that process, or pick a free port with ${p.env}=<port>.`, component);
    case 'EACCES':
      return new StackError(
        p.port < 1024
          ? `${where} is privileged: only root may listen on ports below 1024 (EACCES), so ${component} cannot start. Pick a port from 1024 up with ${p.env}=<port>.`
          : `${where} may not be listened on by this user (EACCES: a security policy refuses it), so ${component} cannot start. Pick another port with ${p.env}=<port>.`,
        component,
      );
    case 'EADDRNOTAVAIL':
      return new StackError(
        `${component} cannot listen on ${where.toLowerCase()}: 127.0.0.1 is not an address of this machine (EADDRNOTAVAIL: its loopback interface is down or missing), ` +
          `and the local stack listens on loopback only, so no port setting (${p.env}) changes that. Bring the loopback interface up (ip link set lo up), ` +
          'or use servers elsewhere: set KAFKA_BROKERS and SCHEMA_REGISTRY_URL and run dlog up --no-stack.',
        component,
      );
    default:
      return new StackError(`${component} cannot listen on ${where.toLowerCase()} (${code}). Pick another port with ${p.env}=<port>.`, component);
  }
}

async function statusOf(config: StackConfig, c: Component): Promise<ComponentStatus> {
  const record = readPidRecord(pidFile(runDirOf(config), c.name));
  const base = { name: c.name, ports: c.ports.map((p) => p.port), logFile: c.logFile };
  if (record && isOurs(record)) {
    if (!samePorts(record.ports, base.ports)) return { ...base, ports: record.ports, pid: record.pid, state: 'elsewhere' };
    return { ...base, pid: record.pid, state: (await c.probe()) ? 'ready' : 'starting' };
  }
  for (const p of c.ports) {
    // A port we may not listen on (privileged, or on an address this machine lacks) holds nothing:
    // `up` says why it cannot start there.
    if ((await portBlocked(p.port)) === 'EADDRINUSE') return { ...base, state: 'foreign' };
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
 *
 * `libraryLog` takes kafkajs's own log (`log` when not given). The CLI gives it a quieter one: on a
 * broker whose topics are new kafkajs logs "not the leader" and "coordinator is loading" at error
 * level while it retries them, and they buried the status lines of a first `npm start`.
 */
export async function stackUp(config: StackConfig, log: Logger, libraryLog: Logger = log): Promise<ComponentStatus[]> {
  return withUpLock(config, log, () => up(config, log, libraryLog));
}

/**
 * One `up` at a time per stack directory, across processes. Two at once (`npm start` in one
 * terminal while `npm test` starts the stack in another) each found the components stopped and
 * started them: the second process died on the first's lock or port, yet passed its readiness
 * check against the first and overwrote its pid file, leaving a live process that `stack down`
 * no longer knew. The one waiting now plans after the first is done, and reuses what it started.
 * Downloads live in stackDir too, so a second fetch cannot unpack over the first.
 *
 * On Linux the lock is a listening socket in the abstract namespace, named after the directory:
 * the kernel gives it to one process at a time and takes it back when that process ends, however
 * it ends, so there is no stale lock to judge (a pid file was judged by whether its pid was alive:
 * a pid reused after a reboot held it for 15 minutes, and two processes clearing one stale file
 * could both end up holding it). Elsewhere it is a file created exclusively, released by its owner.
 */
async function withUpLock<T>(config: StackConfig, log: Logger, fn: () => Promise<T>): Promise<T> {
  mkdirSync(config.stackDir, { recursive: true });
  const release = process.platform === 'linux' ? await socketLock(config.stackDir, log) : await fileLock(config.stackDir, log);
  try {
    return await fn();
  } finally {
    await release();
  }
}

const lockWaitMs = 15 * 60_000;

function waiting(log: Logger, holder: string): void {
  // The CLI's logger is quiet unless LOG_LEVEL asks: say it where a person waiting will see it.
  process.stderr.write(`dlog: another dlog (${holder}) is starting the local stack; waiting for it\n`);
  log.info({ holder }, 'another dlog is starting the local stack: waiting for it');
}

async function socketLock(stackDir: string, log: Logger): Promise<() => Promise<void>> {
  const name = `\0dlog-stack-up-${createHash('sha256').update(realpathSync(stackDir)).digest('hex').slice(0, 40)}`;
  const deadline = Date.now() + lockWaitMs;
  let told = false;
  for (;;) {
    const server = net.createServer((socket) => socket.destroy());
    const got = await new Promise<boolean>((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) => (err.code === 'EADDRINUSE' ? resolve(false) : reject(err)));
      server.listen(name, () => resolve(true));
    });
    if (got) {
      server.unref();
      return () => new Promise<void>((resolve) => server.close(() => resolve()));
    }
    if (Date.now() > deadline) throw new StackError(`Another dlog has been starting the local stack in ${stackDir} for 15 minutes; stop it, or wait for it.`, 'stack');
    if (!told) waiting(log, `same stack directory ${stackDir}`);
    told = true;
    await new Promise((r) => setTimeout(r, 250));
  }
}

async function fileLock(stackDir: string, log: Logger): Promise<() => Promise<void>> {
  const lock = path.join(stackDir, 'up.lock');
  const mine = `${process.pid} ${randomUUID()}`;
  const deadline = Date.now() + lockWaitMs;
  let told = false;
  for (;;) {
    try {
      writeFileSync(lock, mine, { flag: 'wx', mode: 0o600 });
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    let content: string;
    try {
      content = readFileSync(lock, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue; // released in between
      throw new StackError(`Cannot read the lock ${lock}: ${(err as Error).message}`, 'stack');
    }
    const holder = Number(content.split(' ')[0]);
    // An empty file is a holder between creating and writing it; a dead holder crashed. Its file
    // goes only if it still holds what was read, so a lock taken meanwhile is not removed.
    if (Number.isInteger(holder) && holder > 0 && holder !== process.pid && !isAlive(holder)) {
      try {
        if (readFileSync(lock, 'utf8') === content) rmSync(lock, { force: true });
      } catch {
        // gone already
      }
      continue;
    }
    if (Date.now() > deadline) throw new StackError(`Another dlog (pid ${holder}) has been starting the local stack for 15 minutes; if it is gone, delete ${lock}.`, 'stack');
    if (!told) waiting(log, `pid ${holder}`);
    told = true;
    await new Promise((r) => setTimeout(r, 250));
  }
  return async () => {
    try {
      if (readFileSync(lock, 'utf8') === mine) rmSync(lock, { force: true });
    } catch {
      // gone already
    }
  };
}

async function up(config: StackConfig, log: Logger, libraryLog: Logger): Promise<ComponentStatus[]> {
  const components = stackComponents(config);
  // Check every port before starting anything, so a conflict leaves nothing half-started.
  const plans: { c: Component; reuse: number | undefined }[] = [];
  for (const c of components) {
    const record = readPidRecord(pidFile(runDirOf(config), c.name));
    if (record && isOurs(record)) {
      // Reusing it would wait for the configured ports, where it does not listen, until the timeout.
      if (!samePorts(record.ports, c.ports.map((p) => p.port))) throw movedPortsError(c, record);
      plans.push({ c, reuse: record.pid });
      continue;
    }
    if (record) removePidRecord(pidFile(runDirOf(config), c.name));
    for (const p of c.ports) {
      const blocked = await portBlocked(p.port);
      if (blocked !== undefined) throw portError(c.name, p, blocked);
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
  const kafka = createKafka({ brokers: stackEndpoints(config).kafkaBrokers, clientId: 'dlog-stack', log: libraryLog });
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
