// Shared bits of the conformance scripts.
import { execFileSync } from "node:child_process";

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function until(f, ms) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (f()) return true;
    await sleep(50);
  }
  return f();
}

// Session ids and other per-run uuids differ between two runs by design.
export function normalise(v) {
  return JSON.parse(
    JSON.stringify(v).replace(/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/g, "<uuid>"),
  );
}

export function check(results, name, ok, detail = "") {
  results.push(!!ok);
  console.log(`${ok ? "PASS" : "FAIL"} ${name}${ok || !detail ? "" : `\n  ${detail}`}`);
}

// Decides a ticket the way the webhook does: the row first, then the signal.
export function approve(db, redisUrl, prefix, ticket) {
  execFileSync("psql", [db, "-qtAc",
    `UPDATE tickets SET status='approved', decided_at=now(), decided_by_id='U1', decided_by_name='conformance' WHERE id='${ticket}' AND status='pending'`]);
  execFileSync("redis-cli", ["-u", redisUrl, "PUBLISH", `${prefix}:decisions`, JSON.stringify({ ticket_id: ticket, status: "approved" })]);
}

export function sql(db, query) {
  return execFileSync("psql", [db, "-qtAc", query]).toString().trim();
}

// Waits for the pending ticket of a call whose arguments carry `marker` as its message.
export async function pendingTicket(db, marker, ms = 10000) {
  let id = "";
  await until(() => {
    id = sql(db, `SELECT id FROM tickets WHERE status='pending' AND arguments->>'message'='${marker}'`);
    return id !== "";
  }, ms);
  return id;
}
