import type { Consumer, Kafka, KafkaMessage, Message, Producer } from 'kafkajs';
import type { Logger } from 'pino';
import type { NativeKafka } from './native.js';
import { createNativeProcessor, metadataRefreshMs } from './native-processor.js';
import { recordBytes } from './dead-letter.js';

export interface OutputRecord {
  topic: string;
  messages: Message[];
}

export interface BatchContext {
  topic: string;
  partition: number;
}

export interface TransactionalProcessorOptions {
  kafka: Kafka;
  log: Logger;
  groupId: string;
  topics: string[];
  /**
   * Stable per instance: a restarted instance with the same id fences its dead predecessor and
   * aborts whatever transaction it left open.
   */
  transactionalId: string;
  /** Turns one fetched batch into what to produce. Bad data is output (dead letters), not a throw. */
  process: (messages: KafkaMessage[], ctx: BatchContext) => Promise<OutputRecord[]>;
  /**
   * Partitions whose batches are processed at once (default 1). Worth more than 1 only when
   * `process` does its work off this thread: then one batch is transformed while another's
   * transaction commits. Transactions themselves stay one at a time (one producer).
   */
  concurrency?: number;
  /** Bigger fetches amortise the transaction round trips over more records. */
  maxBytesPerPartition?: number;
  /** kafkajs only: the group session (default 30 s) and heartbeat interval (default 3 s); tests shorten them. */
  sessionTimeoutMs?: number;
  heartbeatIntervalMs?: number;
  fromBeginning?: boolean;
  onCommitted?: (info: BatchContext & { count: number; lastOffset: string; ms: number }) => void;
  /**
   * Run on librdkafka instead of kafkajs (see `pickNativeKafka`): same contract, a fraction of
   * the CPU per message. The kafkajs client above is then used for nothing here.
   */
  native?: { kafka: NativeKafka; brokers: string[]; clientId: string };
}

/**
 * Brokers refuse a produce request whose record batch for one partition exceeds
 * message.max.bytes (1 MiB by default), and a big fetch easily yields more output than that. So
 * the output is sent in pieces well below the default, whatever the cluster's setting.
 */
export const maxChunkBytes = 768 * 1024;

/** Splits messages into sends whose record batches stay under the broker's default limit. */
export function* chunkMessages(messages: Message[], maxBytes = maxChunkBytes): Generator<Message[]> {
  let start = 0;
  let bytes = 0;
  for (let i = 0; i < messages.length; i++) {
    const m = messages[i]!;
    // Repeated headers (arrays) counted in full: counted once, such a chunk went past the limit.
    const size = recordBytes(m);
    if (bytes + size > maxBytes && i > start) {
      yield messages.slice(start, i);
      start = i;
      bytes = 0;
    }
    bytes += size;
  }
  if (start < messages.length) yield messages.slice(start);
}

function* chunks(outputs: OutputRecord[]): Generator<OutputRecord> {
  for (const { topic, messages } of outputs) for (const part of chunkMessages(messages)) yield { topic, messages: part };
}

export interface TransactionalProcessor {
  start(): Promise<void>;
  /** Stops fetching and waits for the batch in hand to commit or abort. */
  stop(): Promise<void>;
  /**
   * This instance's member id in its consumer group since its last join, where the client tells
   * it (kafkajs); undefined on librdkafka, whose transactional offset commits carry the member id
   * and generation, so the broker refuses them from a member no longer in the group.
   */
  memberId(): string | undefined;
}

/**
 * Consume → transform → produce with Kafka transactions: the outputs of a batch and the consumer
 * offsets that cover it commit atomically. A crash at any point either commits all of a batch or
 * none of it; read_committed consumers downstream never see a half batch, and the restarted
 * instance re-reads exactly the uncommitted input. That gives exactly-once from one topic to
 * the next without any deduplication downstream.
 */
export function createTransactionalProcessor(opts: TransactionalProcessorOptions): TransactionalProcessor {
  if (opts.native) {
    const { kafka: _kafkajs, native, ...rest } = opts;
    return createNativeProcessor({ ...rest, native: native.kafka, brokers: native.brokers, clientId: native.clientId });
  }
  const log = opts.log.child({ component: 'processor', groupId: opts.groupId });
  let consumer: Consumer | undefined;
  let producer: Producer | undefined;
  let memberId: string | undefined;
  const sessionTimeout = opts.sessionTimeoutMs ?? 30_000;
  const heartbeatInterval = opts.heartbeatIntervalMs ?? 3_000;

  const connectProducer = async (): Promise<Producer> => {
    const p = opts.kafka.producer({
      transactionalId: opts.transactionalId,
      idempotent: true,
      maxInFlightRequests: 1,
      transactionTimeout: 60_000,
      // A transaction begun right after the previous commit can meet CONCURRENT_TRANSACTIONS
      // while the broker finishes writing markers; kafkajs's default first retry waits ~300 ms.
      retry: { initialRetryTime: 20, maxRetryTime: 2_000, retries: 10 },
    });
    try {
      await p.connect();
      // kafkajs's connect() takes a producer id without the transactional id; only the first
      // transaction() registers it, which fences an earlier producer with that id and waits until
      // the broker has finished its transaction. Done here, so that has happened before anything
      // reads the group's offsets: recover() read them while a commit it had lost the answer to
      // was still on its way, and the batch was committed twice. The abort is local (nothing was
      // added to the transaction).
      await (await p.transaction()).abort();
    } catch (err) {
      // Half connected (its InitProducerId refused): its sockets would stay open, out of stop()'s reach.
      await p.disconnect().catch(() => undefined);
      throw err;
    }
    return p;
  };

  let stopping = false;
  /** Counts start() calls: a consumer replacement begun under an earlier one starts nothing. */
  let generation = 0;
  /** The replacement of a crashed consumer under way, if any: stop() waits for it. */
  let replacing: Promise<void> | undefined;
  // Reads the group's committed offsets after a commit whose outcome is unknown (see recover).
  const admin = opts.kafka.admin();

  /**
   * After a transaction whose commit may or may not have happened (EndTxn sent, no answer; or
   * kafkajs left unable to abort). kafkajs's transaction stays "committing" for good then, so a
   * new producer is made with the same transactional id: its InitProducerId waits until the
   * broker has finished the old transaction, committed or aborted, and fences the old producer.
   * Only then does the group's committed offset say which, and reading goes on from there. From
   * kafkajs's own position (the batch's start) a commit that landed with its answer lost was
   * read, written and committed again. Until the broker answers, nothing is read further here;
   * a rebalance meanwhile has the partition's next owner start from the committed offset too.
   */
  const recover = async (old: Producer, topic: string, partition: number, first: string): Promise<void> => {
    producer = undefined;
    await old.disconnect().catch(() => undefined);
    for (let attempt = 0; !stopping; attempt++) {
      try {
        // Made once; only the offset read is tried again (a producer a retry replaced stayed open).
        producer ??= await connectProducer();
        const [t] = await admin.fetchOffsets({ groupId: opts.groupId, topics: [topic] });
        const at = t?.partitions.find((x) => x.partition === partition)?.offset;
        // No offset yet for the group: the transaction did not commit, so from the batch's start.
        const offset = at === undefined || BigInt(at) < 0n ? first : at;
        consumer?.seek({ topic, partition, offset });
        log.info({ topic, partition, offset }, 'reading again from the committed offset after a transaction of unknown outcome');
        return;
      } catch (err) {
        const delay = Math.min(5_000, 200 * 2 ** attempt);
        log.warn({ err, topic, partition, retryInMs: delay }, 'cannot learn the outcome of the last transaction yet; waiting');
        await new Promise((r) => setTimeout(r, delay));
      }
    }
  };

  return {
    memberId: () => memberId,
    async start() {
      stopping = false;
      const mine = ++generation;
      const current = () => !stopping && generation === mine;
      producer = await connectProducer();
      await admin.connect();
      // One open transaction per producer: batches processed side by side take turns here.
      let txTail: Promise<unknown> = Promise.resolve();
      const inTurn = <T>(fn: () => Promise<T>): Promise<T> => {
        const run = txTail.then(fn, fn);
        txTail = run.catch(() => undefined);
        return run;
      };
      const runConsumer = async (): Promise<void> => {
        const c = opts.kafka.consumer({
          groupId: opts.groupId,
          readUncommitted: false,
          maxBytesPerPartition: opts.maxBytesPerPartition ?? 8 * 1024 * 1024,
          maxBytes: 32 * 1024 * 1024,
          maxWaitTimeInMs: 200,
          sessionTimeout,
          heartbeatInterval,
          metadataMaxAge: metadataRefreshMs,
        });
        consumer = c;
        c.on(c.events.GROUP_JOIN, ({ payload }) => (memberId = payload.memberId));
        // kafkajs gives up on a consumer after a non-retriable error (or retries exhausted) and
        // then reads nothing more, silently: the worker looked alive with its lag growing. A new
        // consumer takes its place and reads from the group's committed offsets.
        c.on(c.events.CRASH, ({ payload }) => {
          if (payload.restart || !current() || consumer !== c) return;
          log.error({ err: payload.error }, 'the Kafka consumer stopped for good; starting a new one, from the committed offsets');
          replacing = (async () => {
            await c.disconnect().catch(() => undefined);
            for (let attempt = 0; current(); attempt++) {
              try {
                await runConsumer();
                return;
              } catch (err) {
                const delay = Math.min(30_000, 500 * 2 ** attempt);
                log.error({ err, retryInMs: delay }, 'starting a new Kafka consumer failed');
                // In steps, so a stop() waiting for this loop is not held for the whole delay.
                for (let waited = 0; waited < delay && current(); waited += 200) await new Promise((r) => setTimeout(r, 200));
              }
            }
          })().finally(() => (replacing = undefined));
        });
        // Stopped (or started again) while this one connected: it must not go on to join the group.
        const gone = async () => {
          if (current()) return false;
          await c.disconnect().catch(() => undefined);
          return true;
        };
        await c.connect();
        if (await gone()) return;
        for (const topic of opts.topics) await c.subscribe({ topic, fromBeginning: opts.fromBeginning ?? true });
        if (await gone()) return;
        await c.run({
          autoCommit: false,
          eachBatchAutoResolve: false,
          partitionsConsumedConcurrently: opts.concurrency ?? 1,
          eachBatch: async ({ batch, resolveOffset, heartbeat, isRunning, isStale }) => {
            if (batch.messages.length === 0 || !isRunning() || isStale()) return;
            const t0 = Date.now();
            const ctx = { topic: batch.topic, partition: batch.partition };
            // kafkajs heartbeats only between batches, and its offset commits in a transaction
            // carry neither member id nor generation, so the broker cannot refuse them from a
            // member the group has dropped. A batch that outlived the session (30 s; a gate thread
            // may take 60) had its partition handed to another member, which read it again from
            // the committed offset and committed it; then this one committed it too, and every
            // input of the batch came out twice. So the session is kept alive while the batch is
            // worked on, and a heartbeat the coordinator refuses (a rebalance under way, or this
            // member gone) means the batch is not committed here.
            let lost: unknown;
            const keeper = setInterval(() => {
              heartbeat().catch((err: unknown) => (lost ??= err));
            }, heartbeatInterval);
            let outputs: OutputRecord[];
            try {
              outputs = await opts.process(batch.messages, ctx);
            } finally {
              clearInterval(keeper);
            }
            const last = batch.messages[batch.messages.length - 1]!.offset;
            const committed = await inTurn(async () => {
              // Offsets moved under this batch (a seek) while it waited its turn: not ours to commit.
              if (isStale()) return false;
              if (lost !== undefined) throw lost;
              // Made again here after a failed transaction (see below), once the broker answers.
              const p = (producer ??= await connectProducer());
              const tx = await p.transaction();
              let offsetsSent = false;
              let sending = true;
              try {
                for (const chunk of chunks(outputs)) await tx.send({ ...chunk, acks: -1 });
                sending = false;
                // Last check before the offsets go. kafkajs sends a heartbeat only if none went in
                // the last interval (3 s), so this one asks the coordinator, or the keeper's last
                // one did within that interval: an accepted heartbeat at most 3 s old leaves the
                // session (30 s) holding this member's partitions past the commit, and a rebalance
                // waits for this member to rejoin, which it does only after this batch.
                await heartbeat();
                if (lost !== undefined) throw lost;
                offsetsSent = true;
                await tx.sendOffsets({
                  consumerGroupId: opts.groupId,
                  topics: [{ topic: batch.topic, partitions: [{ partition: batch.partition, offset: (BigInt(last) + 1n).toString() }] }],
                });
                await tx.commit();
              } catch (err) {
                const aborted = await tx.abort().then(
                  () => true,
                  () => false,
                );
                // Nothing of it reached the group: read again from the batch's start, as kafkajs does.
                if (aborted && !offsetsSent) {
                  // A producer whose send failed is made again for the next try. Fenced by another
                  // with the same transactional id (a replica sharing DLOG_INSTANCE_ID), its abort
                  // is local and passes, and kept, it failed every batch for good while consumer
                  // after consumer was started in the crashed one's place.
                  if (sending) {
                    if (producer === p) producer = undefined;
                    await p.disconnect().catch(() => undefined);
                  }
                  throw err;
                }
                log.warn({ err, topic: batch.topic, partition: batch.partition }, 'transaction failed with its outcome unknown; making a new producer and reading the committed offset');
                await recover(p, batch.topic, batch.partition, batch.messages[0]!.offset);
                return false;
              }
              return true;
            });
            if (!committed) return;
            resolveOffset(last);
            // Reported before the heartbeat, which throws when a rebalance is pending.
            opts.onCommitted?.({ ...ctx, count: batch.messages.length, lastOffset: last, ms: Date.now() - t0 });
            await heartbeat();
          },
        });
      };
      await runConsumer();
    },
    async stop() {
      stopping = true;
      await replacing;
      // Order matters: the consumer finishes (commits or aborts) the batch in hand before the
      // producer that owns the transaction goes away.
      await consumer?.disconnect();
      await producer?.disconnect();
      await admin.disconnect();
    },
  };
}
