// The BullMQ peer (`python -m bench --only bullmq`; bench/bullmq.py runs it): BullMQ, one worker
// at concurrency 100, completed jobs kept, on a redis-server of its own.
//
// Usage: node bench/bullmq.cjs burst REDIS_URL N WARMUP
//        node bench/bullmq.cjs steady REDIS_URL TASKS SECONDS
// burst adds N delayed jobs in bulk (addBulk, 1,000 per call), all due at one instant; each run
// records when it started. A warm-up burst of WARMUP runs first, unmeasured. It reports lags
// (start minus due, ms), the drain, and Redis commands (inside scripts one by one, EVALSHA not),
// Redis CPU, Node CPU and Redis memory per job over the measured burst. steady: see steady().
// Each prints one JSON line.
"use strict";

const { Queue, Worker } = require("bullmq");
const IORedis = require("ioredis");

const CONCURRENCY = 100;
const BULK = 1000;

function redisWork(info) {
  let calls = 0;
  let cpu = 0;
  for (const line of info.split("\n")) {
    const stat = /^cmdstat_([^:]+):calls=(\d+)/.exec(line);
    if (stat && stat[1] !== "evalsha" && stat[1] !== "eval") calls += Number(stat[2]);
    const used = /^used_cpu_(sys|user):([\d.]+)/.exec(line);
    if (used) cpu += Number(used[2]);
  }
  return { calls, cpu };
}

async function usedMemory(client) {
  return Number(/used_memory:(\d+)/.exec(await client.info("memory"))[1]);
}

async function burst(url, n, name) {
  // BullMQ leaves connections it was given open: both are closed below.
  const connection = new IORedis(url, { maxRetriesPerRequest: null });
  const workerConnection = new IORedis(url, { maxRetriesPerRequest: null });
  const queue = new Queue(name, { connection });
  const lags = [];
  let done;
  const finished = new Promise((resolve) => (done = resolve));
  const worker = new Worker(
    name,
    async (job) => {
      lags.push(Date.now() - job.data.due);
      if (lags.length === n) done();
      return "ok"; // kept with the completed job: the record of the run
    },
    { connection: workerConnection, concurrency: CONCURRENCY },
  );
  await worker.waitUntilReady();
  const lead = Math.max(3000, n / 2);
  const due = Date.now() + lead;
  const mem0 = await usedMemory(connection);
  const added = process.hrtime.bigint();
  for (let i = 0; i < n; i += BULK) {
    const jobs = [];
    for (let j = i; j < Math.min(n, i + BULK); j++) {
      jobs.push({ name: "j", data: { due }, opts: { delay: Math.max(0, due - Date.now()) } });
    }
    await queue.addBulk(jobs);
  }
  const addSeconds = Number(process.hrtime.bigint() - added) / 1e9;
  if (Date.now() > due) throw new Error("adding jobs took longer than the lead time");
  const work0 = redisWork(await connection.info("all"));
  const cpu0 = process.cpuUsage();
  const timeout = setTimeout(done, lead + 120000 + n * 20);
  await finished;
  clearTimeout(timeout);
  const cpu1 = process.cpuUsage(cpu0);
  await new Promise((resolve) => setTimeout(resolve, 200)); // the last completions are written
  const work1 = redisWork(await connection.info("all"));
  const mem1 = await usedMemory(connection);
  await worker.close();
  await queue.close();
  await connection.quit();
  await workerConnection.quit();
  return { n, lags, addSeconds, work0, work1, cpu: (cpu1.user + cpu1.system) / 1e6, mem0, mem1 };
}

// `tasks` job schedulers on "* * * * * *" (every second, as our steady workload's cron tasks),
// run for `seconds`: the jobs whose scheduled second falls in the window, and their lags.
async function steady(url, tasks, seconds) {
  const connection = new IORedis(url, { maxRetriesPerRequest: null });
  const workerConnection = new IORedis(url, { maxRetriesPerRequest: null });
  const queue = new Queue("steady", { connection });
  const runs = []; // [scheduled ms, lag ms]
  const worker = new Worker(
    "steady",
    async (job) => {
      const scheduled = job.opts.prevMillis; // the occurrence this job is for
      runs.push([scheduled, Date.now() - scheduled]);
      return "ok";
    },
    { connection: workerConnection, concurrency: CONCURRENCY },
  );
  await worker.waitUntilReady();
  for (let i = 0; i < tasks; i++) {
    await queue.upsertJobScheduler(`tick-${i}`, { pattern: "* * * * * *" }, { name: "t", data: {} });
  }
  await sleep(2500); // settled into their rhythm
  const start = (Math.floor(Date.now() / 1000) + 1) * 1000;
  await sleep(start - Date.now());
  const cpu0 = process.cpuUsage();
  await sleep(seconds * 1000);
  const cpu = process.cpuUsage(cpu0);
  await sleep(3000); // the last ones run
  const end = start + seconds * 1000;
  const lags = runs.filter(([at]) => at >= start && at < end).map(([, lag]) => lag);
  await worker.close();
  await queue.close();
  await connection.quit();
  await workerConnection.quit();
  return {
    tasks,
    seconds,
    expected_fires: tasks * seconds,
    fires: lags.length,
    fires_per_second: Math.round(lags.length / seconds),
    node_cpu_percent: Number(((100 * (cpu.user + cpu.system)) / 1e6 / seconds).toFixed(1)),
    lags_ms: lags,
  };
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));
}

async function main() {
  const [mode, url, a, b] = process.argv.slice(2);
  let out;
  if (mode === "steady") {
    out = await steady(url, Number(a), Number(b));
  } else if (mode === "burst") {
    const [n, warmup] = [Number(a), Number(b || 0)];
    if (warmup > 0) await burst(url, warmup, "warm");
    const r = await burst(url, n, "burst");
    const drain = Math.max(...r.lags, 1) / 1000;
    out = {
      jobs: n,
      ran: r.lags.length,
      add_seconds: Number(r.addSeconds.toFixed(3)),
      adds_per_second: Math.round(n / r.addSeconds),
      drain_seconds: drain,
      fires_per_second: Math.round(r.lags.length / drain),
      redis_commands_per_job: Number(((r.work1.calls - r.work0.calls) / n).toFixed(1)),
      redis_cpu_us_per_job: Math.round(((r.work1.cpu - r.work0.cpu) * 1e6) / n),
      node_cpu_us_per_job: Math.round((r.cpu * 1e6) / n),
      bytes_per_job: Math.round((r.mem1 - r.mem0) / n),
      lags_ms: r.lags,
    };
  } else {
    throw new Error("usage: node bench/bullmq.cjs burst REDIS_URL N WARMUP | steady REDIS_URL TASKS SECONDS");
  }
  // Exit once the line is written (a pipe is written asynchronously), whatever else is open.
  process.stdout.write(JSON.stringify(out) + "\n", () => process.exit(0));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
