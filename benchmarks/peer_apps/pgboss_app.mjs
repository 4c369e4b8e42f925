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

import { PgBoss } from "pg-boss";
import pg from "pg";
import { Ledger, now, pacedEnqueues, ready, serve, stopWhen, withClient } from "./_protocol.mjs";

const QUEUE = "bench_noop";

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
  await withBoss(args.target, {}, (boss) => boss.createQueue(QUEUE, { notify: true }));
  return {};
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
  const options = {
    localConcurrency: 2,
    batchSize: Math.max(1, Math.ceil(args.concurrency / 2)),
    burstWhenBatchFull: true,
    pollingIntervalSeconds: Math.max(0.5, args.pollInterval ?? 2),
  };
  const boss = new PgBoss({
    connectionString: args.target,
    migrate: false,
    useListenNotify: !args.noListen,
  });
  boss.on("error", (e) => process.stderr.write(`pg-boss error: ${e?.stack ?? e}\n`));
  const probe = new pg.Client({ connectionString: args.target });
  await probe.connect();
  try {
    await boss.start();
    ready();
    await boss.work(QUEUE, options, async (jobs) => {
      await Promise.all(jobs.map(async (job) => ledger.ran(job.data.n, now())));
    });
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
           FROM pgboss.job WHERE name = $1`,
        [QUEUE],
      )
    ).rows[0];
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
    };
  });
}

await serve({
  setup,
  teardown: async () => ({}),
  "enqueue-bulk": enqueueBulk,
  "enqueue-single": enqueueSingle,
  "latency-enqueue": latencyEnqueue,
  work,
  verify,
});
