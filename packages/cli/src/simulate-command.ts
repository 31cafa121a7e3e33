import type { Command } from 'commander';
import { cliContext } from './context.js';
import { numberOption } from './options.js';
import { simulate } from './simulate.js';

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
          events: numberOption('--events', opts.events, { min: 1, integer: true, example: '10000' }),
          rate: numberOption('--rate', opts.rate, { min: 0, example: '2000' }),
          badShare: numberOption('--bad-share', opts.badShare, { min: 0, max: 1, example: '0.01' }),
          applicants: numberOption('--applicants', opts.applicants, { min: 1, integer: true, example: '2000' }),
        },
        (msg) => process.stderr.write(`${msg}\n`),
      );
      process.stdout.write('recorded decisions by model version:\n');
      for (const [model, n] of Object.entries(summary.recorded).sort()) process.stdout.write(`  ${model.padEnd(28)} ${n}\n`);
      process.stdout.write(`agent trajectories: ${summary.traces}\nmalformed events sent: ${summary.bad}\n`);
      process.stdout.write(`sdk: sent ${summary.sdk.sent}, dropped ${summary.sdk.dropped}, invalid ${summary.sdk.invalid}\n`);
    });
}
