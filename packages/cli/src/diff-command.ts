import type { Command } from 'commander';
import { AuditInputError, configQuery, parseModel, parseTime, sinceAfterUntil } from './audit-query.js';
import { cliContext } from './context.js';
import { computeDiff, formatDiff } from './diff.js';

export function registerDiffCommand(program: Command): void {
  program
    .command('diff')
    .description('two model versions on the same inputs (agreement, confusion table, confidence shift) and over all traffic (decision mix, PSI)')
    .requiredOption('--model <name:version>', 'the baseline version, e.g. loan-approver:2.4.1')
    .requiredOption('--vs <name:version>', 'the version to compare, e.g. loan-approver:2.5.0 (or just 2.5.0 for the same model)')
    .option('--endpoint <endpoint>', 'only this serving endpoint')
    .option('--since <time>', 'from this time (ISO, UTC unless it has an offset; date; epoch ms; or an age: 30m, 2h, 7d)')
    .option('--until <time>', 'before this time')
    .option('--json', 'print the comparison as JSON')
    .action(async (opts: { model: string; vs: string; endpoint?: string; since?: string; until?: string; json?: boolean }) => {
      const a = parseModel(opts.model);
      const b = opts.vs.includes(':') ? parseModel(opts.vs, '--vs') : { name: a.name, version: opts.vs.trim() };
      if (a.name === b.name && a.version === b.version) throw new AuditInputError(`--model and --vs name the same version (${opts.vs}); compare two versions, e.g. --model ${a.name}:<old> --vs ${a.name}:<new>.`);
      const now = Date.now();
      const since = opts.since !== undefined ? parseTime(opts.since, '--since', now) : undefined;
      const until = opts.until !== undefined ? parseTime(opts.until, '--until', now) : undefined;
      if (since !== undefined && until !== undefined && since >= until) throw new AuditInputError(sinceAfterUntil(opts.since!, opts.until!));
      const { config } = cliContext();
      const d = await computeDiff(configQuery(config), { a, b, endpoint: opts.endpoint, since, until });
      process.stdout.write(opts.json ? `${JSON.stringify(d, null, 2)}\n` : formatDiff(d));
    });
}
