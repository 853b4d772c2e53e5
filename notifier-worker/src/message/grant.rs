//! What a standing grant adds to a message: the "Approve for …" button while the ticket is
//! pending, and, once decided, how long the grant lasts with a Revoke button, or who revoked it.

use std::time::Duration;

use airlock_shared::Ticket;
use airlock_shared::buttons::{GRANT_ACTION_ID, REVOKE_ACTION_ID};
use airlock_shared::grant::{Grant, GrantOffer, GrantScope};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::{Rendered, closed, quorum};

/// "1 h", "30 min", "1 h 30 min", "45 s": the duration as the button says it.
pub fn duration_label(d: Duration) -> String {
    let secs = d.as_secs().max(1);
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let parts: Vec<String> = [(h, "h"), (m, "min"), (s, "s")]
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n} {unit}"))
        .collect();
    parts.join(" ")
}

/// The "Approve for …" button of a pending ticket whose rule offers a grant.
pub fn button(t: &Ticket) -> Option<Value> {
    let offer = GrantOffer::of(t)?;
    let what = match offer.scope {
        GrantScope::Tool => format!("any call to `{}`", super::escape_within(&t.tool, 200).0),
        GrantScope::Arguments => "this exact call".to_owned(),
    };
    Some(json!({
        "type": "button",
        "action_id": GRANT_ACTION_ID,
        "text": {"type": "plain_text", "text": format!("Approve for {}", duration_label(offer.lasts)), "emoji": true},
        "value": quorum::button_value(t),
        "confirm": {
            "title": {"type": "plain_text", "text": "Approve for a while?"},
            "text": {"type": "mrkdwn", "text": format!(
                "This call runs, and for {} {} by {} under this rule passes without asking.",
                duration_label(offer.lasts),
                what,
                super::escape_within(&t.principal, 200).0
            )},
            "confirm": {"type": "plain_text", "text": "Approve"},
            "deny": {"type": "plain_text", "text": "Cancel"},
        },
    }))
}

/// Adds the grant button to the actions block of an approval request, after Approve and Deny.
pub fn add_button(blocks: &mut [Value], t: &Ticket) {
    let Some(b) = button(t) else {
        return;
    };
    if let Some(Value::Array(elements)) = blocks.last_mut().and_then(|a| a.get_mut("elements")) {
        elements.push(b);
    }
}

/// The decided message of a ticket, with its grant's state at `now` when it made one.
pub fn closed_with_grant(t: &Ticket, g: Option<&Grant>, now: DateTime<Utc>) -> Rendered {
    let mut msg = closed(t);
    let Some(g) = g else {
        return msg;
    };
    let Value::Array(blocks) = &mut msg.blocks else {
        return msg;
    };
    let until = g.expires_at.format("%H:%M UTC");
    if g.revoked_at.is_some() {
        let who = quorum::person(g.revoked_by_id.as_deref(), g.revoked_by_name.as_deref())
            .unwrap_or_else(|| "an operator".to_owned());
        blocks.push(section(format!("*Grant revoked by {who}*")));
        msg.text.push_str(&format!(" · grant revoked by {who}"));
    } else if g.expires_at <= now {
        blocks.push(section(format!("Grant ended at {until}")));
    } else {
        let covers = match g.scope {
            GrantScope::Tool => "further calls of this tool",
            GrantScope::Arguments => "the same call again",
        };
        blocks.push(section(format!(
            "*Grant active until {until}*: {covers} by {} pass without asking.",
            super::escape_within(&g.principal, 200).0
        )));
        blocks.push(json!({
            "type": "actions",
            "block_id": "airlock_grant",
            "elements": [{
                "type": "button",
                "action_id": REVOKE_ACTION_ID,
                "text": {"type": "plain_text", "text": "Revoke", "emoji": true},
                "style": "danger",
                "value": quorum::button_value(t),
            }],
        }));
        msg.text.push_str(&format!(" · grant active until {until}"));
    }
    msg
}

fn section(text: String) -> Value {
    json!({"type": "section", "text": {"type": "mrkdwn", "text": text}})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(duration_label(Duration::from_secs(3600)), "1 h");
        assert_eq!(duration_label(Duration::from_secs(5400)), "1 h 30 min");
        assert_eq!(duration_label(Duration::from_secs(600)), "10 min");
        assert_eq!(duration_label(Duration::from_secs(2)), "2 s");
        assert_eq!(duration_label(Duration::ZERO), "1 s");
    }
}
