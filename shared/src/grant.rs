//! Standing grants ("Approve for 1 h"): every query on the `grants` table, and the vote that
//! creates one in the same transaction as the decision it comes from.
//!
//! A grant belongs to the ticket whose approval made it. It lets later calls of the same
//! principal, tool and rule (and, for scope `arguments`, the same canonical request) pass without
//! a ticket until `expires_at`, unless it is revoked or its rule changed (the rule hash differs).

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::ids::TicketId;
use crate::ticket::{ClickDecision, Decided, Ticket, TicketStatus, decision};

pub use crate::ticket::{GrantOffer, GrantScope, UnknownScope};

/// One row of `grants`.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct Grant {
    pub id: Uuid,
    #[sqlx(try_from = "Uuid")]
    pub ticket_id: TicketId,
    pub principal: String,
    pub tool: String,
    #[sqlx(try_from = "String")]
    pub scope: GrantScope,
    pub request_hash: Option<String>,
    pub rule: String,
    pub rule_hash: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub created_by_id: String,
    pub created_by_name: String,
    pub revoked_at: Option<DateTime<Utc>>,
    pub revoked_by_id: Option<String>,
    pub revoked_by_name: Option<String>,
}

impl Grant {
    /// Whether the grant lets calls pass at `now` (its rule hash is checked by the lookup).
    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && self.expires_at > now
    }
}

/// What the gateway looks for before it holds a call.
#[derive(Clone, Copy, Debug)]
pub struct GrantLookup<'a> {
    pub principal: &'a str,
    pub tool: &'a str,
    pub rule: &'a str,
    /// The hash of the rule as the gateway has it now.
    pub rule_hash: &'a str,
    /// The call's canonical request hash (matched only by `arguments` grants).
    pub request_hash: &'a str,
}

/// The grant that lets a call pass: its id, its ticket, and when it ends.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct ActiveGrant {
    pub id: Uuid,
    #[sqlx(try_from = "Uuid")]
    pub ticket_id: TicketId,
    pub expires_at: DateTime<Utc>,
}

/// The active grant covering a call at `now`, if any. One statement on the partial index
/// `grants_active` (principal, tool, rule_hash, expires_at); the other conditions filter the
/// few rows it finds.
pub async fn find_active<'e>(
    db: impl PgExecutor<'e>,
    call: &GrantLookup<'_>,
    now: DateTime<Utc>,
) -> Result<Option<ActiveGrant>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, ticket_id, expires_at FROM grants \
         WHERE principal = $1 AND tool = $2 AND rule_hash = $3 AND expires_at > $4 \
           AND revoked_at IS NULL AND rule = $5 \
           AND (scope = 'tool' OR request_hash = $6) \
         ORDER BY expires_at DESC LIMIT 1",
    )
    .bind(call.principal)
    .bind(call.tool)
    .bind(call.rule_hash)
    .bind(now)
    .bind(call.rule)
    .bind(call.request_hash)
    .fetch_optional(db)
    .await
}

/// The grant a ticket created, if any (revoked or not).
pub async fn for_ticket<'e>(
    db: impl PgExecutor<'e>,
    ticket: TicketId,
) -> Result<Option<Grant>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM grants WHERE ticket_id = $1")
        .bind(ticket.0)
        .fetch_optional(db)
        .await
}

/// One grant by its own id or by the id of its ticket.
pub async fn by_grant_or_ticket<'e>(
    db: impl PgExecutor<'e>,
    id: Uuid,
) -> Result<Option<Grant>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM grants WHERE id = $1 OR ticket_id = $1")
        .bind(id)
        .fetch_optional(db)
        .await
}

/// Every grant active at `now`, soonest to end first.
pub async fn list_active<'e>(
    db: impl PgExecutor<'e>,
    now: DateTime<Utc>,
) -> Result<Vec<Grant>, sqlx::Error> {
    sqlx::query_as(
        "SELECT * FROM grants WHERE revoked_at IS NULL AND expires_at > $1 \
         ORDER BY expires_at, id",
    )
    .bind(now)
    .fetch_all(db)
    .await
}

/// The outcome of an "Approve for" click.
#[derive(Clone, Debug)]
pub enum GrantVote {
    /// The vote was counted or refused as a plain approval would be; `Some` grant when this
    /// vote decided the ticket and created it.
    Voted(Decided, Option<Box<Grant>>),
    /// The ticket offers no grant (a forged or stale button); nothing was changed.
    NotOffered(Ticket),
}

/// Counts an "Approve for" click as an approval vote (same checks as [`decision::decide_as`])
/// and, when that vote decides the ticket approved, creates its grant in the same transaction,
/// so a decision never commits without its grant nor a grant without its decision. The vote
/// statement lets one click alone decide a ticket, and `grants.ticket_id` is unique: double
/// clicks and simultaneous approvers make at most one grant.
pub async fn vote_with_grant(
    pool: &crate::db::Db,
    click: &ClickDecision,
    global_approvers: &[String],
) -> Result<GrantVote, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let changed = decision::vote(&mut *tx, std::slice::from_ref(click), true)
        .await?
        .into_iter()
        .next()
        .flatten();
    let mut grant = None;
    if let Some(t) = &changed {
        let Some(offer) = GrantOffer::of(t) else {
            // Rolled back on drop: a plain Approve button exists for a ticket without an offer.
            return Ok(GrantVote::NotOffered(t.clone()));
        };
        if t.status == TicketStatus::Approved {
            grant = create(&mut *tx, t, &offer).await?.map(Box::new);
        }
    }
    tx.commit().await?;
    let decided = decision::explain(pool, click, changed, Some(global_approvers)).await?;
    Ok(GrantVote::Voted(decided, grant))
}

/// Inserts the grant of a ticket just approved; `None` if it already has one.
async fn create<'e>(
    db: impl PgExecutor<'e>,
    t: &Ticket,
    offer: &GrantOffer,
) -> Result<Option<Grant>, sqlx::Error> {
    let request_hash = match offer.scope {
        GrantScope::Arguments => Some(t.request_hash.as_str()),
        GrantScope::Tool => None,
    };
    sqlx::query_as(
        "INSERT INTO grants (id, ticket_id, principal, tool, scope, request_hash, rule, rule_hash, \
             expires_at, created_by_id, created_by_name) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9 + make_interval(secs => $10), $11, $12) \
         ON CONFLICT (ticket_id) DO NOTHING RETURNING *",
    )
    .bind(Uuid::new_v4())
    .bind(t.id.0)
    .bind(&t.principal)
    .bind(&t.tool)
    .bind(offer.scope.as_str())
    .bind(request_hash)
    .bind(&t.rule)
    .bind(&offer.rule_hash)
    .bind(t.decided_at.unwrap_or_else(Utc::now))
    .bind(offer.lasts.as_secs_f64())
    .bind(t.decided_by_id.as_deref().unwrap_or_default())
    .bind(t.decided_by_name.as_deref().unwrap_or_default())
    .fetch_optional(db)
    .await
}

/// Who asks for a revoke.
#[derive(Clone, Copy, Debug)]
pub struct Revoker<'a> {
    /// Slack user id (or `cli`).
    pub id: &'a str,
    pub name: &'a str,
    /// Whether the global approver list lets them decide tickets that name no approvers.
    pub allowed_by_global: bool,
    /// An operator at the command line, who may revoke any grant.
    pub operator: bool,
}

/// Revokes the unrevoked grant of ticket (or grant) `id` if `by` may decide that ticket (its
/// approvers, else the global list) or is an operator; the check and the write are one
/// statement. `None` when nothing was revoked.
pub async fn revoke<'e>(
    db: impl PgExecutor<'e>,
    id: Uuid,
    by: Revoker<'_>,
) -> Result<Option<Grant>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE grants g SET revoked_at = now(), revoked_by_id = $2, revoked_by_name = $3 \
         FROM tickets t \
         WHERE (g.id = $1 OR g.ticket_id = $1) AND t.id = g.ticket_id AND g.revoked_at IS NULL \
           AND ($5 OR CASE WHEN cardinality(t.approvers) = 0 THEN $4 ELSE $2 = ANY(t.approvers) END) \
         RETURNING g.*",
    )
    .bind(id)
    .bind(by.id)
    .bind(by.name)
    .bind(by.allowed_by_global)
    .bind(by.operator)
    .fetch_optional(db)
    .await
}

/// Moves a grant's end to `at` (for operators and tests: ending a grant early without a
/// revoke, or checking expiry without waiting).
pub async fn set_expiry<'e>(
    db: impl PgExecutor<'e>,
    grant: Uuid,
    at: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("UPDATE grants SET expires_at = $2 WHERE id = $1")
        .bind(grant)
        .bind(at)
        .execute(db)
        .await?;
    Ok(done.rows_affected() == 1)
}
