#!/usr/bin/env node
import { Command, CommanderError } from 'commander';
import { ConfigError, loadConfig } from '@dlog/config';
import { StackError } from '@dlog/stack';
import { ManifestError, RegistrationConflictError } from '@dlog/artifacts';
import { QueryEndpointError, ReadOnlySqlError } from '@dlog/store';
import { registerStackCommands, registerUpCommand } from './stack-commands.js';
import { registerMigrateCommand } from './migrate-command.js';
import { registerRegisterCommand } from './register-command.js';
import { registerQueryCommand } from './query-command.js';
import { registerSimulateCommand } from './simulate-command.js';
import { registerTraceCommand } from './trace-command.js';
import { registerScopeCommand } from './scope-command.js';
import { registerDiffCommand } from './diff-command.js';
import { registerLineageCommand } from './lineage-command.js';
import { registerDeployCommands } from './deploy-commands.js';
import { registerRemediateCommand } from './remediate-command.js';
import { DlqUsageError, registerDlqCommands } from './dlq-command.js';
import { kafkaUnavailableMessage } from './context.js';
import { settleQueries } from './query-command.js';
import { outputFilesInProgress } from './output-file.js';

const program = new Command()
  .name('dlog')
  .description('decision-log: an audit trail for every AI decision')
  .showSuggestionAfterError(true)
  .showHelpAfterError('(run `dlog --help` for the list of commands)')
  .exitOverride();

registerUpCommand(program);
registerStackCommands(program);
registerMigrateCommand(program);
registerRegisterCommand(program);
registerQueryCommand(program);
registerSimulateCommand(program);
registerTraceCommand(program);
registerScopeCommand(program);
registerDiffCommand(program);
registerLineageCommand(program);
registerDeployCommands(program);
registerRemediateCommand(program);
registerDlqCommands(program);

/** The "cannot reach Kafka" message, with the brokers the command used, or undefined. */
function kafkaFailure(err: unknown): string | undefined {
  let brokers: string[];
  try {
    brokers = loadConfig().kafkaBrokers;
  } catch {
    brokers = [process.env.KAFKA_BROKERS ?? '?'];
  }
  return kafkaUnavailableMessage(err, brokers);
}

/**
 * A reader that stops early (`dlog query ... | head`) closes the pipe, and the next write fails
 * with EPIPE: an unhandled 'error' event (a stack trace), or `dlog: write EPIPE` and exit 1, or a
 * write waiting for 'drain' that never came. What the reader did not take is not wanted: the
 * process ends with 0, as `head` users expect, once the queries it started have ended (the
 * embedded engine crashes a process that exits under one). An export to an --out file goes on
 * (stdout had only its summary) and ends as it would have. Any other failure of stdout (a full
 * disk under `> file`) is an error.
 */
let stdoutFailure: NodeJS.ErrnoException | undefined;
/** `dlog up` runs until it is stopped: its status lines going nowhere is no reason to stop the pipeline without its shutdown. */
let runsUntilStopped = false;
program.hook('preAction', (_program, action) => {
  runsUntilStopped = action.parent === program && action.name() === 'up';
});
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (stdoutFailure) return; // every later write fails the same way
  stdoutFailure = err;
  if (err.code !== 'EPIPE') {
    process.stderr.write(`dlog: cannot write to standard output: ${err.message}\n`);
    process.exitCode = 1;
  }
  if (runsUntilStopped || outputFilesInProgress()) return;
  void settleQueries().then(() => process.exit(process.exitCode ?? 0));
});
// Closed too (`2>&1 | head`): there is no one left to tell anything.
process.stderr.on('error', () => undefined);

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (stdoutFailure && (err === stdoutFailure || (err as NodeJS.ErrnoException).code === stdoutFailure.code)) {
    // The command stopped on the closed stdout, already handled above.
  } else if (err instanceof CommanderError) {
    process.exitCode = err.exitCode;
  } else if (err instanceof ConfigError) {
    process.stderr.write(`dlog: configuration error: ${err.message}\n`);
    process.exitCode = 2;
  } else if (err instanceof StackError || err instanceof ManifestError || err instanceof RegistrationConflictError || err instanceof ReadOnlySqlError || err instanceof QueryEndpointError || err instanceof DlqUsageError) {
    process.stderr.write(`dlog: ${err.message}\n`);
    process.exitCode = 1;
  } else if (kafkaFailure(err) !== undefined) {
    process.stderr.write(`dlog: ${kafkaFailure(err)}\n`);
    process.exitCode = 1;
  } else {
    // Expected failures (ClickHouse errors, unreachable brokers) read best as one line; the stack
    // is for LOG_LEVEL=debug.
    const e = err as Error;
    process.stderr.write(`dlog: ${process.env.LOG_LEVEL === 'debug' ? (e.stack ?? String(e)) : (e.message ?? String(e))}\n`);
    process.exitCode = 1;
  }
}

// A finished command ends the process, with its exit code, once its output is flushed: a Kafka
// socket that a client library leaves half-closed must not keep a one-shot command hanging.
// (`dlog up` never gets here: it runs until its shutdown exits the process.)
await settleQueries();
await new Promise<void>((resolve) => process.stdout.write('', () => resolve()));
process.exit(process.exitCode ?? 0);
