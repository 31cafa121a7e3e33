import type { Logger } from 'pino';
import { addDecision, cloneAgg, emptyAgg, mergeAgg, type DeadLetterObservation, type DecisionObservation, type DeadLetterAgg, type VersionAgg } from './aggregate.js';
import { joinKey, type AlertRecord } from '@dlog/contracts';
import { compareVersions } from './aggregate.js';
import { capText, eligible, evaluateRule, parseSubjectKey, sep, subjectKey, type GateCounts, type History, type HistoryEntry, type Subject } from './evaluate.js';
import type { GateCountsObservation } from './decode.js';
import type { LatestCheckpoint } from './checkpoint.js';
import type { RulesDocument } from './rules.js';
import { admit, expire } from './suppression.js';
import { watermark, type PartitionProgress } from './watermark.js';
import { closingWindowEnds, floorTo, paneSize } from './windows.js';

interface Pane {
  subjects: Map<string, VersionAgg>;
  deadLetters: DeadLetterAgg;
  /** Decisions of subjects beyond `maxSubjectsPerPane`: in no subject, but in the dead-letter rate's denominator. */
  overflow: { n: number; weight: number };
  /**
   * The aggregates the state owning this pane made or copied itself: only these are changed in
   * place. A pane's copy starts with none, its aggregates shared with the pane it was copied from.
   */
  ownAggs: Set<VersionAgg>;
}

/**
 * Subjects (endpoint, model, version) one pane keeps. They are producer strings: a request id
 * written as the version made one per decision, 48,000 in 4 minutes at 200/s (114 MiB, and a
 * batch's cost grew with its pane). Ten thousand is far more versions than a pipeline serves at
 * once; decisions of subjects past it are counted as overflow and judged by no rule.
 */
export const maxSubjectsPerPane = 10_000;

/**
 * Everything the alerter remembers. Plain maps and numbers: a batch works on a copy
 * (`cloneState`) that replaces the original only once its transaction has committed.
 */
export interface AlerterState {
  /** pane start → sums */
  panes: Map<number, Pane>;
  /** The panes this copy made or copied itself: only these are changed in place (see `cloneState`). */
  ownPanes: Set<Pane>;
  /** input partition → newest decision event time read there, and when */
  newest: Map<string, PartitionProgress>;
  /** dead-letter partition → newest dead-letter time read there (see toDeadLetterObservation), and when: moves windows on when no decision does */
  deadLetterNewest: Map<string, PartitionProgress>;
  /**
   * pane start → the gate's exact counts of its minutes (decision.counts.v1). Apart from the
   * panes, so a batch of counts copies two numbers, not a pane of decisions.
   */
  gateCounts: Map<number, GateCounts>;
  /** Windows ending at or before this were evaluated. */
  closedUpTo: number | undefined;
  /** suppression key → window end of the last alert that went out */
  lastFired: Map<string, number>;
  /** The checkpoint on the baselines topic as of this state; undefined while none readable is. */
  written: Checkpoint | undefined;
  /** rule → subject → its last window with enough samples (predecessor baselines) */
  history: Map<string, History>;
  /**
   * Baselines changed since they were last written to the baselines topic: `baselineKey` → the
   * entry, or null once dropped. Part of the state so that a batch whose transaction aborts
   * leaves them to the next one.
   */
  baselineChanges: Map<string, HistoryEntry | null>;
  /** False after a restore of the baselines that ran out of time: nothing is pruned then. */
  baselinesComplete: boolean;
  /** input partition → offset of the last record counted, so a batch fetched again after its commit went through is not counted twice */
  counted: Map<string, bigint>;
  /** overflow: decisions counted in no subject, their pane holding `maxSubjectsPerPane` already. */
  counters: { decisions: number; deadLetters: number; late: number; overflow: number; windows: number; fired: number; suppressed: number };
}

/**
 * The copy a batch works on, made for every batch, so it copies only what a batch may change:
 * - history entries are never changed in place, only replaced or removed: its two levels of
 *   maps are copied and the entries shared;
 * - panes are shared until the batch adds to one, which is then copied (`paneFor`): a batch adds
 *   to the newest one or two of the ten or so a window holds. The copy's subject map is shallow,
 *   and an aggregate in it is copied only when the batch adds to it (`observeDecision`): copying
 *   every aggregate of the pane made each batch cost as much as the pane held;
 * - everything else (progress, suppression, counters) is small and copied deeply.
 * Deep copies of all of it took 2.2 ms per batch for 50 model versions with 20 distinct
 * decisions each, 64 ms for 100 versions of free-text decisions, and 4.5 ms for a thousand
 * baselines, on this machine: more than the batch's own work.
 */
export function cloneState(state: AlerterState): AlerterState {
  const { history, panes, ownPanes: _, ...rest } = state;
  const copy: Omit<AlerterState, 'history' | 'panes' | 'ownPanes'> = structuredClone(rest);
  return { ...copy, panes: new Map(panes), ownPanes: new Set(), history: new Map([...history].map(([rule, h]) => [rule, new Map(h)])) };
}

/** Where a baseline lives in the state and on the baselines topic: rule and subject. */
export const baselineKey = (rule: string, subject: string): string => joinKey([rule, subject], sep);

/**
 * How far the alerter has closed windows, written in the same transaction as the alerts those
 * windows raised (see `checkpoint.ts`). A restart closes exactly the windows up to `closedUpTo`
 * without a word, since their alerts went out, and never more, since the input it re-reads may
 * not hold every partition's share of later windows; and it takes suppression as it was.
 */
export interface Checkpoint {
  /** undefined: no window closed yet (the record a first start writes). */
  closedUpTo: number | undefined;
  /** suppression key → window end of the last alert that went out */
  lastFired: Map<string, number>;
}

export interface Engine {
  readonly pane: number;
  /**
   * Without a checkpoint to trust, input this far back (before what was committed) rebuilds every
   * open window and suppression; with one, input from its `closedUpTo` minus `reopenMs` does.
   */
  readonly lookbackMs: number;
  /**
   * Input whose record timestamp is older than a checkpoint's `closedUpTo` minus this holds only
   * windows the checkpoint closed: a record is stamped when the enricher wrote it, after its
   * decision's event time, or at most `maxFutureMs` before it (a producer clock running fast).
   */
  readonly reopenMs: number;
  newState(): AlerterState;
  /**
   * Record time from which a restart re-reads its input. With a checkpoint, from the first
   * window still open at it, however long ago that was (a crash while catching up): suppression
   * comes with it. Without one, back far enough to rebuild suppression too.
   */
  replaySince(latest: LatestCheckpoint, now: number): number;
  /** How far the state has closed windows, and the suppression that left. */
  checkpoint(state: AlerterState): Checkpoint;
  /**
   * The checkpoint a batch's transaction must write: when none readable is on the topic yet, or
   * when the pane closedUpTo falls in or the suppression differs from the one that is. Within a
   * pane no window ends, so a restart from the older closedUpTo closes the same windows; a
   * record per batch was 7 a second at 24 decisions a second, each up to 256 KiB.
   */
  checkpointDue(state: AlerterState): Checkpoint | undefined;
  /**
   * Takes a checkpoint written after the state's own (at start, or another instance's, written
   * while both ran): when it has closed further, windows up to it are let go unevaluated (their
   * alerts went out and their baselines are on the topic) and each suppression entry is the
   * later of the two. Returns whether it changed the state.
   */
  restore(state: AlerterState, checkpoint: Checkpoint): boolean;
  /**
   * After a restart, with the state rebuilt from re-read input: takes the checkpoint found;
   * when there is none to trust but the group had committed input (`restart`), closes every
   * window due at `now` without alerting, as the alerter did before it kept a checkpoint: their
   * alerts may have gone out, and sending them twice is worse than the rare one lost.
   */
  resume(state: AlerterState, latest: LatestCheckpoint, restart: boolean, now: number): 'restored' | 'closed silently' | 'first start';
  /** Closes the windows due at `now` as `advance` does, sending nothing; returns how many alerts that withheld. */
  closeSilently(state: AlerterState, now: number): number;
  /** Whether `advance` at `now` would evaluate at least one window. */
  closing(state: AlerterState, now: number): boolean;
  /** `now`: wall clock, for telling quiet partitions from slow ones. */
  observeDecision(state: AlerterState, partition: string, d: DecisionObservation, now: number): void;
  observeDeadLetter(state: AlerterState, partition: string, d: DeadLetterObservation, now: number): void;
  /** The gate's exact counts for a minute: the dead-letter rate's denominator, and what decisions are still to come. */
  observeGateCounts(state: AlerterState, c: GateCountsObservation): void;
  /** Moves the watermark, evaluates the windows it closes, returns the alerts that pass suppression. */
  advance(state: AlerterState, now: number): AlertRecord[];
}

/**
 * How far past the wall clock an event time may move a partition's watermark. A producer with a
 * clock an hour fast would otherwise close windows that are still filling, and every later record
 * would count as late: the gate checks event times against the record timestamp, which the same
 * producer sets. The event still counts, in the window of its own time.
 */
export const maxFutureMs = 5 * 60_000;

function progress(map: Map<string, PartitionProgress>, partition: string, ts: number, now: number): void {
  const t = Math.min(ts, now + maxFutureMs);
  map.set(partition, { newest: Math.max(map.get(partition)?.newest ?? -Infinity, t), seenAt: now });
}

/**
 * Drops baselines last seen before `before`, except each model's two highest versions on each
 * endpoint: the newest stays the predecessor of whatever comes next, and the one before it the
 * predecessor of the newest, however long either served unchanged or how long ago it was
 * retired. So history grows with the versions of the retention period, not with every version
 * ever seen. An endpoint and model with no window since `staleBefore`, and no decision in the
 * panes still open, lose those two as well: an
 * endpoint named after a pod or a host left its two baselines behind for good, one pair an hour
 * in memory, on `alerter.baselines` and in every start's read of it. Does nothing while
 * `state.baselinesComplete` is false: a restore that ran out of time may hold an old entry whose
 * newer record it never read, and a tombstone would delete that.
 */
export function pruneBaselines(state: AlerterState, before: number, staleBefore = -Infinity): void {
  if (!state.baselinesComplete) return;
  // History holds only windows a rule could judge (min_samples): a model still serving an endpoint
  // below that has decisions in the open panes, and is not stale.
  const serving = new Set<string>();
  if (staleBefore > -Infinity) {
    for (const p of state.panes.values()) {
      for (const k of p.subjects.keys()) {
        const s = parseSubjectKey(k);
        serving.add(joinKey([s.endpoint, s.model], sep));
      }
    }
  }
  for (const [rule, history] of state.history) {
    // endpoint and model → its highest version, the one below it, and its newest window's end
    const top = new Map<string, [string, string | undefined, number]>();
    for (const { windowEnd, subject: s } of history.values()) {
      const m = joinKey([s.endpoint, s.model], sep);
      const t = top.get(m);
      if (!t) top.set(m, [s.version, undefined, windowEnd]);
      else {
        t[2] = Math.max(t[2], windowEnd);
        if (compareVersions(s.version, t[0]) > 0) [t[0], t[1]] = [s.version, t[0]];
        else if (t[1] === undefined || compareVersions(s.version, t[1]) > 0) t[1] = s.version;
      }
    }
    for (const [k, { windowEnd, subject: s }] of history) {
      const m = joinKey([s.endpoint, s.model], sep);
      const t = top.get(m);
      const kept = t !== undefined && (t[2] >= staleBefore || serving.has(m)) && (t[0] === s.version || t[1] === s.version);
      if (windowEnd >= before || kept) continue;
      history.delete(k);
      state.baselineChanges.set(baselineKey(rule, k), null);
    }
  }
}

/** `log`: where a pane that overflows is reported; default: nowhere (tests, scripts). */
export function createEngine(doc: RulesDocument, opts: { log?: Logger } = {}): Engine {
  const rules = doc.rules;
  const pane = paneSize(rules.map((r) => r.window));
  const maxSize = Math.max(...rules.map((r) => r.window.size));
  const longestSuppression = Math.max(...rules.map((r) => r.suppress_for));
  const { allowed_lateness: lateness, idle_partition_after: idle } = doc.watermark;

  function paneFor(state: AlerterState, ts: number): Pane | undefined {
    const start = floorTo(ts, pane);
    // Every window holding this pane has been evaluated and the pane let go: too late to count.
    if (state.closedUpTo !== undefined && start + maxSize <= state.closedUpTo) return undefined;
    let p = state.panes.get(start);
    if (p && state.ownPanes.has(p)) return p;
    // New, or shared with the state this one was copied from: made or copied for this one. The
    // aggregates stay shared until changed (see `observeDecision`).
    p = p
      ? { subjects: new Map(p.subjects), deadLetters: { n: p.deadLetters.n, byReason: new Map(p.deadLetters.byReason) }, overflow: { ...p.overflow }, ownAggs: new Set() }
      : { subjects: new Map(), deadLetters: { n: 0, byReason: new Map() }, overflow: { n: 0, weight: 0 }, ownAggs: new Set() };
    state.panes.set(start, p);
    state.ownPanes.add(p);
    return p;
  }

  function windowInput(state: AlerterState, start: number, end: number) {
    const subjects = new Map<string, VersionAgg>();
    const deadLetters: DeadLetterAgg = { n: 0, byReason: new Map() };
    const overflow = { n: 0, weight: 0 };
    // The gate counts whole minutes: a window whose edges are not on a minute gets none (the
    // dead-letter rate then takes the decisions' weight), rather than a minute it half holds.
    const gate: GateCounts = { kept: 0, dropped: 0 };
    if (start % 60_000 === 0 && end % 60_000 === 0) {
      for (const [s, g] of state.gateCounts) {
        if (s < start || s >= end) continue;
        gate.kept += g.kept;
        gate.dropped += g.dropped;
      }
    }
    for (const [s, p] of state.panes) {
      if (s < start || s >= end) continue;
      for (const [k, agg] of p.subjects) {
        let into = subjects.get(k);
        if (!into) subjects.set(k, (into = emptyAgg()));
        mergeAgg(into, agg);
      }
      overflow.n += p.overflow.n;
      overflow.weight += p.overflow.weight;
      deadLetters.n += p.deadLetters.n;
      for (const [r, c] of p.deadLetters.byReason) deadLetters.byReason.set(r, (deadLetters.byReason.get(r) ?? 0) + c);
    }
    const list: Subject[] = [...subjects.entries()]
      .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))
      .map(([k, agg]) => ({ ...parseSubjectKey(k), agg }));
    return { start, end, subjects: list, deadLetters, gate, overflow };
  }

  /** Ends of the windows `advance` would close at watermark `wm`, in evaluation order. */
  function closingTasks(state: AlerterState, wm: number): { end: number; rule: number }[] {
    const from = state.closedUpTo ?? -Infinity;
    const tasks: { end: number; rule: number }[] = [];
    rules.forEach((r, i) => {
      for (const end of closingWindowEnds(state.panes.keys(), r.window, from, wm)) tasks.push({ end, rule: i });
    });
    // Window end first, then rule order: the same input always gives the same sequence, which
    // is what makes suppression (and so the alerts) reproducible on replay.
    return tasks.sort((a, b) => a.end - b.end || a.rule - b.rule);
  }

  /** Lets go of panes every window of which has closed. */
  function dropClosedPanes(state: AlerterState, upTo: number): void {
    for (const [s, p] of state.panes) {
      if (s + maxSize > upTo) continue;
      state.panes.delete(s);
      state.ownPanes.delete(p);
    }
    for (const s of state.gateCounts.keys()) if (s + maxSize <= upTo) state.gateCounts.delete(s);
  }

  // How long dead letters alone wait for decisions the gate says are coming: the longest
  // dead-letter window (the page that waits), else the longest window.
  const deadLetterRules = rules.filter((r) => r.kind === 'dead_letters');
  const holdLimit = deadLetterRules.length > 0 ? Math.max(...deadLetterRules.map((r) => r.window.size)) : maxSize;

  /**
   * Whether decisions the gate kept are on their way (the enricher is down or behind): its counts
   * hold kept decisions for a pane after the newest decision's pane, where none has arrived, and
   * a decision arrived within `holdLimit`. Dead letters alone then do not close windows: they
   * would close them on the refusals with the decisions missing, page on a dead-letter rate that
   * never changed, and count the decisions as late once they came. Only panes beyond the newest
   * decision count, so a decision lost on the way (dead-lettered by the enricher, unreadable here)
   * does not hold anything. After `holdLimit` without a decision the windows close anyway (the
   * gate may be refusing everything).
   */
  function awaitingDecisions(state: AlerterState, now: number): boolean {
    let newest = -Infinity;
    let lastArrival = -Infinity;
    for (const p of state.newest.values()) {
      newest = Math.max(newest, p.newest);
      lastArrival = Math.max(lastArrival, p.seenAt);
    }
    if (now - lastArrival >= holdLimit) return false;
    const newestPane = floorTo(newest, pane);
    for (const [s, g] of state.gateCounts) if (s > newestPane && g.kept > 0) return true;
    return false;
  }

  const noProgress: ReadonlyMap<string, PartitionProgress> = new Map();
  const watermarkOf = (state: AlerterState, now: number) => {
    // Dead letters matter only when every decision partition is quiet; the hold is looked at then.
    let quiet = true;
    for (const p of state.newest.values()) if (now - p.seenAt < idle) quiet = false;
    const hold = quiet && state.deadLetterNewest.size > 0 && awaitingDecisions(state, now);
    return watermark(state.newest, now, lateness, idle, hold ? noProgress : state.deadLetterNewest);
  };

  const engine: Engine = {
    pane,
    lookbackMs: maxSize + lateness + longestSuppression,
    reopenMs: maxSize + maxFutureMs,
    replaySince: (latest, now) => {
      const closed = latest.kind === 'found' ? latest.checkpoint.closedUpTo : undefined;
      return closed !== undefined ? closed - engine.reopenMs : now - engine.lookbackMs;
    },
    newState: () => ({
      panes: new Map(),
      ownPanes: new Set(),
      newest: new Map(),
      deadLetterNewest: new Map(),
      gateCounts: new Map(),
      closedUpTo: undefined,
      lastFired: new Map(),
      written: undefined,
      history: new Map(),
      baselineChanges: new Map(),
      baselinesComplete: true,
      counted: new Map(),
      counters: { decisions: 0, deadLetters: 0, late: 0, overflow: 0, windows: 0, fired: 0, suppressed: 0 },
    }),

    observeDecision(state, partition, d, now) {
      progress(state.newest, partition, d.ts, now);
      const p = paneFor(state, d.ts);
      if (!p) {
        state.counters.late++;
        return;
      }
      const k = subjectKey(d.endpoint, d.model, d.version);
      let agg = p.subjects.get(k);
      if (!agg) {
        if (p.subjects.size >= maxSubjectsPerPane) {
          // Said once per pane (again only if the batch that said it aborts and is done again).
          if (p.overflow.n === 0) {
            opts.log?.warn(
              { paneStart: new Date(floorTo(d.ts, pane)).toISOString(), maxSubjects: maxSubjectsPerPane, endpoint: capText(d.endpoint, 256), model: capText(d.model, 256), version: capText(d.version, 256) },
              'pane holds the most subjects (endpoint, model, version) it may: decisions of further ones are counted as overflow and judged by no rule (a per-request value in model.version or endpoint?)',
            );
          }
          p.overflow.n++;
          p.overflow.weight += d.weight;
          state.counters.overflow++;
          return;
        }
        p.subjects.set(k, (agg = emptyAgg()));
        p.ownAggs.add(agg);
      } else if (!p.ownAggs.has(agg)) {
        // Shared with the state this one was copied from, which must stay as it is until this
        // batch commits: an aborted batch leaves nothing behind.
        p.subjects.set(k, (agg = cloneAgg(agg)));
        p.ownAggs.add(agg);
      }
      state.counters.decisions++;
      addDecision(agg, d);
    },

    observeDeadLetter(state, partition, d, now) {
      // Placed at their original record's time (see toDeadLetterObservation). They do not hold
      // windows open for decisions; but when no decision partition is delivering (the gate
      // refuses everything), they move the watermark on, or no window would close and the
      // dead-letter rule would never fire (unless decisions are on their way: awaitingDecisions).
      progress(state.deadLetterNewest, partition, d.ts, now);
      const p = paneFor(state, d.ts);
      if (!p) {
        state.counters.late++;
        return;
      }
      state.counters.deadLetters++;
      p.deadLetters.n++;
      p.deadLetters.byReason.set(d.reason, (p.deadLetters.byReason.get(d.reason) ?? 0) + 1);
    },

    observeGateCounts(state, c) {
      const start = floorTo(c.minute, pane);
      // Counts of panes already closed changed nothing that was evaluated: not counted as late.
      if (state.closedUpTo !== undefined && start + maxSize <= state.closedUpTo) return;
      const g = state.gateCounts.get(start);
      // A fresh object: the copy a batch works on shares nothing with the state it came from.
      state.gateCounts.set(start, { kept: (g?.kept ?? 0) + c.kept, dropped: (g?.dropped ?? 0) + c.dropped });
    },

    checkpoint: (state) => ({ closedUpTo: state.closedUpTo, lastFired: new Map(state.lastFired) }),

    checkpointDue(state) {
      const w = state.written;
      const paneOf = (t: number | undefined) => (t === undefined ? undefined : floorTo(t, pane));
      const same =
        w !== undefined &&
        paneOf(w.closedUpTo) === paneOf(state.closedUpTo) &&
        w.lastFired.size === state.lastFired.size &&
        [...state.lastFired].every(([k, end]) => w.lastFired.get(k) === end);
      return same ? undefined : engine.checkpoint(state);
    },

    restore(state, checkpoint) {
      const upTo = checkpoint.closedUpTo;
      if (upTo === undefined || upTo <= (state.closedUpTo ?? -Infinity)) return false;
      state.closedUpTo = upTo;
      for (const [k, end] of checkpoint.lastFired) if (end > (state.lastFired.get(k) ?? -Infinity)) state.lastFired.set(k, end);
      dropClosedPanes(state, upTo);
      expire(state.lastFired, upTo, longestSuppression);
      return true;
    },

    resume(state, latest, restart, now) {
      if (latest.kind === 'found') {
        engine.restore(state, latest.checkpoint);
        state.written = latest.checkpoint;
        return 'restored';
      }
      if (!restart) return 'first start';
      engine.closeSilently(state, now);
      return 'closed silently';
    },

    closeSilently(state, _now) {
      const { fired, suppressed } = state.counters;
      // Every partition counts as quiet here, so the windows close up to the newest event time
      // read, less the lateness. At `now` every partition re-read was just heard from: one that had
      // gone quiet before the restart held the close back below what the old instance had sent,
      // and once quiet again live its windows alerted a second time. Closing further may lose an
      // alert the old instance had not sent yet; none goes twice.
      const withheld = engine.advance(state, Number.MAX_SAFE_INTEGER).length;
      state.counters.fired = fired;
      state.counters.suppressed = suppressed;
      return withheld;
    },

    closing(state, now) {
      const wm = watermarkOf(state, now);
      return wm !== undefined && wm > (state.closedUpTo ?? -Infinity) && closingTasks(state, wm).length > 0;
    },

    advance(state, now) {
      const wm = watermarkOf(state, now);
      const from = state.closedUpTo ?? -Infinity;
      if (wm === undefined || wm <= from) return [];
      const tasks = closingTasks(state, wm);
      const alerts: AlertRecord[] = [];
      for (const t of tasks) {
        const rule = rules[t.rule]!;
        const w = windowInput(state, t.end - rule.window.size, t.end);
        state.counters.windows++;
        let history = state.history.get(rule.name);
        for (const c of evaluateRule(rule, w, history)) {
          if (!admit(state.lastFired, c.suppressionKey, w.end, rule.suppress_for)) {
            state.counters.suppressed++;
            continue;
          }
          state.counters.fired++;
          const { suppressionKey: _, ...alert } = c;
          alerts.push({ ...alert, ts: now });
        }
        if (rule.kind === 'confidence_drop' || rule.kind === 'decision_mix_shift') {
          if (!history) state.history.set(rule.name, (history = new Map()));
          for (const s of w.subjects) {
            if (!eligible(rule, s.agg)) continue;
            const k = subjectKey(s.endpoint, s.model, s.version);
            // Live, what is there is from an earlier window. After a restart it can be a restored
            // baseline from a later one, which the input replay must not replace with an older
            // (and, at the replay's start, partly filled) window.
            if ((history.get(k)?.windowEnd ?? -Infinity) >= w.end) continue;
            const entry = { windowEnd: w.end, subject: s };
            history.set(k, entry);
            state.baselineChanges.set(baselineKey(rule.name, k), entry);
          }
        }
      }
      // A model's two newest baselines on an endpoint are kept for twelve retention periods (a
      // year at the default 30 days) after its last window there.
      if (tasks.length > 0) pruneBaselines(state, wm - doc.baseline_retention, wm - 12 * doc.baseline_retention);
      state.closedUpTo = wm;
      dropClosedPanes(state, wm);
      expire(state.lastFired, wm, longestSuppression);
      return alerts;
    },
  };
  return engine;
}
