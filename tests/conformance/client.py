"""The official Python SDK client (`mcp` 2.x), against the reference server directly and
through the gateway: every feature must give the same results both ways.

Usage: python3 client.py DIRECT_URL GATEWAY_URL TOKEN
"""

import asyncio
import json
import re
import sys

import mcp.types as types
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
results: list[bool] = []


def check(name: str, ok: bool, detail: str = "") -> None:
    results.append(bool(ok))
    print(f"{'PASS' if ok else 'FAIL'} {name}" + ("" if ok or not detail else f"\n  {detail}"), flush=True)


def dump(v):
    if hasattr(v, "model_dump"):
        v = v.model_dump(mode="json", exclude_none=True, by_alias=True)
    # Session ids differ between two runs by design.
    return json.loads(UUID.sub("<uuid>", json.dumps(v, sort_keys=True)))


async def suite(url: str, token: str | None) -> dict:
    seen = {"logs": 0, "updates": [], "samplings": 0, "elicitations": 0, "roots": 0}

    async def sampling(ctx, params):
        seen["samplings"] += 1
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(type="text", text="sampled"), model="test-model"
        )

    async def elicitation(ctx, params):
        seen["elicitations"] += 1
        return types.ElicitResult(action="decline")

    async def roots(ctx):
        seen["roots"] += 1
        return types.ListRootsResult(roots=[types.Root(uri="file:///tmp/airlock-conformance", name="conformance")])

    async def logging(params):
        seen["logs"] += 1

    async def messages(msg):
        if isinstance(msg, types.ResourceUpdatedNotification):
            seen["updates"].append(str(msg.params.uri))

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    out: dict = {}
    async with create_mcp_http_client(headers=headers) as http:
        async with streamable_http_client(url, http_client=http) as (read, write):
            async with ClientSession(
                read,
                write,
                sampling_callback=sampling,
                elicitation_callback=elicitation,
                list_roots_callback=roots,
                logging_callback=logging,
                message_handler=messages,
            ) as s:
                init = await s.initialize()
                out["protocol"] = init.protocol_version
                out["server"] = dump(init.server_info)
                out["capabilities"] = dump(init.capabilities)
                out["ping"] = dump(await s.send_ping())
                tools = await s.list_tools()
                out["tools"] = sorted(t.name for t in tools.tools)
                out["echo"] = dump(await s.call_tool("echo", {"message": "hello"}))
                out["sum"] = dump(await s.call_tool("get-sum", {"a": 2, "b": 40}))
                progress = []

                async def on_progress(p, total, message):
                    progress.append([p, total])

                out["long"] = dump(
                    await s.call_tool(
                        "trigger-long-running-operation", {"duration": 1, "steps": 4}, progress_callback=on_progress
                    )
                )
                out["progress"] = progress
                out["sampling"] = dump(await s.call_tool("trigger-sampling-request", {"prompt": "hi", "maxTokens": 5}))
                out["elicitation"] = dump(await s.call_tool("trigger-elicitation-request", {}))
                out["roots"] = dump(await s.call_tool("get-roots-list", {}))
                res = await s.list_resources()
                out["resources"] = sorted(str(r.uri) for r in res.resources)
                first = str(res.resources[0].uri)
                out["read"] = dump(await s.read_resource(first))
                out["subscribe"] = dump(await s.subscribe_resource(first))
                prompts = await s.list_prompts()
                out["prompts"] = sorted(p.name for p in prompts.prompts)
                out["prompt"] = dump(await s.get_prompt("args-prompt", {"city": "Oslo"}))
                out["complete"] = dump(
                    await s.complete(
                        types.PromptReference(type="ref/prompt", name="completable-prompt"),
                        {"name": "department", "value": "S"},
                    )
                )
                out["level"] = dump(await s.set_logging_level("debug"))
                await s.call_tool("toggle-simulated-logging", {})
                await s.call_tool("toggle-subscriber-updates", {})
                for _ in range(160):
                    if seen["logs"] and first in seen["updates"]:
                        break
                    await asyncio.sleep(0.05)
                out["gotLogs"] = seen["logs"] > 0
                out["gotUpdates"] = first in seen["updates"]
                await s.call_tool("toggle-simulated-logging", {})
                await s.call_tool("toggle-subscriber-updates", {})
                out["unsubscribe"] = dump(await s.unsubscribe_resource(first))
    out["roundTrips"] = [seen["samplings"], seen["elicitations"], seen["roots"]]
    return dump(out)


async def main() -> int:
    direct, gateway, token = sys.argv[1:4]
    try:
        a = await suite(direct, None)
    except Exception as e:  # noqa: BLE001 - report any failure as a failed check
        check("py: direct run", False, repr(e))
        return 1
    try:
        b = await suite(gateway, token)
    except Exception as e:  # noqa: BLE001
        check("py: gateway run", False, repr(e))
        return 1
    for key in a:
        check(f"py {a['protocol']}: {key} same through the gateway", a[key] == b.get(key),
              f"direct {json.dumps(a[key])[:400]}\n  gateway {json.dumps(b.get(key))[:400]}")
    check(f"py {a['protocol']}: progress arrived", len(a["progress"]) == 4, json.dumps(a["progress"]))
    check(f"py {a['protocol']}: sampling, elicitation and roots round trips", a["roundTrips"] == [1, 1, 1],
          json.dumps(a["roundTrips"]))
    check(f"py {a['protocol']}: GET stream delivered logs and updates", a["gotLogs"] and a["gotUpdates"])
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
