/**
 * End to end on this machine with the broker, registry and workers all running: decisions
 * recorded through the SDK, through gate, enricher and sink (one pipeline process, embedded
 * ClickHouse), until queryable. Prints sustained decisions/s, produce-to-queryable latency
 * (p50/p99 from ts to the row's ingested_at), peak memory per process, the SDK's own send rate
 * in the same run as the ceiling, then the sink alone (bench/sink.ts).
 *
 *   npm run bench:pipeline            (BENCH_EVENTS=100000 to change the size)
 *   BENCH_RATE=2500 npm run bench:pipeline   paces the producer: latency below saturation
 *   BENCH_BACKLOG=1 npm run bench:pipeline   records everything first, then starts the pipeline
 *   BENCH_LOG_LEVEL=info                      shows the pipeline's own logs
 *   WORKER_CPU_PROF_DIR=/tmp/prof             writes a V8 CPU profile per worker process
 *                                            and times the drain: the pipeline's own capacity,
 *                                            without the SDK sharing the two cores
 */
import { fork, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { loadConfig } from '@dlog/config';
import { createKafka, ensurePipelineTopics } from '@dlog/kafka';
import { createLogger } from '@dlog/runtime';
import { createDecisionLogger } from '@dlog/sdk';
import { queryViaEndpoint } from '@dlog/store';
import { requireStack } from './require-stack.js';

const events = Number(process.env.BENCH_EVENTS ?? 100_000);
/** Decisions per second to record at; 0: as fast as the SDK takes them (measures throughput). */
const rate = Number(process.env.BENCH_RATE ?? 0);
const backlog = process.env.BENCH_BACKLOG === '1';
const root = path.resolve(import.meta.dirname, '..');
const prefix = `benchpipe-${Date.now().toString(36)}-${randomBytes(3).toString('hex')}.`;
const runDir = mkdtempSync(path.join(tmpdir(), 'dlog-benchpipe-'));
const dataDir = path.join(runDir, 'clickhouse');
const queryPort = 20_000 + Math.floor(Math.random() * 20_000);
const env = { ...process.env, DLOG_TOPIC_PREFIX: prefix, CLICKHOUSE_DATA_DIR: dataDir, DLOG_QUERY_PORT: String(queryPort), LOG_LEVEL: process.env.BENCH_LOG_LEVEL ?? 'warn' };
const config = loadConfig(env);
await requireStack(config);

function vmHwmMiB(pid: number): number | undefined {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Math.round(Number(m[1]) / 1024) : undefined;
  } catch {
    return undefined;
  }
}

/** CPU seconds (user + system) a process has used so far. */
function cpuSeconds(pid: number): number | undefined {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return undefined;
  }
}

/** The worker processes the pipeline started (gate, enricher, alerter), with their peak memory and CPU. */
function workers(pid: number): { name: string; mem?: number; cpu?: number }[] {
  const out: { name: string; mem?: number; cpu?: number }[] = [];
  try {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      for (const c of readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean)) {
        const cmd = readFileSync(`/proc/${c}/cmdline`, 'utf8');
        // Anything else the pipeline runs (a short-lived helper) is named by its program.
        const name = /services\/(\w+)\//.exec(cmd)?.[1] ?? `${path.basename(cmd.split('\0')[0] || '?')} (pid ${c})`;
        out.push({ name, mem: vmHwmMiB(Number(c)), cpu: cpuSeconds(Number(c)) });
      }
    }
  } catch {
    // A process that just exited: report what was found.
  }
  return out;
}

function stackPid(name: string): number | undefined {
  try {
    return (JSON.parse(readFileSync(path.join(config.stackDir, 'run', `${name}.json`), 'utf8')) as { pid: number }).pid;
  } catch {
    return undefined;
  }
}

async function sql<T>(query: string): Promise<T[]> {
  const r = await queryViaEndpoint({ port: queryPort, dataDir, sql: query });
  if (!r) throw new Error('pipeline query endpoint not answering');
  return r.rows as T[];
}

// 1. The pipeline in its own process, as `dlog up` runs it.
const start = async () => {
  const c = fork(path.join(root, 'services/pipeline/src/main.ts'), [], { env, execArgv: ['--import', 'tsx'], stdio: ['ignore', process.env.BENCH_LOG_LEVEL ? 'inherit' : 'ignore', 'inherit', 'ipc'] });
  await new Promise<void>((resolve, reject) => {
    c.once('exit', (code) => reject(new Error(`pipeline exited with ${code} before it was ready`)));
    c.on('message', (m: { type?: string }) => m.type === 'ready' && resolve());
  });
  return c;
};

let child = backlog ? undefined : await start();
if (backlog) {
  // The topics the pipeline would create, so the SDK can write before it runs.
  const kafka = createKafka({ brokers: config.kafkaBrokers, clientId: 'bench-setup', log: createLogger({ name: 'bench', level: 'warn' }) });
  await ensurePipelineTopics(kafka, prefix, ['inference.raw', 'registry.artifacts']);
}

// 2. Record N decisions as fast as the SDK takes them (about 1 KB each, standard tier, kept).
const logger = createDecisionLogger({
  service: 'bench',
  brokers: config.kafkaBrokers,
  registryUrl: config.schemaRegistryUrl,
  topic: `${prefix}inference.raw`,
  artifactTopic: `${prefix}registry.artifacts`,
  model: { name: 'bench-model', version: '1.0.0' },
  endpoint: 'bench-api',
  decisionType: 'classification',
  buffer: { maxEvents: events + 1, maxBytes: 2 * 1024 * 1024 * 1024, policy: 'drop' },
});
const pad = 'lorem ipsum dolor sit amet '.repeat(24);
// The broker's and registry's CPU from here: they serve the SDK's sends too.
let stackCpuBefore = { kafka: cpuSeconds(stackPid('kafka') ?? -1), registry: cpuSeconds(stackPid('registry') ?? -1) };
let t0 = Date.now();
for (let i = 0; i < events; i++) {
  logger.record({
    requestId: `r-${i}`,
    input: { customer: { email: `c${i}@example.com`, name: `Customer ${i}` }, features: { a: i % 97, b: (i * 7) % 13, note: pad } },
    output: { decision: i % 3 ? 'accept' : 'reject', confidence: 0.5 + (i % 50) / 100, scores: { accept: 0.7, reject: 0.3 } },
  });
  if (rate > 0) {
    const due = t0 + (i / rate) * 1000;
    if (due > Date.now() + 2) await new Promise((r) => setTimeout(r, due - Date.now()));
  } else if (i % 5_000 === 4_999) await new Promise((r) => setImmediate(r));
}
const flushed = await logger.flush(300_000);
const producedMs = Date.now() - t0;
const sdkStats = await logger.close(30_000);
// Draining a backlog, CPU is counted from the moment the pipeline is ready: start-up (module
// loading, the gate's warm-up) is not part of what a decision costs.
const readyCpu = new Map<string, number>();
if (backlog) {
  child = await start();
  t0 = Date.now();
  stackCpuBefore = { kafka: cpuSeconds(stackPid('kafka') ?? -1), registry: cpuSeconds(stackPid('registry') ?? -1) };
  readyCpu.set('pipeline', cpuSeconds(child.pid!) ?? 0);
  for (const w of workers(child.pid!)) readyCpu.set(w.name, w.cpu ?? 0);
}

// 3. Wait until every decision is queryable.
let visible = 0;
while (visible < events) {
  await new Promise((r) => setTimeout(r, 250));
  visible = Number((await sql<{ n: string }>('SELECT count() AS n FROM decisions'))[0]?.n ?? 0);
  if (Date.now() - t0 > 900_000) throw new Error(`only ${visible} of ${events} decisions queryable after 15 minutes`);
}
const totalMs = Date.now() - t0;
const [lat] = await sql<{ q: number[] }>("SELECT quantilesExact(0.5, 0.99)(dateDiff('millisecond', ts, ingested_at)) AS q FROM decisions");
// Latency by when the decision was made: warm-up (JIT, first fetches) shows apart from steady state.
const spans = await sql<{ s: number; n: string; q: number[] }>(
  "SELECT intDiv(toUnixTimestamp64Milli(ts) - (SELECT min(toUnixTimestamp64Milli(ts)) FROM decisions), 5000) * 5 AS s, count() AS n, " +
    "quantilesExact(0.5, 0.99)(dateDiff('millisecond', ts, ingested_at)) AS q FROM decisions GROUP BY s ORDER BY s",
);
const pipelineMem = vmHwmMiB(child!.pid!);
const pipelineCpu = cpuSeconds(child!.pid!);
const workerStats = workers(child!.pid!);
const workersMem = workerStats.map((w) => `${w.name} ${w.mem ?? '?'} MiB`);
const stackCpu = (name: 'kafka' | 'registry') => {
  const now = cpuSeconds(stackPid(name) ?? -1);
  const before = stackCpuBefore[name];
  return now !== undefined && before !== undefined ? (now - before).toFixed(1) : '?';
};
const since = (name: string, cpu: number | undefined) => (cpu === undefined ? '?' : (cpu - (readyCpu.get(name) ?? 0)).toFixed(1));
const cpuLine = [
  `pipeline + sink + embedded ClickHouse ${since('pipeline', pipelineCpu)} s`,
  ...workerStats.map((w) => `${w.name} ${since(w.name, w.cpu)} s`),
  `kafka ${stackCpu('kafka')} s`,
  `registry ${stackCpu('registry')} s`,
].join(', ');
const drainCpu = backlog ? [since('pipeline', pipelineCpu), ...workerStats.map((w) => since(w.name, w.cpu)), stackCpu('kafka'), stackCpu('registry')].reduce((a, b) => a + Number(b), 0) : undefined;
child!.kill('SIGTERM');
const exitCode = await new Promise<number | null>((r) => child!.once('exit', (code) => r(code)));

console.log(`\npipeline end to end, ${events} decisions (~1 KB)${rate ? ` paced at ${rate}/s` : ''}${backlog ? ', recorded first, then drained' : ''}, SDK -> gate -> enricher -> sink -> embedded ClickHouse`);
console.log(`  SDK send rate (the ceiling, same run)   ${Math.round((events / producedMs) * 1000).toString().padStart(8)} decisions/s  (flushed: ${flushed.ok ?? JSON.stringify(flushed)})`);
if (backlog) {
  console.log(`  drain, pipeline start -> all queryable   ${Math.round((events / totalMs) * 1000).toString().padStart(8)} decisions/s  (${(totalMs / 1000).toFixed(1)} s, including the pipeline's warm-up)`);
} else {
  console.log(`  end to end, produce -> queryable        ${Math.round((events / totalMs) * 1000).toString().padStart(8)} decisions/s  (${(totalMs / 1000).toFixed(1)} s; target >= 25000)`);
  console.log(`  latency ts -> ingested  p50 ${lat?.q[0]} ms   p99 ${lat?.q[1]} ms   (target p99 <= 3000 ms)`);
  console.log(`  latency by second made: ${spans.map((b) => `${b.s}s p50 ${b.q[0]} p99 ${b.q[1]}`).join(' | ')}`);
}
console.log(`  peak memory (VmHWM): pipeline + sink + embedded ClickHouse ${pipelineMem} MiB, ${workersMem.join(', ')}, kafka ${vmHwmMiB(stackPid('kafka') ?? -1) ?? '?'} MiB, registry ${vmHwmMiB(stackPid('registry') ?? -1) ?? '?'} MiB, bench+SDK ${Math.round(process.resourceUsage().maxRSS / 1024)} MiB`);
console.log(`  CPU used${backlog ? ' while draining (from ready)' : ' (workers: whole runs; broker and registry: from the first send)'}: ${cpuLine}; bench+SDK ${(process.cpuUsage().user / 1e6 + process.cpuUsage().system / 1e6).toFixed(1)} s in all`);
if (drainCpu !== undefined) console.log(`  CPU per decision while draining: ${((drainCpu / events) * 1e6).toFixed(0)} us (all pipeline processes, broker and registry)`);
console.log(`  sdk: sent ${sdkStats.sent}, dropped ${sdkStats.dropped}; pipeline exit code ${exitCode}`);

// What this run made: its topics (all under its prefix) and its store.
const cleanup = createKafka({ brokers: config.kafkaBrokers, clientId: 'bench-cleanup', log: createLogger({ name: 'bench', level: 'error' }) }).admin();
await cleanup.connect();
await cleanup.deleteTopics({ topics: (await cleanup.listTopics()).filter((t) => t.startsWith(prefix)) }).catch(() => undefined);
await cleanup.disconnect();
rmSync(runDir, { recursive: true, force: true });

// 4. The sink alone into embedded ClickHouse.
if (process.env.BENCH_SKIP_SINK) process.exit(0);
console.log('\nsink alone (bench/sink.ts):');
const sink = spawnSync(process.execPath, ['--import', 'tsx', path.join(root, 'bench/sink.ts'), String(Math.min(events, 100_000)), '50000'], { cwd: root, encoding: 'utf8', env: { ...process.env, LOG_LEVEL: 'warn' } });
process.stdout.write(sink.stdout.split('\n').filter((l) => l.trim()).map((l) => `  ${l}`).join('\n') + '\n');
