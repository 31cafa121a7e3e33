/**
 * The benchmarks measure against a running broker and schema registry. Without them kafkajs
 * retried for half a minute and then printed a stack trace; this checks first, in a few seconds,
 * and says what to type.
 */
import net from 'node:net';
import type { Config } from '@dlog/config';

const timeoutMs = 3_000;

function reachable(host: string, port: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    const done = (problem: string | undefined) => {
      socket.destroy();
      resolve(problem);
    };
    socket.setTimeout(timeoutMs, () => done(`no answer in ${timeoutMs / 1000} s`));
    socket.once('connect', () => done(undefined));
    socket.once('error', (err: NodeJS.ErrnoException) => done(err.code ?? err.message));
  });
}

async function registryProblem(url: string): Promise<string | undefined> {
  try {
    // Any answer will do (one that wants credentials included): this is about reachability.
    await fetch(`${url.replace(/\/+$/, '')}/subjects`, { signal: AbortSignal.timeout(timeoutMs) });
    return undefined;
  } catch (err) {
    const cause = (err as { cause?: { code?: string } }).cause;
    return cause?.code ?? (err as Error).message;
  }
}

/** Exits with a message naming what is missing and the command that starts it. */
export async function requireStack(config: Pick<Config, 'kafkaBrokers' | 'schemaRegistryUrl'>): Promise<void> {
  const problems: string[] = [];
  const broker = config.kafkaBrokers[0] ?? '';
  const colon = broker.lastIndexOf(':');
  const host = broker.slice(0, colon).replace(/^\[|\]$/g, '');
  const port = Number(broker.slice(colon + 1));
  const kafka = colon > 0 && Number.isInteger(port) ? await reachable(host, port) : 'not host:port';
  if (kafka) problems.push(`Kafka at ${broker} (KAFKA_BROKERS): ${kafka}`);
  const registry = await registryProblem(config.schemaRegistryUrl);
  if (registry) problems.push(`the schema registry at ${config.schemaRegistryUrl} (SCHEMA_REGISTRY_URL): ${registry}`);
  if (problems.length === 0) return;
  process.stderr.write(
    `The benchmarks run against a running stack, and cannot reach ${problems.join('; nor ')}.\n` +
      'Start the local one with:  npm run dlog -- stack up\n' +
      '(and stop it afterwards with:  npm run dlog -- stack down), or point KAFKA_BROKERS and SCHEMA_REGISTRY_URL at yours.\n',
  );
  process.exit(2);
}
