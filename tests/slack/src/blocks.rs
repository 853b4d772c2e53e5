//! Block Kit limits, checked the way Slack checks them: every problem is reported with a JSON
//! pointer, and any problem makes the whole call fail with `invalid_blocks`.

use std::collections::HashSet;

use serde_json::Value;

use airlock_shared::block_kit as limits;

/// At most this many blocks in a message.
pub const MAX_BLOCKS: usize = limits::MAX_BLOCKS;
/// Slack refuses message `text` longer than this with `msg_too_long`.
pub const MAX_TEXT: usize = limits::MESSAGE_TEXT;

const BLOCK_TYPES: &[&str] = &[
    "actions",
    "context",
    "divider",
    "file",
    "header",
    "image",
    "input",
    "markdown",
    "rich_text",
    "section",
    "video",
];

struct Check {
    errors: Vec<String>,
}

impl Check {
    fn err(&mut self, msg: impl AsRef<str>, pointer: &str) {
        self.errors
            .push(format!("{} [json-pointer:{pointer}]", msg.as_ref()));
    }

    fn max_len(&mut self, s: &str, max: usize, pointer: &str) {
        if s.chars().count() > max {
            self.err(format!("must be less than {} characters", max + 1), pointer);
        }
    }

    fn optional_str(&mut self, v: &Value, field: &str, max: usize, pointer: &str) {
        match v.get(field) {
            None => {}
            Some(Value::String(s)) => self.max_len(s, max, &format!("{pointer}/{field}")),
            Some(_) => self.err("must be a string", &format!("{pointer}/{field}")),
        }
    }

    /// A text object: `{type: plain_text|mrkdwn, text}`.
    fn text(&mut self, v: Option<&Value>, max: usize, plain_only: bool, pointer: &str) {
        let Some(v) = v else {
            self.err("must provide an object", pointer);
            return;
        };
        let kind = v.get("type").and_then(Value::as_str);
        match kind {
            Some("plain_text") => {}
            Some("mrkdwn") if !plain_only => {}
            Some("mrkdwn") => self.err(
                "must be a valid enum value: plain_text",
                &format!("{pointer}/type"),
            ),
            _ => self.err(
                "must be a valid enum value: plain_text, mrkdwn",
                &format!("{pointer}/type"),
            ),
        }
        match v.get("text") {
            Some(Value::String(s)) if s.is_empty() => {
                self.err("must be more than 0 characters", &format!("{pointer}/text"));
            }
            Some(Value::String(s)) => self.max_len(s, max, &format!("{pointer}/text")),
            _ => self.err("must provide a string", &format!("{pointer}/text")),
        }
        if kind == Some("mrkdwn") && v.get("emoji").is_some() {
            self.err(
                "field only supported for plain_text",
                &format!("{pointer}/emoji"),
            );
        }
    }

    fn confirm(&mut self, v: &Value, pointer: &str) {
        self.text(
            v.get("title"),
            limits::CONFIRM_TITLE,
            true,
            &format!("{pointer}/title"),
        );
        self.text(
            v.get("text"),
            limits::CONFIRM_TEXT,
            false,
            &format!("{pointer}/text"),
        );
        self.text(
            v.get("confirm"),
            limits::CONFIRM_BUTTON,
            true,
            &format!("{pointer}/confirm"),
        );
        self.text(
            v.get("deny"),
            limits::CONFIRM_BUTTON,
            true,
            &format!("{pointer}/deny"),
        );
        if let Some(style) = v.get("style")
            && !matches!(style.as_str(), Some("primary" | "danger"))
        {
            self.err(
                "must be a valid enum value: primary, danger",
                &format!("{pointer}/style"),
            );
        }
    }

    /// An interactive element (only buttons are fully checked; the notifier sends nothing else).
    fn element(&mut self, v: &Value, action_ids: &mut HashSet<String>, pointer: &str) {
        let kind = v.get("type").and_then(Value::as_str).unwrap_or_default();
        if kind.is_empty() {
            self.err("must provide a string", &format!("{pointer}/type"));
            return;
        }
        match v.get("action_id") {
            Some(Value::String(id)) => {
                self.max_len(id, limits::ID, &format!("{pointer}/action_id"));
                if !action_ids.insert(id.clone()) {
                    self.err(
                        format!("action_id {id:?} is already used in this block"),
                        &format!("{pointer}/action_id"),
                    );
                }
            }
            Some(_) => self.err("must be a string", &format!("{pointer}/action_id")),
            None => {}
        }
        if kind == "button" {
            self.text(
                v.get("text"),
                limits::BUTTON_TEXT,
                true,
                &format!("{pointer}/text"),
            );
            self.optional_str(v, "value", limits::BUTTON_VALUE, pointer);
            self.optional_str(v, "url", limits::BUTTON_URL, pointer);
            if let Some(style) = v.get("style")
                && !matches!(style.as_str(), Some("primary" | "danger"))
            {
                self.err(
                    "must be a valid enum value: primary, danger",
                    &format!("{pointer}/style"),
                );
            }
            if let Some(c) = v.get("confirm") {
                self.confirm(c, &format!("{pointer}/confirm"));
            }
        }
    }

    fn block(&mut self, b: &Value, block_ids: &mut HashSet<String>, pointer: &str) {
        if !b.is_object() {
            self.err("must provide an object", pointer);
            return;
        }
        let kind = b.get("type").and_then(Value::as_str).unwrap_or_default();
        if !BLOCK_TYPES.contains(&kind) {
            self.err(
                format!("unsupported type: {kind}"),
                &format!("{pointer}/type"),
            );
            return;
        }
        match b.get("block_id") {
            Some(Value::String(id)) => {
                self.max_len(id, limits::ID, &format!("{pointer}/block_id"));
                if !block_ids.insert(id.clone()) {
                    self.err(
                        format!("duplicate block_id {id:?}"),
                        &format!("{pointer}/block_id"),
                    );
                }
            }
            Some(_) => self.err("must be a string", &format!("{pointer}/block_id")),
            None => {}
        }
        let mut action_ids = HashSet::new();
        match kind {
            "header" => self.text(
                b.get("text"),
                limits::HEADER_TEXT,
                true,
                &format!("{pointer}/text"),
            ),
            "section" => {
                let fields = b.get("fields");
                if b.get("text").is_none() && fields.is_none() {
                    self.err("must provide either text or fields", pointer);
                }
                if b.get("text").is_some() {
                    self.text(
                        b.get("text"),
                        limits::SECTION_TEXT,
                        false,
                        &format!("{pointer}/text"),
                    );
                }
                if let Some(f) = fields {
                    match f.as_array() {
                        Some(list) if list.is_empty() => self.err(
                            "must provide an array of at least 1 items",
                            &format!("{pointer}/fields"),
                        ),
                        Some(list) => {
                            if list.len() > limits::SECTION_FIELDS {
                                self.err(
                                    format!(
                                        "must provide an array of no more than {} items",
                                        limits::SECTION_FIELDS
                                    ),
                                    &format!("{pointer}/fields"),
                                );
                            }
                            for (i, t) in list.iter().enumerate() {
                                self.text(
                                    Some(t),
                                    limits::SECTION_FIELD,
                                    false,
                                    &format!("{pointer}/fields/{i}"),
                                );
                            }
                        }
                        None => self.err("must provide an array", &format!("{pointer}/fields")),
                    }
                }
                if let Some(a) = b.get("accessory") {
                    self.element(a, &mut action_ids, &format!("{pointer}/accessory"));
                }
            }
            "context" => match b.get("elements").and_then(Value::as_array) {
                Some(list) if !list.is_empty() && list.len() <= limits::CONTEXT_ELEMENTS => {
                    for (i, e) in list.iter().enumerate() {
                        let p = format!("{pointer}/elements/{i}");
                        if e.get("type").and_then(Value::as_str) == Some("image") {
                            self.optional_str(e, "alt_text", limits::ALT_TEXT, &p);
                        } else {
                            self.text(Some(e), limits::CONTEXT_TEXT, false, &p);
                        }
                    }
                }
                _ => self.err(
                    format!(
                        "must provide an array of 1 to {} items",
                        limits::CONTEXT_ELEMENTS
                    ),
                    &format!("{pointer}/elements"),
                ),
            },
            "actions" => match b.get("elements").and_then(Value::as_array) {
                Some(list) if !list.is_empty() && list.len() <= limits::ACTIONS_ELEMENTS => {
                    for (i, e) in list.iter().enumerate() {
                        self.element(e, &mut action_ids, &format!("{pointer}/elements/{i}"));
                    }
                }
                _ => self.err(
                    format!(
                        "must provide an array of 1 to {} items",
                        limits::ACTIONS_ELEMENTS
                    ),
                    &format!("{pointer}/elements"),
                ),
            },
            "markdown" => match b.get("text").and_then(Value::as_str) {
                Some(t) => self.max_len(t, limits::MARKDOWN_TEXT, &format!("{pointer}/text")),
                None => self.err("must provide a string", &format!("{pointer}/text")),
            },
            _ => {}
        }
    }
}

/// Slack's complaints about `blocks`, or none. `blocks` is the JSON value of the `blocks` field.
pub fn validate(blocks: &Value) -> Vec<String> {
    let mut c = Check { errors: Vec::new() };
    let Some(list) = blocks.as_array() else {
        c.err("must provide an array", "/blocks");
        return c.errors;
    };
    if list.len() > MAX_BLOCKS {
        c.err(
            format!("must provide an array of no more than {MAX_BLOCKS} items"),
            "/blocks",
        );
    }
    let mut block_ids = HashSet::new();
    for (i, b) in list.iter().enumerate() {
        c.block(b, &mut block_ids, &format!("/blocks/{i}"));
    }
    c.errors
}

/// The message as plain text, as a reader would see it: `<@U…>` becomes `@name`, dates their
/// fallback, links their label. Tests assert on this.
pub fn render_plain(
    blocks: &Value,
    text: &str,
    user_name: &dyn Fn(&str) -> Option<String>,
) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut push_text = |t: Option<&Value>| {
        if let Some(s) = t.and_then(|t| t.get("text")).and_then(Value::as_str) {
            out.push(render_mrkdwn(s, user_name));
        }
    };
    let list = blocks.as_array().map(Vec::as_slice).unwrap_or_default();
    if list.is_empty() {
        return render_mrkdwn(text, user_name);
    }
    for b in list {
        match b.get("type").and_then(Value::as_str) {
            Some("header") => push_text(b.get("text")),
            Some("section") => {
                push_text(b.get("text"));
                for f in b
                    .get("fields")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    push_text(Some(f));
                }
                if let Some(a) = b.get("accessory") {
                    push_text(a.get("text"));
                }
            }
            Some("context") => {
                for e in b
                    .get("elements")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    push_text(Some(e));
                }
            }
            Some("actions") => {
                for e in b
                    .get("elements")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    push_text(e.get("text"));
                }
            }
            Some("markdown") => push_text(Some(b)),
            _ => {}
        }
    }
    out.join("\n")
}

/// Resolves Slack's `<…>` tokens and `&lt;`-style escapes; leaves `*bold*` and the like alone.
pub fn render_mrkdwn(s: &str, user_name: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find('<') {
        out.push_str(&unescape(&rest[..start]));
        let Some(len) = rest[start..].find('>') else {
            out.push_str(&unescape(&rest[start..]));
            rest = "";
            break;
        };
        let token = &rest[start + 1..start + len];
        out.push_str(&render_token(token, user_name));
        rest = &rest[start + len + 1..];
    }
    out.push_str(&unescape(rest));
    out
}

fn render_token(token: &str, user_name: &dyn Fn(&str) -> Option<String>) -> String {
    let (target, label) = match token.split_once('|') {
        Some((t, l)) => (t, Some(l)),
        None => (token, None),
    };
    if let Some(id) = target.strip_prefix('@') {
        return format!("@{}", user_name(id).unwrap_or_else(|| id.to_owned()));
    }
    if let Some(ch) = target.strip_prefix('#') {
        return format!("#{}", label.unwrap_or(ch));
    }
    if target.starts_with("!date^") {
        // `<!date^unix^format|fallback>`: the fallback is what Slack shows when it cannot format.
        return unescape(label.unwrap_or(target));
    }
    if let Some(special) = target.strip_prefix('!') {
        return format!("@{special}");
    }
    unescape(label.unwrap_or(target))
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_good_message_passes() {
        let blocks = json!([
            {"type": "header", "text": {"type": "plain_text", "text": "Approval needed"}},
            {"type": "section", "fields": [{"type": "mrkdwn", "text": "*Tool*\ncreate_refund"}]},
            {"type": "actions", "block_id": "d", "elements": [
                {"type": "button", "action_id": "a", "text": {"type": "plain_text", "text": "Approve"}, "style": "primary", "value": "x"},
                {"type": "button", "action_id": "b", "text": {"type": "plain_text", "text": "Deny"}, "style": "danger", "value": "x",
                 "confirm": {"title": {"type": "plain_text", "text": "Sure?"}, "text": {"type": "mrkdwn", "text": "Really"},
                             "confirm": {"type": "plain_text", "text": "Deny"}, "deny": {"type": "plain_text", "text": "Cancel"}}}
            ]}
        ]);
        assert_eq!(validate(&blocks), Vec::<String>::new());
    }

    #[test]
    fn each_limit_is_reported_with_its_pointer() {
        let long = "x".repeat(3001);
        let blocks = json!([
            {"type": "section", "text": {"type": "mrkdwn", "text": long}},
            {"type": "header", "text": {"type": "mrkdwn", "text": "h"}},
            {"type": "actions", "elements": [
                {"type": "button", "action_id": "a", "text": {"type": "plain_text", "text": ""}},
                {"type": "button", "action_id": "a", "text": {"type": "plain_text", "text": "ok"}, "style": "green"}
            ]},
            {"type": "carousel"},
            {"type": "section", "fields": (0..11).map(|_| json!({"type": "plain_text", "text": "f"})).collect::<Vec<_>>()}
        ]);
        let errors = validate(&blocks);
        for want in [
            "must be less than 3001 characters [json-pointer:/blocks/0/text/text]",
            "must be a valid enum value: plain_text [json-pointer:/blocks/1/text/type]",
            "must be more than 0 characters [json-pointer:/blocks/2/elements/0/text/text]",
            "[json-pointer:/blocks/2/elements/1/action_id]",
            "[json-pointer:/blocks/2/elements/1/style]",
            "unsupported type: carousel [json-pointer:/blocks/3/type]",
            "no more than 10 items [json-pointer:/blocks/4/fields]",
        ] {
            assert!(
                errors.iter().any(|e| e.contains(want)),
                "{want} not in {errors:#?}"
            );
        }
        assert_eq!(errors.len(), 7, "{errors:#?}");
    }

    #[test]
    fn too_many_blocks_and_not_an_array() {
        let many = Value::Array((0..51).map(|_| json!({"type": "divider"})).collect());
        assert_eq!(validate(&many).len(), 1);
        assert_eq!(
            validate(&json!({"type": "divider"})),
            vec!["must provide an array [json-pointer:/blocks]".to_owned()]
        );
    }

    #[test]
    fn plain_rendering_resolves_users_dates_and_escapes() {
        let names = |id: &str| (id == "U1").then(|| "alice".to_owned());
        assert_eq!(
            render_mrkdwn(
                "*Approved* by <@U1> (alice) <!date^1700000000^{date_short}|Nov 14> &lt;x&gt; <@U9>",
                &names
            ),
            "*Approved* by @alice (alice) Nov 14 <x> @U9"
        );
    }
}
