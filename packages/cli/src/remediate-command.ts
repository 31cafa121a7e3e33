import { randomUUID } from 'node:crypto';
import os from 'node:os';
import type { Command } from 'commander';
import { AuditInputError, configQuery, modelRef, type AuditQuery } from './audit-query.js';
import { idParts, publishRemediation, type RemediationEvent, type RemediationPlan } from './audit-events.js';
import { cliContext } from './context.js';
import { computeScope, formatScope, isArtifactScope, isEmptyScope, resolveScope, scopeDecisions, shortfallNote, type ScopeRequest } from './scope.js';
import { addScopeOptions, scopeOptionsFrom, type ScopeFlags } from './scope-command.js';
import { filterGrammar } from './where-filter.js';

/**
 * A remediation of every stored decision of a scope, of a model version or of an artifact. The
 * scope is resolved once, so its counts and the ids it references are the same decisions.
 */
export async function planScopeRemediation(q: AuditQuery, o: ScopeRequest & { reason: string; action: string; actor: string }): Promise<RemediationPlan> {
  if (!o.reason.trim()) throw new AuditInputError('--reason is required: the incident, alert id or ticket the remediation answers.');
  const resolved = await resolveScope(q, o);
  const scope = await computeScope(q, resolved);
  if (isEmptyScope(scope)) throw new AuditInputError(`Nothing to remediate: no decisions of ${scope.label} match this scope. Check it with dlog scope first.`);
  const ids: string[] = [];
  for await (const page of scopeDecisions(q, resolved)) for (const r of page) ids.push(String(r.event_id));
  const remediation_id = randomUUID();
  const cut = idParts(ids);
  const parts = cut.length;
  const ts = Date.now();
  const events: RemediationEvent[] = [];
  for (let part = 0; part < parts; part++) {
    events.push({
      event_id: `${remediation_id}/${part}`,
      remediation_id,
      part,
      parts,
      action: o.action,
      reason: o.reason,
      actor: o.actor,
      ts,
      scope: {
        // The contract has one field for what the scope is of: for --artifact, the artifact's ref.
        model_ref: isArtifactScope(o) ? scope.label : modelRef(o.model),
        endpoint: o.endpoint ?? null,
        since: o.since ?? null,
        until: o.until ?? null,
        filter: o.where ?? null,
        exact_total: scope.exact,
        stored_total: ids.length,
      },
      event_ids: cut[part]!,
    });
  }
  return { remediation_id, scope, events };
}

export function registerRemediateCommand(program: Command): void {
  addScopeOptions(
    program
      .command('remediate')
      .description('append a remediation that references every stored decision of a scope (same options as dlog scope, --model or --artifact); the decisions themselves are never changed'),
  )
    .requiredOption('--reason <text>', 'incident, alert id or ticket')
    .option('--action <action>', 'what is to be done: review, reprocess, notify, reverse ...', 'review')
    .option('--actor <who>', 'who decides the remediation', `${os.userInfo().username}@${os.hostname()}`)
    .option('--dry-run', 'show the scope and what would be recorded, record nothing')
    .addHelpText('after', `\nFilter language (--where):\n${filterGrammar}\n`)
    .action(async (opts: ScopeFlags & { reason: string; action: string; actor: string; dryRun?: boolean }) => {
      const o = scopeOptionsFrom(opts);
      const { config, log } = cliContext();
      const plan = await planScopeRemediation(configQuery(config), { ...o, reason: opts.reason, action: opts.action, actor: opts.actor });
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
