import os from 'node:os';
import type { Command } from 'commander';
import { AuditInputError, configQuery, parseModel } from './audit-query.js';
import { planDeploy, planRollback, publishDeployment, type DeploymentEvent } from './audit-events.js';
import { cliContext } from './context.js';

const defaultActor = () => `${os.userInfo().username}@${os.hostname()}`;

/**
 * What `dlog deploy` / `dlog rollback` print once the event is sent. The environment is named
 * because it may have been inferred: a prod rollback once went to staging's history unseen.
 */
export function describeDeployment(e: DeploymentEvent): string {
  const m = e.model_ref.replace('registry://models/', '');
  const prev = e.previous_model_ref ? e.previous_model_ref.replace('registry://models/', '') : null;
  const where = e.environment ? `${e.endpoint} in ${e.environment}` : `${e.endpoint} (no environment)`;
  const what =
    e.action === 'rollback' ? `rolled ${where} back to ${m}${prev ? ` (from ${prev})` : ''}` : `${e.action === 'canary' ? 'canary' : 'deployed'} ${m} on ${where} at ${(e.traffic_share * 100).toFixed(1)}%${prev ? ` (next to / replacing ${prev})` : ''}`;
  return `${what}\n  event ${e.event_id} at ${new Date(e.ts).toISOString()}; scopes and windows include it once the sink has written it.\n`;
}

export function registerDeployCommands(program: Command): void {
  program
    .command('deploy')
    .description('record a deployment (or a canary) of a model version on an endpoint, so scopes know its window')
    .requiredOption('--endpoint <endpoint>', 'serving endpoint, e.g. loan-api')
    .requiredOption('--model <name:version>', 'the model version now serving, e.g. loan-approver:2.5.0')
    .option('--share <fraction>', 'share of the endpoint traffic, 0 < share <= 1 (default 1, or 0.1 with --canary)')
    .option('--canary', 'a partial share next to what serves now')
    .option('--environment <env>', 'prod, staging ...')
    .option('--image <ref>', 'inference image ref')
    .option('--config <ref>', 'config ref, e.g. configs/prod/loan-params:v3')
    .option('--reason <text>', 'change ticket or free text')
    .option('--actor <who>', 'who deploys', defaultActor())
    .action(async (opts: { endpoint: string; model: string; share?: string; canary?: boolean; environment?: string; image?: string; config?: string; reason?: string; actor: string }) => {
      const share = opts.share === undefined ? undefined : Number(opts.share);
      if (share !== undefined && !Number.isFinite(share)) throw new AuditInputError(`--share is a fraction, e.g. --share 0.1 (got ${JSON.stringify(opts.share)}).`);
      const model = parseModel(opts.model);
      const { config, log } = cliContext();
      const e = await planDeploy(configQuery(config), { endpoint: opts.endpoint, model, share, canary: opts.canary, environment: opts.environment, image: opts.image, configRef: opts.config, reason: opts.reason, actor: opts.actor });
      await publishDeployment(config, log, e);
      process.stdout.write(describeDeployment(e));
    });

  program
    .command('rollback')
    .description('record that an endpoint returned to an earlier model version')
    .requiredOption('--endpoint <endpoint>', 'serving endpoint, e.g. loan-api')
    .requiredOption('--to <name:version>', 'the version returned to, e.g. loan-approver:2.4.1')
    .requiredOption('--reason <text>', 'incident, alert id or ticket')
    .option('--environment <env>', 'prod, staging ...')
    .option('--actor <who>', 'who rolls back', defaultActor())
    .action(async (opts: { endpoint: string; to: string; reason: string; environment?: string; actor: string }) => {
      const to = parseModel(opts.to, '--to');
      const { config, log } = cliContext();
      const e = await planRollback(configQuery(config), { endpoint: opts.endpoint, to, reason: opts.reason, actor: opts.actor, environment: opts.environment });
      await publishDeployment(config, log, e);
      process.stdout.write(describeDeployment(e));
    });
}
