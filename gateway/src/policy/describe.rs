//! `airlock-gateway policy check`: a policy as the gateway reads it, rule by rule.

use std::fmt::Write as _;

use serde_json::Value;

use super::{Policy, PolicyError};

/// The revision, the default, and each rule with what it matches, in the order they are tried;
/// a rule that an earlier catch-all for the same globs always answers first is flagged.
pub fn describe(text: &str) -> Result<String, PolicyError> {
    let policy = Policy::parse(text)?;
    let raw: Value = serde_yaml::from_str(text).map_err(|e| PolicyError::Invalid(e.to_string()))?;
    let mut out = String::new();
    let _ = writeln!(out, "policy revision {}", policy.revision);
    let _ = writeln!(out, "default: {}", policy.default.action.as_str());
    if let Some(n) = policy.max_tool_calls_per_session {
        let _ = writeln!(out, "budget: {n} tool calls per session");
    }
    if let Some(b) = policy.principal_budget {
        let per = humantime::format_duration(b.per);
        let _ = writeln!(
            out,
            "budget: {} tool calls per principal per {per}",
            b.max_tool_calls
        );
    }
    let mut catch_alls: Vec<(&str, Vec<&str>)> = Vec::new();
    for (i, rule) in policy.rules.iter().enumerate() {
        let r = raw.pointer(&format!("/rules/{i}")).unwrap_or(&Value::Null);
        let globs: Vec<&str> = r["tools"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let v = &rule.verdict;
        let _ = write!(
            out,
            "{}. {:?}: {} for tools {}",
            i + 1,
            &*v.rule,
            v.action.as_str(),
            globs.join(", ")
        );
        for key in ["principals", "scopes"] {
            if let Some(list) = r[key].as_array().filter(|l| !l.is_empty()) {
                let names: Vec<&str> = list.iter().filter_map(Value::as_str).collect();
                let _ = write!(out, " for {key} {}", names.join(", "));
            }
        }
        if let Some(when) = r["when"].as_array().filter(|w| !w.is_empty()) {
            let conds: Vec<String> = when.iter().map(Value::to_string).collect();
            let _ = write!(out, " when {}", conds.join(" and "));
        }
        if v.read_only {
            out.push_str("; read-only");
        }
        if !v.approvers.is_empty() {
            let _ = write!(out, "; approvers {}", v.approvers.join(", "));
        }
        if v.approvals > 1 {
            let _ = write!(out, "; {} approvals", v.approvals);
        }
        if let Some(t) = v.timeout {
            let _ = write!(out, "; timeout {}", humantime::format_duration(t));
        }
        out.push('\n');
        if let Some((earlier, _)) = catch_alls
            .iter()
            .find(|(_, theirs)| globs.iter().all(|g| theirs.contains(g)))
        {
            let _ = writeln!(
                out,
                "   warning: never applies: rule {earlier:?} answers every call to these tools first"
            );
        }
        if rule.unconditional() {
            catch_alls.push((&rule.verdict.rule, globs));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_are_listed_in_order_and_a_shadowed_rule_is_flagged() {
        let text = r#"
version: 1
default: deny
rules:
  - { name: refunds, tools: ["create_refund"], action: allow }
  - name: big refunds
    tools: ["create_refund"]
    when: [{ arg: /amount, gt: 100 }]
    action: approve
    approvers: [U0ALICE]
"#;
        let out = describe(text).unwrap();
        assert!(out.starts_with("policy revision "), "{out}");
        assert!(
            out.contains("1. \"refunds\": allow for tools create_refund\n"),
            "{out}"
        );
        assert!(
            out.contains(r#"2. "big refunds": approve for tools create_refund when {"arg":"/amount","gt":100}; approvers U0ALICE"#),
            "{out}"
        );
        assert!(out.contains("never applies: rule \"refunds\""), "{out}");
    }

    #[test]
    fn identity_is_listed_and_a_rule_for_some_callers_shadows_nothing() {
        let text = r#"
version: 1
default: deny
rules:
  - { name: ci, tools: ["deploy"], principals: ["ci-*"], scopes: [deploy], action: allow }
  - { name: payments, tools: ["deploy"], when: [{ claim: team, equals: payments }], action: approve }
  - { name: others, tools: ["deploy"], action: deny }
"#;
        let out = describe(text).unwrap();
        assert!(
            out.contains(
                "1. \"ci\": allow for tools deploy for principals ci-* for scopes deploy\n"
            ),
            "{out}"
        );
        assert!(
            out.contains(r#"when {"claim":"team","equals":"payments"}"#),
            "{out}"
        );
        assert!(!out.contains("never applies"), "{out}");
    }

    #[test]
    fn an_invalid_policy_is_an_error_not_a_listing() {
        assert!(describe("version: 1\ndefault: maybe\n").is_err());
    }
}
