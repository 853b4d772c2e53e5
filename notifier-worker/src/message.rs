//! What the approver sees: the approval request with its buttons, the closed message that
//! replaces it, and the private note to a refused clicker. Pure functions of the ticket row.

use airlock_shared::block_kit::{HEADER_TEXT as HEADER_MAX, SECTION_TEXT as SECTION_TEXT_MAX};
use airlock_shared::buttons::{APPROVE_ACTION_ID, DENY_ACTION_ID};
use airlock_shared::{Refusal, Ticket, TicketStatus};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

mod grant;
mod quorum;

pub use grant::{closed_with_grant, duration_label};

pub use quorum::progress_text;

/// How much of a short value (principal, tool, rule, session) we show.
const SHORT_VALUE_MAX: usize = 300;
/// How much of the reason we show.
const REASON_MAX: usize = 1500;
/// How much of the fallback text we send (it shows in notifications).
const FALLBACK_MAX: usize = 600;

/// A message body: the fallback text and the blocks.
#[derive(Clone, Debug, PartialEq)]
pub struct Rendered {
    /// Plain fallback for notifications and clients without Block Kit.
    pub text: String,
    /// Block Kit blocks.
    pub blocks: Value,
}

/// The approval request, with Approve and Deny buttons while the ticket is pending.
pub fn approval_request(t: &Ticket) -> Rendered {
    if !t.status.is_pending() {
        return closed(t);
    }
    let tool = escape_within(&t.tool, SHORT_VALUE_MAX).0;
    let principal = escape_within(&t.principal, SHORT_VALUE_MAX).0;
    let progress = quorum::progress_text(t)
        .map(|p| format!("; {p}"))
        .unwrap_or_default();
    let text = fallback(&format!(
        "Approval needed: {principal} wants to call {tool} (expires {}){progress}",
        fallback_time(t.expires_at)
    ));
    let mut blocks = vec![header(&format!("Approval needed: {}", t.tool)), details(t)];
    blocks.extend(reason(t));
    blocks.push(arguments(&t.arguments));
    blocks.extend(quorum::progress(t));
    blocks.push(json!({
        "type": "context",
        "elements": [{"type": "mrkdwn", "text": format!("Ticket `{}`{}", t.id, quorum::fingerprint_note(t))}],
    }));
    let id = quorum::button_value(t);
    blocks.push(json!({
        "type": "actions",
        "block_id": "airlock_decision",
        "elements": [
            {
                "type": "button",
                "action_id": APPROVE_ACTION_ID,
                "text": {"type": "plain_text", "text": "Approve", "emoji": true},
                "style": "primary",
                "value": id,
            },
            {
                "type": "button",
                "action_id": DENY_ACTION_ID,
                "text": {"type": "plain_text", "text": "Deny", "emoji": true},
                "style": "danger",
                "value": id,
                "confirm": {
                    "title": {"type": "plain_text", "text": "Deny this tool call?"},
                    "text": {"type": "mrkdwn", "text": format!(
                        "The agent's call to `{}` will be refused.",
                        escape_within(&t.tool, 200).0
                    )},
                    "confirm": {"type": "plain_text", "text": "Deny"},
                    "deny": {"type": "plain_text", "text": "Cancel"},
                    "style": "danger",
                },
            },
        ],
    }));
    grant::add_button(&mut blocks, t);
    Rendered {
        text,
        blocks: Value::Array(blocks),
    }
}

/// The message after the ticket left `pending`: the outcome, who and when, and no buttons.
pub fn closed(t: &Ticket) -> Rendered {
    let (icon, verb) = outcome(t.status);
    let tool = escape_within(&t.tool, SHORT_VALUE_MAX).0;
    let who = decider(t);
    let when = t
        .decided_at
        .map(|at| format!(" {}", slack_date(at)))
        .unwrap_or_default();
    let by = match (&who, t.status) {
        (Some(who), TicketStatus::Denied) if t.approvals_needed > 1 => {
            format!(" by {who} (one deny is enough)")
        }
        (Some(who), TicketStatus::Approved | TicketStatus::Denied | TicketStatus::Executed) => {
            format!(" by {who}")
        }
        _ => String::new(),
    };
    let text = fallback(&format!(
        "{verb}{}: {tool} for {}",
        by,
        escape_within(&t.principal, SHORT_VALUE_MAX).0
    ));
    let mut blocks = vec![header(&format!("{icon} {verb}: {}", t.tool)), details(t)];
    blocks.extend(reason(t));
    blocks.push(arguments(&t.arguments));
    blocks.push(json!({
        "type": "context",
        "elements": [{"type": "mrkdwn", "text": format!("*{verb}*{by}{when} · Ticket `{}`{}", t.id, quorum::fingerprint_note(t))}],
    }));
    Rendered {
        text,
        blocks: Value::Array(blocks),
    }
}

/// The private note to someone whose click did not count.
pub fn refusal(refusal: &Refusal, ticket: Option<&Ticket>) -> Rendered {
    let about = ticket
        .map(|t| {
            format!(
                " (`{}` for {})",
                escape_within(&t.tool, 200).0,
                escape_within(&t.principal, 200).0
            )
        })
        .unwrap_or_default();
    let why = match refusal {
        Refusal::NotAnApprover => {
            format!("You are not an approver for this request{about}, so your click did not count.")
        }
        Refusal::AlreadyClosed { status, decided_by } => {
            let by = decided_by
                .as_deref()
                .map(|d| format!(" by {}", escape_within(d, 200).0))
                .unwrap_or_default();
            match status {
                TicketStatus::Approved | TicketStatus::Executed => {
                    format!(
                        "This request{about} was already approved{by}; your click did not count."
                    )
                }
                TicketStatus::Denied => {
                    format!("This request{about} was already denied{by}; your click did not count.")
                }
                TicketStatus::Expired => {
                    format!("This request{about} expired before your click; nothing was changed.")
                }
                TicketStatus::Cancelled => format!(
                    "This request{about} was cancelled (the agent stopped waiting); nothing was changed."
                ),
                TicketStatus::Pending => {
                    format!(
                        "This request{about} is still open; your click was not recorded, try again."
                    )
                }
            }
        }
        Refusal::UnknownTicket => {
            "This approval request is not known to Airlock; your click did not count.".to_owned()
        }
        Refusal::SelfApproval => format!(
            "You own the agent that made this request{about}, so your approval does not count: someone else must approve it."
        ),
        Refusal::AlreadyVoted => {
            let progress = ticket
                .and_then(quorum::progress_text)
                .map(|p| format!(" ({p})"))
                .unwrap_or_default();
            format!(
                "Your approval of this request{about} is already counted{progress}; another person must approve it."
            )
        }
        Refusal::WrongCall => format!(
            "The call you clicked on is not the call this request{about} now holds, so your click did not count."
        ),
        Refusal::MembershipUnknown { group } => format!(
            "Airlock could not confirm your membership of {} just now; try again in a minute. Your click on this request{about} did not count.",
            group_mention(group)
        ),
        Refusal::NoGrant => format!(
            "This request{about} has no standing grant to give or revoke; nothing was changed."
        ),
    };
    Rendered {
        text: fallback(&why),
        blocks: json!([{"type": "section", "text": {"type": "mrkdwn", "text": why}}]),
    }
}

/// `<!subteam^S…>` for a user group id (Slack shows the group's handle), else the escaped text.
fn group_mention(group: &str) -> String {
    if airlock_shared::usergroup::looks_like_group(group) && group.len() <= 32 {
        format!("<!subteam^{group}>")
    } else {
        escape_within(group, 100).0
    }
}

fn outcome(status: TicketStatus) -> (&'static str, &'static str) {
    match status {
        TicketStatus::Pending => ("⏳", "Waiting"),
        TicketStatus::Approved => ("✅", "Approved"),
        TicketStatus::Executed => ("✅", "Approved and run"),
        TicketStatus::Denied => ("⛔", "Denied"),
        TicketStatus::Expired => ("⌛", "Expired"),
        TicketStatus::Cancelled => ("🚫", "Cancelled"),
    }
}

/// `<@U…> (name)` when the decider id is a Slack user id, else the escaped name.
fn decider(t: &Ticket) -> Option<String> {
    if matches!(t.status, TicketStatus::Approved | TicketStatus::Executed)
        && let Some(all) = quorum::approvers(t)
    {
        return Some(all);
    }
    quorum::person(t.decided_by_id.as_deref(), t.decided_by_name.as_deref())
}

fn header(text: &str) -> Value {
    let mut s: String = text.chars().take(HEADER_MAX).collect();
    if s.chars().count() < text.chars().count() {
        s = s.chars().take(HEADER_MAX - 1).collect();
        s.push('…');
    }
    json!({"type": "header", "text": {"type": "plain_text", "text": s, "emoji": true}})
}

fn details(t: &Ticket) -> Value {
    let field = |label: &str, value: String| json!({"type": "mrkdwn", "text": format!("*{label}:*\n{value}")});
    let code = |v: &str| {
        format!(
            "`{}`",
            neutralise_backticks(&escape_within(v, SHORT_VALUE_MAX).0)
        )
    };
    let mut fields = vec![
        field(
            "Requested by",
            escape_within(&t.principal, SHORT_VALUE_MAX).0,
        ),
        field("Tool", code(&t.tool)),
        field("Session", code(&t.session_id)),
        field("Rule", escape_within(&t.rule, SHORT_VALUE_MAX).0),
        field("Expires", slack_date(t.expires_at)),
    ];
    if let Some(issuer) = &t.principal_issuer {
        fields.push(field(
            "Token issuer",
            escape_within(issuer, SHORT_VALUE_MAX).0,
        ));
    }
    if let Some(claims) = t.principal_claims.as_ref().and_then(Value::as_object) {
        fields.extend(claims.iter().map(|(name, v)| {
            let shown = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
            field(&escape_within(name, 100).0, code(&shown))
        }));
    }
    // Block Kit allows at most 10 fields per section.
    fields.truncate(10);
    json!({ "type": "section", "fields": fields })
}

fn reason(t: &Ticket) -> Option<Value> {
    let reason = t.reason.as_deref().filter(|r| !r.trim().is_empty())?;
    let (text, cut) = escape_within(reason, REASON_MAX);
    let more = if cut { " …" } else { "" };
    Some(json!({
        "type": "section",
        "text": {"type": "mrkdwn", "text": format!("*Reason:* {text}{more}")},
    }))
}

/// The arguments as pretty JSON in a code block, cut to fit one section.
pub fn arguments(args: &Value) -> Value {
    json!({"type": "section", "text": {"type": "mrkdwn", "text": arguments_text(args)}})
}

/// The section text for the arguments; never over [`SECTION_TEXT_MAX`] (in UTF-16 units, which
/// is at least as strict as counting characters).
pub fn arguments_text(args: &Value) -> String {
    const HEAD: &str = "*Arguments:*\n```";
    const TAIL: &str = "```";
    let pretty = serde_json::to_string_pretty(args).unwrap_or_else(|_| args.to_string());
    let pretty = neutralise_backticks(&pretty);
    let room = SECTION_TEXT_MAX - utf16(HEAD) - utf16(TAIL);
    let (body, cut) = escape_within(&pretty, room);
    if !cut {
        return format!("{HEAD}{body}{TAIL}");
    }
    let total = pretty.chars().count();
    // The marker's digits are bounded by `total`'s, so reserve for the longest.
    let marker_room = utf16(&truncation_marker(total, total));
    let (body, _) = escape_within(&pretty, room - marker_room);
    let shown = unescaped_len(&body);
    format!("{HEAD}{body}{TAIL}{}", truncation_marker(shown, total))
}

fn truncation_marker(shown: usize, total: usize) -> String {
    format!("\n_… truncated: {shown} of {total} characters shown_")
}

/// Characters of the original that an escaped string stands for.
fn unescaped_len(escaped: &str) -> usize {
    escaped
        .replace("&amp;", "&")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .chars()
        .count()
}

/// Escapes `&`, `<` and `>` for mrkdwn (so no link, mention or `<!channel>` can be injected),
/// keeping whole characters and whole escapes within `max` UTF-16 units. Says whether it cut.
pub fn escape_within(raw: &str, max: usize) -> (String, bool) {
    let mut out = String::new();
    let mut used = 0;
    for c in raw.chars() {
        let piece: &str = match c {
            '&' => "&amp;",
            '<' => "&lt;",
            '>' => "&gt;",
            _ => "",
        };
        let cost = if piece.is_empty() {
            c.len_utf16()
        } else {
            piece.len()
        };
        if used + cost > max {
            return (out, true);
        }
        used += cost;
        if piece.is_empty() {
            out.push(c);
        } else {
            out.push_str(piece);
        }
    }
    (out, false)
}

/// Stops a backtick in the data from closing our code span or block: each one is followed by a
/// zero-width space.
fn neutralise_backticks(s: &str) -> String {
    s.replace('`', "`\u{200B}")
}

fn utf16(s: &str) -> usize {
    s.encode_utf16().count()
}

/// Slack's localised date: `<!date^UNIX^{date_short_pretty} {time}|fallback>`.
pub fn slack_date(at: DateTime<Utc>) -> String {
    format!(
        "<!date^{}^{{date_short_pretty}} {{time}}|{}>",
        at.timestamp(),
        fallback_time(at)
    )
}

fn fallback_time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M UTC").to_string()
}

fn fallback(s: &str) -> String {
    let (text, cut) = escape_within(s, FALLBACK_MAX);
    if cut { format!("{text}…") } else { text }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_keeps_whole_escapes_and_characters() {
        assert_eq!(
            escape_within("a<b>&c", 100),
            ("a&lt;b&gt;&amp;c".into(), false)
        );
        // Room for "a" and not for a whole "&lt;".
        assert_eq!(escape_within("a<b", 4), ("a".into(), true));
        // An emoji is two UTF-16 units and is never split.
        assert_eq!(escape_within("x😀y", 2), ("x".into(), true));
        assert_eq!(escape_within("x😀y", 3), ("x😀".into(), true));
    }

    #[test]
    fn oversized_arguments_are_cut_and_marked_within_the_limit() {
        for filler in ["a", "<", "é", "😀", "`"] {
            let args = json!({"blob": filler.repeat(10_000)});
            let text = arguments_text(&args);
            assert!(
                utf16(&text) <= SECTION_TEXT_MAX,
                "{filler}: {}",
                utf16(&text)
            );
            assert!(text.contains("truncated"), "{filler}");
            assert!(
                text.contains("```\n_"),
                "{filler}: code block closed before the marker"
            );
        }
        let small = arguments_text(&json!({"path": "/tmp/<x>"}));
        assert!(!small.contains("truncated"));
        assert!(small.contains("&lt;x&gt;"));
    }

    #[test]
    fn a_date_has_the_slack_format_and_a_fallback() {
        let at = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        assert_eq!(
            slack_date(at),
            "<!date^1700000000^{date_short_pretty} {time}|2023-11-14 22:13 UTC>"
        );
    }
}
