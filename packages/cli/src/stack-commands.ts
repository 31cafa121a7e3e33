import type { Command } from 'commander';
import { stackDown, stackEndpoints, stackStatus, stackUp, type ComponentStatus } from '@dlog/stack';
import { createPipeline } from '@dlog/pipeline';
import { numberOption } from './options.js';
import { Shutdown } from '@dlog/runtime';
import { cliContext } from './context.js';

function printStatus(statuses: ComponentStatus[]): void {
  for (const s of statuses) {
    const how = s.started === undefined ? '' : s.started ? ` started in ${((s.readyMs ?? 0) / 1000).toFixed(1)} s` : ' (already running)';
    const state =
      s.state === 'foreign' ? 'port taken by another process' : s.state === 'elsewhere' ? 'running on other ports (from an earlier stack up; stack down to move it)' : s.state;
    process.stdout.write(
      `${s.name.padEnd(9)} ${state.padEnd(8)} ports ${s.ports.join(',')}${s.pid ? ` pid ${s.pid}` : ''}${how}\n          log ${s.logFile}\n`,
    );
  }
}

export function registerStackCommands(program: Command): void {
  const stack = program.command('stack').description('the local stack: Apache Kafka (KRaft) and Apicurio Registry, without Docker');

  stack
    .command('up')
    .description('start what is not running (reuses what runs), wait until ready, create topics')
    .action(async () => {
      const { config, log, libraryLog } = cliContext();
      process.stderr.write('starting the local stack (the first run fetches Kafka and the registry from Maven Central)...\n');
      printStatus(await stackUp(config, log, libraryLog));
      const ep = stackEndpoints(config);
      process.stdout.write(`\nKAFKA_BROKERS=${ep.kafkaBrokers.join(',')}\nSCHEMA_REGISTRY_URL=${ep.schemaRegistryUrl}\n`);
    });

  stack
    .command('down')
    .description('stop what `dlog stack up` started (and nothing else)')
    .action(async () => {
      const { config, log } = cliContext();
      const stopped = await stackDown(config, log);
      process.stdout.write(stopped.length ? `stopped: ${stopped.join(', ')}\n` : 'nothing to stop: no component started by `dlog stack up` is running\n');
    });

  stack
    .command('status')
    .description('show each component: ready, starting, stopped, or its port taken by another process')
    .action(async () => {
      const { config } = cliContext();
      const statuses = await stackStatus(config);
      printStatus(statuses);
      if (statuses.some((s) => s.state !== 'ready')) process.exitCode = 3;
    });
}

export function registerUpCommand(program: Command): void {
  program
    .command('up')
    .description('run decision-log on the embedded defaults: local stack, schema, the sink in this process (it owns the store) and gate, enricher and alerter as child processes')
    .option('--no-stack', 'do not start the local stack (use KAFKA_BROKERS and SCHEMA_REGISTRY_URL as given)')
    .option('--status-every <seconds>', 'print a status line this often (0: never)', '10')
    .action(async (opts: { stack: boolean; statusEvery: string }) => {
      const { config, log, libraryLog } = cliContext();
      // Checked before anything starts.
      const every = numberOption('--status-every', opts.statusEvery, { min: 0, example: '30' }) * 1000;
      if (opts.stack) {
        process.stderr.write('starting the local stack (the first run fetches Kafka and the registry from Maven Central)...\n');
        printStatus(await stackUp(config, log, libraryLog));
      }
      const pipeline = await createPipeline({ config, log, libraryLog, workers: 'processes', env: { ...process.env, LOG_LEVEL: process.env.LOG_LEVEL || 'warn' } });
      const shutdown = new Shutdown(log, config.shutdownTimeoutMs);
      shutdown.add('stop the pipeline', () => pipeline.stop());
      shutdown.install();
      void pipeline.failed.then((err) => {
        process.stderr.write(`dlog: a worker failed: ${err.message}\n`);
        void shutdown.run(1);
      });
      const where = pipeline.store.mode === 'embedded' ? `embedded ClickHouse in ${pipeline.store.location}` : `ClickHouse at ${pipeline.store.location}`;
      process.stdout.write(
        `\ndecision-log is running: gate, enricher, alerter and sink on ${config.kafkaBrokers.join(',')}, ${where}.\n` +
          `In another terminal:\n` +
          `  npm run dlog -- simulate                       # realistic traffic, a worse canary, agents, bad input\n` +
          `  npm run dlog -- query "SELECT model_name, model_version, count() FROM v_decisions GROUP BY ALL"\n` +
          `Stop with Ctrl-C (the stack keeps running; npm run dlog -- stack down stops it).\n\n`,
      );
      if (every > 0) {
        const timer = setInterval(() => {
          void (async () => {
            // What analysts would see: exact totals from the counts, rows stored, alerts raised.
            const rs = await pipeline.store.client.query({
              query: `SELECT (SELECT sum(kept) FROM v_decision_totals) AS kept, (SELECT sum(dropped) FROM v_decision_totals) AS dropped,
                        (SELECT count() FROM decisions) AS stored, (SELECT countIf(NOT resolved) FROM decisions) AS unresolved,
                        (SELECT count() FROM v_alerts) AS alerts`,
              format: 'JSONEachRow',
            });
            const [s] = await rs.json<Record<string, number>>();
            const dlq = pipeline.sink.stats().reduce((n, w) => n + w.deadLettered, 0);
            process.stdout.write(
              `${new Date().toISOString()}  decisions kept ${s?.kept ?? 0}, sampled out ${s?.dropped ?? 0} | stored ${s?.stored ?? 0} (unresolved ${s?.unresolved ?? 0}) | alerts ${s?.alerts ?? 0} | sink dead letters ${dlq}\n`,
            );
          })().catch((err: unknown) => log.warn({ err }, 'status query failed'));
        }, every);
        timer.unref();
      }
      // Runs until Ctrl-C or SIGTERM: the shutdown drains the workers and exits the process.
      await new Promise<never>(() => {});
    });
}
