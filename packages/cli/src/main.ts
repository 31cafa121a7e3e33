#!/usr/bin/env node
import { Command, CommanderError } from 'commander';
import { ConfigError } from '@dlog/config';
import { StackError } from '@dlog/stack';
import { registerStackCommands, registerUpCommand } from './stack-commands.js';

const program = new Command()
  .name('dlog')
  .description('decision-log: an audit trail for every AI decision')
  .showSuggestionAfterError(true)
  .showHelpAfterError('(run `dlog --help` for the list of commands)')
  .exitOverride();

registerUpCommand(program);
registerStackCommands(program);

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) {
    process.exitCode = err.exitCode;
  } else if (err instanceof ConfigError) {
    process.stderr.write(`dlog: configuration error: ${err.message}\n`);
    process.exitCode = 2;
  } else if (err instanceof StackError) {
    process.stderr.write(`dlog: ${err.message}\n`);
    process.exitCode = 1;
  } else {
    process.stderr.write(`dlog: ${(err as Error).stack ?? String(err)}\n`);
    process.exitCode = 1;
  }
}
