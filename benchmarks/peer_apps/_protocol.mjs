// The command line of benchmarks/peer_apps/__init__.py, for the Node peers (Graphile
// Worker, pg-boss): the same commands, options and last-line JSON as _protocol.py, so the
// harness drives a Node peer exactly as it drives a Python one. Node's standard library only.

import pg from "pg";

import { parseArgs } from "node:util";

/** Wall-clock seconds with sub-millisecond resolution (Date.now() has only milliseconds). */
export const now = () => (performance.timeOrigin + performance.now()) / 1000;

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));

/** What one worker process ran: one bit per job number, like the Python Ledger, so the
 * bookkeeping does not inflate the memory the memory workload measures. */
export class Ledger {
  constructor(total, recordStarts = false) {
    this.total = total;
    this.bits = new Uint8Array(Math.ceil(total / 8));
    this.executions = 0;
    this.duplicates = 0;
    this.unexpected = 0;
    this.firstStart = null;
    this.lastDone = null;
    this.starts = recordStarts ? {} : null;
    // Named moments (epoch seconds) a feature workload's tasks note, e.g. a join's end.
    this.marks = {};
  }

  /** Note a moment: the first (`keep = "first"`) or the last one under that name. */
  mark(name, when, keep = "last") {
    const seen = this.marks[name];
    if (seen === undefined || (keep === "first" ? when < seen : when > seen)) this.marks[name] = when;
  }

  ran(n, started) {
    if (this.firstStart === null) this.firstStart = started;
    if (this.starts !== null) this.starts[n] = started;
    this.executions += 1;
    if (Number.isInteger(n) && n >= 0 && n < this.total) {
      const byte = n >> 3;
      const bit = 1 << (n & 7);
      if (this.bits[byte] & bit) this.duplicates += 1;
      else this.bits[byte] |= bit;
    } else {
      this.unexpected += 1;
    }
    this.lastDone = now();
    return this.executions;
  }

  report() {
    let distinct = 0;
    for (const b of this.bits) {
      let v = b;
      while (v) {
        distinct += v & 1;
        v >>= 1;
      }
    }
    return {
      executions: this.executions,
      duplicates: this.duplicates,
      unexpected: this.unexpected,
      distinct,
      seen_b64: Buffer.from(this.bits).toString("base64"),
      first_start: this.firstStart,
      last_done: this.lastDone,
      starts: this.starts,
      marks: this.marks,
    };
  }
}

/** The fairness workload's backlog in enqueue order, numbered as benchmarks/features.py
 * numbers it: the hot tenant's jobs, then each small tenant's. */
export function tenants(plan) {
  const out = [["hot", Array.from({ length: plan.hot }, (_, i) => i)]];
  for (let g = 0; g < plan.tenants; g++) {
    const first = plan.hot + g * plan.small;
    out.push([`t${String(g).padStart(3, "0")}`, Array.from({ length: plan.small }, (_, i) => first + i)]);
  }
  return out;
}

/** Tell the harness the worker is about to start consuming. */
export function ready() {
  process.stdout.write("READY\n");
}

/** Sleep until job `index` is due under an open-loop schedule of `rate` per second. */
export async function paced(index, startMs, rate) {
  await sleep(startMs + (index / rate) * 1000 - performance.now());
}

const OPTIONS = {
  total: { type: "string" },
  concurrency: { type: "string" },
  mode: { type: "string", default: "drain" },
  until: { type: "string" },
  "no-listen": { type: "boolean", default: false },
  "poll-interval": { type: "string" },
  "record-starts": { type: "boolean", default: false },
  warmup: { type: "string" },
  jobs: { type: "string" },
  rate: { type: "string" },
  histogram: { type: "boolean", default: false },
  plan: { type: "string" },
  "stop-after": { type: "string" },
};

function parse(argv) {
  const { values, positionals } = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true });
  const [command, target, jobs] = positionals;
  if (!command || !target) throw new Error("usage: <command> <target> [jobs] [options]");
  const num = (v) => (v === undefined ? undefined : Number(v));
  const args = {
    command,
    target,
    jobs: num(jobs ?? values.jobs),
    total: num(values.total),
    concurrency: num(values.concurrency),
    mode: values.mode,
    until: num(values.until),
    noListen: values["no-listen"],
    pollInterval: num(values["poll-interval"]),
    recordStarts: values["record-starts"],
    warmup: num(values.warmup),
    rate: num(values.rate),
    histogram: values.histogram,
    // Mode count: stop after this many executions (default: total).
    stopAfter: num(values["stop-after"]),
    // A feature workload's plan (benchmarks/features.py), as JSON.
    plan: values.plan === undefined ? null : JSON.parse(values.plan),
  };
  if (!["drain", "count", "until"].includes(args.mode)) throw new Error(`bad --mode ${args.mode}`);
  return args;
}

/** Run the command named on the command line; print its result as the last JSON line. */
/** The latency workload's enqueues: `warmup` jobs, a second's pause, then `jobs` more, each
 * at `rate` per second; `enqueue(n)` resolves once its job is committed, which is when
 * the job's commit time is taken. */
export async function pacedEnqueues(args, enqueue) {
  const commits = {};
  for (const [first, last] of [
    [0, args.warmup],
    [args.warmup, args.warmup + args.jobs],
  ]) {
    const start = performance.now();
    for (let n = first; n < last; n++) {
      await paced(n - first, start, args.rate);
      await enqueue(n);
      commits[n] = now();
    }
    if (first === 0) await sleep(1000);
  }
  return commits;
}

/** One connection for `fn`, closed whatever happens. */
export async function withClient(target, fn) {
  const client = new pg.Client({ connectionString: target });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

export async function serve(handlers) {
  const args = parse(process.argv.slice(2));
  const handler = handlers[args.command];
  if (!handler) {
    process.stderr.write(`${args.command} is not supported by this peer\n`);
    process.exit(2);
  }
  try {
    const result = await handler(args);
    process.stdout.write(JSON.stringify(result) + "\n");
    process.exitCode = 0;
  } catch (error) {
    process.stderr.write(`${error?.stack ?? error}\n`);
    process.exitCode = 1;
  }
  // A library's stray timers must not keep a finished command alive.
  setTimeout(() => process.exit(), 200).unref();
}

/**
 * Stop a `work` command at the right moment: after `total` executions (count), at a
 * wall-clock time (until), or once the library's table holds nothing runnable or running
 * (drain). The drain check queries only while this process is idle (no execution since the
 * last tick), so it adds no statement while jobs flow, and sees another process's jobs too.
 */
export function stopWhen(args, ledger, stop, nothingLeft) {
  return new Promise((resolve, reject) => {
    let seen = -1;
    let done = false;
    let busy = false; // a slow check must not overlap the next tick's
    const finish = async () => {
      if (done) return;
      done = true;
      clearInterval(timer);
      try {
        await stop();
        resolve();
      } catch (e) {
        reject(e);
      }
    };
    const timer = setInterval(async () => {
      if (done || busy) return;
      if (args.mode === "count" && ledger.executions >= (args.stopAfter ?? args.total)) return finish();
      if (args.mode === "until" && now() >= args.until) return finish();
      if (args.mode === "drain") {
        const idle = ledger.executions === seen;
        seen = ledger.executions;
        if (!idle) return;
        busy = true;
        try {
          if (await nothingLeft()) return finish();
        } catch (e) {
          done = true;
          clearInterval(timer);
          reject(e);
        } finally {
          busy = false;
        }
      }
    }, 10);
  });
}
