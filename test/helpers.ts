import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { loadConfig, type Config } from '@dlog/config';
import { ensureTopics, type TopicDefinition } from '@dlog/kafka';
import { createLogger, retry, type Logger } from '@dlog/runtime';
import type { Kafka } from 'kafkajs';

export { waitFor } from '@dlog/runtime';

/** Integration tests use the same config as the services: the local stack unless env says otherwise. */
export const config: Config = loadConfig();

export const log: Logger = createLogger({ name: 'test', level: process.env.LOG_LEVEL ?? 'warn' });

/**
 * Random names keep tests independent of each other and of earlier runs on the same broker. Under
 * `npm test` they carry the run's id, by which the runner deletes the run's topics afterwards.
 */
export function unique(prefix: string): string {
  const run = process.env.TEST_RUN_ID ? `${process.env.TEST_RUN_ID}-` : '';
  return `${prefix}-${run}${Date.now().toString(36)}-${randomBytes(4).toString('hex')}`;
}

export function tempDir(prefix: string): string {
  return mkdtempSync(path.join(tmpdir(), `dlog-${prefix}-`));
}

/**
 * A step with a deadline, failing with its name when it does not settle. For teardown: a stop
 * that hangs would otherwise hold the file until the runner's timeout, and a timed-out file
 * reports nothing of what failed before it, not even the error of its own setup.
 */
export async function finishes<T>(what: string, ms: number, p: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** A free TCP port on loopback (the OS picks it; it is released before use). */
export async function freePort(): Promise<number> {
  const net = await import('node:net');
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const port = (server.address() as { port: number }).port;
      server.close(() => resolve(port));
    });
  });
}

export interface PrivateKafka {
  brokers: string[];
  /** Clean stop (SIGTERM); data is kept for the next start. */
  stop(): Promise<void>;
  start(): Promise<void>;
}

/** Creates topics on a broker that may have just started and not yet serve metadata for them. */
export async function ensureTopicsSoon(kafka: Kafka, topics: TopicDefinition[]): Promise<void> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    await retry(() => ensureTopics(admin, topics), { attempts: 10, initialMs: 500, maxMs: 3_000, retryOn: () => true });
  } finally {
    await admin.disconnect();
  }
}

/**
 * A broker of the test's own, for tests that stop or restart Kafka without disturbing the shared
 * one. Same jars as the shared stack (nothing is downloaded), its own ports, data and logs.
 */
export async function startPrivateKafka(): Promise<PrivateKafka> {
  const { stackDown, stackUp } = await import('@dlog/stack');
  const cfg = {
    ...config,
    runDir: tempDir('kafka'),
    only: ['kafka'],
    kafkaPort: await freePort(),
    kafkaControllerPort: await freePort(),
  };
  await stackUp(cfg, log);
  return {
    brokers: [`127.0.0.1:${cfg.kafkaPort}`],
    stop: async () => {
      await stackDown(cfg, log);
    },
    start: async () => {
      await stackUp(cfg, log);
    },
  };
}

export interface Collected {
  messages: import('kafkajs').KafkaMessage[];
  stop(): Promise<void>;
}

/** Reads a topic from the beginning as a read_committed consumer, keeping every message. */
export async function collect(topic: string, brokers: string[] = config.kafkaBrokers): Promise<Collected> {
  const { createKafka } = await import('@dlog/kafka');
  const kafka = createKafka({ brokers, clientId: 'test-collect', log });
  const consumer = kafka.consumer({ groupId: unique('collect'), readUncommitted: false, maxWaitTimeInMs: 200 });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const messages: import('kafkajs').KafkaMessage[] = [];
  await consumer.run({
    eachBatch: async ({ batch }) => {
      for (const m of batch.messages) messages.push(m);
    },
  });
  return { messages, stop: () => consumer.disconnect() };
}
