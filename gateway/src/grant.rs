//! Standing grants at the gateway: the lookup before a hold, and the `airlock-gateway grants`
//! command that lists and revokes them.

use std::process::ExitCode;

use airlock_shared::config::Env;
use airlock_shared::db::Db;
use airlock_shared::grant::{self, ActiveGrant, Grant, GrantLookup, Revoker};
use airlock_shared::job::{self, NotifyJob};
use airlock_shared::{Keys, TicketId};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::policy::Verdict;

/// The active grant that lets this call pass without a ticket, if its rule offers grants.
/// One indexed statement (see `grant::find_active`); rules without `grant:` cost nothing.
pub async fn covering(
    pool: &Db,
    principal: &str,
    tool: &str,
    verdict: &Verdict,
    request_hash: &str,
    now: DateTime<Utc>,
) -> Result<Option<ActiveGrant>, sqlx::Error> {
    let Some(offer) = &verdict.grant else {
        return Ok(None);
    };
    let lookup = GrantLookup {
        principal,
        tool,
        rule: &verdict.rule,
        rule_hash: &offer.rule_hash,
        request_hash,
    };
    grant::find_active(pool, &lookup, now).await
}

/// Why the `grants` command failed (each is one line on stderr).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(
        "usage: airlock-gateway grants list | airlock-gateway grants revoke <grant id|ticket id>"
    )]
    Usage,
    #[error("{0}")]
    Config(#[from] airlock_shared::config::ConfigError),
    #[error("{0:?} is not a grant or ticket id")]
    BadId(String),
    #[error("no unrevoked grant has id or ticket {0}")]
    NotFound(Uuid),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

impl CliError {
    fn exit_code(&self) -> ExitCode {
        match self {
            Self::Usage | Self::Config(_) | Self::BadId(_) => ExitCode::from(2),
            Self::NotFound(_) | Self::Db(_) => ExitCode::FAILURE,
        }
    }
}

/// `airlock-gateway grants …` with the arguments after `grants`; uses `DATABASE_URL` (and,
/// when set, `REDIS_URL` and `REDIS_KEY_PREFIX` to have the Slack message show a revoke).
pub async fn cli(args: &[String]) -> ExitCode {
    match run_cli(args).await {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("airlock-gateway grants: {e}");
            e.exit_code()
        }
    }
}

async fn run_cli(args: &[String]) -> Result<String, CliError> {
    let command: Vec<&str> = args.iter().map(String::as_str).collect();
    let (revoke, id) = match command.as_slice() {
        ["list"] => (false, None),
        ["revoke", id] => (
            true,
            Some(
                id.parse::<Uuid>()
                    .map_err(|_| CliError::BadId((*id).to_owned()))?,
            ),
        ),
        _ => return Err(CliError::Usage),
    };
    let mut env = Env::from_process();
    let url: Option<String> = env.required("DATABASE_URL");
    let redis_url: Option<String> = env.optional("REDIS_URL");
    let redis_mode = airlock_shared::RedisMode::from_env(&mut env);
    let prefix: String = env.or("REDIS_KEY_PREFIX", "airlock".to_owned());
    let pooler = env.or("DATABASE_POOLER", airlock_shared::db::Pooler::None);
    env.finish()?;
    let Some(url) = url else {
        return Err(CliError::Usage);
    };
    let pool =
        airlock_shared::db::connect(&url, pooler, 1, std::time::Duration::from_secs(10)).await?;
    let Some(id) = id.filter(|_| revoke) else {
        return Ok(table(&grant::list_active(&pool, Utc::now()).await?));
    };
    let operator = std::env::var("USER").unwrap_or_else(|_| "operator".to_owned());
    let by = Revoker {
        id: "cli",
        name: &operator,
        allowed_by_global: true,
        operator: true,
    };
    let g = grant::revoke(&pool, id, by)
        .await?
        .ok_or(CliError::NotFound(id))?;
    if let Some(redis_url) = redis_url {
        announce(&redis_url, &redis_mode, &Keys::new(prefix), g.ticket_id).await;
    }
    Ok(format!(
        "revoked grant {} (ticket {}, {} for {})\n",
        g.id, g.ticket_id, g.tool, g.principal
    ))
}

/// Asks the notifier to redraw the ticket's message; a failure only means Slack shows the
/// grant until the next update, so it is reported and not fatal.
async fn announce(
    redis_url: &str,
    mode: &airlock_shared::RedisMode,
    keys: &Keys,
    ticket: TicketId,
) {
    let job = NotifyJob::TicketClosed { ticket_id: ticket };
    let sent = async {
        let opts = airlock_shared::redis_conn::ConnOpts::default();
        let mut conn = airlock_shared::RedisConn::connect(redis_url, mode, opts).await?;
        job::enqueue(&mut conn, keys, &job).await
    };
    if let Err(e) = sent.await {
        eprintln!("airlock-gateway grants: revoked, but the Slack message was not updated: {e}");
    }
}

/// Active grants as a fixed-width table, one per line, with a header.
pub fn table(grants: &[Grant]) -> String {
    let mut out = format!(
        "{:<36}  {:<36}  {:<20}  {:<24}  {:<9}  {:<17}  {}\n",
        "GRANT", "TICKET", "PRINCIPAL", "TOOL", "SCOPE", "EXPIRES (UTC)", "BY"
    );
    for g in grants {
        out.push_str(&format!(
            "{:<36}  {:<36}  {:<20}  {:<24}  {:<9}  {:<17}  {}\n",
            g.id,
            g.ticket_id,
            g.principal,
            g.tool,
            g.scope,
            g.expires_at.format("%Y-%m-%d %H:%M"),
            g.created_by_name
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wrong_arguments_print_the_usage() {
        for args in [vec![], vec!["revoke"], vec!["list", "x"], vec!["drop"]] {
            let args: Vec<String> = args.into_iter().map(str::to_owned).collect();
            assert!(
                matches!(run_cli(&args).await, Err(CliError::Usage)),
                "{args:?}"
            );
        }
        let bad = run_cli(&["revoke".to_owned(), "nope".to_owned()]).await;
        assert!(matches!(bad, Err(CliError::BadId(_))));
    }
}
