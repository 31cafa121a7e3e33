import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { spawn } from 'node:child_process';
import { Kafka, logLevel } from 'kafkajs';
import { stackMarker, type Component } from './component.js';
import { damagedJars, isWholeJar, runMaven } from './maven.js';

/** Apache Kafka, KRaft combined broker+controller, from the jars on Maven Central. */
export const kafkaVersion = '4.4.0';

const here = fileURLToPath(new URL('../../../infra/stack/kafka/', import.meta.url));

/** The jars the fetch listed in `sourcesFile`, by their absolute paths in the local Maven repository; none when it is missing (a fetch from before it was written). */
function listedSources(sourcesFile: string): string[] {
  try {
    return readFileSync(sourcesFile, 'utf8').trim().split(path.delimiter).filter((f) => f !== '');
  } catch {
    return [];
  }
}

/** The jars in `libs` that are damaged, and those the fetch listed that are gone: either fails the broker's start. */
function libraryProblems(libs: string, sourcesFile: string): string[] {
  let present: Set<string>;
  try {
    present = new Set(readdirSync(libs));
  } catch {
    return ['libs/ is missing'];
  }
  if (present.size === 0) return ['libs/ is empty'];
  const missing = listedSources(sourcesFile)
    .map((f) => path.basename(f))
    .filter((name) => !present.has(name));
  return [...damagedJars(libs), ...missing];
}

/**
 * The local Maven repository's copies of the named jars, as the fetch listed them, that are
 * damaged: Maven does not check what it already holds, so it would copy them again. A copy that is
 * gone is not among them: Maven fetches it again.
 */
function damagedCopies(names: string[], sourcesFile: string): string[] {
  const wanted = new Set(names);
  return listedSources(sourcesFile).filter((f) => wanted.has(path.basename(f)) && existsSync(f) && !isWholeJar(f));
}

function damagedInRepository(files: string[]): Error {
  return new Error(
    `${files.length === 1 ? 'A jar' : `${files.length} jars`} of Apache Kafka ${kafkaVersion} in your local Maven repository ${files.length === 1 ? 'is' : 'are'} damaged ` +
      '(cut short, or not a jar: a download whose checksum failed, which Maven kept with only a warning), so the broker cannot start. ' +
      `Delete ${files.length === 1 ? 'it' : 'them'}, and stack up fetches ${files.length === 1 ? 'it' : 'them'} again, checking checksums:\n  rm ${files.join(' ')}`,
  );
}

export function kafkaComponent(opts: { stackDir: string; runDir: string; port: number; controllerPort: number }): Component {
  const home = path.join(opts.stackDir, `kafka-${kafkaVersion}`);
  const libs = path.join(home, 'libs');
  const complete = path.join(home, '.complete');
  // Where each jar came from in the local Maven repository, written by the fetch: what to delete
  // when a jar Maven kept is damaged, and which jars libs/ must hold.
  const sources = path.join(home, 'classpath.txt');
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
      if (existsSync(complete)) {
        // Checked on every start, as a jar damaged after the fetch (or one Maven kept damaged before
        // checksums were strict) failed every start with "kafka exited while starting". The check
        // reads each jar's last bytes only.
        const problems = libraryProblems(libs, sources);
        if (problems.length === 0) return;
        // A copy in the local Maven repository that is damaged too would only be copied again.
        const damagedSources = damagedCopies(problems, sources);
        if (damagedSources.length > 0) throw damagedInRepository(damagedSources);
        log(`Kafka jar(s) in ${libs} are damaged or missing (${problems.join(', ')}): fetching them again`);
        rmSync(complete, { force: true });
      }
      // Whatever an interrupted fetch left goes first: Maven keeps a jar cut short by a hard kill
      // (it is newer than the one in the local repository), and the broker then failed to start
      // on a missing class every time, with the directory marked complete.
      rmSync(libs, { recursive: true, force: true });
      rmSync(sources, { force: true });
      log(`fetching Apache Kafka ${kafkaVersion} jars from Maven Central`);
      await runMaven(
        [
          '-f',
          path.join(here, 'pom.xml'),
          `-Dkafka.version=${kafkaVersion}`,
          'dependency:copy-dependencies',
          'dependency:build-classpath',
          '-DincludeScope=runtime',
          `-DoutputDirectory=${libs}`,
          `-Dmdep.outputFile=${sources}`,
        ],
        log,
      );
      // Not marked complete unless whole: Maven copies what its local repository holds, and a
      // download kept there before checksums were strict is not fetched again.
      const problems = libraryProblems(libs, sources);
      if (problems.length > 0) {
        const copies = damagedCopies(problems, sources);
        throw copies.length > 0
          ? damagedInRepository(copies)
          : new Error(`Fetching Apache Kafka ${kafkaVersion} left damaged or missing jars in ${libs}: ${problems.join(', ')}. Run stack up again to fetch them again.`);
      }
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
