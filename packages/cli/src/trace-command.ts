import type { Command } from 'commander';
import { configQuery } from './audit-query.js';
import { cliContext } from './context.js';
import { formatTrace, traceDecision, traceJson } from './trace.js';

export function registerTraceCommand(program: Command): void {
  program
    .command('trace')
    .description('everything behind one decision: output, input hash, model and its lineage, image, config, preprocessing, environment, policy; an agent step shows its whole trajectory')
    .argument('<id>', 'event_id or request_id of the decision')
    .option('--json', 'print the decision package as JSON (a trajectory as a list of steps in tree order, each with its depth)')
    .action(async (id: string, opts: { json?: boolean }) => {
      const { config } = cliContext();
      const result = await traceDecision(configQuery(config), id);
      process.stdout.write(opts.json ? `${JSON.stringify(traceJson(result), null, 2)}\n` : formatTrace(result));
    });
}
