//! `airlock-gateway policy test`: a file of example calls and the verdict each must get, run
//! against a policy before it is deployed (like `opa test`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use airlock_shared::Principal;
use serde::Deserialize;
use serde_json::Value;

use super::{Action, Policy, PolicyError};
use crate::identity::Identity;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    /// Who calls (matched by `principals:` globs).
    #[serde(default)]
    principal: Option<String>,
    /// The caller's access token claims; with claims or scopes the caller holds a token,
    /// without either it is a static-token agent (no claim or scope condition applies).
    #[serde(default)]
    claims: BTreeMap<String, Value>,
    /// The access token's scopes.
    #[serde(default)]
    scopes: Vec<String>,
    tool: String,
    #[serde(default = "empty_object")]
    arguments: Value,
    expect: Expect,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    action: Action,
    /// The rule's name (`default` for the default); any rule when left out.
    #[serde(default)]
    rule: Option<String>,
}

impl Case {
    /// The caller the case describes.
    fn identity(&self) -> Identity {
        let principal = Principal(self.principal.clone().unwrap_or_default());
        if self.claims.is_empty() && self.scopes.is_empty() {
            return Identity::agent(principal);
        }
        Identity {
            principal,
            issuer: Some(Arc::from("policy test")),
            claims: Arc::new(self.claims.clone().into_iter().collect()),
            scopes: self.scopes.clone().into(),
        }
    }
}

fn empty_object() -> Value {
    Value::Object(serde_json::Map::new())
}

/// What a run found: one line per case, and how many failed.
#[derive(Debug)]
pub struct Report {
    pub text: String,
    pub passed: usize,
    pub failed: usize,
}

/// Runs the cases in `cases` (YAML text) against `policy`.
pub fn run(policy: &Policy, cases: &str) -> Result<Report, PolicyError> {
    let file: CaseFile = serde_yaml::from_str(cases)
        .map_err(|e| PolicyError::Invalid(format!("cases file: {e}")))?;
    if file.cases.is_empty() {
        return Err(PolicyError::Invalid("cases file: no cases".into()));
    }
    let mut report = Report {
        text: String::new(),
        passed: 0,
        failed: 0,
    };
    for case in &file.cases {
        let got = policy
            .assess(&case.tool, &case.arguments, &case.identity())
            .verdict;
        let rule_ok = case.expect.rule.as_deref().is_none_or(|r| r == &*got.rule);
        let who = case.principal.as_deref().unwrap_or("any principal");
        let claims = match (case.claims.is_empty(), case.scopes.is_empty()) {
            (true, true) => String::new(),
            _ => format!(
                " with claims {} and scopes [{}]",
                serde_json::to_string(&case.claims).unwrap_or_default(),
                case.scopes.join(" ")
            ),
        };
        if got.action == case.expect.action && rule_ok {
            report.passed += 1;
            let _ = writeln!(report.text, "PASS {}", case.name);
        } else {
            report.failed += 1;
            let _ = writeln!(
                report.text,
                "FAIL {}: {} calling {}{claims}: expected {} ({}), got {} by rule {:?}",
                case.name,
                who,
                case.tool,
                case.expect.action.as_str(),
                case.expect.rule.as_deref().unwrap_or("any rule"),
                got.action.as_str(),
                &*got.rule,
            );
        }
    }
    let _ = writeln!(
        report.text,
        "{} passed, {} failed (policy revision {})",
        report.passed, report.failed, policy.revision
    );
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = r#"
version: 1
default: deny
rules:
  - name: big refunds
    tools: ["create_refund"]
    when: [{ arg: /amount, gt: 100 }]
    action: approve
  - { name: small refunds, tools: ["create_refund"], action: allow }
"#;

    #[test]
    fn matching_cases_pass_and_a_wrong_one_is_named() {
        let policy = Policy::parse(POLICY).unwrap();
        let cases = r#"
cases:
  - name: small passes
    tool: create_refund
    arguments: { amount: 5 }
    expect: { action: allow, rule: small refunds }
  - name: a string amount is held, not allowed
    principal: billing-agent
    tool: create_refund
    arguments: { amount: "500" }
    expect: { action: approve, rule: big refunds }
  - name: deliberately wrong
    tool: delete_customer
    expect: { action: allow }
"#;
        let r = run(&policy, cases).unwrap();
        assert_eq!((r.passed, r.failed), (2, 1), "{}", r.text);
        assert!(
            r.text.contains("FAIL deliberately wrong: any principal calling delete_customer: expected allow (any rule), got deny by rule \"default\""),
            "{}",
            r.text
        );
    }

    #[test]
    fn cases_match_principal_claims_and_scopes() {
        let policy = Policy::parse(
            r#"
version: 1
default: deny
rules:
  - { name: ci, tools: [deploy], principals: ["ci-*"], action: allow }
  - { name: payments, tools: [refund], when: [{ claim: team, equals: payments }], action: approve }
  - { name: writers, tools: [refund], scopes: ["refunds:write"], action: allow }
"#,
        )
        .unwrap();
        let cases = r#"
cases:
  - { name: ci deploys, principal: ci-1, tool: deploy, expect: { action: allow, rule: ci } }
  - { name: a laptop does not, principal: dev, tool: deploy, expect: { action: deny } }
  - { name: payments held, principal: p, claims: { team: payments }, tool: refund, expect: { action: approve } }
  - { name: writer, principal: w, scopes: ["refunds:write"], tool: refund, expect: { action: allow, rule: writers } }
  - { name: a static agent matches no claim or scope, principal: s, tool: refund, expect: { action: deny } }
  - { name: wrong on purpose, principal: w, claims: { team: payments }, tool: refund, expect: { action: allow } }
"#;
        let r = run(&policy, cases).unwrap();
        assert_eq!((r.passed, r.failed), (5, 1), "{}", r.text);
        assert!(
            r.text.contains(
                "FAIL wrong on purpose: w calling refund with claims {\"team\":\"payments\"}"
            ),
            "{}",
            r.text
        );
    }

    #[test]
    fn a_malformed_cases_file_is_an_error() {
        let policy = Policy::parse(POLICY).unwrap();
        assert!(run(&policy, "cases: []").is_err());
        assert!(
            run(
                &policy,
                "cases: [{ name: x, tool: t, expect: { action: perhaps } }]"
            )
            .is_err()
        );
        assert!(
            run(
                &policy,
                "cases: [{ name: x, tool: t, expect: { action: allow }, extra: 1 }]"
            )
            .is_err()
        );
    }

    #[test]
    fn the_shipped_demo_cases_pass() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../infra/demo/");
        let policy = Policy::load(&format!("{dir}policy.yaml")).unwrap();
        let cases = std::fs::read_to_string(format!("{dir}policy-cases.yaml")).unwrap();
        let r = run(&policy, &cases).unwrap();
        assert_eq!(r.failed, 0, "{}", r.text);
        assert!(r.passed >= 6, "{}", r.text);
    }
}
