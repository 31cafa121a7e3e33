import type { Command } from 'commander';
import { cliContext } from './context.js';
import { numberOption } from './options.js';
import { simulate } from './simulate.js';

export function registerSimulateCommand(program: Command): void {
  program
    .command('simulate')
    .description(
      'feed the pipeline realistic traffic: several models, a worse canary, agent trajectories, some bad input. ' +
        'Each run has its own id in its request ids (loan-<run id>-<n>), so dlog trace finds one run\'s decision',
    )
    .option('-n, --events <n>', 'events to send, malformed ones and each step of a trajectory included (never more)', '20000')
    .option('-r, --rate <per-second>', 'events per second (0: as fast as possible)', '0')
    .option('--bad-share <fraction>', 'share of the events sent that are malformed (the good ones keep their mix)', '0.005')
    .option('--applicants <n>', 'distinct loan applicants (they repeat, so versions see the same inputs)', '2000')
    .option('--seed <n>', 'seed of the random draws: the same seed sends the same traffic again, under a new run id (default: random, printed)')
    .action(async (opts: { events: string; rate: string; badShare: string; applicants: string; seed?: string }) => {
      const { config, log } = cliContext();
      const summary = await simulate(
        config,
        log,
        {
          events: numberOption('--events', opts.events, { min: 1, integer: true, example: '10000' }),
          rate: numberOption('--rate', opts.rate, { min: 0, example: '2000' }),
          badShare: numberOption('--bad-share', opts.badShare, { min: 0, max: 1, example: '0.01' }),
          applicants: numberOption('--applicants', opts.applicants, { min: 1, integer: true, example: '2000' }),
          ...(opts.seed === undefined ? {} : { seed: numberOption('--seed', opts.seed, { min: 0, max: 2 ** 32 - 1, integer: true, example: '42' }) }),
        },
        (msg) => process.stderr.write(`${msg}\n`),
      );
      process.stdout.write(`run ${summary.runId} (--seed ${summary.seed}); request ids loan-${summary.runId}-<n>, rec-${summary.runId}-<n>\n`);
      process.stdout.write('recorded decisions by model version:\n');
      for (const [model, n] of Object.entries(summary.recorded).sort()) process.stdout.write(`  ${model.padEnd(28)} ${n}\n`);
      process.stdout.write(`agent trajectories: ${summary.traces}\nmalformed events sent: ${summary.bad}\n`);
      process.stdout.write(`sdk: sent ${summary.sdk.sent}, dropped ${summary.sdk.dropped}, invalid ${summary.sdk.invalid}\n`);
    });
}
