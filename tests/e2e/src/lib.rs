//! The whole Airlock system, locally: a demo upstream MCP server ([`demo_upstream`]) whose tools
//! fit the demo policy. The end-to-end tests in `tests/e2e.rs` run it, the Slack emulator
//! (`airlock-slack-fake`) and the real gateway, webhook and notifier as separate processes.

pub mod demo_upstream;

pub use airlock_slack_fake::shutdown_signal;
