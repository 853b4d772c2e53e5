//! A demo payments API as an MCP server (streamable HTTP, on the official SDK `rmcp`).
//!
//! Its three tools fit the demo policy: `list_charges` is a read, `create_refund` moves money
//! (approval above 100), `delete_customer` is destructive (denied). Every executed call is
//! recorded and served at `GET /calls`, so tests can prove a call ran exactly once, or never.
//! Refunds are checked against the demo charges ([`CHARGES`]) and what was already refunded.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::Router;
use axum::extract::Request;
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Currency {
    Usd,
    Eur,
    Gbp,
}

/// One demo charge.
#[derive(Clone, Copy, Debug)]
pub struct Charge {
    pub id: &'static str,
    pub customer_id: &'static str,
    /// In minor units (cents).
    pub amount_cents: i64,
    pub currency: Currency,
}

/// The demo's charges, newest first. `ch_1001` is big enough for the README's 250 USD refund.
pub const CHARGES: [Charge; 3] = [
    Charge {
        id: "ch_1001",
        customer_id: "cus_123",
        amount_cents: 48_000,
        currency: Currency::Usd,
    },
    Charge {
        id: "ch_1002",
        customer_id: "cus_123",
        amount_cents: 9_550,
        currency: Currency::Usd,
    },
    Charge {
        id: "ch_1003",
        customer_id: "cus_456",
        amount_cents: 120_000,
        currency: Currency::Eur,
    },
];

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

/// A refusal the agent can read and act on (`isError: true`), not a protocol error.
fn tool_error(msg: String) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(msg)])
}

fn major(cents: i64) -> f64 {
    // Demo amounts stay far below 2^53 cents, so the conversion is exact.
    cents as f64 / 100.0
}

fn code(currency: Currency) -> &'static str {
    match currency {
        Currency::Usd => "USD",
        Currency::Eur => "EUR",
        Currency::Gbp => "GBP",
    }
}

fn money(cents: i64, currency: Currency) -> String {
    format!("{}.{:02} {}", cents / 100, cents % 100, code(currency))
}

/// Cents already refunded on `charge_id`, from the executed calls.
fn refunded_cents(calls: &[ExecutedCall], charge_id: &str) -> i64 {
    calls
        .iter()
        .filter(|c| c.tool == "create_refund" && c.arguments["charge_id"] == charge_id)
        .filter_map(|c| c.arguments["amount"].as_f64())
        .map(to_cents)
        .sum()
}

#[allow(clippy::cast_possible_truncation)]
fn to_cents(amount: f64) -> i64 {
    (amount * 100.0).round() as i64
}

/// Why a refund is refused, or `None` when the charge covers it.
fn refund_refusal(calls: &[ExecutedCall], args: &CreateRefundArgs) -> Option<String> {
    let Some(charge) = CHARGES.iter().find(|c| c.id == args.charge_id) else {
        return Some(format!(
            "no charge {}; list_charges shows the charges that can be refunded",
            args.charge_id
        ));
    };
    if charge.currency != args.currency {
        return Some(format!(
            "charge {} is in {}; refund it in that currency",
            charge.id,
            code(charge.currency)
        ));
    }
    let refunded = refunded_cents(calls, charge.id);
    let left = charge.amount_cents - refunded;
    let asked = to_cents(args.amount);
    (asked > left).then(|| {
        format!(
            "refund of {} refused: charge {} was {} and {} of it is left to refund",
            money(asked, charge.currency),
            charge.id,
            money(charge.amount_cents, charge.currency),
            money(left, charge.currency),
        )
    })
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
        let calls = self.calls.lock().map(|c| c.clone()).unwrap_or_default();
        let charges: Vec<Value> = CHARGES
            .iter()
            .filter(|c| {
                args.customer_id
                    .as_deref()
                    .is_none_or(|id| id == c.customer_id)
            })
            .take(limit as usize)
            .map(|c| {
                json!({
                    "id": c.id,
                    "customer_id": c.customer_id,
                    "amount": major(c.amount_cents),
                    "amount_refunded": major(refunded_cents(&calls, c.id)),
                    "currency": c.currency,
                    "status": "succeeded",
                })
            })
            .collect();
        self.record("list_charges", json!(args));
        Ok(json_result(json!({ "charges": charges })))
    }

    #[tool(
        description = "Refund (part of) a charge, at most what is left of it to refund. Moves money back to the customer.",
        annotations(destructive_hint = false, idempotent_hint = false)
    )]
    fn create_refund(
        &self,
        Parameters(args): Parameters<CreateRefundArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        if !(args.amount.is_finite() && args.amount > 0.0) {
            return Err(invalid("amount must be a positive number"));
        }
        let scaled = args.amount * 100.0;
        if (scaled - scaled.round()).abs() > 1e-6 {
            return Err(invalid("amount has at most two decimals"));
        }
        // One lock for the check and the record, so two refunds cannot both take the last cents.
        let mut calls = self
            .calls
            .lock()
            .map_err(|_| ErrorData::internal_error("call log poisoned", None))?;
        if let Some(why) = refund_refusal(&calls, &args) {
            return Ok(tool_error(why));
        }
        let refund = json!({
            "id": format!("re_{:04}", calls.len() + 1),
            "charge_id": args.charge_id,
            "amount": args.amount,
            "currency": args.currency,
            "status": "succeeded",
        });
        calls.push(ExecutedCall {
            tool: "create_refund".to_owned(),
            arguments: json!(args),
        });
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
        .layer(axum::middleware::from_fn(session_end_status))
}

/// rmcp answers a session's `DELETE /mcp` with 202, which the official Python SDK reports as
/// "Session termination failed" (it expects 200, 204 or 405): answer 204 instead.
async fn session_end_status(request: Request, next: Next) -> Response {
    let delete = request.method() == Method::DELETE;
    let mut response = next.run(request).await;
    if delete && response.status() == StatusCode::ACCEPTED {
        *response.status_mut() = StatusCode::NO_CONTENT;
    }
    response
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
