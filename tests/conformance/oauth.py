"""OAuth for agents with the official Python SDK (`mcp` >= 2.3) and a real authorization server
(oauth_provider.mjs: npm `oidc-provider`, client credentials, JWT access tokens bound to the
gateway by a resource indicator). The client is given only the gateway's URL and its client
credentials: it meets the gateway's 401, reads the protected resource metadata the challenge
names, finds the authorization server there, gets a token for the gateway, and calls tools. A
call the policy holds for the token's `team` claim waits for a signed Slack click on the real
webhook; the ticket shows the principal, the issuer and the claim. The static agent token works
beside it. Prints PASS/FAIL lines and "N passed, M failed".

Usage: python3 oauth.py GATEWAY_URL ISSUER CLIENT_ID CLIENT_SECRET STATIC_TOKEN DB_URL
       WEBHOOK_URL SIGNING_SECRET
"""

import asyncio
import base64
import contextlib
import json
import sys
import time
import urllib.error
import urllib.request

from mcp.client import Client
from mcp.client.auth.extensions.client_credentials import ClientCredentialsOAuthProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from modern import check, click, pending_ticket, results, sql, text


class MemoryStorage:
    """The SDK's TokenStorage, in memory; `tokens` is what the provider stored."""

    def __init__(self) -> None:
        self.tokens = None
        self.client_info = None

    async def get_tokens(self):
        return self.tokens

    async def set_tokens(self, tokens) -> None:
        self.tokens = tokens

    async def get_client_info(self):
        return self.client_info

    async def set_client_info(self, client_info) -> None:
        self.client_info = client_info


def claims_of(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def raw_post(url: str, headers: dict) -> tuple[int, str]:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).encode()
    req = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json", "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/list", **headers})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.headers.get("WWW-Authenticate", "")
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("WWW-Authenticate", "")


@contextlib.asynccontextmanager
async def oauth_client(gw: str, issuer: str, client_id: str, secret: str, storage: MemoryStorage, mode: str):
    provider = ClientCredentialsOAuthProvider(
        server_url=gw, storage=storage, client_id=client_id, client_secret=secret,
        scope="mcp refunds:write", issuer=issuer)
    async with create_mcp_http_client(auth=provider) as http:
        async with Client(streamable_http_client(gw, http_client=http), mode=mode) as c:
            yield c


def unauthenticated(gw: str, issuer: str) -> None:
    status, challenge = raw_post(gw, {})
    origin = gw.rsplit("/mcp", 1)[0]
    expected = f'Bearer resource_metadata="{origin}/.well-known/oauth-protected-resource/mcp"'
    check("no token: 401 naming the protected resource metadata", status == 401 and challenge == expected,
          f"HTTP {status}, WWW-Authenticate {challenge!r}")
    status, challenge = raw_post(gw, {"Authorization": "Bearer not.a.token"})
    check("a bad token: 401 invalid_token", status == 401 and 'error="invalid_token"' in challenge,
          f"HTTP {status}, WWW-Authenticate {challenge!r}")
    with urllib.request.urlopen(f"{origin}/.well-known/oauth-protected-resource/mcp", timeout=5) as resp:
        doc = json.loads(resp.read())
    check("the metadata names the gateway and the authorization server",
          doc.get("resource") == gw and doc.get("authorization_servers") == [issuer]
          and doc.get("bearer_methods_supported") == ["header"], json.dumps(doc))


async def session(gw: str, issuer: str, client_id: str, secret: str, db: str, webhook: str,
                  signing: str, mode: str) -> None:
    storage = MemoryStorage()
    marker = f"hold-oauth-{mode}-{time.time_ns()}"
    try:
        async with oauth_client(gw, issuer, client_id, secret, storage, mode) as c:
            tools = sorted(t.name for t in (await c.list_tools()).tools)
            echo = text(await c.call_tool("echo", {"message": "hello"}))
            check(f"{mode}: discovered, got a token, listed tools and called one",
                  "echo" in tools and echo == "hello" and storage.tokens is not None,
                  f"tools {tools}, echo {echo!r}")
            claims = claims_of(storage.tokens.access_token)
            check(f"{mode}: the token is a JWT from the issuer for this gateway only",
                  claims.get("iss") == issuer and claims.get("aud") == gw and claims.get("sub") == client_id,
                  json.dumps(claims))
            first = asyncio.create_task(c.call_tool("echo", {"message": marker}))
            ticket = await pending_ticket(db, marker)
            if not ticket:
                first.cancel()
                check(f"{mode}: held call", False, "no pending ticket")
                return
            row = sql(db, "SELECT principal || '|' || coalesce(principal_issuer, '') || '|' || "
                          f"coalesce(principal_claims::text, '') FROM tickets WHERE id='{ticket}'")
            principal, ticket_issuer, shown = row.split("|", 2)
            check(f"{mode}: the ticket shows the principal, issuer and claim from the token",
                  principal == client_id and ticket_issuer == issuer and json.loads(shown or "null") == {"team": "payments"},
                  row)
            status = click(webhook, signing, db, ticket)
            got = text(await asyncio.wait_for(first, 20)) if status == 200 else f"click HTTP {status}"
            check(f"{mode}: the held call runs once approved", got == marker, repr(got))
    except Exception as e:  # an SDK or flow error is a failure to report, not a crash
        check(f"{mode}: OAuth session", False, repr(e))
        return
    await asyncio.sleep(0.5)  # the audit is written off the request path, in batches
    audit = sql(db, "SELECT principal || '|' || coalesce(principal_issuer, '') FROM audit_log "
                    f"WHERE arguments->>'message'='{marker}' ORDER BY id DESC LIMIT 1")
    check(f"{mode}: the audit row records the principal and its issuer",
          audit == f"{client_id}|{issuer}", repr(audit))


async def static_beside(gw: str, token: str) -> None:
    try:
        async with create_mcp_http_client(headers={"Authorization": f"Bearer {token}"}) as http:
            async with Client(streamable_http_client(gw, http_client=http), mode="auto") as c:
                echo = text(await c.call_tool("echo", {"message": "static"}))
                held = f"hold-static-{time.time_ns()}"
                # The hold rule needs the token's team claim: a static agent has none, so it passes.
                passed = text(await asyncio.wait_for(c.call_tool("echo", {"message": held}), 10))
        check("a static agent token works beside OAuth; claim rules do not apply to it",
              echo == "static" and passed == held, f"{echo!r} / {passed!r}")
    except Exception as e:
        check("a static agent token works beside OAuth", False, repr(e))


async def main() -> int:
    gw, issuer, client_id, secret, static, db, webhook, signing = sys.argv[1:9]
    unauthenticated(gw, issuer)
    for mode in ["auto", "legacy"]:
        await session(gw, issuer, client_id, secret, db, webhook, signing, mode)
    await static_beside(gw, static)
    print(f"{sum(results)} passed, {len(results) - sum(results)} failed")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
