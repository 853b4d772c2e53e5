//! Slack user groups in the fake workspace: `usergroups.users.list` with Slack's shapes
//! (`{"ok":true,"users":["U…"]}`, `no_such_subteam` for an unknown group), and membership that
//! tests set and change while things run. Faults (`ok:false`, 5xx, 429) come from the shared
//! fault queue, like every other method's.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use serde_json::{Map, Value, json};

/// The user groups of a workspace: id (`S…`) → member ids, in order.
#[derive(Debug, Default)]
pub struct Groups(Mutex<HashMap<String, Vec<String>>>);

impl Groups {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Vec<String>>> {
        // Every change replaces one entry, so a poisoned map is still consistent.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Creates `group`, or replaces its members.
    pub fn set(&self, group: &str, users: &[&str]) {
        self.lock().insert(
            group.to_owned(),
            users.iter().map(|u| (*u).to_owned()).collect(),
        );
    }

    /// Deletes `group`; later reads answer `no_such_subteam`.
    pub fn remove(&self, group: &str) {
        self.lock().remove(group);
    }

    /// The members of `group`, if it exists.
    pub fn members(&self, group: &str) -> Option<Vec<String>> {
        self.lock().get(group).cloned()
    }
}

/// `usergroups.users.list`: `Ok` is the answer without `ok`, `Err` Slack's error string.
pub fn users_list(groups: &Groups, args: &Map<String, Value>) -> Result<Value, &'static str> {
    let group = args
        .get("usergroup")
        .and_then(Value::as_str)
        .filter(|g| !g.is_empty())
        .ok_or("invalid_arguments")?;
    let users = groups.members(group).ok_or("no_such_subteam")?;
    Ok(json!({ "users": users }))
}

/// Groups from `SLACK_USERGROUPS`: `S1:U1 U2,S2:U3` (members separated by spaces).
pub fn parse(raw: &str) -> Result<Vec<(String, Vec<String>)>, String> {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|item| match item.split_once(':') {
            Some((id, users)) if id.trim().starts_with('S') => Ok((
                id.trim().to_owned(),
                users.split_whitespace().map(str::to_owned).collect(),
            )),
            _ => Err(format!(
                "SLACK_USERGROUPS: expected S…:U… U… entries, got {item:?}"
            )),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_list_answers_like_slack() {
        let g = Groups::default();
        g.set("S1", &["U1", "U2"]);
        let args = |v: Value| v.as_object().cloned().unwrap_or_default();
        assert_eq!(
            users_list(&g, &args(json!({"usergroup": "S1"}))),
            Ok(json!({"users": ["U1", "U2"]}))
        );
        assert_eq!(
            users_list(&g, &args(json!({"usergroup": "S9"}))),
            Err("no_such_subteam")
        );
        assert_eq!(users_list(&g, &args(json!({}))), Err("invalid_arguments"));
        g.set("S1", &["U2"]);
        assert_eq!(g.members("S1"), Some(vec!["U2".to_owned()]));
        g.remove("S1");
        assert_eq!(g.members("S1"), None);
    }

    #[test]
    fn groups_parse_from_the_environment() {
        assert_eq!(
            parse("S0A:U1 U2, S0B:").unwrap(),
            vec![
                ("S0A".to_owned(), vec!["U1".to_owned(), "U2".to_owned()]),
                ("S0B".to_owned(), vec![])
            ]
        );
        assert!(parse("U1:U2").is_err());
    }
}
