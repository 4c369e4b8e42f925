// Graphile Worker side of benchmarks/peers.py (runs under benchmarks/peer_apps/node_modules'
// Node 22, see package.json beside this file).
//
// APIs used: `runMigrations`, `makeWorkerUtils().addJobs(specs)` (bulk: one call, one
// statement), `addJob` (single: one autocommit statement per job), and `run()` with a
// `taskList` holding one no-op task; `runner.stop()` shuts down gracefully (running jobs
// finish, batched completions are flushed). `runOnce` is not used: it runs one job at a time.
//
// Two configurations, chosen by GRAPHILE_CONFIG:
//   fast     the one Graphile's performance page benchmarks with: `localQueue: {size: 500}`,
//            `completeJobBatchDelay: 0`, `failJobBatchDelay: 0`, pool size = concurrency + 1.
//            A delay of 0 batches every completion reported within one tick of the event
//            loop into one DELETE, and adds no timer wait: the batching the docs measure.
//   default  Graphile's defaults: each worker fetches its own job and completes it alone.
//
// Graphile deletes a job when it completes, so `verify` counts completions as the jobs
// ever inserted (the id sequence of a fresh database) minus the rows left. Completion times
// are not stored either: the worker records when each completion statement (the DELETE)
// returned, through a wrapper on its pool's clients, and reports the last one as its
// `last_done` and a per-100-ms histogram of them (held-xmin). Graphile always LISTENs: it
// has no poll-only mode.
//
// Feature workloads (`--plan`): only the per-tenant limit of `fairness`, through named
// queues (`queueName: <tenant>` on each job: a named queue runs its jobs one at a time).
// Graphile has no round robin, rate limit, limit above 1, topics or job dependencies.

import pg from "pg";
import { Logger, run, runMigrations, makeWorkerUtils } from "graphile-worker";
import { Ledger, now, pacedEnqueues, ready, serve, stopWhen, tenants, withClient } from "./_protocol.mjs";

const TASK = "bench_noop";
const CONFIG = process.env.GRAPHILE_CONFIG ?? "fast";
if (!["fast", "default"].includes(CONFIG)) throw new Error(`GRAPHILE_CONFIG=${CONFIG}?`);
// Graphile logs every completed job at INFO: in a no-op drain that logging would be most of
// the work measured, so only warnings and errors are kept (on stderr).
const logger = new Logger(() => (level, message) => {
  if (level === "error" || level === "warning") process.stderr.write(`[${level}] ${message}\n`);
});
const COMPLETION = /^\s*(with j as \(\s*)?delete from\s+\S*_private_jobs/i;

async function utils(target, fn) {
  const u = await makeWorkerUtils({ connectionString: target, logger });
  try {
    return await fn(u);
  } finally {
    await u.release();
  }
}

const count = (target) =>
  withClient(target, async (c) =>
    Number((await c.query("SELECT count(*) AS n FROM graphile_worker._private_jobs")).rows[0].n),
  );

async function setup(args) {
  await runMigrations({ connectionString: args.target, logger });
  return {};
}

async function enqueueBulk(args) {
  const specs = Array.from({ length: args.jobs }, (_, n) => ({ identifier: TASK, payload: { n } }));
  const [elapsed, ids] = await utils(args.target, async (u) => {
    const start = performance.now();
    const jobs = await u.addJobs(specs);
    return [(performance.now() - start) / 1000, jobs.length];
  });
  return { enqueued: await count(args.target), ids, elapsed_s: elapsed };
}

async function enqueueFeature(args) {
  const plan = args.plan;
  if (plan.workload !== "fairness" || plan.mode !== "tenant-limit") {
    throw new Error(`Graphile Worker has no feature for ${plan.workload}`);
  }
  await utils(args.target, async (u) => {
    for (const [tenant, numbers] of tenants(plan)) {
      await u.addJobs(numbers.map((n) => ({ identifier: TASK, payload: { n }, queueName: tenant })));
    }
  });
  return { enqueued: await count(args.target) };
}

async function enqueueSingle(args) {
  const elapsed = await utils(args.target, async (u) => {
    const start = performance.now();
    for (let n = 0; n < args.jobs; n++) await u.addJob(TASK, { n });
    return (performance.now() - start) / 1000;
  });
  return { enqueued: await count(args.target), elapsed_s: elapsed };
}

async function latencyEnqueue(args) {
  const commits = {};
  await utils(args.target, async (u) => {
    // addJob resolves after its autocommit statement
    Object.assign(commits, await pacedEnqueues(args, (n) => u.addJob(TASK, { n })));
  });
  return { commits };
}

async function work(args) {
  if (args.noListen) throw new Error("Graphile Worker always LISTENs: no poll-only mode");
  const ledger = new Ledger(args.total, args.recordStarts);
  const histogram = {};
  let lastCompletion = null;
  const pgPool = new pg.Pool({ connectionString: args.target, max: args.concurrency + 1 });
  pgPool.on("error", (e) => process.stderr.write(`pool error: ${e.message}\n`));
  pgPool.on("connect", (client) => {
    const query = client.query;
    client.query = function (...qargs) {
      const result = query.apply(this, qargs);
      const text = typeof qargs[0] === "string" ? qargs[0] : qargs[0]?.text;
      if (result && typeof result.then === "function" && text && COMPLETION.test(text)) {
        const values = typeof qargs[0] === "string" ? qargs[1] : qargs[0]?.values;
        const jobs = Array.isArray(values?.[0]) ? values[0].length : 1;
        result.then(() => {
          lastCompletion = now();
          const bucket = Math.floor(lastCompletion * 10);
          histogram[bucket] = (histogram[bucket] ?? 0) + jobs;
        }, () => {});
      }
      return result;
    };
  });
  const preset =
    CONFIG === "fast"
      ? { worker: { localQueue: { size: 500 }, completeJobBatchDelay: 0, failJobBatchDelay: 0 } }
      : { worker: {} };
  const options = {
    pgPool,
    concurrency: args.concurrency,
    noHandleSignals: true,
    logger,
    taskList: {
      [TASK]: async (payload) => {
        ledger.ran(payload.n, now());
      },
    },
    preset,
  };
  if (args.pollInterval !== undefined) options.pollInterval = Math.round(args.pollInterval * 1000);
  const probe = new pg.Client({ connectionString: args.target });
  await probe.connect();
  ready();
  const runner = await run(options);
  try {
    await stopWhen(
      args,
      ledger,
      () => runner.stop(),
      async () =>
        (await probe.query("/* bench-probe */ SELECT NOT EXISTS (SELECT FROM graphile_worker._private_jobs) AS e"))
          .rows[0].e,
    );
    await runner.promise;
  } finally {
    await probe.end();
    await pgPool.end();
  }
  const report = ledger.report();
  report.last_done = lastCompletion ?? report.last_done;
  report.histogram = histogram;
  return report;
}

async function verify(args) {
  return withClient(args.target, async (c) => {
    const seq = (
      await c.query(
        "SELECT pg_get_serial_sequence('graphile_worker._private_jobs', 'id') AS s",
      )
    ).rows[0].s;
    const inserted = (
      await c.query(`SELECT CASE WHEN is_called THEN last_value ELSE 0 END AS n FROM ${seq}`)
    ).rows[0].n;
    const row = (
      await c.query(
        `SELECT count(*) AS rows,
                count(*) FILTER (WHERE locked_at IS NULL AND attempts = 0) AS left,
                count(*) FILTER (WHERE locked_at IS NOT NULL) AS in_flight,
                count(*) FILTER (WHERE locked_at IS NULL AND attempts > 0) AS retried
           FROM graphile_worker._private_jobs`,
      )
    ).rows[0];
    return {
      completed: Number(inserted) - Number(row.rows),
      left: Number(row.left),
      in_flight: Number(row.in_flight),
      bad: Number(row.retried),
      other: { inserted: Number(inserted), config: CONFIG },
      first_completion: null,
      last_completion: null,
      histogram: {},
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
