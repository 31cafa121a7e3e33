import os from 'node:os';
import type { Command } from 'commander';
import { readManifest, registerArtifacts } from '@dlog/artifacts';
import { ensurePipelineTopics } from '@dlog/kafka';
import { cliContext, cliKafka } from './context.js';

export function registerRegisterCommand(program: Command): void {
  program
    .command('register')
    .description('register artifacts (models, datasets, images, configs, code, environments, policies) from a manifest')
    .argument('<manifest>', 'YAML or JSON file with an `artifacts:` list; see infra/examples/artifacts.yaml')
    .option('--by <who>', 'who registers (recorded on each artifact)', `${os.userInfo().username}@${os.hostname()}`)
    .action(async (manifest: string, opts: { by: string }) => {
      const ctx = cliContext();
      const { config, log } = ctx;
      const events = readManifest(manifest, opts.by);
      const kafka = cliKafka(ctx);
      await ensurePipelineTopics(kafka, config.topicPrefix, ['registry.artifacts']);
      const result = await registerArtifacts({
        kafka,
        topic: `${config.topicPrefix}registry.artifacts`,
        schemaRegistryUrl: config.schemaRegistryUrl,
        log,
        events,
      });
      for (const ref of result.added) process.stdout.write(`registered  ${ref}\n`);
      for (const ref of result.unchanged) process.stdout.write(`unchanged   ${ref} (already registered with this digest)\n`);
      for (const u of result.unknownParents) {
        process.stderr.write(`warning     ${u.ref} names parent ${u.parent}, which is not registered: its lineage shows it as unknown until it is (check the spelling)\n`);
      }
    });
}
