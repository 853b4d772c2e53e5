"""An upstream built with the official Python SDK's `MCPServer` (`mcp` >= 2.3), which speaks
MCP 2026-07-28 and the older revisions. Usage: python3 modern_server.py PORT
"""

import sys

from mcp.server.mcpserver import MCPServer

srv = MCPServer("airlock-modern-upstream")
calls: list[str] = []


@srv.tool()
def echo(message: str) -> str:
    """Echoes the message back."""
    calls.append(message)
    return message


@srv.tool()
def delete_everything(confirm: bool) -> str:
    """Never meant to run through the gateway."""
    return "deleted"


if __name__ == "__main__":
    srv.run("streamable-http", host="127.0.0.1", port=int(sys.argv[1]))
