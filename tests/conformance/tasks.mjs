// Held calls served as MCP tasks (2025-11-25) through the gateway, with the official TypeScript
// SDK client's experimental tasks API (client.experimental.tasks.callToolStream): the held echo
// is answered at once as a task, and it is approved (by a signed Slack click on the real
// webhook: the result arrives), denied (by a signed click), expired (a rule with a short
// timeout), or cancelled by the client (tasks/cancel).
// Usage: node tasks.mjs GATEWAY_URL TOKEN DATABASE_URL WEBHOOK_URL SIGNING_SECRET
import { createHmac } from "node:crypto";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { CallToolResultSchema } from "@modelcontextprotocol/sdk/types.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { check, pendingTicket, sql, until } from "./common.mjs";

const [gateway, token, db, webhook, secret] = process.argv.slice(2);
const results = [];

async function connect() {
  const client = new Client({ name: "airlock-tasks", version: "1.0.0" }, { capabilities: {} });
  const transport = new StreamableHTTPClientTransport(new URL(gateway), {
    requestInit: { headers: { Authorization: `Bearer ${token}` } },
  });
  await client.connect(transport);
  return client;
}

// POSTs Slack's block_actions payload for a button on the ticket's message, signed as Slack
// signs (v0= HMAC-SHA256 of v0:<ts>:<body>); the value is <ticket>:<fingerprint>.
async function click(ticket, action) {
  const fp = sql(db, `SELECT coalesce(fingerprint, '') FROM tickets WHERE id='${ticket}'`).slice(0, 16);
  const payload = {
    type: "block_actions",
    user: { id: "U1", username: "conformance" },
    team: { id: "T1" },
    api_app_id: "A1",
    channel: { id: "C1" },
    container: { channel_id: "C1", message_ts: "1700000000.000100" },
    actions: [{ action_id: action, value: fp ? `${ticket}:${fp}` : ticket }],
  };
  const body = new URLSearchParams({ payload: JSON.stringify(payload) }).toString();
  const ts = String(Math.floor(Date.now() / 1000));
  const signature = "v0=" + createHmac("sha256", secret).update(`v0:${ts}:${body}`).digest("hex");
  const r = await fetch(webhook, {
    method: "POST",
    headers: {
      "Content-Type": "application/x-www-form-urlencoded",
      "X-Slack-Request-Timestamp": ts,
      "X-Slack-Signature": signature,
    },
    body,
  });
  return r.status;
}

// Starts a held echo as a task; resolves once the task exists, with the stream still running.
async function startTask(client, name, marker) {
  const events = [];
  const done = (async () => {
    for await (const m of client.experimental.tasks.callToolStream({ name: "echo", arguments: { message: marker } })) {
      events.push(m);
    }
  })().catch((e) => events.push({ type: "error", error: e }));
  const created = await until(() => events.some((e) => e.type === "taskCreated"), 10000);
  const task = events.find((e) => e.type === "taskCreated")?.task;
  check(results, `${name}: answered at once as a task`, created && task?.status === "working",
    JSON.stringify(events));
  return { events, done, task };
}

const last = (events) => events[events.length - 1];
const ticketStatus = (t) => sql(db, `SELECT status FROM tickets WHERE id='${t}'`);

async function main() {
  const client = await connect();
  const listed = await client.listTools();
  const echo = listed.tools.find((t) => t.name === "echo");
  check(results, "tools/list marks the held tool taskSupport optional",
    echo?.execution?.taskSupport === "optional", JSON.stringify(echo));
  check(results, "the gateway declares task-augmented tools/call",
    !!client.getServerCapabilities()?.tasks?.requests?.tools?.call);

  {
    const marker = `hold-task-ok-${process.pid}`;
    const { events, done, task } = await startTask(client, "approved", marker);
    check(results, "approved: the status names the approver and the expiry; TTL and poll interval set",
      /^waiting for approval by @U1 \(expires \d\d:\d\d UTC\)$/.test(task?.statusMessage ?? "") &&
      task.ttl > 0 && task.pollInterval > 0, JSON.stringify(task));
    const ticket = await pendingTicket(db, marker);
    check(results, "approved: the signed click is accepted", (await click(ticket, "airlock_approve")) === 200);
    await done;
    const end = last(events);
    check(results, "approved: the stream ends with the upstream's result",
      end?.type === "result" && end.result.content?.[0]?.text === `Echo: ${marker}`, JSON.stringify(end));
    check(results, "approved: the ticket was executed once", ticketStatus(ticket) === "executed", ticketStatus(ticket));
    const again = await client.experimental.tasks.getTaskResult(task.taskId, CallToolResultSchema);
    check(results, "approved: a later tasks/result gets the same result",
      again.content?.[0]?.text === `Echo: ${marker}`, JSON.stringify(again));
  }

  async function failed(name, marker, decide, message) {
    const { events, done, task } = await startTask(client, name, marker);
    const ticket = await pendingTicket(db, marker);
    if (decide) await decide(ticket);
    await done;
    const end = last(events);
    check(results, `${name}: the stream ends with an error`, end?.type === "error", JSON.stringify(end));
    const status = await client.experimental.tasks.getTask(task.taskId);
    check(results, `${name}: the task is failed`, status.status === "failed", JSON.stringify(status));
    const err = await client.experimental.tasks.getTaskResult(task.taskId, CallToolResultSchema).then(() => null, (e) => e);
    check(results, `${name}: tasks/result is today's -32001 "${message}"`,
      err?.code === -32001 && String(err.message).includes(message), String(err));
    return ticket;
  }

  {
    const t = await failed("denied", `hold-task-deny-${process.pid}`,
      async (ticket) => check(results, "denied: the signed click is accepted", (await click(ticket, "airlock_deny")) === 200),
      "approval denied");
    check(results, "denied: the ticket is denied", ticketStatus(t) === "denied", ticketStatus(t));
  }
  {
    const t = await failed("expired", `hold-expire-task-${process.pid}`, null, "approval timeout");
    check(results, "expired: the ticket is expired", ticketStatus(t) === "expired", ticketStatus(t));
  }
  {
    const marker = `hold-task-cancel-${process.pid}`;
    const { events, done, task } = await startTask(client, "cancelled", marker);
    const ticket = await pendingTicket(db, marker);
    const cancelled = await client.experimental.tasks.cancelTask(task.taskId);
    check(results, "cancelled: tasks/cancel answers the task cancelled", cancelled?.status === "cancelled",
      JSON.stringify(cancelled));
    await done;
    check(results, "cancelled: the stream ends with an error", last(events)?.type === "error", JSON.stringify(last(events)));
    check(results, "cancelled: the ticket is cancelled (the Slack message says so)",
      ticketStatus(ticket) === "cancelled", ticketStatus(ticket));
    const again = await client.experimental.tasks.cancelTask(task.taskId).then(() => null, (e) => e);
    check(results, "cancelled: cancelling again is -32602", again?.code === -32602, String(again));
  }
  await client.close();
}

try {
  await main();
} catch (e) {
  // A script that dies midway must not pass on the checks it made before.
  check(results, "tasks.mjs ran every case", false, e?.stack ?? String(e));
}
process.exit(results.every((r) => r) ? 0 : 1);
