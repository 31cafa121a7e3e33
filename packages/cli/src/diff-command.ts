import type { Command } from 'commander';
import { AuditInputError, configQuery, parseModel, parseTime, sinceAfterUntil, type ModelId } from './audit-query.js';
import { cliContext } from './context.js';
import { computeDiff, formatDiff } from './diff.js';

/**
 * `--vs`: a version of --model's model, or a model reference. A model name never holds a colon and
 * a version may (parseModel reads fraud:eu:3 as model fraud, version eu:3), so `--vs eu:3` is
 * either. Text before a colon is read as a name only when it is --model's own name, or when the
 * text is a full registry://models/ reference; anything else is a version of --model's model.
 * Before, any colon made a name: after --model fraud:eu:2, --vs eu:3 asked for a model named eu.
 */
export function parseVs(text: string, model: ModelId): ModelId {
  const s = text.trim();
  if (s.startsWith('registry://models/') || s.startsWith(`${model.name}:`)) return parseModel(s, '--vs');
  if (s === '' || /\s/.test(s)) {
    throw new AuditInputError(
      `--vs takes a version of ${model.name} or a model reference (got ${JSON.stringify(text)}), e.g. --vs 2.5.0, --vs ${model.name}:2.5.0, or for another model --vs registry://models/<name>:<version>.`,
    );
  }
  return { name: model.name, version: s };
}

export function registerDiffCommand(program: Command): void {
  program
    .command('diff')
    .description('two model versions on the same inputs (agreement, confusion table, confidence shift) and over all traffic (decision mix, PSI)')
    .requiredOption('--model <name:version>', 'the baseline version, e.g. loan-approver:2.4.1')
    .requiredOption('--vs <version>', 'the version to compare: 2.5.0 or loan-approver:2.5.0 for the same model (a version may hold colons); another model as registry://models/<name>:<version>')
    .option('--endpoint <endpoint>', 'only this serving endpoint')
    .option('--since <time>', 'from this time (ISO, UTC unless it has an offset; date; epoch ms; or an age: 30m, 2h, 7d)')
    .option('--until <time>', 'before this time')
    .option('--json', 'print the comparison as JSON')
    .action(async (opts: { model: string; vs: string; endpoint?: string; since?: string; until?: string; json?: boolean }) => {
      const a = parseModel(opts.model);
      const b = parseVs(opts.vs, a);
      if (a.name === b.name && a.version === b.version) throw new AuditInputError(`--model and --vs name the same version (${opts.vs}); compare two versions, e.g. --model ${a.name}:<old> --vs ${a.name}:<new>.`);
      const now = Date.now();
      const since = opts.since !== undefined ? parseTime(opts.since, '--since', now) : undefined;
      const until = opts.until !== undefined ? parseTime(opts.until, '--until', now) : undefined;
      if (since !== undefined && until !== undefined && since >= until) throw new AuditInputError(sinceAfterUntil(opts.since!, opts.until!));
      const { config } = cliContext();
      const d = await computeDiff(configQuery(config), { a, b, endpoint: opts.endpoint, since, until }).catch((err: unknown) => {
        // A version with a colon that was meant as another model's name:version: say how to write that.
        if (!(err instanceof AuditInputError) || b.name !== a.name || !b.version.includes(':') || !err.message.includes(JSON.stringify(b.version))) throw err;
        throw new AuditInputError(`${err.message}\n(--vs ${b.version} is read as a version of ${a.name}; for the model ${b.version.slice(0, b.version.indexOf(':'))}, write --vs registry://models/${b.version}.)`);
      });
      process.stdout.write(opts.json ? `${JSON.stringify(d, null, 2)}\n` : formatDiff(d));
    });
}
