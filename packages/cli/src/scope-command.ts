import { once } from 'node:events';
import type { Command } from 'commander';
import { AuditInputError, configQuery, knownVersions, parseModel, parseTime, sinceAfterUntil } from './audit-query.js';
import { cliContext } from './context.js';
import { OutputFile } from './output-file.js';
import { csvLine } from './csv.js';
import { computeScope, emptyScopeMessage, exportColumnsOf, formatScope, isArtifactScope, isEmptyScope, parseArtifactRef, resolveScope, scopeDecisions, scopeHints, shortfallNote, type ScopeFilters, type ScopeRequest } from './scope.js';
import { compileWhere, filterGrammar } from './where-filter.js';

/** What `dlog scope` and `dlog remediate` are given. */
export interface ScopeFlags {
  model?: string;
  artifact?: string;
  endpoint?: string;
  since?: string;
  until?: string;
  where?: string;
}

/** The scope options, shared by `dlog scope` and `dlog remediate`. */
export function addScopeOptions(cmd: Command): Command {
  return cmd
    .option('--model <name:version>', 'the model version, e.g. loan-approver:2.5.0')
    .option(
      '--artifact <ref>',
      'instead of --model: every decision whose record names this artifact (model, image, config, preprocessing, or an ancestor such as a dataset) or names one registered downstream of it, e.g. registry://datasets/loan-applications:v5',
    )
    .option('--endpoint <endpoint>', 'only this serving endpoint')
    .option('--since <time>', 'from this time (ISO, UTC unless it has an offset; date; epoch ms; or an age: 30m, 2h, 7d)')
    .option('--until <time>', 'before this time')
    .option('--where <filter>', `filter, e.g. "decision=declined and confidence<0.7" (the grammar is at the end of --help)`);
}

export function scopeOptionsFrom(opts: ScopeFlags): ScopeRequest {
  if (opts.model !== undefined && opts.artifact !== undefined) {
    throw new AuditInputError(
      `--model and --artifact are two kinds of scope: give one. --model ${opts.model} is that version's decisions; --artifact ${opts.artifact} every decision that names the artifact or one registered downstream of it.`,
    );
  }
  if (opts.model === undefined && opts.artifact === undefined) {
    throw new AuditInputError('Say what the scope is of: --model <name:version> (e.g. --model loan-approver:2.5.0), or --artifact <ref> (e.g. --artifact registry://datasets/loan-applications:v5).');
  }
  const subject = opts.artifact !== undefined ? { artifact: parseArtifactRef(opts.artifact) } : { model: parseModel(opts.model!) };
  const now = Date.now();
  const filters: ScopeFilters = {
    endpoint: opts.endpoint,
    since: opts.since !== undefined ? parseTime(opts.since, '--since', now) : undefined,
    until: opts.until !== undefined ? parseTime(opts.until, '--until', now) : undefined,
    where: opts.where,
  };
  if (filters.since !== undefined && filters.until !== undefined && filters.since >= filters.until) throw new AuditInputError(sinceAfterUntil(opts.since!, opts.until!));
  compileWhere(filters.where); // a bad filter is reported before anything is asked of the store
  return { ...subject, ...filters };
}

export function registerScopeCommand(program: Command): void {
  addScopeOptions(
    program
      .command('scope')
      .description(
        'rollback scope of a model version (--model) or of an artifact such as a dataset or image (--artifact): exact and sampled decision counts, deployment windows and endpoints, breakdown by decision',
      ),
  )
    .option('--export <format>', 'write the stored decisions of the scope: csv or ndjson')
    .option('--out <file>', 'file for --export (default: stdout)')
    .option('--json', 'print the scope as JSON')
    .addHelpText('after', `\nFilter language (--where):\n${filterGrammar}\n`)
    .action(async (opts: ScopeFlags & { export?: string; out?: string; json?: boolean }) => {
      if (opts.export !== undefined && !['csv', 'ndjson'].includes(opts.export)) throw new AuditInputError(`--export is csv or ndjson (got ${JSON.stringify(opts.export)}), e.g. --export csv --out scope.csv`);
      if (opts.out !== undefined && opts.export === undefined) throw new AuditInputError('--out goes with --export csv|ndjson.');
      const o = scopeOptionsFrom(opts);
      // A path that cannot be written fails now, before the store is asked anything.
      const file = opts.export && opts.out !== undefined ? await OutputFile.open(opts.out, '--out') : undefined;
      try {
        const { config } = cliContext();
        const q = configQuery(config);
        // Resolved once: the counts and the export select the same decisions even if an
        // artifact is registered downstream in between.
        const resolved = await resolveScope(q, o);
        const scope = await computeScope(q, resolved);
        if (isEmptyScope(scope)) {
          const known = isArtifactScope(o) ? undefined : (await knownVersions(q, o.model.name)).find((v) => v.version === o.model.version);
          const hints = o.endpoint !== undefined || o.where !== undefined ? await scopeHints(q, o) : undefined;
          process.stderr.write(`${emptyScopeMessage(scope, known, hints)}\n`);
          process.exitCode = 3;
          await file?.discard();
          return;
        }
        if (opts.export) {
          // The scope goes beside the export: on stdout when the export goes to a file, else on stderr.
          process[file ? 'stdout' : 'stderr'].write(opts.json ? `${JSON.stringify(scope, null, 2)}\n` : formatScope(scope));
          const write = file
            ? await file.writer()
            : async (s: string) => {
                if (!process.stdout.write(s)) await once(process.stdout, 'drain');
              };
          let n = 0;
          const columns = exportColumnsOf(scope);
          if (opts.export === 'csv') await write(`${columns.join(',')}\n`);
          for await (const page of scopeDecisions(q, resolved)) {
            for (const r of page) await write(opts.export === 'csv' ? `${csvLine(columns.map((c) => r[c]))}\n` : `${JSON.stringify(r)}\n`);
            n += page.length;
          }
          await file?.close();
          const note = shortfallNote(scope, n);
          process.stderr.write(`exported ${n} stored decisions${file ? ` to ${file.path}` : ''}${note ? ` (${note})` : ''}\n`);
          return;
        }
        process.stdout.write(opts.json ? `${JSON.stringify(scope, null, 2)}\n` : formatScope(scope));
      } catch (err) {
        await file?.discard();
        throw err;
      }
    });
}
