// Held calls through the gateway with the official TypeScript SDK client.
// Usage: node hold.mjs CASE GATEWAY_URL TOKEN DATABASE_URL REDIS_URL PREFIX
//   short:   client timeout 6 s with resetTimeoutOnProgress, approval after 9 s (gateway
//            keepalive 2 s): succeeds; the same call without a progress token (comments only)
//            times out, and the SDK's notifications/cancelled cancels the ticket.
//   literal: the SDK's default 60 s timeout with resetTimeoutOnProgress, approval after 90 s
//            (gateway keepalive 15 s, the default): succeeds.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { approve, check, pendingTicket, sleep, sql, until } from "./common.mjs";

const [which, gateway, token, db, redisUrl, prefix] = process.argv.slice(2);

async function connect() {
  const client = new Client({ name: "airlock-hold", version: "1.0.0" }, { capabilities: {} });
  const transport = new StreamableHTTPClientTransport(new URL(gateway), {
    requestInit: { headers: { Authorization: `Bearer ${token}` } },
  });
  await client.connect(transport);
  return client;
}

async function heldCall({ name, marker, holdMs, options }) {
  const client = await connect();
  const progress = [];
  const started = Date.now();
  const call = client
    .callTool({ name: "echo", arguments: { message: marker } }, undefined, {
      ...options,
      onprogress: options.progress ? (p) => progress.push(p) : undefined,
    })
    .then((r) => ({ ok: true, r }), (e) => ({ ok: false, e }));
  const ticket = await pendingTicket(db, marker);
  check(results, `${name}: a ticket is pending`, ticket !== "");
  // Approve after holdMs, unless the call has already failed.
  const outcome = await Promise.race([call, sleep(holdMs).then(() => null)]);
  if (outcome === null) approve(db, redisUrl, prefix, ticket);
  const done = outcome ?? (await call);
  const secs = ((Date.now() - started) / 1000).toFixed(1);
  await client.close();
  return { done, progress, ticket, secs };
}

const results = [];
if (which === "short") {
  const ok = await heldCall({
    name: "short hold with progress",
    marker: `hold-short-${process.pid}`,
    holdMs: 9000,
    options: { timeout: 6000, resetTimeoutOnProgress: true, progress: true },
  });
  check(results, `short hold with progress: succeeds after approval (${ok.secs}s)`,
    ok.done.ok && ok.done.r.content?.[0]?.text === `Echo: hold-short-${process.pid}`,
    ok.done.ok ? JSON.stringify(ok.done.r) : String(ok.done.e));
  check(results, "short hold with progress: got keepalive progress", ok.progress.length >= 3 &&
    ok.progress.every((p) => String(p.message).startsWith("waiting for approval")), JSON.stringify(ok.progress));
  const bad = await heldCall({
    name: "short hold without progress",
    marker: `hold-noprogress-${process.pid}`,
    holdMs: 9000,
    options: { timeout: 6000, resetTimeoutOnProgress: true, progress: false },
  });
  check(results, `short hold without progress: the client times out (${bad.secs}s)`,
    !bad.done.ok && bad.done.e?.code === -32001 && /timed out/i.test(String(bad.done.e?.message)), String(bad.done.e ?? JSON.stringify(bad.done.r)));
  const cancelled = await until(() => sql(db, `SELECT status FROM tickets WHERE id='${bad.ticket}'`) === "cancelled", 5000);
  check(results, "short hold without progress: the SDK's cancel cancels the ticket", cancelled,
    sql(db, `SELECT status FROM tickets WHERE id='${bad.ticket}'`));
} else {
  const ok = await heldCall({
    name: "90 s hold",
    marker: `hold-90-${process.pid}`,
    holdMs: 90000,
    options: { resetTimeoutOnProgress: true, progress: true },
  });
  check(results, `90 s hold with the SDK's default 60 s timeout: succeeds after approval (${ok.secs}s)`,
    ok.done.ok && ok.done.r.content?.[0]?.text === `Echo: hold-90-${process.pid}`,
    ok.done.ok ? JSON.stringify(ok.done.r) : String(ok.done.e));
  check(results, `90 s hold: ${ok.progress.length} keepalive progress notifications`, ok.progress.length >= 5);
  const status = sql(db, `SELECT status FROM tickets WHERE id='${ok.ticket}'`);
  check(results, "90 s hold: the ticket was executed once", status === "executed", status);
}
process.exit(results.every((r) => r) ? 0 : 1);
