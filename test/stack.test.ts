import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import pino, { type Logger } from 'pino';
import { describe, it } from 'node:test';
import { stackDown, stackStatus, stackUp, StackError } from '@dlog/stack';
import { createRegistry, loadSchema, registerAvro } from '@dlog/contracts';
import { config, freePort, log, tempDir, unique } from './helpers.js';

const root = path.resolve(import.meta.dirname, '..');

function dlog(args: string[], env: NodeJS.ProcessEnv = {}) {
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'packages/cli/src/main.ts', ...args], {
    cwd: root,
    env: { ...process.env, ...env },
    encoding: 'utf8',
    timeout: 120_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

async function occupy(): Promise<{ port: number; close: () => Promise<void> }> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  return { port, close: () => new Promise((resolve) => server.close(() => resolve())) };
}

describe('local stack', () => {
  it('reuses what an earlier `up` started', async () => {
    const statuses = await stackUp(config, log);
    assert.deepEqual(
      statuses.map((s) => [s.name, s.state, s.started]),
      [
        ['kafka', 'ready', false],
        ['registry', 'ready', false],
      ],
    );
    const again = await stackStatus(config);
    assert.ok(again.every((s) => s.state === 'ready' && s.pid !== undefined));
  });

  it("gives kafkajs's own log to the library logger, not the host's", async () => {
    // `npm start` printed kafkajs's error-level retries of new topics ("not the leader") among its
    // status lines: `up` handed kafkajs the CLI's logger instead of its quieter library one. Its
    // topics exist here, so kafkajs has nothing to say: which logger it was given is what is seen.
    const givenToKafkajs: string[] = [];
    const logger = (name: string): Logger =>
      pino({
        level: 'silent',
        onChild: (child) => {
          if (child.bindings().component === 'kafkajs') givenToKafkajs.push(name);
        },
      });
    await stackUp(config, logger('host'), logger('library'));
    assert.deepEqual(givenToKafkajs, ['library']);
  });

  it('says at once when an earlier `up` runs a component on other ports than configured now', async () => {
    // Before, it was reused and waited for on the new ports, where it does not listen: 120 s
    // without a word, then "did not become ready".
    const moved = { ...config, kafkaPort: await freePort(), kafkaControllerPort: await freePort() };
    const t0 = Date.now();
    await assert.rejects(stackUp(moved, log), (err: unknown) => {
      assert.ok(err instanceof StackError);
      assert.match(err.message, new RegExp(`^kafka already runs \\(pid \\d+\\) from an earlier \`stack up\` on port\\(s\\) ${config.kafkaPort},${config.kafkaControllerPort}`));
      assert.match(err.message, /DLOG_KAFKA_PORT/);
      assert.match(err.message, /stack down/);
      return true;
    });
    assert.ok(Date.now() - t0 < 10_000, `took ${Date.now() - t0} ms`);
    const kafka = (await stackStatus(moved)).find((s) => s.name === 'kafka');
    assert.equal(kafka?.state, 'elsewhere');
    assert.deepEqual(kafka?.ports, [config.kafkaPort, config.kafkaControllerPort]);
  });

  it('keeps schema ids across a registry restart, since Kafka keeps the records that name them', async () => {
    const registryPort = await freePort();
    const cfg = { ...config, runDir: tempDir('registry'), only: ['registry'], registryPort };
    const url = `http://127.0.0.1:${registryPort}/apis/ccompat/v7`;
    await stackUp(cfg, log);
    try {
      const id = await registerAvro(createRegistry(url), url, unique('subject'), loadSchema('inference-event'));
      await stackDown(cfg, log);
      assert.equal((await stackStatus(cfg))[0]?.state, 'stopped');
      await stackUp(cfg, log);
      const schema = await createRegistry(url).getSchema(id);
      assert.equal((schema as { name?: string }).name, 'io.decisionlog.v1.InferenceEvent');
    } finally {
      await stackDown(cfg, log);
    }
  });

  it('two `up` at once start one registry: the second waits and reuses it, and `down` stops it', async () => {
    // Before the lock both started one; the loser died on the H2 lock but passed its readiness
    // check against the winner and overwrote the pid file, orphaning a live registry.
    const registryPort = await freePort();
    const cfg = { ...config, runDir: tempDir('registry-twice'), only: ['registry'], registryPort };
    try {
      const [a, b] = await Promise.all([stackUp(cfg, log), stackUp(cfg, log)]);
      const both = [a[0]!, b[0]!];
      assert.deepEqual(both.map((s) => s.started).sort(), [false, true]);
      assert.equal(both[0]!.pid, both[1]!.pid);
      assert.equal((await stackStatus(cfg))[0]?.pid, both[0]!.pid);
    } finally {
      await stackDown(cfg, log);
    }
    assert.equal((await stackStatus(cfg))[0]?.state, 'stopped', 'nothing is left holding the port');
  });

  it('names a port that another process holds, and starts nothing', async () => {
    const taken = await occupy();
    const stackDir = tempDir('stack');
    try {
      await assert.rejects(
        stackUp({ ...config, stackDir, kafkaPort: taken.port, kafkaControllerPort: taken.port + 1 }, log),
        (err: unknown) => {
          assert.ok(err instanceof StackError);
          assert.match(err.message, new RegExp(`Port ${taken.port} on 127.0.0.1 is already taken`));
          assert.match(err.message, /DLOG_KAFKA_PORT=<port>/);
          return true;
        },
      );
      const statuses = await stackStatus({ ...config, stackDir, kafkaPort: taken.port, kafkaControllerPort: taken.port + 1 });
      assert.equal(statuses.find((s) => s.name === 'kafka')?.state, 'foreign');
      assert.equal(statuses.find((s) => s.name === 'registry')?.pid, undefined);
    } finally {
      await taken.close();
    }
  });

  it('`dlog stack up` on a taken port says which port and exits non-zero', async () => {
    const taken = await occupy();
    try {
      const r = dlog(['stack', 'up'], {
        DLOG_STACK_DIR: tempDir('cli-stack'),
        DLOG_KAFKA_PORT: String(taken.port),
        DLOG_KAFKA_CONTROLLER_PORT: String(taken.port + 1),
      });
      assert.equal(r.code, 1);
      assert.match(r.stderr, new RegExp(`Port ${taken.port} on 127.0.0.1 is already taken by another process, so kafka cannot start`));
    } finally {
      await taken.close();
    }
  });

  it('bad config stops the CLI at start, naming the field', () => {
    const r = dlog(['stack', 'status'], { KAFKA_BROKERS: 'not a broker' });
    assert.equal(r.code, 2);
    assert.match(r.stderr, /configuration error: Invalid KAFKA_BROKERS="not a broker"/);
    const typo = dlog(['stack', 'status'], { DLOG_REGISTRY_PROT: '1' });
    assert.equal(typo.code, 2);
    assert.match(typo.stderr, /Did you mean DLOG_REGISTRY_PORT\?/);
  });

  it('a mistyped command prints what to type instead', () => {
    const r = dlog(['stak', 'up']);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /Did you mean stack\?/);
  });
});
