"""The official Python SDK client against the demo upstream, directly and through the gateway:
a session ends without "Session termination failed" (the SDK wants 200 or 204 for DELETE), and
a refund over what is left of a charge is a tool error the agent can read.

Usage: python3 demo_session.py DIRECT_URL GATEWAY_URL TOKEN
"""

import asyncio
import logging
import sys

from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

results: list[bool] = []


def check(name: str, ok: bool, detail: str = "") -> None:
    results.append(bool(ok))
    print(f"{'PASS' if ok else 'FAIL'} {name}" + ("" if ok or not detail else f"\n  {detail}"), flush=True)


class Warnings(logging.Handler):
    """Every warning the SDK logs."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def text(result) -> str:
    return " ".join(c.text for c in result.content if getattr(c, "type", "") == "text")


async def session(name: str, url: str, token: str | None, warnings: Warnings) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    before = len(warnings.messages)
    async with create_mcp_http_client(headers=headers) as http:
        async with streamable_http_client(url, http_client=http) as (read, write):
            async with ClientSession(read, write) as s:
                await s.initialize()
                listed = await s.call_tool("list_charges", {"limit": 3})
                check(f"{name}: list_charges", not listed.is_error and "ch_1001" in text(listed), text(listed))
                # 95.50 USD charge: 96 is over it, and stays under the demo policy's approval line.
                r = await s.call_tool("create_refund", {"charge_id": "ch_1002", "amount": 96, "currency": "usd"})
                check(
                    f"{name}: refund over the charge is a readable tool error",
                    r.is_error and "95.50 USD" in text(r),
                    f"is_error={r.is_error} {text(r)!r}",
                )
    # The DELETE happens when the transport closes; give its log line a moment.
    await asyncio.sleep(0.2)
    failed = [m for m in warnings.messages[before:] if "Session termination failed" in m]
    check(f"{name}: session ends without 'Session termination failed'", not failed, "; ".join(failed))


async def main() -> None:
    direct, gateway, token = sys.argv[1:4]
    warnings = Warnings()
    logging.getLogger().addHandler(warnings)
    logging.getLogger().setLevel(logging.WARNING)
    await session("direct", direct, None, warnings)
    await session("gateway", gateway, token, warnings)
    sys.exit(0 if all(results) else 1)


asyncio.run(main())
