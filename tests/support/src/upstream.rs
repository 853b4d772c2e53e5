//! A faithful fake upstream MCP server.
