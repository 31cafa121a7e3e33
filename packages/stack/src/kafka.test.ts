import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { kafkaComponent, kafkaVersion } from './kafka.js';

/** The smallest whole zip: its end-of-central-directory record alone, after some content. */
const wholeJar = Buffer.concat([Buffer.alloc(2000, 0x41), Buffer.from([0x50, 0x4b, 0x05, 0x06]), Buffer.alloc(18)]);
/** What a download cut short leaves: the start of a jar, without its end. */
const cutJar = wholeJar.subarray(0, 1000);

/**
 * A stack directory with Kafka fetched and marked complete, a local Maven repository it came from,
 * and a `mvn` on PATH that copies that repository the way dependency:copy-dependencies and
 * dependency:build-classpath do, recording its arguments: no network, no real Maven.
 */
function fetchedKafka(jars: { libs: Record<string, Buffer>; repository: Record<string, Buffer>; complete: boolean }) {
  const dir = mkdtempSync(path.join(tmpdir(), 'dlog-kafka-jars-'));
  const home = path.join(dir, 'stack', `kafka-${kafkaVersion}`);
  const libs = path.join(home, 'libs');
  const repository = path.join(dir, 'm2');
  mkdirSync(libs, { recursive: true });
  mkdirSync(repository);
  for (const [name, bytes] of Object.entries(jars.libs)) writeFileSync(path.join(libs, name), bytes);
  for (const [name, bytes] of Object.entries(jars.repository)) writeFileSync(path.join(repository, name), bytes);
  writeFileSync(path.join(home, 'classpath.txt'), Object.keys(jars.repository).map((n) => path.join(repository, n)).join(path.delimiter));
  if (jars.complete) writeFileSync(path.join(home, '.complete'), 'earlier\n');
  const bin = path.join(dir, 'bin');
  const calls = path.join(dir, 'mvn-calls');
  mkdirSync(bin);
  writeFileSync(
    path.join(bin, 'mvn'),
    `#!/bin/sh
echo "$@" >> '${calls}'
for a in "$@"; do
  case "$a" in
    -DoutputDirectory=*) out="\${a#-DoutputDirectory=}" ;;
    -Dmdep.outputFile=*) list="\${a#-Dmdep.outputFile=}" ;;
  esac
done
mkdir -p "$out" && cp '${repository}'/*.jar "$out"/ && ls '${repository}'/*.jar | tr '\\n' ':' > "$list"
`,
  );
  chmodSync(path.join(bin, 'mvn'), 0o755);
  const component = kafkaComponent({ stackDir: path.join(dir, 'stack'), runDir: path.join(dir, 'stack'), port: 19092, controllerPort: 19093 });
  return {
    home,
    libs,
    repository,
    /** The arguments of each mvn run. */
    mavenRuns: () => (existsSync(calls) ? readFileSync(calls, 'utf8').trim().split('\n') : []),
    async provision(): Promise<string[]> {
      const said: string[] = [];
      const path0 = process.env.PATH;
      process.env.PATH = `${bin}${path.delimiter}${path0 ?? ''}`;
      try {
        await component.provision((m) => said.push(m));
      } finally {
        process.env.PATH = path0;
      }
      return said;
    },
  };
}

describe('local Kafka', () => {
  it('keeps its data directory (inference.raw, dead letters: raw personal data) to this user alone', async () => {
    const runDir = mkdtempSync(path.join(tmpdir(), 'dlog-kafka-'));
    const dataDir = path.join(runDir, 'kafka');
    // Formatted before (so prepare writes its properties and stops), and left readable by all.
    mkdirSync(path.join(dataDir, 'data'), { recursive: true, mode: 0o755 });
    writeFileSync(path.join(dataDir, 'data', 'meta.properties'), 'cluster.id=x\n');
    await kafkaComponent({ stackDir: runDir, runDir, port: 19092, controllerPort: 19093 }).prepare();
    assert.equal(statSync(dataDir).mode & 0o777, 0o700);
  });

  it('trusts whole jars under its marker without running Maven', async () => {
    const k = fetchedKafka({ libs: { 'a.jar': wholeJar, 'b.jar': wholeJar }, repository: { 'a.jar': wholeJar, 'b.jar': wholeJar }, complete: true });
    assert.deepEqual(await k.provision(), []);
    assert.deepEqual(k.mavenRuns(), []);
  });

  it('fetches again a jar damaged after it was marked complete, with strict checksums', async () => {
    // Before, the marker alone was trusted: every `stack up` failed with "kafka exited while starting".
    const k = fetchedKafka({ libs: { 'a.jar': wholeJar, 'b.jar': cutJar }, repository: { 'a.jar': wholeJar, 'b.jar': wholeJar }, complete: true });
    const said = await k.provision();
    assert.match(said.join('\n'), /damaged or missing \(b\.jar\): fetching them again/);
    const runs = k.mavenRuns();
    assert.equal(runs.length, 1);
    assert.match(runs[0]!, /(^| )--strict-checksums( |$)/, 'a download whose checksum fails is refused, not kept with a warning');
    assert.deepEqual(readFileSync(path.join(k.libs, 'b.jar')), wholeJar);
    assert.ok(existsSync(path.join(k.home, '.complete')));
    // A jar the fetch listed that is gone is fetched again too.
    const gone = fetchedKafka({ libs: { 'a.jar': wholeJar }, repository: { 'a.jar': wholeJar, 'b.jar': wholeJar }, complete: true });
    assert.match((await gone.provision()).join('\n'), /\(b\.jar\): fetching them again/);
    assert.deepEqual(readFileSync(path.join(gone.libs, 'b.jar')), wholeJar);
  });

  it('names the damaged jar in the local Maven repository to delete, and never marks such a fetch complete', async () => {
    // Maven does not check what its repository already holds, so fetching again copies the same damage.
    const marked = fetchedKafka({ libs: { 'a.jar': wholeJar, 'b.jar': cutJar }, repository: { 'a.jar': wholeJar, 'b.jar': cutJar }, complete: true });
    await assert.rejects(marked.provision(), (err: Error) => {
      assert.match(err.message, /in your local Maven repository is damaged/);
      assert.ok(err.message.endsWith(`rm ${path.join(marked.repository, 'b.jar')}`), err.message);
      return true;
    });
    assert.deepEqual(marked.mavenRuns(), [], 'copying the damaged jar again would not help');

    const fresh = fetchedKafka({ libs: {}, repository: { 'a.jar': wholeJar, 'b.jar': cutJar }, complete: false });
    await assert.rejects(fresh.provision(), (err: Error) => err.message.endsWith(`rm ${path.join(fresh.repository, 'b.jar')}`));
    assert.equal(fresh.mavenRuns().length, 1);
    assert.ok(!existsSync(path.join(fresh.home, '.complete')), 'the next start checks again instead of failing on a missing class');
  });
});
