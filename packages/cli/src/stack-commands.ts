import type { Command } from 'commander';
import { stackDown, stackEndpoints, stackStatus, stackUp, type ComponentStatus } from '@dlog/stack';
import { cliContext } from './context.js';

function printStatus(statuses: ComponentStatus[]): void {
  for (const s of statuses) {
    const how = s.started === undefined ? '' : s.started ? ` started in ${((s.readyMs ?? 0) / 1000).toFixed(1)} s` : ' (already running)';
    const state = s.state === 'foreign' ? 'port taken by another process' : s.state;
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
      const { config, log } = cliContext();
      process.stderr.write('starting the local stack (the first run fetches Kafka and the registry from Maven Central)...\n');
      printStatus(await stackUp(config, log));
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
    .description('run decision-log on the embedded defaults: local stack, then report its health')
    .action(async () => {
      const { config, log } = cliContext();
      process.stderr.write('starting the local stack (the first run fetches Kafka and the registry from Maven Central)...\n');
      printStatus(await stackUp(config, log));
      process.stdout.write('\nlocal stack healthy. Stop it with: npm run dlog -- stack down\n');
    });
}
