/**
 * The one test command: unit tests beside the code, then the integration tests in test/ against
 * the real local stack. It brings the stack up when it is not running (reusing one that runs)
 * and stops only what it started, even when tests fail. `--unit` runs the unit tests alone.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { loadConfig } from '@dlog/config';
import { createKafka } from '@dlog/kafka';
import { createLogger } from '@dlog/runtime';
import { stackDown, stackUp } from '@dlog/stack';

const root = path.resolve(import.meta.dirname, '..');

function find(dir: string, out: string[] = []): string[] {
  if (!existsSync(dir)) return out;
  for (const entry of readdirSync(dir)) {
    if (entry === 'node_modules' || entry.startsWith('.')) continue;
    const full = path.join(dir, entry);
    if (statSync(full).isDirectory()) find(full, out);
    else if (entry.endsWith('.test.ts')) out.push(path.relative(root, full));
  }
  return out.sort();
}

const args = process.argv.slice(2);
const unitOnly = args.includes('--unit');
const filters = args.filter((a) => !a.startsWith('--'));

const unit = [...find(path.join(root, 'packages')), ...find(path.join(root, 'services'))];
const integration = unitOnly ? [] : find(path.join(root, 'test'));
let files = [...unit, ...integration];
if (filters.length > 0) files = files.filter((f) => filters.some((x) => f.includes(x)));

const log = createLogger({ name: 'test', level: process.env.LOG_LEVEL ?? 'warn' });
/** This run's id, in the name of everything its tests make with unique() (test/helpers.ts). */
const runId = `r${randomBytes(3).toString('hex')}`;
const config = loadConfig();

/** The broker's topics, or undefined when it cannot be asked. */
async function listTopics(): Promise<Set<string> | undefined> {
  const admin = createKafka({ brokers: config.kafkaBrokers, clientId: 'dlog-test-run', log }).admin();
  try {
    await admin.connect();
    return new Set(await admin.listTopics());
  } catch {
    return undefined;
  } finally {
    await admin.disconnect().catch(() => undefined);
  }
}

/**
 * Topics this run's tests made: unique() puts the run's id in every name, and the local stack
 * (which keeps its data when stopped) had collected hundreds run after run, which the broker keeps
 * paying for. Topics of another run on the same stack, or anyone else's, carry no such id.
 */
async function deleteTestTopics(before: Set<string>): Promise<void> {
  const admin = createKafka({ brokers: config.kafkaBrokers, clientId: 'dlog-test-run', log }).admin();
  try {
    await admin.connect();
    const made = (await admin.listTopics()).filter((t) => !before.has(t) && t.includes(`-${runId}-`));
    for (let i = 0; i < made.length; i += 100) await admin.deleteTopics({ topics: made.slice(i, i + 100) });
  } catch (err) {
    log.warn({ err }, 'could not delete the topics the tests made');
  } finally {
    await admin.disconnect().catch(() => undefined);
  }
}

let started: string[] = [];
let topicsBefore: Set<string> | undefined;
if (files.some((f) => f.startsWith('test/'))) {
  const statuses = await stackUp(config, log);
  started = statuses.filter((s) => s.started).map((s) => s.name);
  topicsBefore = await listTopics();
}

// Every temporary file and directory the tests make (stores, spill files, private brokers) goes
// under one directory for this run, removed when the run passes; runs had left gigabytes in /tmp.
const runTmp = mkdtempSync(path.join(tmpdir(), 'dlog-test-run-'));

// A run that hangs anyway (the runner itself stuck) gets a deadline so CI reports a failure
// (naming the cause) instead of hanging until it is killed.
const deadlineMs = Number(process.env.TEST_DEADLINE_MS ?? 45 * 60_000);
let status = 1;
try {
  const child = spawn(
    process.execPath,
    // --test-force-exit: a file whose tests are done ends even if a handle is still open (a
    // teardown that gave up on a stuck client), so its failures are reported, not lost to the
    // file timeout.
    ['--import', 'tsx', '--test', '--test-reporter=spec', '--test-concurrency=1', '--test-timeout=300000', '--test-force-exit', ...files],
    { stdio: 'inherit', cwd: root, env: { ...process.env, NODE_ENV: 'test', TMPDIR: runTmp, TEST_RUN_ID: runId } },
  );
  const timer = setTimeout(() => {
    process.stderr.write(`\ntest run exceeded ${Math.round(deadlineMs / 60_000)} minutes: a test file did not end; stopping it\n`);
    child.kill('SIGKILL');
  }, deadlineMs);
  status = await new Promise<number>((resolve) => child.once('exit', (code) => resolve(code ?? 1)));
  clearTimeout(timer);
} finally {
  // The stack keeps its data when stopped: either way it keeps only what was there before.
  if (topicsBefore && status === 0) await deleteTestTopics(topicsBefore);
  if (started.length > 0) await stackDown(config, log, started);
  if (status === 0) {
    try {
      rmSync(runTmp, { recursive: true, force: true });
    } catch (err) {
      log.warn({ err, dir: runTmp }, "could not remove the tests' temporary files");
    }
  } else process.stderr.write(`\nthe tests' temporary files are kept for a look: ${runTmp}\n`);
}
process.exit(status);
