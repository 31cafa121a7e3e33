import type { Kafka } from 'kafkajs';
import type * as RdKafka from 'node-rdkafka';
import type { Schema } from 'avsc';
import { createRegistry, registerAvro } from '@dlog/contracts';
import { clientErrorLog, nativeCall, type NativeKafka } from '@dlog/kafka';
import { readBack, sdkKafka, type KafkaTransportOptions } from './kafka-transport.js';
import { messageOf } from './safe-error.js';
import type { OutMessage, Transport } from './transport.js';

/** One message handed to the producer, until its delivery report. */
interface Flight {
  state: 'pending' | 'delivered' | 'failed';
  /** The session it was produced in: a pending flight of an ended session will never report. */
  session: Session;
  /** The send() calls waiting for it: the first, and a retry that joined it. */
  waits: Wait[];
}

/** One send() call waiting for its messages. */
interface Wait {
  left: number;
  error?: Error;
  done: boolean;
  resolve(): void;
  reject(err: Error): void;
}

/** The producer cannot go on (librdkafka fatal error): the logger starts a new session. */
export class SessionLostError extends Error {
  readonly sessionLost = true;
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'SessionLostError';
  }
}

/**
 * librdkafka producer (node-rdkafka), idempotent: under half of kafkajs's CPU per event (bare
 * producers in bench:sdk, 1.1 KB events: 7-9 vs 15-19 µs), and the CRC and the batching run on
 * librdkafka's threads, off the caller's event loop.
 *
 * Its delivery guarantee matches the kafkajs transport's: librdkafka retries a message inside one
 * producer session, in order and deduplicated by the broker, with no time limit. send() still
 * reports a failure after requestTimeoutMs (the logger counts it, spills, backs off), but leaves the
 * messages in flight; when the logger retries the same batch, send() waits for those messages
 * instead of producing them again, and produces only what is new or definitively refused. Only a
 * fatal producer error ends the session: send() then rejects with SessionLostError, and the logger
 * resets the transport and reads the topic back before resending (see Transport.written). With
 * enable.gapless.guarantee, a message refused for good while later ones of its partition went
 * through is such a fatal error too, so a resend never lands out of order.
 */
export function nativeTransport(opts: KafkaTransportOptions & { native: NativeKafka }): Transport {
  const registry = createRegistry(opts.registryUrl);
  const onClientError = clientErrorLog(opts.log);
  let session: Session | undefined;
  let opening: Promise<Session> | undefined;
  /** Bumped by reset() and disconnect(): a connect that started before is not installed. */
  let generation = 0;
  let closed = false;
  /**
   * Message value → its latest flight (values are the logger's own buffers). Kept across sessions:
   * a delivery stays a fact, while a flight still pending in an ended session is produced again.
   */
  const flights = new WeakMap<Buffer, Flight>();
  let readBackKafka: Kafka | undefined;
  /** Read-backs under way, ended by disconnect() (one could run for 10 request timeouts). */
  const readBacks = new Set<AbortController>();
  /** Ends the connect under way (its waiting and its timer), so that close() does not wait for it. */
  let abortConnect: ((err: Error) => void) | undefined;

  const finish = (w: Wait): void => {
    if (w.done) return;
    w.done = true;
    if (w.error) w.reject(w.error);
    else w.resolve();
  };

  const failure = (s: Session, what: string, err: RdKafka.LibrdKafkaError): Error =>
    isFatal(err) || s.fatal ? new SessionLostError(what, { cause: err }) : new Error(what, { cause: err });

  const onDelivery = (s: Session, err: RdKafka.LibrdKafkaError | null | undefined, report: RdKafka.DeliveryReport): void => {
    const f = report.opaque as Flight | undefined;
    if (!f || f.state !== 'pending') return;
    f.state = err ? 'failed' : 'delivered';
    for (const w of f.waits) {
      if (w.done) continue;
      if (err) w.error ??= failure(s, `delivery to ${report.topic} [${report.partition}] failed: ${err.message}`, err);
      if (--w.left === 0) finish(w);
    }
    f.waits = [];
  };

  // Without waiting for what is still queued: messages delivered while flushing would count as
  // unsent to the logger, which spills them (and a later process would send them again).
  // A producer whose connect failed is not connected: its disconnect() throws, and nativeCall's
  // timer would then hold the process for 10 s.
  const close = (s: Session): Promise<void> =>
    (s.p.isConnected() ? nativeCall((cb) => s.p.disconnect(0, (err) => cb(err as RdKafka.LibrdKafkaError | null)), 'producer disconnect', 10_000) : Promise.resolve())
      .catch(() => undefined)
      .then(() => s.detach());

  const open = (): Promise<Session> => {
    if (closed) return Promise.reject(new Error('the Kafka transport is closed'));
    if (session) return Promise.resolve(session);
    return (opening ??= (async () => {
      const gen = generation;
      const p = new opts.native.Producer(
        {
          'metadata.broker.list': opts.brokers.join(','),
          'client.id': opts.clientId,
          'enable.idempotence': true,
          // A message refused for good while later ones of its partition landed fails the session
          // (fatal) instead of leaving a gap that a resend would fill out of order.
          'enable.gapless.guarantee': true,
          'compression.codec': opts.compression,
          'linger.ms': 5,
          dr_cb: true,
        },
        {
          // Java's partitioner, as kafkajs's default: a key lands on the same partition either way.
          partitioner: 'murmur2_random',
          // No time limit: librdkafka retries within the session until the broker takes the message.
          'message.timeout.ms': 0,
        },
      );
      const onError = (err: RdKafka.LibrdKafkaError): void => {
        if (isFatal(err)) s.fatal ??= new SessionLostError(`the producer failed: ${err.message}`, { cause: err });
        onClientError(err);
      };
      const onReport = (err: RdKafka.LibrdKafkaError | null | undefined, report: RdKafka.DeliveryReport): void => onDelivery(s, err, report);
      const s: Session = {
        p,
        detach: () => {
          p.removeListener('event.error', onError);
          p.removeListener('delivery-report', onReport);
        },
      };
      p.on('event.error', onError);
      p.on('delivery-report', onReport);
      try {
        // librdkafka's metadata request of the connect cannot be cancelled, and keeps the process
        // alive after close() until it times out: kept short, the logger retries a failed connect.
        await connectProducer(p, Math.min(opts.requestTimeoutMs, connectMetadataMs), (abort) => (abortConnect = abort), () => {
          // Abandoned, then connected after all: close it, or it would keep the process alive.
          void close(s);
        });
      } catch (err) {
        if (gen === generation) opening = undefined;
        await close(s);
        throw err;
      }
      if (gen !== generation || closed) {
        await close(s);
        throw new Error('the Kafka transport was reset while connecting');
      }
      // Delivery reports are served from here.
      p.setPollInterval(5);
      session = s;
      opening = undefined;
      return s;
    })());
  };

  /** Ends the current session (and any connect under way); its producer is gone when this resolves. */
  const endSession = async (): Promise<void> => {
    generation++;
    abortConnect?.(new Error('producer connect abandoned: the transport was reset or closed'));
    abortConnect = undefined;
    const s = session;
    session = undefined;
    opening = undefined;
    if (s) await close(s);
  };

  return {
    async connect() {
      await open();
    },
    register(subject: string, schema: Schema) {
      return registerAvro(registry, opts.registryUrl, subject, schema);
    },
    async send(topic: string, messages: OutMessage[]) {
      const s = await open();
      if (s.fatal) throw s.fatal;
      let resolve!: () => void;
      let reject!: (err: Error) => void;
      const acked = new Promise<void>((res, rej) => ((resolve = res), (reject = rej)));
      const w: Wait = { left: 0, done: false, resolve, reject };
      for (const m of messages) {
        let f = flights.get(m.value);
        if (f?.state === 'delivered') continue;
        if (!f || f.state === 'failed' || f.session !== s) {
          f = { state: 'pending', session: s, waits: [] };
          try {
            s.p.produce(topic, null, m.value, m.key, Date.now(), f);
          } catch (err) {
            // What went out is still awaited (it may land); the rest fails this send.
            const e = err as RdKafka.LibrdKafkaError;
            w.error = failure(s, `producing to ${topic} failed: ${messageOf(e)}`, e);
            break;
          }
          flights.set(m.value, f);
        }
        f.waits.push(w);
        w.left++;
      }
      if (w.left === 0) finish(w);
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<never>((_, rej) => {
        timer = setTimeout(() => {
          if (w.done) return;
          w.done = true;
          rej(new Error(`${w.left} of ${messages.length} message(s) to ${topic} not acknowledged within ${opts.requestTimeoutMs} ms; they stay in flight`));
        }, opts.requestTimeoutMs);
      });
      try {
        await Promise.race([acked, late]);
      } finally {
        clearTimeout(timer);
      }
    },
    written(topic, sinceMs, eventIds) {
      if (closed) return Promise.reject(new Error('the Kafka transport is closed'));
      readBackKafka ??= sdkKafka(opts);
      const abort = new AbortController();
      readBacks.add(abort);
      return readBack(readBackKafka, opts.requestTimeoutMs, topic, sinceMs, eventIds, abort.signal).finally(() => readBacks.delete(abort));
    },
    delivered(value: Buffer) {
      return flights.get(value)?.state === 'delivered';
    },
    reset: endSession,
    async disconnect() {
      closed = true;
      for (const a of readBacks) a.abort();
      await endSession();
    },
  };
}

const connectMetadataMs = 2_000;

/**
 * p.connect() with a deadline, like nativeCall, and a way to stop waiting: disconnect() during a
 * connect to an unreachable broker must not leave a timer (and the process) running for
 * requestTimeoutMs more.
 */
function connectProducer(p: RdKafka.Producer, timeoutMs: number, onAbort: (abort: (err: Error) => void) => void, connectedLate: () => void): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    let done = false;
    const finish = (err?: Error): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (err) reject(err);
      else resolve();
    };
    const timer = setTimeout(() => finish(new Error(`producer connect: no answer from librdkafka within ${timeoutMs + 5_000} ms`)), timeoutMs + 5_000);
    onAbort(finish);
    p.connect({ timeout: timeoutMs }, (err) => {
      const e = err as RdKafka.LibrdKafkaError | null | undefined;
      if (done && !e) connectedLate();
      finish(e ? Object.assign(new Error(`producer connect: ${e.message}`, { cause: e }), { code: e.code, isFatal: e.isFatal }) : undefined);
    });
  });
}

/** One producer and what is known about it. */
interface Session {
  p: RdKafka.Producer;
  /** Set once librdkafka reports a fatal error: the producer takes nothing more. */
  fatal?: SessionLostError;
  /** Removes this transport's listeners from the producer. */
  detach(): void;
}

/**
 * librdkafka's fatal errors (ERR__FATAL, and ERR__GAPLESS_GUARANTEE that leads to it). node-rdkafka
 * passes them without isFatal, and event.error may carry only the text, so the text counts too.
 */
function isFatal(err: RdKafka.LibrdKafkaError | undefined): boolean {
  if (!err) return false;
  return err.isFatal === true || err.code === -150 || err.code === -148 || /fatal/i.test(err.message ?? '');
}
