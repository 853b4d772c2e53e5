//! Slack interaction payloads: the `payload` form field of `POST /slack/actions`.

use airlock_shared::buttons::{
    APPROVE_ACTION_ID, DENY_ACTION_ID, GRANT_ACTION_ID, REVOKE_ACTION_ID,
};
use airlock_shared::canonical::FINGERPRINT_SHOWN;
use airlock_shared::{Decision, TicketId};
use serde::Deserialize;

/// Why a verified body is not an interaction we can read (all answer 400).
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("the form has no payload field")]
    MissingPayload,
    #[error("payload is not valid JSON")]
    NotJson(#[source] serde_json::Error),
    #[error("block_actions payload lacks a required field")]
    BadShape(#[source] serde_json::Error),
    #[error("the clicker has no user id")]
    MissingUser,
    #[error("button value is not a ticket id")]
    BadTicketId(#[source] airlock_shared::ids::InvalidTicketId),
    #[error("button value carries a malformed call fingerprint")]
    BadFingerprint,
}

/// Which of our buttons was clicked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Button {
    /// Approve or Deny.
    Decide,
    /// "Approve for …": an approval that, deciding, makes a standing grant.
    ApproveFor,
    /// Revoke the grant the ticket made (`decision` is then `Deny`: it takes a permission away).
    Revoke,
}

/// A button click on one of our approval messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Click {
    /// Approve or deny, from the button's `action_id`.
    pub decision: Decision,
    /// Which button it was.
    pub button: Button,
    /// The ticket, from the button's `value` (`<ticket id>` or `<ticket id>:<fingerprint>`).
    pub ticket_id: TicketId,
    /// The short call fingerprint the message showed, when the button carries one.
    pub fingerprint: Option<String>,
    /// The clicker's Slack user id (`user.id`).
    pub user_id: String,
    /// The clicker's handle (`user.username`, else `user.name`, else the id).
    pub user_name: String,
    /// The workspace (`team.id`).
    pub team_id: Option<String>,
    /// The Slack app the click was for (`api_app_id`).
    pub api_app_id: Option<String>,
    /// Where the message is (`channel.id`, else `container.channel_id`).
    pub channel: Option<String>,
    /// The message's ts (`container.message_ts`, else `message.ts`).
    pub message_ts: Option<String>,
}

/// What a verified interaction asks of us.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Interaction {
    /// An Approve or Deny click.
    Click(Click),
    /// Something we do not act on (another interaction type, or an action that is not ours).
    Ignored { kind: String },
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct BlockActions {
    user: User,
    #[serde(default)]
    actions: Vec<Action>,
    team: Option<Team>,
    api_app_id: Option<String>,
    channel: Option<Channel>,
    container: Option<Container>,
    message: Option<Message>,
}

#[derive(Deserialize)]
struct User {
    id: String,
    username: Option<String>,
    name: Option<String>,
}

#[derive(Deserialize)]
struct Team {
    id: String,
}

#[derive(Deserialize)]
struct Channel {
    id: String,
}

#[derive(Deserialize)]
struct Container {
    channel_id: Option<String>,
    message_ts: Option<String>,
}

#[derive(Deserialize)]
struct Message {
    ts: Option<String>,
}

#[derive(Deserialize)]
struct Action {
    action_id: String,
    value: Option<String>,
}

/// Reads the `payload` field of a verified, form-encoded body.
pub fn parse(body: &[u8]) -> Result<Interaction, PayloadError> {
    // form_urlencoded decodes each value exactly once: `%25` becomes `%`, `%2B` becomes `+`,
    // and a literal `+` becomes a space, as the form encoding says. Nothing decodes it again.
    let payload = form_urlencoded::parse(body)
        .find(|(k, _)| k == "payload")
        .map(|(_, v)| v)
        .ok_or(PayloadError::MissingPayload)?;
    let envelope: Envelope = serde_json::from_str(&payload).map_err(PayloadError::NotJson)?;
    if envelope.kind != "block_actions" {
        return Ok(Interaction::Ignored {
            kind: envelope.kind,
        });
    }
    let p: BlockActions = serde_json::from_str(&payload).map_err(PayloadError::BadShape)?;
    if p.user.id.trim().is_empty() {
        return Err(PayloadError::MissingUser);
    }
    // A button click carries exactly one action; ours is the first.
    let Some(action) = p.actions.into_iter().next() else {
        return Ok(Interaction::Ignored {
            kind: "block_actions without actions".into(),
        });
    };
    let (decision, button) = match action.action_id.as_str() {
        APPROVE_ACTION_ID => (Decision::Approve, Button::Decide),
        DENY_ACTION_ID => (Decision::Deny, Button::Decide),
        GRANT_ACTION_ID => (Decision::Approve, Button::ApproveFor),
        REVOKE_ACTION_ID => (Decision::Deny, Button::Revoke),
        other => {
            return Ok(Interaction::Ignored {
                kind: format!("action {}", truncate(other, 64)),
            });
        }
    };
    let value = action.value.unwrap_or_default();
    let (ticket, fingerprint) = match value.split_once(':') {
        Some((t, fp)) => (t, Some(fp)),
        None => (value.as_str(), None),
    };
    let ticket_id = ticket
        .parse::<TicketId>()
        .map_err(PayloadError::BadTicketId)?;
    if fingerprint.is_some_and(|fp| {
        fp.len() != FINGERPRINT_SHOWN
            || !fp
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    }) {
        return Err(PayloadError::BadFingerprint);
    }
    let user_name = [p.user.username, p.user.name]
        .into_iter()
        .flatten()
        .find(|n| !n.is_empty())
        .unwrap_or_else(|| p.user.id.clone());
    let (container_channel, container_ts) = p
        .container
        .map(|c| (c.channel_id, c.message_ts))
        .unwrap_or_default();
    Ok(Interaction::Click(Click {
        decision,
        button,
        ticket_id,
        fingerprint: fingerprint.map(str::to_owned),
        user_id: p.user.id,
        user_name,
        team_id: p.team.map(|t| t.id),
        api_app_id: p.api_app_id,
        channel: p.channel.map(|c| c.id).or(container_channel),
        message_ts: container_ts.or(p.message.and_then(|m| m.ts)),
    }))
}

fn truncate(s: &str, max_chars: usize) -> String {
    s.chars().take(max_chars).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn form(payload: &serde_json::Value) -> Vec<u8> {
        form_urlencoded::Serializer::new(String::new())
            .append_pair("payload", &payload.to_string())
            .finish()
            .into_bytes()
    }

    fn click_payload(action_id: &str, value: &str) -> serde_json::Value {
        json!({
            "type": "block_actions",
            "team": {"id": "T1", "domain": "acme"},
            "api_app_id": "A1",
            "user": {"id": "U1", "username": "ana+bob%41", "name": "ana", "team_id": "T1"},
            "container": {"type": "message", "message_ts": "1700000000.000100", "channel_id": "C1", "is_ephemeral": false},
            "channel": {"id": "C1", "name": "approvals"},
            "message": {"ts": "1700000000.000100", "text": "100% + 50%zz done ✓"},
            "actions": [{"action_id": action_id, "block_id": "b", "value": value, "type": "button", "action_ts": "1"}]
        })
    }

    #[test]
    fn reads_a_click_and_keeps_percent_and_plus() {
        let id = TicketId::new();
        let body = form(&click_payload(APPROVE_ACTION_ID, &id.to_string()));
        // The encoder wrote `%` as %25 and `+` as %2B; one decode must restore them.
        assert!(std::str::from_utf8(&body).unwrap().contains("%2541"));
        let Interaction::Click(c) = parse(&body).unwrap() else {
            panic!("not a click")
        };
        assert_eq!(c.decision, Decision::Approve);
        assert_eq!(c.ticket_id, id);
        assert_eq!(c.user_id, "U1");
        assert_eq!(c.user_name, "ana+bob%41");
        assert_eq!(c.channel.as_deref(), Some("C1"));
        assert_eq!(c.message_ts.as_deref(), Some("1700000000.000100"));
        assert_eq!(c.team_id.as_deref(), Some("T1"));
    }

    #[test]
    fn a_button_may_carry_the_call_fingerprint() {
        let id = TicketId::new();
        let body = form(&click_payload(
            APPROVE_ACTION_ID,
            &format!("{id}:0123456789abcdef"),
        ));
        let Interaction::Click(c) = parse(&body).unwrap() else {
            panic!("not a click")
        };
        assert_eq!(c.ticket_id, id);
        assert_eq!(c.fingerprint.as_deref(), Some("0123456789abcdef"));
        for bad in ["", "0123", "0123456789ABCDEF", "0123456789abcdeg"] {
            let body = form(&click_payload(APPROVE_ACTION_ID, &format!("{id}:{bad}")));
            assert!(
                matches!(parse(&body), Err(PayloadError::BadFingerprint)),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_grant_buttons_are_read() {
        let id = TicketId::new();
        for (action, button, decision) in [
            (GRANT_ACTION_ID, Button::ApproveFor, Decision::Approve),
            (REVOKE_ACTION_ID, Button::Revoke, Decision::Deny),
            (APPROVE_ACTION_ID, Button::Decide, Decision::Approve),
        ] {
            let body = form(&click_payload(action, &format!("{id}:0123456789abcdef")));
            let Interaction::Click(c) = parse(&body).unwrap() else {
                panic!("not a click")
            };
            assert_eq!((c.button, c.decision, c.ticket_id), (button, decision, id));
        }
    }

    #[test]
    fn deny_is_read() {
        let id = TicketId::new();
        let Interaction::Click(c) =
            parse(&form(&click_payload(DENY_ACTION_ID, &id.to_string()))).unwrap()
        else {
            panic!("not a click")
        };
        assert_eq!(c.decision, Decision::Deny);
    }

    #[test]
    fn others_are_ignored_or_rejected() {
        let id = TicketId::new().to_string();
        assert!(matches!(
            parse(&form(
                &json!({"type": "view_submission", "user": {"id": "U1"}})
            )),
            Ok(Interaction::Ignored { .. })
        ));
        assert!(matches!(
            parse(&form(&click_payload("something_else", &id))),
            Ok(Interaction::Ignored { .. })
        ));
        assert!(matches!(
            parse(&form(&click_payload(APPROVE_ACTION_ID, "not-a-ticket"))),
            Err(PayloadError::BadTicketId(_))
        ));
        assert!(matches!(
            parse(b"token=x"),
            Err(PayloadError::MissingPayload)
        ));
        assert!(matches!(
            parse(b"payload=%7Bnope"),
            Err(PayloadError::NotJson(_))
        ));
        assert!(matches!(
            parse(&form(&json!({"type": "block_actions"}))),
            Err(PayloadError::BadShape(_))
        ));
        let mut no_user = click_payload(APPROVE_ACTION_ID, &id);
        no_user["user"]["id"] = json!("");
        assert!(matches!(
            parse(&form(&no_user)),
            Err(PayloadError::MissingUser)
        ));
    }
}
