// pg-boss side of benchmarks/peers.py (runs under the Node 22 of node_modules here, see
// package.json beside this file).
//
// APIs used: `new PgBoss(...).start()` (installs its schema) and `createQueue(name,
// {notify: true})` in `setup`; `insert(name, jobs)` (bulk: one call, one statement) and
// `send(name, data)` (single: one autocommit statement per job); `work(name, options,
// handler)` and `stop({graceful: true})`, which waits for running batches to complete.
//
// Concurrency: pg-boss hands a handler a batch of jobs, completes the batch in one statement
// when the handler resolves, and waits a polling interval between fetches unless a burst
// trigger says there is more. So a worker of concurrency C runs `localConcurrency: 2`
// fetch loops of `batchSize: C / 2` jobs each (as the PgQueuer app halves its batch),
// runs a batch's jobs concurrently, and sets `burstWhenBatchFull` so that a full batch is
// followed by the next fetch at once, not after the polling interval (0.5 s at least).
// Every other setting is pg-boss's default. The notify mode is pg-boss's own opt-in
// LISTEN/NOTIFY (`useListenNotify` plus the queue's `notify`); poll-only turns it off.
// pg-boss keeps completed jobs (state `completed`, `completed_on`), so `verify` reads them.
//
// Feature workloads (`--plan`, see benchmarks/features.py), as pg-boss's docs configure them:
//   fairness (tenant-limit)  each job in a group `{id: <tenant>}`, `work({groupConcurrency: 1})`
//                            (tracked in the database, across workers); no round robin. With a
//                            group limit, `notifyPollingIntervalSeconds` is the base polling
//                            interval (2 s), not 30 s: a fetch cut short by the limit gets no
//                            NOTIFY when a group frees up.
//   concurrency              every job in one group, `work({groupConcurrency: L})`: pg-boss's
//                            only limit above 1 across workers (policy `singleton` allows 1).
//   topics                   K queues, each `subscribe("bench.topic", queue)`;
//                            `publish("bench.topic", data)` sends a job to every subscribed
//                            queue. The worker works each queue (one fetch loop each, a batch
//                            of max(2, ceil(C / K)): a batch of 1 never bursts, and waits 30 s
//                            between fetches once the NOTIFYs stop).
//   workflow                 the parent's handler calls `flow()` with N children and a join
//                            that `dependsOn` every child. Dependents are unblocked by a
//                            background resolver every `flowIntervalSeconds`: 1, the smallest
//                            it allows (its default is 5); an unblocked job gets no NOTIFY, so
//                            the join's worker polls every 0.5 s (the minimum; 30 s by default
//                            on a notify queue).
// No rate limit: throttling (`singletonSeconds`) drops or defers sends, one per time slot.

import { PgBoss } from "pg-boss";
import pg from "pg";
import { Ledger, now, pacedEnqueues, ready, serve, stopWhen, tenants, withClient } from "./_protocol.mjs";

const QUEUE = "bench_noop";
const TOPIC = "bench.topic";
const WORKFLOW = { fan: "bench_fan", child: "bench_child", join: "bench_join" };
const subscriber = (k) => `bench_sub${k}`;

/** The queues whose jobs a run of `plan` makes. */
function queuesOf(plan) {
  if (plan?.workload === "topics") return Array.from({ length: plan.subscribers }, (_, k) => subscriber(k));
  if (plan?.workload === "workflow") return Object.values(WORKFLOW);
  return [QUEUE];
}

async function withBoss(target, options, fn) {
  const boss = new PgBoss({ connectionString: target, ...options });
  boss.on("error", (e) => process.stderr.write(`pg-boss error: ${e?.stack ?? e}\n`));
  await boss.start();
  try {
    return await fn(boss);
  } finally {
    await boss.stop({ graceful: true });
  }
}

const count = (target) =>
  withClient(target, async (c) =>
    Number((await c.query("SELECT count(*) AS n FROM pgboss.job WHERE name = $1", [QUEUE])).rows[0].n),
  );

async function setup(args) {
  await withBoss(args.target, {}, async (boss) => {
    await boss.createQueue(QUEUE, { notify: true });
    for (const name of queuesOf(args.plan)) {
      if (name !== QUEUE) await boss.createQueue(name, { notify: true });
    }
    if (args.plan?.workload === "topics") {
      for (const name of queuesOf(args.plan)) await boss.subscribe(TOPIC, name);
    }
  });
  return {};
}

async function enqueueFeature(args) {
  const plan = args.plan;
  return withBoss(args.target, { migrate: false }, async (boss) => {
    if (plan.workload === "fairness" && plan.mode === "tenant-limit") {
      // One insert per tenant, in order: jobs of one statement share their created_on.
      for (const [tenant, numbers] of tenants(plan)) {
        await boss.insert(QUEUE, numbers.map((n) => ({ data: { n }, group: { id: tenant } })));
      }
    } else if (plan.workload === "concurrency") {
      const jobs = Array.from({ length: plan.jobs }, (_, n) => ({ data: { n }, group: { id: "all" } }));
      await boss.insert(QUEUE, jobs);
    } else if (plan.workload === "topics") {
      const durations = [];
      const first = now();
      const start = performance.now();
      for (let m = 0; m < plan.publishes; m++) {
        const began = performance.now();
        await boss.publish(TOPIC, { n: m });
        durations.push((performance.now() - began) / 1000);
      }
      const elapsed = (performance.now() - start) / 1000;
      return { enqueued: null, publish_s: durations, first_publish_at: first, elapsed_s: elapsed };
    } else if (plan.workload === "workflow") {
      const submitted = now();
      await boss.send(WORKFLOW.fan, { n: plan.children });
      return { enqueued: 1, submitted_at: submitted };
    } else {
      throw new Error(`pg-boss has no feature for ${plan.workload}`);
    }
    return { enqueued: await count(args.target) };
  });
}

async function enqueueBulk(args) {
  const jobs = Array.from({ length: args.jobs }, (_, n) => ({ data: { n } }));
  const [elapsed, ids] = await withBoss(args.target, { migrate: false }, async (boss) => {
    const start = performance.now();
    const created = await boss.insert(QUEUE, jobs);
    return [(performance.now() - start) / 1000, created?.length ?? null];
  });
  return { enqueued: await count(args.target), ids, elapsed_s: elapsed };
}

async function enqueueSingle(args) {
  const elapsed = await withBoss(args.target, { migrate: false }, async (boss) => {
    const start = performance.now();
    for (let n = 0; n < args.jobs; n++) await boss.send(QUEUE, { n });
    return (performance.now() - start) / 1000;
  });
  return { enqueued: await count(args.target), elapsed_s: elapsed };
}

async function latencyEnqueue(args) {
  const commits = {};
  await withBoss(args.target, { migrate: false }, async (boss) => {
    // send resolves after its autocommit INSERT
    Object.assign(commits, await pacedEnqueues(args, (n) => boss.send(QUEUE, { n })));
  });
  return { commits };
}

async function work(args) {
  const ledger = new Ledger(args.total, args.recordStarts);
  const plan = args.plan;
  const options = {
    localConcurrency: 2,
    batchSize: Math.max(1, Math.ceil(args.concurrency / 2)),
    burstWhenBatchFull: true,
    pollingIntervalSeconds: Math.max(0.5, args.pollInterval ?? 2),
  };
  if (plan?.workload === "fairness") options.groupConcurrency = 1;
  if (plan?.workload === "concurrency") options.groupConcurrency = plan.limit;
  // A fetch that a group limit cuts short is no sign of an empty queue, and no NOTIFY follows
  // when a group frees up: poll at the base interval, not the 30 s NOTIFY-backed backstop.
  if (options.groupConcurrency !== undefined) options.notifyPollingIntervalSeconds = options.pollingIntervalSeconds;
  const boss = new PgBoss({
    connectionString: args.target,
    migrate: false,
    useListenNotify: !args.noListen,
    ...(plan?.workload === "workflow" ? { flowIntervalSeconds: 1 } : {}),
  });
  boss.on("error", (e) => process.stderr.write(`pg-boss error: ${e?.stack ?? e}\n`));
  const probe = new pg.Client({ connectionString: args.target });
  await probe.connect();
  const run = (jobs, number) => Promise.all(jobs.map(async (job) => ledger.ran(number(job), now())));
  try {
    await boss.start();
    ready();
    if (plan?.workload === "topics") {
      const K = plan.subscribers;
      // At least 2 a batch: burstWhenBatchFull is ignored for batches of 1, and a notify queue
      // that is not bursting waits 30 s between fetches once the publishes (NOTIFYs) stop.
      const each = { ...options, localConcurrency: 1, batchSize: Math.max(2, Math.ceil(args.concurrency / K)) };
      for (let k = 0; k < K; k++) {
        await boss.work(subscriber(k), each, (jobs) => run(jobs, (job) => job.data.n * K + k));
      }
    } else if (plan?.workload === "workflow") {
      const one = { ...options, localConcurrency: 1, batchSize: 1 };
      // A job that flow() unblocks gets no NOTIFY: the join's worker finds it by polling, here
      // at pg-boss's shortest interval (its NOTIFY-backed default is 30 s).
      const polled = { ...one, pollingIntervalSeconds: 0.5, notifyPollingIntervalSeconds: 0.5 };
      await boss.work(WORKFLOW.fan, one, async ([job]) => {
        const n = job.data.n;
        ledger.ran(n, now());
        const children = Array.from({ length: n }, (_, i) => ({ ref: `c${i}`, name: WORKFLOW.child, data: { n: i } }));
        const refs = children.map((c) => c.ref);
        await boss.flow([...children, { ref: "join", name: WORKFLOW.join, data: { n }, dependsOn: refs }]);
      });
      await boss.work(WORKFLOW.child, options, async (jobs) => {
        await Promise.all(jobs.map(async (job) => ledger.ran(job.data.n, now())));
      });
      await boss.work(WORKFLOW.join, polled, async ([job]) => {
        ledger.ran(job.data.n + 1, now());
      });
    } else {
      await boss.work(QUEUE, options, (jobs) => run(jobs, (job) => job.data.n));
    }
    await stopWhen(
      args,
      ledger,
      () => boss.stop({ graceful: true }),
      async () =>
        (
          await probe.query(
            "/* bench-probe */ SELECT NOT EXISTS (SELECT FROM pgboss.job WHERE name = $1 AND state < 'completed') AS e",
            [QUEUE],
          )
        ).rows[0].e,
    );
  } finally {
    await probe.end();
  }
  return ledger.report();
}

async function verify(args) {
  const names = queuesOf(args.plan);
  return withClient(args.target, async (c) => {
    const row = (
      await c.query(
        `SELECT count(*) FILTER (WHERE state = 'completed' AND retry_count = 0) AS completed,
                count(*) FILTER (WHERE state = 'completed' AND retry_count > 0) AS retried,
                count(*) FILTER (WHERE state = 'created') AS left,
                count(*) FILTER (WHERE state = 'active') AS in_flight,
                count(*) FILTER (WHERE state IN ('retry', 'failed', 'cancelled')) AS failed,
                extract(epoch FROM min(started_on))::float8 AS first_start,
                extract(epoch FROM min(completed_on))::float8 AS first,
                extract(epoch FROM max(completed_on))::float8 AS last
           FROM pgboss.job WHERE name = ANY($1)`,
        [names],
      )
    ).rows[0];
    let marks;
    if (args.plan?.workload === "workflow") {
      const m = (
        await c.query(
          `SELECT extract(epoch FROM min(started_on) FILTER (WHERE name = $1))::float8 AS child_first_start,
                  extract(epoch FROM max(completed_on) FILTER (WHERE name = $1))::float8 AS child_last_done,
                  extract(epoch FROM max(completed_on) FILTER (WHERE name = $2))::float8 AS join_done
             FROM pgboss.job WHERE name = ANY($3)`,
          [WORKFLOW.child, WORKFLOW.join, names],
        )
      ).rows[0];
      marks = m;
    }
    let histogram = {};
    if (args.histogram) {
      const rows = (
        await c.query(
          `SELECT floor(extract(epoch FROM completed_on) * 10)::bigint AS b, count(*) AS n
             FROM pgboss.job WHERE name = $1 AND state = 'completed' GROUP BY 1`,
          [QUEUE],
        )
      ).rows;
      histogram = Object.fromEntries(rows.map((r) => [String(r.b), Number(r.n)]));
    }
    // A job completed on a later attempt is counted as a completion (it did complete) and
    // as bad (it ran, or started, more than once).
    return {
      completed: Number(row.completed) + Number(row.retried),
      left: Number(row.left),
      in_flight: Number(row.in_flight),
      bad: Number(row.retried) + Number(row.failed),
      other: { completed_on_a_later_attempt: Number(row.retried), failed: Number(row.failed) },
      first_start: row.first_start,
      first_completion: row.first,
      last_completion: row.last,
      histogram,
      ...(marks ? { marks } : {}),
    };
  });
}

await serve({
  setup,
  teardown: async () => ({}),
  "enqueue-bulk": enqueueBulk,
  "enqueue-single": enqueueSingle,
  "enqueue-feature": enqueueFeature,
  "latency-enqueue": latencyEnqueue,
  work,
  verify,
});
