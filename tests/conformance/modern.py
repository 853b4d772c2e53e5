"""The official Python SDK's `Client` (`mcp` >= 2.3) in mode "2026-07-28", "auto" and "legacy",
directly and through the gateway, against an upstream built with the same SDK's `MCPServer`
(modern_server.py): the negotiated version, the tools, an allowed call, a denied call, and a
held call approved while it waits by a signed Slack click on the real webhook (also after its
first stream was cut: it reattaches, one ticket). A click with a wrong signature is refused
first and decides nothing. Prints PASS/FAIL lines.

With two more gateway URLs (UPSTREAM_ERA=modern, and =legacy, in front of the same dual-era
MCPServer), the same checks run across each bridge: the legacy Client through the first (its
session kept by the gateway, its requests sent upstream as 2026-07-28), the 2026-07-28 Client
through the second (the gateway holding an upstream session for it).

Usage: python3 modern.py DIRECT_URL GATEWAY_URL TOKEN DB_URL WEBHOOK_URL SIGNING_SECRET
       [TO_MODERN_GATEWAY_URL TO_LEGACY_GATEWAY_URL]
"""

import asyncio
import contextlib
import json
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

from slack_sdk.signature import SignatureVerifier
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

results: list[bool] = []


def check(name: str, ok: bool, detail: str = "") -> None:
    results.append(bool(ok))
    print(f"{'PASS' if ok else 'FAIL'} {name}" + ("" if ok or not detail else f"\n  {detail}"), flush=True)


def sql(db: str, q: str) -> str:
    return subprocess.run(["psql", db, "-qtAc", q], check=True, capture_output=True, text=True).stdout.strip()


def click(webhook: str, secret: str, db: str, ticket: str, sign_with: str | None = None) -> int:
    """POSTs Slack's block_actions payload for Approve on the ticket's message, signed the way
    Slack signs (v0=HMAC-SHA256 of v0:<ts>:<body>); the button value is <ticket>:<fingerprint>,
    the first 16 hex digits the message shows. Returns the webhook's HTTP status."""
    fp = sql(db, f"SELECT coalesce(fingerprint, '') FROM tickets WHERE id='{ticket}'")[:16]
    payload = {
        "type": "block_actions",
        "user": {"id": "U1", "username": "conformance"},
        "team": {"id": "T1"},
        "api_app_id": "A1",
        "channel": {"id": "C1"},
        "container": {"channel_id": "C1", "message_ts": "1700000000.000100"},
        "actions": [{"action_id": "airlock_approve", "value": f"{ticket}:{fp}" if fp else ticket}],
    }
    body = urllib.parse.urlencode({"payload": json.dumps(payload)})
    ts = str(int(time.time()))
    signature = SignatureVerifier(sign_with or secret).generate_signature(timestamp=ts, body=body)
    req = urllib.request.Request(webhook, data=body.encode(), method="POST", headers={
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": signature,
    })
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code


async def pending_ticket(db: str, marker: str, within: float = 10.0) -> str:
    end = time.monotonic() + within
    while time.monotonic() < end:
        t = sql(db, f"SELECT id FROM tickets WHERE status='pending' AND arguments->>'message'='{marker}'")
        if t:
            return t
        await asyncio.sleep(0.1)
    return ""


@contextlib.asynccontextmanager
async def client(url: str, token: str | None, mode: str):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with create_mcp_http_client(headers=headers) as http:
        async with Client(streamable_http_client(url, http_client=http), mode=mode) as c:
            yield c


def text(result) -> str:
    return "".join(getattr(c, "text", "") for c in result.content)


async def basics(url: str, token: str | None, mode: str) -> dict:
    out: dict = {}
    async with client(url, token, mode) as c:
        out["version"] = c.protocol_version
        tools = await c.list_tools()
        out["tools"] = sorted(t.name for t in tools.tools)
        out["echo"] = text(await c.call_tool("echo", {"message": "hello"}))
        try:
            r = await c.call_tool("delete_everything", {"confirm": True})
            out["denied"] = f"ran: {text(r)} error={r.is_error}"
        except Exception as e:  # the gateway's JSON-RPC error
            out["denied"] = f"refused: {e}"
    return out


async def held(gw: str, token: str, mode: str, db: str, webhook: str, secret: str, cut: bool,
               label: str = "") -> None:
    label = label or mode
    marker = f"hold-{mode}-{'cut' if cut else 'plain'}-{time.time_ns()}"
    name = f"{label}: held call {'re-issued after its stream was cut' if cut else 'approved while it waits'}"
    async with client(gw, token, mode) as c:
        first = asyncio.create_task(c.call_tool("echo", {"message": marker}))
        ticket = await pending_ticket(db, marker)
        if not ticket:
            first.cancel()
            check(name, False, "no pending ticket")
            return
        if cut:
            first.cancel()
            try:
                await first
            except BaseException:
                pass
            await asyncio.sleep(0.5)
            first = asyncio.create_task(c.call_tool("echo", {"message": marker}))
            await asyncio.sleep(0.5)
        forged = click(webhook, secret, db, ticket, sign_with="not-the-signing-secret")
        still = sql(db, f"SELECT status FROM tickets WHERE id='{ticket}'")
        check(f"{label}: a click with a wrong signature is refused and decides nothing",
              forged == 400 and still == "pending", f"HTTP {forged}, ticket {still}")
        status = click(webhook, secret, db, ticket)
        if status != 200:
            check(name, False, f"the signed click got HTTP {status}")
        try:
            r = await asyncio.wait_for(first, 20)
            got = text(r)
        except Exception as e:
            got = f"error: {e}"
    tickets = sql(db, f"SELECT count(*) FROM tickets WHERE arguments->>'message'='{marker}'")
    status, by = sql(db, f"SELECT status || '|' || coalesce(decided_by_id, '') FROM tickets WHERE id='{ticket}'").split("|")
    check(name, got == marker and tickets == "1" and status == "executed" and by == "U1",
          f"answer {got!r}, tickets {tickets}, status {status}, decided by {by!r}")


async def compare(direct: str, gw: str, token: str, mode: str, label: str, db: str, webhook: str, secret: str) -> None:
    try:
        d = await basics(direct, None, mode)
        g = await basics(gw, token, mode)
    except Exception as e:
        check(f"{label}: connects directly and through the gateway", False, repr(e))
        return
    expected = "2026-07-28" if mode != "legacy" else d["version"]
    check(f"{label}: negotiated version equal direct and through the gateway ({d['version']})",
          d["version"] == g["version"] == expected, f"direct {d['version']}, gateway {g['version']}")
    check(f"{label}: tools listed the same", d["tools"] == g["tools"], f"{d['tools']} vs {g['tools']}")
    check(f"{label}: allowed call", d["echo"] == g["echo"] == "hello", f"{d['echo']!r} / {g['echo']!r}")
    check(f"{label}: denied call refused by the gateway only",
          d["denied"].startswith("ran") and g["denied"].startswith("refused") and "denied" in g["denied"],
          f"direct {d['denied']!r}, gateway {g['denied']!r}")
    await held(gw, token, mode, db, webhook, secret, cut=False, label=label)
    if g["version"] == "2026-07-28":
        # Without resumption a broken stream is re-issued; older revisions cancel instead.
        await held(gw, token, mode, db, webhook, secret, cut=True, label=label)


async def main() -> int:
    direct, gw, token, db, webhook, secret = sys.argv[1:7]
    for mode in ["2026-07-28", "auto", "legacy"]:
        await compare(direct, gw, token, mode, mode, db, webhook, secret)
    if len(sys.argv) >= 9:
        to_modern, to_legacy = sys.argv[7:9]
        await compare(direct, to_modern, token, "legacy", "legacy across the bridge", db, webhook, secret)
        await compare(direct, to_legacy, token, "2026-07-28", "2026-07-28 across the bridge", db, webhook, secret)
    print(f"{sum(results)} passed, {len(results) - sum(results)} failed")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
