import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { spawn } from 'node:child_process';
import { Kafka, logLevel } from 'kafkajs';
import { stackMarker, type Component } from './component.js';
import { runMaven } from './maven.js';

/** Apache Kafka, KRaft combined broker+controller, from the jars on Maven Central. */
export const kafkaVersion = '4.4.0';

const here = fileURLToPath(new URL('../../../infra/stack/kafka/', import.meta.url));

export function kafkaComponent(opts: { stackDir: string; runDir: string; port: number; controllerPort: number }): Component {
  const libs = path.join(opts.stackDir, `kafka-${kafkaVersion}`, 'libs');
  const complete = path.join(opts.stackDir, `kafka-${kafkaVersion}`, '.complete');
  const dataDir = path.join(opts.runDir, 'kafka');
  const logsDir = path.join(dataDir, 'logs');
  const propsFile = path.join(dataDir, 'server.properties');
  const classpath = `${libs}/*`;
  const logConfig = [`-Dkafka.logs.dir=${logsDir}`, `-Dlog4j2.configurationFile=${path.join(here, 'log4j2.yaml')}`];

  const writeProperties = () => {
    const template = readFileSync(path.join(here, 'server.properties.template'), 'utf8');
    // The broker's segments hold inference.raw and its dead letters (raw personal data), written
    // readable by all: the directory above them is this user's alone.
    mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    chmodSync(dataDir, 0o700);
    mkdirSync(logsDir, { recursive: true });
    writeFileSync(
      propsFile,
      template
        .replaceAll('@PORT@', String(opts.port))
        .replaceAll('@CONTROLLER_PORT@', String(opts.controllerPort))
        .replaceAll('@DATA_DIR@', dataDir),
    );
  };

  return {
    name: 'kafka',
    ports: [
      { env: 'DLOG_KAFKA_PORT', port: opts.port },
      { env: 'DLOG_KAFKA_CONTROLLER_PORT', port: opts.controllerPort },
    ],
    logFile: path.join(logsDir, 'stdout.log'),
    // A clean KRaft shutdown flushes and closes every log segment; killing it costs a slow
    // recovery on the next start.
    stopGraceMs: 30_000,
    async provision(log) {
      if (existsSync(complete)) return;
      // Whatever an interrupted fetch left goes first: Maven keeps a jar cut short by a hard kill
      // (it is newer than the one in the local repository), and the broker then failed to start
      // on a missing class every time, with the directory marked complete.
      rmSync(libs, { recursive: true, force: true });
      log(`fetching Apache Kafka ${kafkaVersion} jars from Maven Central`);
      await runMaven(
        [
          '-f',
          path.join(here, 'pom.xml'),
          `-Dkafka.version=${kafkaVersion}`,
          'dependency:copy-dependencies',
          '-DincludeScope=runtime',
          `-DoutputDirectory=${libs}`,
        ],
        log,
      );
      writeFileSync(complete, `${new Date().toISOString()}\n`);
    },
    async prepare() {
      writeProperties();
      if (existsSync(path.join(dataDir, 'data', 'meta.properties'))) return;
      // Same form as `kafka-storage random-uuid`: 16 random bytes, base64url without padding.
      let clusterId: string;
      // The storage tool would read a leading '-' as an option.
      do clusterId = randomBytes(16).toString('base64url');
      while (clusterId.startsWith('-'));
      await new Promise<void>((resolve, reject) => {
        const child = spawn(
          'java',
          ['-Xmx256m', '-XX:TieredStopAtLevel=1', ...logConfig, '-cp', classpath, 'kafka.tools.StorageTool', 'format', '-t', clusterId, '-c', propsFile],
          { stdio: ['ignore', 'pipe', 'pipe'] },
        );
        let out = '';
        child.stdout.on('data', (c: Buffer) => (out += c.toString()));
        child.stderr.on('data', (c: Buffer) => (out += c.toString()));
        child.once('error', reject);
        child.once('close', (code) =>
          code === 0 ? resolve() : reject(new Error(`Formatting Kafka storage in ${dataDir} failed (exit ${code}):\n${out.trim()}`)),
        );
      });
    },
    spawnSpec() {
      return {
        command: 'java',
        args: [
          stackMarker('kafka', opts.runDir),
          '-Xms256m',
          '-Xmx768m',
          '-XX:+UseG1GC',
          '-XX:MaxGCPauseMillis=20',
          '-XX:InitiatingHeapOccupancyPercent=35',
          '-XX:+ExplicitGCInvokesConcurrent',
          '-XX:MaxDirectMemorySize=256m',
          '-XX:+ExitOnOutOfMemoryError',
          '-Djava.awt.headless=true',
          ...logConfig,
          '-cp',
          classpath,
          'kafka.Kafka',
          propsFile,
        ],
        cwd: dataDir,
        logFile: this.logFile,
      };
    },
    async probe() {
      const kafka = new Kafka({
        clientId: 'dlog-stack-probe',
        brokers: [`127.0.0.1:${opts.port}`],
        connectionTimeout: 1_000,
        requestTimeout: 2_000,
        retry: { retries: 0 },
        logLevel: logLevel.NOTHING,
      });
      const admin = kafka.admin();
      try {
        await admin.connect();
        const cluster = await admin.describeCluster();
        return cluster.brokers.length > 0 && cluster.controller !== null;
      } catch {
        return false;
      } finally {
        await admin.disconnect().catch(() => {});
      }
    },
  };
}
