import type { Command } from 'commander';
import { ensurePipelineTopics } from '@dlog/kafka';
import { appliedMigrations, storeFromConfig, loadMigrations, migrate, MigrationError, pendingMigrations } from '@dlog/store';
import { cliContext, cliKafka } from './context.js';

/**
 * `dlog migrate`: applies the ClickHouse migrations in infra/clickhouse/migrations (embedded or
 * server, by CLICKHOUSE_URL), printing what it applied or that the schema is current.
 * `--topics` also creates the Kafka topics (docker-compose's setup step); `--status` only reports.
 */
export function registerMigrateCommand(program: Command): void {
  program
    .command('migrate')
    .description('apply the ClickHouse schema migrations (idempotent); --topics also creates the Kafka topics')
    .option('--status', 'list applied and pending migrations without applying anything')
    .option('--topics', 'also create the Kafka topics from infra/kafka/topics.yaml')
    .option('--dir <path>', 'migrations folder (default: infra/clickhouse/migrations)')
    .action(async (opts: { status?: boolean; topics?: boolean; dir?: string }) => {
      const ctx = cliContext();
      const { config, log } = ctx;
      if (opts.topics) {
        const kafka = cliKafka(ctx, '');
        const created = await ensurePipelineTopics(kafka, config.topicPrefix);
        process.stdout.write(created.length ? `created topics: ${created.join(', ')}\n` : 'topics: all present\n');
      }
      const store = await storeFromConfig(config, { createDatabase: true, log });
      try {
        const where = `${store.mode} ClickHouse at ${store.location}, database ${store.database}`;
        if (opts.status) {
          const all = loadMigrations(opts.dir);
          const applied = await appliedMigrations(store);
          const pending = new Set(pendingMigrations(all, applied).map((m) => m.version));
          process.stdout.write(`${where}\n`);
          for (const m of all) {
            const a = applied.find((x) => x.version === m.version);
            process.stdout.write(`  ${pending.has(m.version) ? 'pending' : 'applied'}  ${m.file}${a ? `  ${a.appliedAt}` : ''}\n`);
          }
          return;
        }
        const result = await migrate(store, { dir: opts.dir, log });
        for (const m of result.applied) {
          process.stdout.write(`applied ${m.file} (${m.statements.length} statement${m.statements.length === 1 ? '' : 's'})\n`);
        }
        const latest = result.all[result.all.length - 1];
        process.stdout.write(
          result.applied.length === 0
            ? `schema is current: ${result.all.length} migrations applied, latest ${latest?.file ?? '-'} (${where})\n`
            : `schema is now current at ${latest?.file ?? '-'} (${where})\n`,
        );
      } catch (err) {
        if (!(err instanceof MigrationError)) throw err;
        process.stderr.write(`dlog migrate: ${err.message}\n`);
        process.exitCode = 1;
      } finally {
        await store.close();
      }
    });
}
