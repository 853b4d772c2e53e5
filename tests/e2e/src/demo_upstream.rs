//! A demo payments API as an MCP server (streamable HTTP, on the official SDK `rmcp`).
//!
//! Its three tools fit the demo policy: `list_charges` is a read, `create_refund` moves money
//! (approval above 100), `delete_customer` is destructive (denied). Every executed call is
//! recorded and served at `GET /calls`, so tests can prove a call ran exactly once, or never.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::Router;
use axum::routing::get;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock, ServerCapabilities, ServerConfig};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, ServerHandler, schemars, tool, tool_handler, tool_router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// The demo upstream's configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen_addr: SocketAddr,
    /// Host names (or host:port) accepted in the `Host` header; rmcp refuses others to stop DNS
    /// rebinding, and in compose the gateway calls us by service name.
    pub allowed_hosts: Vec<String>,
}

impl Config {
    /// Reads `LISTEN_ADDR` (default `0.0.0.0:9000`) and `ALLOWED_HOSTS` (comma-separated).
    pub fn from_env(
        mut env: airlock_shared::config::Env,
    ) -> Result<Self, airlock_shared::config::ConfigError> {
        let listen_addr = env.or("LISTEN_ADDR", SocketAddr::from(([0, 0, 0, 0], 9000)));
        let allowed_hosts = env
            .raw("ALLOWED_HOSTS")
            .unwrap_or("localhost,127.0.0.1,::1,demo-upstream")
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(str::to_owned)
            .collect();
        env.finish()?;
        Ok(Self {
            listen_addr,
            allowed_hosts,
        })
    }
}

/// One executed tool call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExecutedCall {
    pub tool: String,
    pub arguments: Value,
}

/// Executed calls, shared by every MCP session.
pub type CallLog = Arc<Mutex<Vec<ExecutedCall>>>;

/// The currencies the demo accepts.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Currency {
    Usd,
    Eur,
    Gbp,
}

/// Arguments of `list_charges`.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListChargesArgs {
    /// Only charges of this customer (e.g. `cus_123`).
    #[serde(default)]
    pub customer_id: Option<String>,
    /// At most this many charges (1 to 100, default 10).
    #[serde(default)]
    #[schemars(range(min = 1, max = 100))]
    pub limit: Option<u32>,
}

/// Arguments of `create_refund`.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRefundArgs {
    /// The charge to refund (e.g. `ch_1001`).
    pub charge_id: String,
    /// Amount in major units (e.g. 150.00); must be positive.
    #[schemars(range(min = 0.01))]
    pub amount: f64,
    /// ISO currency code, lowercase.
    pub currency: Currency,
    /// Why the refund is made; shown to the approver.
    #[serde(default)]
    pub reason: Option<String>,
}

/// Arguments of `delete_customer`.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteCustomerArgs {
    /// The customer to delete (e.g. `cus_123`).
    pub customer_id: String,
}

/// The demo MCP server.
#[derive(Clone)]
pub struct DemoPayments {
    calls: CallLog,
}

impl DemoPayments {
    /// A server that records executed calls in `calls`.
    pub fn new(calls: CallLog) -> Self {
        Self { calls }
    }

    fn record(&self, tool: &str, arguments: Value) {
        if let Ok(mut c) = self.calls.lock() {
            c.push(ExecutedCall {
                tool: tool.to_owned(),
                arguments,
            });
        }
    }
}

fn json_result(v: Value) -> CallToolResult {
    CallToolResult::success(vec![ContentBlock::text(v.to_string())])
}

fn invalid(msg: &str) -> ErrorData {
    ErrorData::invalid_params(msg.to_owned(), None)
}

#[tool_router]
impl DemoPayments {
    #[tool(
        description = "List recent charges, newest first.",
        annotations(read_only_hint = true)
    )]
    fn list_charges(
        &self,
        Parameters(args): Parameters<ListChargesArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let limit = args.limit.unwrap_or(10);
        if !(1..=100).contains(&limit) {
            return Err(invalid("limit must be between 1 and 100"));
        }
        let customer = args.customer_id.clone().unwrap_or_else(|| "cus_123".into());
        let charges: Vec<Value> = (0..limit.min(3))
            .map(|i| {
                json!({
                    "id": format!("ch_{}", 1001 + i),
                    "customer_id": customer,
                    "amount": 40.0 + f64::from(i) * 55.5,
                    "currency": "usd",
                    "status": "succeeded",
                })
            })
            .collect();
        self.record("list_charges", json!(args));
        Ok(json_result(json!({ "charges": charges })))
    }

    #[tool(
        description = "Refund (part of) a charge. Moves money back to the customer.",
        annotations(destructive_hint = false, idempotent_hint = false)
    )]
    fn create_refund(
        &self,
        Parameters(args): Parameters<CreateRefundArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        if !(args.amount.is_finite() && args.amount > 0.0) {
            return Err(invalid("amount must be a positive number"));
        }
        if !args.charge_id.starts_with("ch_") {
            return Err(invalid("charge_id must look like ch_…"));
        }
        let n = self.calls.lock().map(|c| c.len()).unwrap_or(0);
        let refund = json!({
            "id": format!("re_{:04}", n + 1),
            "charge_id": args.charge_id,
            "amount": args.amount,
            "currency": args.currency,
            "status": "succeeded",
        });
        self.record("create_refund", json!(args));
        Ok(json_result(json!({ "refund": refund })))
    }

    #[tool(
        description = "Delete a customer and all their data. Cannot be undone.",
        annotations(destructive_hint = true)
    )]
    fn delete_customer(
        &self,
        Parameters(args): Parameters<DeleteCustomerArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let id = args.customer_id.clone();
        self.record("delete_customer", json!(args));
        Ok(json_result(json!({ "deleted": true, "customer_id": id })))
    }
}

#[tool_handler]
impl ServerHandler for DemoPayments {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build()).with_instructions(
            "A demo payments API for Airlock: list charges, create refunds, delete customers.",
        )
    }
}

/// The HTTP app: MCP at `/mcp`, the executed-call log at `/calls`, and `/healthz`.
pub fn app(calls: CallLog, allowed_hosts: Vec<String>, stop: CancellationToken) -> Router {
    let config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(allowed_hosts)
        .with_cancellation_token(stop);
    let service: StreamableHttpService<DemoPayments, LocalSessionManager> = {
        let calls = calls.clone();
        StreamableHttpService::new(
            move || Ok(DemoPayments::new(calls.clone())),
            Default::default(),
            config,
        )
    };
    Router::new()
        .nest_service("/mcp", service)
        .route(
            "/calls",
            get(move || {
                let calls = calls.clone();
                async move {
                    let list = calls.lock().map(|c| c.clone()).unwrap_or_default();
                    Json(json!({ "calls": list }))
                }
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
}

/// Serves until SIGTERM or Ctrl-C.
pub async fn run(config: Config) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen_addr).await?;
    tracing::info!(addr = %config.listen_addr, "demo upstream MCP server listening at /mcp");
    let stop = CancellationToken::new();
    let router = app(CallLog::default(), config.allowed_hosts, stop.clone());
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            crate::shutdown_signal().await;
            stop.cancel();
        })
        .await
}
