// A Node.js client of the suite's api (scheduler.v1.TaskService): it creates a one-time task due
// in a second, lists every task page by page (ListTasks) and finds its own among them, then waits
// for its execution and prints it.
//
//   npm ci                                      # at the project's root (package-lock.json)
//   API_ADDR=localhost:50051 SCHEDCTL_TOKEN=$(cat .data/dev-admin-token) node examples/node/client.js
//
// The token (SCHEDCTL_TOKEN, as for schedctl) goes with every call as `authorization: Bearer`.
// PAGE_SIZE (default 100, at most 1000) is the page_size of each ListTasks call.
//
// Stubs are built at run time from protos/ by @grpc/proto-loader; the google/protobuf types the
// protos import (Timestamp, Duration, Struct, FieldMask) are bundled with protobufjs.
// Each step prints one JSON line (one per page of ListTasks); the exit status is 0 once an
// execution has ended.
"use strict";

const crypto = require("node:crypto");
const path = require("node:path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const PROTOS = path.resolve(__dirname, "..", "..", "protos");
const API_ADDR = process.env.API_ADDR || "localhost:50051";
const TOKEN = process.env.SCHEDCTL_TOKEN || "";
const WAIT_SECONDS = Number(process.env.WAIT_SECONDS || 30);
const PAGE_SIZE = Number(process.env.PAGE_SIZE || 100);
const TERMINAL = new Set([
  "EXECUTION_STATUS_SUCCEEDED",
  "EXECUTION_STATUS_FAILED",
  "EXECUTION_STATUS_TIMED_OUT",
  "EXECUTION_STATUS_CANCELLED",
  "EXECUTION_STATUS_SKIPPED",
]);

const definition = protoLoader.loadSync("scheduler/v1/task_service.proto", {
  includeDirs: [PROTOS],
  keepCase: true, // field names as in the .proto files: run_time, task_id, ...
  longs: String, // int64 (Timestamp.seconds) as strings: no precision lost
  enums: String, // enum values by name
  defaults: true,
  oneofs: true, // a oneof's case in a field of its name: schedule.kind === "once"
});
const { TaskService } = grpc.loadPackageDefinition(definition).scheduler.v1;
const client = new TaskService(API_ADDR, grpc.credentials.createInsecure());

// One unary call as a promise, with a deadline.
function call(method, request, seconds = 10) {
  return new Promise((resolve, reject) => {
    const deadline = new Date(Date.now() + seconds * 1000);
    const metadata = new grpc.Metadata();
    if (TOKEN) metadata.set("authorization", `Bearer ${TOKEN}`);
    client[method](request, metadata, { deadline }, (err, reply) => (err ? reject(err) : resolve(reply)));
  });
}

function timestamp(ms) {
  return { seconds: String(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1e6 };
}

function print(event, fields) {
  console.log(JSON.stringify({ event, ...fields }));
}

async function main() {
  const name = `node-example-${crypto.randomUUID().slice(0, 8)}`;
  const { task } = await call("CreateTask", {
    task: {
      name,
      schedule: { once: { run_time: timestamp(Date.now() + 1000) } },
      target: { log: {} },
      // google.protobuf.Struct, field by field: {"client": "node"}. protobufjs' bundled
      // well-known types name their fields in camelCase (stringValue), whatever keepCase says.
      payload: { fields: { client: { stringValue: "node" } } },
    },
    request_id: crypto.randomUUID(), // a retry with the same id returns the same task
  });
  print("created", { id: task.id, name: task.name, state: task.state, etag: task.etag });

  // Every task the token may see, one page per call. A page may hold fewer tasks than asked even
  // when more follow: only an empty next_page_token ends the list. Each next call passes the
  // previous page's token with the same filters (here: none).
  let found;
  let count = 0;
  let pages = 0;
  let page_token = "";
  do {
    const reply = await call("ListTasks", { page_size: PAGE_SIZE, page_token });
    pages += 1;
    count += reply.tasks.length;
    print("page", { page: pages, ids: reply.tasks.map((t) => t.id) });
    found = found || reply.tasks.find((t) => t.id === task.id);
    page_token = reply.next_page_token;
  } while (page_token);
  if (!found) throw new Error(`ListTasks did not return task ${task.id} in ${pages} pages`);
  print("listed", { id: found.id, name: found.name, state: found.state, count, pages });

  const deadline = Date.now() + WAIT_SECONDS * 1000;
  for (;;) {
    const { executions } = await call("ListExecutions", { task_id: task.id, page_size: 10 });
    const done = executions.filter((e) => TERMINAL.has(e.status));
    if (done.length > 0) {
      for (const e of done) {
        print("execution", {
          id: e.id,
          task_id: e.task_id,
          status: e.status,
          attempt: e.attempt,
          executor: e.executor,
          output: e.result ? e.result.output : "",
        });
      }
      return;
    }
    if (Date.now() > deadline) throw new Error(`no execution of ${task.id} ended in ${WAIT_SECONDS} s`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

main()
  .then(() => client.close())
  .catch((err) => {
    // A gRPC error carries its status code name and the server's message.
    const code = err.code !== undefined ? grpc.status[err.code] : "";
    console.error(`error: ${code} ${err.details || err.message}`);
    client.close();
    process.exitCode = 1;
  });
