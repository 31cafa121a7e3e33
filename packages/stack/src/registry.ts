import { existsSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { stackMarker, type Component } from './component.js';
import { isWholeJar, runMaven } from './maven.js';

/**
 * Apicurio Registry 3.0.9: its prebuilt Quarkus distribution from Maven Central, serving the
 * Confluent-compatible API at /apis/ccompat/v7. 3.0.9 is the newest 3.x compiled for Java 17
 * (3.3.x needs Java 21).
 *
 * Storage is H2 in a file under the run directory rather than in memory: Kafka keeps its data
 * across restarts, and every record on it names a schema id. An in-memory registry would hand out
 * ids afresh after a restart, so old records would become undecodable or, worse, decode with
 * another schema.
 */
export const apicurioVersion = '3.0.9';

const pom = fileURLToPath(new URL('../../../infra/stack/apicurio/pom.xml', import.meta.url));

/** How many entries the distribution's lib/ holds, whole (3.0.9). */
const apicurioLibraries = 359;

/**
 * The jars in `dir` that are whole (isWholeJar): a jar cut short while it was unpacked is not, and
 * one such jar among the 359 failed every start.
 */
export function wholeJars(dir: string): number {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return 0;
  }
  return names.filter((name) => isWholeJar(path.join(dir, name))).length;
}

export function registryComponent(opts: { stackDir: string; runDir: string; port: number }): Component {
  const home = path.join(opts.stackDir, `apicurio-${apicurioVersion}`);
  const jar = path.join(home, `apicurio-registry-app-${apicurioVersion}-runner.jar`);
  const complete = path.join(home, '.complete');
  const base = `http://127.0.0.1:${opts.port}`;
  return {
    name: 'registry',
    ports: [{ env: 'DLOG_REGISTRY_PORT', port: opts.port }],
    logFile: path.join(opts.runDir, 'logs', 'registry.log'),
    stopGraceMs: 10_000,
    async provision(log) {
      // The marker, not the jar: the runner jar is unpacked before its 359 libraries, so a Ctrl-C
      // during the first fetch left a jar that failed at every start on a missing class.
      if (existsSync(complete)) return;
      // An install from before the marker, whole: adopted, not fetched again (a registry may be
      // running from it, and a user may be offline).
      if (existsSync(jar) && wholeJars(path.join(home, 'lib')) >= apicurioLibraries) {
        writeFileSync(complete, `${new Date().toISOString()} (adopted)\n`);
        return;
      }
      // Unpacked beside it and moved into place whole, so no start ever sees half an install.
      const partial = `${home}.partial`;
      rmSync(partial, { recursive: true, force: true });
      log(`fetching Apicurio Registry ${apicurioVersion} from Maven Central`);
      await runMaven(['-f', pom, 'package', `-Dapicurio.version=${apicurioVersion}`, `-Dapicurio.out=${partial}`], log);
      if (!existsSync(path.join(partial, path.basename(jar)))) throw new Error(`Apicurio Registry was fetched but ${path.basename(jar)} is missing from ${partial}`);
      rmSync(home, { recursive: true, force: true });
      renameSync(partial, home);
      writeFileSync(complete, `${new Date().toISOString()}\n`);
    },
    async prepare() {},
    spawnSpec() {
      return {
        command: 'java',
        args: [
          stackMarker('registry', opts.runDir),
          // Small heap, serial GC and C1 only: the registry shares 2 cores with Kafka and the workers.
          '-Xms64m',
          '-Xmx512m',
          '-XX:+UseSerialGC',
          '-XX:TieredStopAtLevel=1',
          '-XX:ReservedCodeCacheSize=64m',
          '-XX:+ExitOnOutOfMemoryError',
          '-Dquarkus.http.host=127.0.0.1',
          `-Dquarkus.http.port=${opts.port}`,
          '-Dapicurio.storage.kind=sql',
          '-Dapicurio.storage.sql.kind=h2',
          `-Dapicurio.datasource.url=jdbc:h2:file:${path.join(opts.runDir, 'registry', 'db')}`,
          '-Dapicurio.datasource.jdbc.initial-size=2',
          '-Dapicurio.datasource.jdbc.min-size=2',
          '-Dapicurio.datasource.jdbc.max-size=20',
          '-Dquarkus.oidc.tenant-enabled=false',
          '-Dapicurio.authn.basic-client-credentials.enabled=false',
          '-Dquarkus.http.access-log.enabled=false',
          '-jar',
          jar,
        ],
        cwd: home,
        logFile: this.logFile,
      };
    },
    async probe() {
      try {
        const res = await fetch(`${base}/health/ready`, { signal: AbortSignal.timeout(2_000) });
        return res.ok;
      } catch {
        return false;
      }
    },
  };
}

export function registryUrl(port: number): string {
  return `http://127.0.0.1:${port}/apis/ccompat/v7`;
}
