import type { Command } from 'commander';
import { ensurePipelineTopics, replayDeadLetters, type ReplayReport } from '@dlog/kafka';
import { cliContext, cliKafka } from './context.js';

/** The pipeline's dead-letter topics (without DLOG_TOPIC_PREFIX), and who writes them. */
export const deadLetterTopics: Record<string, string> = {
  'inference.dlq': 'the gate: raw events it could not accept',
  'decisions.dlq': 'the enricher: decision records it could not read',
  'sink.dlq': 'the sink: records ClickHouse refused as data',
};

export class DlqUsageError extends Error {}

/** Checks the command line; the message says what to type instead. */
export function replayArgs(topic: string, opts: { reason?: string[]; all?: boolean }): { topic: string; reasons: string[] } {
  if (!Object.hasOwn(deadLetterTopics, topic)) {
    throw new DlqUsageError(`${JSON.stringify(topic)} is not a dead-letter topic; use one of ${Object.keys(deadLetterTopics).join(', ')} (without DLOG_TOPIC_PREFIX), e.g. dlog dlq replay inference.dlq --reason unknown_schema_id`);
  }
  const reasons = opts.reason ?? [];
  if (reasons.length === 0 && !opts.all) {
    throw new DlqUsageError(
      'Say which dead letters to replay: --reason <code> (repeatable), e.g. --reason unknown_schema_id --reason incompatible_schema, or --all. Most reasons (malformed bytes, personal data in an id) fail again; try --dry-run first.',
    );
  }
  if (reasons.length > 0 && opts.all) throw new DlqUsageError('--all replays every reason: give it or --reason, not both.');
  return { topic, reasons };
}

export function formatReplay(r: ReplayReport, dryRun: boolean): string {
  const total = Object.values(r.replayed).reduce((s, n) => s + n, 0);
  const by = Object.entries(r.replayed).sort((a, b) => b[1] - a[1]).map(([k, n]) => `${k} ${n}`).join(', ');
  const lines = [`${dryRun ? 'would replay' : 'replayed'} ${total}${by ? ` (${by})` : ''}`];
  if (r.alreadyReplayed > 0) lines.push(`left alone ${r.alreadyReplayed} replayed before (each letter goes back once)`);
  if (r.otherReason > 0) lines.push(`left alone ${r.otherReason} of other reasons`);
  if (r.unknownSource > 0) lines.push(`left alone ${r.unknownSource} without dlog.source.topic (not written by decision-log)`);
  if (r.stoppedShort.length > 0) lines.push(`partition(s) ${r.stoppedShort.join(', ')} went quiet before the end they had at the start: if letters are missing, run again (nothing is replayed twice)`);
  for (const t of r.pastRetention) {
    const days = (ms: number) => `${Math.round((ms / 86_400_000) * 10) / 10} days`;
    const keep = Math.ceil((Date.now() - t.oldest) / 86_400_000) + 2;
    lines.push(
      `not replayed: ${t.letters} letter(s) for ${t.source} up to ${days(Date.now() - t.oldest)} old, and ${t.source} keeps records ${days(t.retentionMs)}: ` +
        `written back with their original time, the broker would delete them before the gate read them. Raise its retention for the replay, ` +
        `e.g. kafka-configs.sh --bootstrap-server <broker> --alter --entity-type topics --entity-name ${t.source} --add-config retention.ms=${keep * 86_400_000}, ` +
        'run the replay again, and put the retention back once they are read',
    );
  }
  for (const w of r.withoutValue) lines.push(`not replayed: ${w.reason} letter without its value (too large for a record); the original is at ${w.source} while its topic keeps it`);
  return `${lines.join('\n')}\n`;
}

export function registerDlqCommands(program: Command): void {
  const dlq = program.command('dlq').description('dead letters: what the pipeline could not take, and putting it through again');
  dlq
    .command('replay')
    .description('write dead letters back to the topic they came from, each at most once (with their original key, bytes, headers and time)')
    .argument('<topic>', `one of ${Object.keys(deadLetterTopics).join(', ')}`)
    .option('--reason <code>', 'replay letters with this dlog.reason (repeatable)', (v: string, prev: string[] = []) => [...prev, v])
    .option('--all', 'replay letters of every reason')
    .option('--dry-run', 'count what would be replayed, write nothing')
    .addHelpText('after', `\nDead-letter topics:\n${Object.entries(deadLetterTopics).map(([t, w]) => `  ${t.padEnd(14)} ${w}`).join('\n')}\n`)
    .action(async (topic: string, opts: { reason?: string[]; all?: boolean; dryRun?: boolean }) => {
      const args = replayArgs(topic, opts);
      const ctx = cliContext();
      const { config, log } = ctx;
      const kafka = cliKafka(ctx);
      await ensurePipelineTopics(kafka, config.topicPrefix, [args.topic, 'dlq.replays']);
      const report = await replayDeadLetters({
        kafka,
        log,
        topic: `${config.topicPrefix}${args.topic}`,
        replayLog: `${config.topicPrefix}dlq.replays`,
        reasons: args.reasons,
        dryRun: opts.dryRun === true,
      });
      process.stdout.write(formatReplay(report, opts.dryRun === true));
    });
}
