//! What a two-person approval adds to a message: the call's fingerprint, the approvals so far,
//! and every approver once decided.

use airlock_shared::Ticket;
use airlock_shared::canonical::short_fingerprint;
use serde_json::{Value, json};

use super::escape_within;

/// What the buttons carry: the ticket id and, when known, the short fingerprint shown beside
/// them, so that a click approves only the call the approver saw.
pub fn button_value(t: &Ticket) -> String {
    match t.fingerprint.as_deref() {
        Some(fp) => format!("{}:{}", t.id, short_fingerprint(fp)),
        None => t.id.to_string(),
    }
}

/// ` · Call `1a2b…` · Policy `rev`` for the context line; each part only where the ticket has it.
pub fn fingerprint_note(t: &Ticket) -> String {
    let call = t
        .fingerprint
        .as_deref()
        .map(|fp| format!(" · Call `{}`", short_fingerprint(fp)))
        .unwrap_or_default();
    // The policy revision that held it: after a live reload, which rules asked.
    let policy = t
        .policy_revision
        .as_deref()
        .map(|r| format!(" · Policy `{r}`"))
        .unwrap_or_default();
    call + &policy
}

/// "1 of 2 approvals: @alice" while a quorum of more than one is incomplete.
pub fn progress_text(t: &Ticket) -> Option<String> {
    if t.approvals_needed <= 1 {
        return None;
    }
    let so_far = t.approved_by_ids.len();
    let needed = t.approvals_needed;
    Some(match approvers(t) {
        Some(who) => format!("{so_far} of {needed} approvals: {who}"),
        None => format!("0 of {needed} approvals: {needed} different people must approve"),
    })
}

/// The progress as a block.
pub fn progress(t: &Ticket) -> Option<Value> {
    let text = progress_text(t)?;
    Some(json!({"type": "section", "text": {"type": "mrkdwn", "text": format!("*{text}*")}}))
}

/// Every approver so far, as mentions with names, joined with commas and "and".
pub fn approvers(t: &Ticket) -> Option<String> {
    let people: Vec<String> = t
        .approved_by_ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            person(
                Some(id.as_str()),
                t.approved_by_names.get(i).map(String::as_str),
            )
        })
        .collect::<Option<_>>()?;
    match people.as_slice() {
        [] => None,
        [one] => Some(one.clone()),
        [rest @ .., last] => Some(format!("{} and {last}", rest.join(", "))),
    }
}

/// `<@U…> (name)` when the id is a Slack user id, else the escaped name (or id).
pub fn person(id: Option<&str>, name: Option<&str>) -> Option<String> {
    let name = name.map(|n| escape_within(n, 200).0);
    let mention = id.filter(|id| {
        id.len() <= 32
            && id.starts_with(['U', 'W'])
            && id
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
    });
    match (mention, name) {
        (Some(id), Some(name)) => Some(format!("<@{id}> ({name})")),
        (Some(id), None) => Some(format!("<@{id}>")),
        (None, Some(name)) => Some(name),
        (None, None) => id.map(|i| escape_within(i, 200).0),
    }
}
