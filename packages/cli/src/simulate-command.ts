import type { Command } from 'commander';
import { cliContext } from './context.js';
import { simulate } from './simulate.js';

function positiveNumber(name: string, value: string, min: number): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n < min) throw new Error(`${name} takes a number >= ${min} (got ${JSON.stringify(value)}); for example ${name} 10000`);
  return n;
}

export function registerSimulateCommand(program: Command): void {
  program
    .command('simulate')
    .description('feed the pipeline realistic traffic: several models, a worse canary, agent trajectories, some bad input')
    .option('-n, --events <n>', 'decisions to record', '20000')
    .option('-r, --rate <per-second>', 'decisions per second (0: as fast as possible)', '0')
    .option('--bad-share <fraction>', 'share of malformed events', '0.005')
    .option('--applicants <n>', 'distinct loan applicants (they repeat, so versions see the same inputs)', '2000')
    .action(async (opts: { events: string; rate: string; badShare: string; applicants: string }) => {
      const { config, log } = cliContext();
      const summary = await simulate(
        config,
        log,
        {
          events: positiveNumber('--events', opts.events, 1),
          rate: positiveNumber('--rate', opts.rate, 0),
          badShare: positiveNumber('--bad-share', opts.badShare, 0),
          applicants: positiveNumber('--applicants', opts.applicants, 1),
        },
        (msg) => process.stderr.write(`${msg}\n`),
      );
      process.stdout.write('recorded decisions by model version:\n');
      for (const [model, n] of Object.entries(summary.recorded).sort()) process.stdout.write(`  ${model.padEnd(28)} ${n}\n`);
      process.stdout.write(`agent trajectories: ${summary.traces}\nmalformed events sent: ${summary.bad}\n`);
      process.stdout.write(`sdk: sent ${summary.sdk.sent}, dropped ${summary.sdk.dropped}, invalid ${summary.sdk.invalid}\n`);
    });
}
