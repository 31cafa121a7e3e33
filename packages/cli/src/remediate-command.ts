import os from 'node:os';
import type { Command } from 'commander';
import { configQuery } from './audit-query.js';
import { planRemediation, publishRemediation } from './audit-events.js';
import { cliContext } from './context.js';
import { formatScope, shortfallNote } from './scope.js';
import { addScopeOptions, scopeOptionsFrom } from './scope-command.js';
import { filterGrammar } from './where-filter.js';

export function registerRemediateCommand(program: Command): void {
  addScopeOptions(
    program
      .command('remediate')
      .description('append a remediation that references every stored decision of a scope (same options as dlog scope); the decisions themselves are never changed'),
  )
    .requiredOption('--reason <text>', 'incident, alert id or ticket')
    .option('--action <action>', 'what is to be done: review, reprocess, notify, reverse ...', 'review')
    .option('--actor <who>', 'who decides the remediation', `${os.userInfo().username}@${os.hostname()}`)
    .option('--dry-run', 'show the scope and what would be recorded, record nothing')
    .addHelpText('after', `\nFilter language (--where):\n${filterGrammar}\n`)
    .action(async (opts: { model: string; endpoint?: string; since?: string; until?: string; where?: string; reason: string; action: string; actor: string; dryRun?: boolean }) => {
      const o = scopeOptionsFrom(opts);
      const { config, log } = cliContext();
      const plan = await planRemediation(configQuery(config), { ...o, reason: opts.reason, action: opts.action, actor: opts.actor });
      process.stdout.write(formatScope(plan.scope));
      const ids = plan.events.reduce((s, e) => s + e.event_ids.length, 0);
      if (opts.dryRun) {
        process.stdout.write(`\n(dry run) would record remediation "${opts.action}" referencing ${ids} stored decisions in ${plan.events.length} part(s); nothing written.\n`);
        return;
      }
      await publishRemediation(config, log, plan);
      process.stdout.write(
        `\nremediation ${plan.remediation_id} (${opts.action}) references ${ids} stored decisions in ${plan.events.length} part(s)` +
          `${shortfallNote(plan.scope, ids) ? `; ${shortfallNote(plan.scope, ids)} (no record to reference)` : ''}.\n` +
          `Follow it with: dlog query "SELECT * FROM v_remediations WHERE remediation_id = {id:String}" -p id=${plan.remediation_id}\n`,
      );
    });
}
