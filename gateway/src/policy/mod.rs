//! Policy: which tool calls pass, which are refused, and which wait for a person.
//!
//! The file is validated strictly when it loads: an unknown field, a bad glob or regex, or a
//! wrong type is an error that names the line. Rules are tried in order; the first match wins.
//! A condition that cannot be evaluated as written (a string compared as a number, a missing
//! argument under a comparison) makes an `approve` or `deny` rule match and an `allow` rule not:
//! a malformed call never falls through to a later allow.

use std::sync::Arc;
use std::time::Duration;

use globset::{Glob, GlobMatcher};
use serde::Deserialize;
use serde_json::Value;

use condition::{Condition, Truth};
pub use identity::Shown;
use identity::Who;

use crate::identity::Identity;

pub mod cases;
mod condition;
mod describe;
mod grant;
mod identity;
mod quorum;
mod revision;

pub use describe::describe;

pub use grant::GrantRule;

/// What policy does with a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Forward it.
    Allow,
    /// Refuse it.
    Deny,
    /// Hold it until a person decides.
    Approve,
}

impl Action {
    /// The spelling used in audit rows.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
            Self::Approve => "approve",
        }
    }
}

/// A problem with the policy file.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read policy file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid policy: {0}")]
    Invalid(String),
}

/// A compiled, validated policy.
#[derive(Debug)]
pub struct Policy {
    default: Verdict,
    rules: Vec<Rule>,
    /// The per-session cap on tool calls, if any.
    pub max_tool_calls_per_session: Option<u64>,
    /// The cap per principal and window on calls made without a session (2026-07-28), if any.
    pub principal_budget: Option<WindowBudget>,
    /// Whether `tools/list` leaves out tools that are always denied.
    pub hide_denied_tools: bool,
    /// Whether calls are checked against the tool's `inputSchema` before policy.
    pub validate_arguments: bool,
    /// A short hash of the file's content (see `revision`), recorded with every decision.
    pub revision: Arc<str>,
}

/// At most `max_tool_calls` per principal in each window of `per` (fixed windows).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowBudget {
    pub max_tool_calls: u64,
    pub per: Duration,
}

/// A verdict and the rules on the way whose conditions could not be evaluated.
#[derive(Debug)]
pub struct Assessment<'a> {
    pub verdict: &'a Verdict,
    /// Rules that matched (approve, deny) or were skipped (allow) for that reason.
    pub unevaluable: Vec<Arc<str>>,
}

/// The outcome of evaluating a call: the action and the rule that chose it.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    pub action: Action,
    /// The rule's name, or `default`.
    pub rule: Arc<str>,
    pub read_only: bool,
    pub reason: Option<Arc<str>>,
    /// Slack user ids allowed to decide (empty, with no groups: anyone allowed by the webhook's
    /// own list).
    pub approvers: Arc<[String]>,
    /// Slack user groups (`S…`) whose current members may decide too.
    pub approver_groups: Arc<[String]>,
    /// Overrides the gateway's `APPROVAL_TIMEOUT`.
    pub timeout: Option<Duration>,
    /// Overrides the notifier's default Slack channel.
    pub channel: Option<Arc<str>>,
    /// Distinct approvals needed (`approvals:`, default 1).
    pub approvals: u32,
    /// The revision of the policy that gave this verdict.
    pub revision: Arc<str>,
    /// The standing grant an approver may give (`grant:`), with the rule's hash.
    pub grant: Option<GrantRule>,
    /// The claims the rule's conditions look at, and the scopes it requires: what approvers
    /// are shown of the caller's token.
    pub shown: Shown,
}

#[derive(Debug)]
struct Rule {
    tools: Vec<GlobMatcher>,
    who: Who,
    when: Vec<Condition>,
    verdict: Verdict,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    version: u32,
    default: Action,
    #[serde(default)]
    budget: Option<RawBudget>,
    #[serde(default)]
    hide_denied_tools: bool,
    #[serde(default = "yes")]
    validate_arguments: bool,
    #[serde(default)]
    rules: Vec<RawRule>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBudget {
    #[serde(default)]
    max_tool_calls_per_session: Option<u64>,
    /// With `per`: the windowed budget per principal, for calls without a session.
    #[serde(default)]
    max_tool_calls: Option<u64>,
    #[serde(default)]
    per: Option<HumanDuration>,
}

impl RawBudget {
    fn check(&self) -> Result<Option<WindowBudget>, PolicyError> {
        let bad = |m: &str| Err(PolicyError::Invalid(m.into()));
        if self.max_tool_calls_per_session == Some(0) {
            return bad("budget.max_tool_calls_per_session must be at least 1");
        }
        match (self.max_tool_calls, &self.per) {
            (Some(0), _) => bad("budget.max_tool_calls must be at least 1"),
            (Some(max_tool_calls), Some(per)) => Ok(Some(WindowBudget {
                max_tool_calls,
                per: per.0,
            })),
            (None, None) if self.max_tool_calls_per_session.is_none() => {
                bad("budget needs max_tool_calls_per_session, or max_tool_calls with per")
            }
            (None, None) => Ok(None),
            (Some(_), None) | (None, Some(_)) => {
                bad("budget.max_tool_calls and budget.per go together")
            }
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawRuleFields")]
struct RawRule(Rule);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRuleFields {
    name: String,
    tools: Vec<GlobPattern>,
    /// Globs on the caller's principal; empty: any.
    #[serde(default)]
    principals: Vec<GlobPattern>,
    /// Scopes the caller's access token must carry, all of them.
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    when: Vec<Condition>,
    action: Action,
    #[serde(default)]
    read_only: bool,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    approvers: Vec<String>,
    #[serde(default)]
    approver_groups: Vec<String>,
    #[serde(default)]
    timeout: Option<HumanDuration>,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    approvals: Option<u32>,
    #[serde(default)]
    grant: Option<grant::RawGrant>,
}

impl TryFrom<RawRuleFields> for RawRule {
    type Error = String;

    fn try_from(r: RawRuleFields) -> Result<Self, Self::Error> {
        if r.name.trim().is_empty() {
            return Err("a rule needs a non-empty name".into());
        }
        if r.tools.is_empty() {
            return Err(format!(
                "rule {:?}: tools must list at least one glob",
                r.name
            ));
        }
        if r.action != Action::Approve
            && (!r.approvers.is_empty()
                || !r.approver_groups.is_empty()
                || r.timeout.is_some()
                || r.channel.is_some()
                || r.approvals.is_some())
        {
            return Err(format!(
                "rule {:?}: approvers, approver_groups, approvals, timeout and channel only apply to action: approve",
                r.name
            ));
        }
        if let Some(bad) = r.approvers.iter().find(|a| !looks_like_slack_user(a)) {
            return Err(format!(
                "rule {:?}: approver {bad:?} is not a Slack user id (like U0123ABCD)",
                r.name
            ));
        }
        quorum::check_groups(&r.name, &r.approver_groups)?;
        let approvals = quorum::approvals(&r.name, r.approvals, &r.approvers, &r.approver_groups)?;
        let grant = grant::grant_rule(&r, approvals)?;
        let who = Who::new(
            &r.name,
            r.principals.into_iter().map(|g| g.0).collect(),
            r.scopes,
        )?;
        let shown = Shown {
            claims: r
                .when
                .iter()
                .filter_map(|c| c.claim().map(str::to_owned))
                .collect(),
            scopes: who.scopes().into(),
        };
        Ok(RawRule(Rule {
            tools: r.tools.into_iter().map(|g| g.0).collect(),
            who,
            when: r.when,
            verdict: Verdict {
                action: r.action,
                rule: r.name.into(),
                read_only: r.read_only,
                reason: r.reason.map(Into::into),
                approvers: r.approvers.into(),
                approver_groups: r.approver_groups.into(),
                timeout: r.timeout.map(|t| t.0),
                channel: r.channel.map(Into::into),
                approvals,
                // Set once the whole file is read.
                revision: Arc::from(""),
                grant,
                shown,
            },
        }))
    }
}

fn looks_like_slack_user(s: &str) -> bool {
    s.len() >= 2
        && (s.starts_with('U') || s.starts_with('W'))
        && s.chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

#[derive(Debug)]
struct GlobPattern(GlobMatcher);

impl<'de> Deserialize<'de> for GlobPattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Glob::new(&s)
            .map(|g| GlobPattern(g.compile_matcher()))
            .map_err(|e| serde::de::Error::custom(format!("bad glob {s:?}: {e}")))
    }
}

#[derive(Debug)]
struct HumanDuration(Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        // The grammar of the environment's durations (shared::config), so `1h30m` reads alike.
        match humantime::parse_duration(s.trim()) {
            Ok(d) if !d.is_zero() => Ok(HumanDuration(d)),
            Ok(_) => Err(serde::de::Error::custom(format!(
                "bad duration {s:?}: must be greater than zero"
            ))),
            Err(e) => Err(serde::de::Error::custom(format!(
                "bad duration {s:?}: {e} (try 30s, 10m, 1h30m)"
            ))),
        }
    }
}

impl Rule {
    /// All conditions together: one that fails rules the rule out even if another could not
    /// be evaluated.
    fn check(&self, tool: &str, args: &Value, id: &Identity) -> Truth {
        if !self.tools.iter().any(|g| g.is_match(tool)) || !self.who.includes(id) {
            return Truth::Fails;
        }
        let mut truth = Truth::Holds;
        for c in &self.when {
            match c.check(args, id) {
                Truth::Fails => return Truth::Fails,
                Truth::Unevaluable => truth = Truth::Unevaluable,
                Truth::Holds => {}
            }
        }
        truth
    }

    /// Whether the rule answers every call to its tools, whoever makes it.
    fn unconditional(&self) -> bool {
        self.when.is_empty() && self.who.is_anyone()
    }
}

impl Policy {
    /// Reads and validates a policy file.
    pub fn load(path: &str) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Validates policy text.
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        let raw: RawPolicy =
            serde_yaml::from_str(text).map_err(|e| PolicyError::Invalid(e.to_string()))?;
        if raw.version != 1 {
            return Err(PolicyError::Invalid(format!(
                "version: only version 1 is supported, got {}",
                raw.version
            )));
        }
        let mut names = std::collections::HashSet::new();
        for r in &raw.rules {
            if !names.insert(r.0.verdict.rule.clone()) {
                return Err(PolicyError::Invalid(format!(
                    "rule names must be unique; {:?} appears twice",
                    r.0.verdict.rule
                )));
            }
        }
        let principal_budget = match &raw.budget {
            Some(b) => b.check()?,
            None => None,
        };
        let revision = revision::of(text)?;
        let mut rules: Vec<Rule> = raw.rules.into_iter().map(|r| r.0).collect();
        for r in &mut rules {
            r.verdict.revision = revision.clone();
        }
        Ok(Policy {
            default: Verdict {
                action: raw.default,
                rule: "default".into(),
                read_only: false,
                reason: None,
                approvers: Arc::from(Vec::new()),
                approver_groups: Arc::from(Vec::new()),
                timeout: None,
                channel: None,
                approvals: 1,
                revision: revision.clone(),
                grant: None,
                shown: Shown::default(),
            },
            rules,
            max_tool_calls_per_session: raw.budget.and_then(|b| b.max_tool_calls_per_session),
            principal_budget,
            hide_denied_tools: raw.hide_denied_tools,
            validate_arguments: raw.validate_arguments,
            revision,
        })
    }

    /// The verdict for a call to `tool` with `args` by an unnamed static-token agent (tests).
    #[cfg(test)]
    pub fn evaluate(&self, tool: &str, args: &Value) -> &Verdict {
        let id = Identity::agent(airlock_shared::Principal("test-agent".into()));
        self.assess(tool, args, &id).verdict
    }

    /// The verdict for a call to `tool` with `args` by `id` (the first matching rule, else the
    /// default), and the rules whose conditions could not be evaluated on the way.
    pub fn assess(&self, tool: &str, args: &Value, id: &Identity) -> Assessment<'_> {
        let mut unevaluable = Vec::new();
        for r in &self.rules {
            match r.check(tool, args, id) {
                Truth::Holds => {}
                Truth::Fails => continue,
                Truth::Unevaluable => {
                    unevaluable.push(r.verdict.rule.clone());
                    if r.verdict.action == Action::Allow {
                        continue;
                    }
                }
            }
            return Assessment {
                verdict: &r.verdict,
                unevaluable,
            };
        }
        Assessment {
            verdict: &self.default,
            unevaluable,
        }
    }

    /// Whether some call to `tool` may be held for a person's approval.
    pub fn may_need_approval(&self, tool: &str) -> bool {
        for r in &self.rules {
            if r.tools.iter().any(|g| g.is_match(tool)) {
                if r.verdict.action == Action::Approve {
                    return true;
                }
                if r.unconditional() {
                    return false;
                }
            }
        }
        self.default.action == Action::Approve
    }

    /// Whether every call to `tool` is denied, whatever its arguments.
    pub fn always_denies(&self, tool: &str) -> bool {
        for r in &self.rules {
            if r.tools.iter().any(|g| g.is_match(tool)) {
                if r.unconditional() {
                    return r.verdict.action == Action::Deny;
                }
                if r.verdict.action != Action::Deny {
                    return false;
                }
            }
        }
        self.default.action == Action::Deny
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn agent() -> Identity {
        Identity::agent(airlock_shared::Principal("test-agent".into()))
    }

    const EXAMPLE: &str = r#"
version: 1
default: deny
budget: { max_tool_calls_per_session: 200 }
rules:
  - name: reads are free
    tools: ["list_*", "get_*", "read_*"]
    action: allow
    read_only: true
  - name: big refunds need a manager
    tools: ["create_refund"]
    when:
      - { arg: /amount, gt: 100 }
      - { arg: /currency, in: [usd, eur] }
    action: approve
    approvers: [U0123ABCD]
    timeout: 10m
  - name: small refunds
    tools: ["create_refund"]
    action: allow
  - name: never delete
    tools: ["delete_*"]
    action: deny
    reason: deleting is not allowed from agents
"#;

    #[test]
    fn the_documented_example_loads_and_evaluates() {
        let p = Policy::parse(EXAMPLE).unwrap();
        assert_eq!(p.max_tool_calls_per_session, Some(200));
        let v = p.evaluate("list_charges", &json!({}));
        assert_eq!(
            (v.action, &*v.rule, v.read_only),
            (Action::Allow, "reads are free", true)
        );
        let v = p.evaluate("create_refund", &json!({"amount": 150, "currency": "usd"}));
        assert_eq!(v.action, Action::Approve);
        assert_eq!(&*v.approvers, &["U0123ABCD".to_owned()]);
        assert_eq!(v.timeout, Some(Duration::from_secs(600)));
        // Either condition failing falls through to the next rule.
        assert_eq!(
            p.evaluate("create_refund", &json!({"amount": 150, "currency": "gbp"}))
                .rule
                .as_ref(),
            "small refunds"
        );
        assert_eq!(
            p.evaluate("create_refund", &json!({"amount": 100, "currency": "usd"}))
                .rule
                .as_ref(),
            "small refunds"
        );
        assert_eq!(
            p.evaluate(
                "create_refund",
                &json!({"amount": "150", "currency": "usd"})
            )
            .rule
            .as_ref(),
            "big refunds need a manager",
            "\"150\" is not a number, so the approve rule cannot be ruled out"
        );
        let v = p.evaluate("delete_customer", &json!({}));
        assert_eq!(
            (v.action, v.reason.as_deref()),
            (Action::Deny, Some("deleting is not allowed from agents"))
        );
        assert_eq!(
            p.evaluate("something_else", &json!({})).rule.as_ref(),
            "default"
        );
        assert!(p.always_denies("delete_customer"));
        assert!(p.always_denies("unknown_tool"));
        assert!(!p.always_denies("create_refund"));
    }

    #[test]
    fn every_operator() {
        let p = Policy::parse(
            r#"
version: 1
default: allow
rules:
  - { name: eq, tools: [a], when: [{ arg: /x, equals: 1 }], action: deny }
  - { name: ne, tools: [b], when: [{ arg: /x, not_equals: "y" }], action: deny }
  - { name: lt, tools: [c], when: [{ arg: /n, lt: 5 }], action: deny }
  - { name: lte, tools: [d], when: [{ arg: /n, lte: 5 }], action: deny }
  - { name: gte, tools: [e], when: [{ arg: /n, gte: 5 }], action: deny }
  - { name: re, tools: [f], when: [{ arg: /s, matches: "^prod-" }], action: deny }
  - { name: ex, tools: [g], when: [{ arg: /a/b, exists: true }], action: deny }
  - { name: nex, tools: [h], when: [{ arg: /a, exists: false }], action: deny }
"#,
        )
        .unwrap();
        let denied = |t: &str, a: Value| p.evaluate(t, &a).action == Action::Deny;
        assert!(denied("a", json!({"x": 1.0})) && !denied("a", json!({"x": 2})));
        assert!(denied("b", json!({})) && !denied("b", json!({"x": "y"})));
        assert!(denied("c", json!({"n": 4})) && !denied("c", json!({"n": 5})));
        assert!(denied("d", json!({"n": 5})) && !denied("d", json!({"n": 6})));
        assert!(denied("e", json!({"n": 5})) && !denied("e", json!({"n": 4})));
        assert!(denied("f", json!({"s": "prod-db"})) && !denied("f", json!({"s": "dev-prod-"})));
        assert!(denied("g", json!({"a": {"b": null}})) && !denied("g", json!({"a": {}})));
        assert!(denied("h", json!({})) && !denied("h", json!({"a": 0})));
    }

    fn err(text: &str) -> String {
        Policy::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn a_windowed_budget_is_per_principal_and_needs_both_fields() {
        let p = Policy::parse(
            "version: 1\ndefault: allow\nbudget: { max_tool_calls: 200, per: 1h, max_tool_calls_per_session: 5 }\n",
        )
        .unwrap();
        assert_eq!(
            p.principal_budget,
            Some(WindowBudget {
                max_tool_calls: 200,
                per: Duration::from_secs(3600)
            })
        );
        assert_eq!(p.max_tool_calls_per_session, Some(5));
        let only_window =
            Policy::parse("version: 1\ndefault: allow\nbudget: { max_tool_calls: 3, per: 2s }\n")
                .unwrap();
        assert_eq!(only_window.max_tool_calls_per_session, None);
        let d = "version: 1\ndefault: allow\nbudget: ";
        assert!(err(&format!("{d}{{ max_tool_calls: 3 }}\n")).contains("go together"));
        assert!(err(&format!("{d}{{ per: 1h }}\n")).contains("go together"));
        assert!(err(&format!("{d}{{ max_tool_calls: 0, per: 1h }}\n")).contains("at least 1"));
        assert!(err(&format!("{d}{{ max_tool_calls: 2, per: 0s }}\n")).contains("bad duration"));
        assert!(err(&format!("{d}{{}}\n")).contains("budget needs"));
    }

    #[test]
    fn invalid_files_name_the_line() {
        let unknown = err(
            "version: 1\ndefault: deny\nrules:\n  - name: x\n    tools: [a]\n    action: allow\n    colour: red\n",
        );
        assert!(
            unknown.contains("unknown field `colour`") && unknown.contains("line 7"),
            "{unknown}"
        );
        let glob = err(
            "version: 1\ndefault: deny\nrules:\n  - name: x\n    tools: [\"a[\"]\n    action: allow\n",
        );
        assert!(
            glob.contains("bad glob") && glob.contains("line 5"),
            "{glob}"
        );
        let regex = err(
            "version: 1\ndefault: deny\nrules:\n  - name: x\n    tools: [a]\n    when:\n      - { arg: /s, matches: \"(\" }\n    action: allow\n",
        );
        assert!(
            regex.contains("bad regex") && regex.contains("line 7"),
            "{regex}"
        );
        let ty = err(
            "version: 1\ndefault: deny\nrules:\n  - name: x\n    tools: [a]\n    action: allow\n    read_only: sometimes\n",
        );
        assert!(ty.contains("line 7"), "{ty}");
        let action = err("version: 1\ndefault: maybe\n");
        assert!(
            action.contains("unknown variant `maybe`") && action.contains("line 2"),
            "{action}"
        );
        let gt_type = err(
            "version: 1\ndefault: deny\nrules:\n  - name: x\n    tools: [a]\n    when: [{ arg: /n, gt: lots }]\n    action: deny\n",
        );
        assert!(gt_type.contains("line 6"), "{gt_type}");
    }

    #[test]
    fn semantic_mistakes_are_refused() {
        assert!(err("version: 2\ndefault: deny\n").contains("version"));
        assert!(err("version: 1\ndefault: deny\nrules:\n  - { name: x, tools: [a], when: [{ arg: amount, gt: 1 }], action: deny }\n").contains("JSON pointer"));
        assert!(err("version: 1\ndefault: deny\nrules:\n  - { name: x, tools: [a], when: [{ arg: /a, gt: 1, lt: 3 }], action: deny }\n").contains("more than one operator"));
        assert!(err("version: 1\ndefault: deny\nrules:\n  - { name: x, tools: [a], when: [{ arg: /a }], action: deny }\n").contains("needs one operator"));
        assert!(err("version: 1\ndefault: deny\nrules:\n  - { name: x, tools: [a], action: allow, approvers: [U1] }\n").contains("only apply"));
        assert!(err("version: 1\ndefault: deny\nrules:\n  - { name: x, tools: [a], action: approve, approvers: [bob] }\n").contains("Slack user id"));
        assert!(err("version: 1\ndefault: deny\nrules:\n  - { name: x, tools: [a], action: approve, timeout: soon }\n").contains("bad duration"));
        assert!(
            err("version: 1\ndefault: deny\nrules:\n  - { name: x, tools: [], action: deny }\n")
                .contains("at least one")
        );
        assert!(err("version: 1\ndefault: deny\nrules:\n  - { name: x, tools: [a], action: deny }\n  - { name: x, tools: [b], action: deny }\n").contains("unique"));
        assert!(
            err("version: 1\ndefault: deny\nbudget: { max_tool_calls_per_session: 0 }\n")
                .contains("at least 1")
        );
        assert!(err("default: deny\n").contains("version"));
        assert!(err("version: 1\ndefault: deny\nrules:\n  - { name: x, tools: [a], action: approve, timeout: 0s }\n").contains("bad duration"));
    }

    const FAIL_CLOSED: &str = r#"
version: 1
default: allow
rules:
  - name: big refunds
    tools: [create_refund]
    when: [{ arg: /amount, gt: 100 }, { arg: /currency, in: [usd] }]
    action: approve
  - { name: small refunds, tools: [create_refund], action: allow }
  - { name: no prod, tools: [deploy], when: [{ arg: /env, matches: "^prod" }], action: deny }
  - { name: cheap, tools: [buy], when: [{ arg: /price, lt: 10 }], action: allow }
  - { name: buying, tools: [buy], action: approve }
"#;

    #[test]
    fn conditions_that_cannot_be_evaluated_never_fall_through_to_an_allow() {
        let p = Policy::parse(FAIL_CLOSED).unwrap();
        let rule = |t: &str, a: Value| p.evaluate(t, &a).rule.to_string();
        // A string where a number is compared, and a missing pointer: the approve rule matches.
        assert_eq!(
            rule("create_refund", json!({"amount": "500", "currency": "usd"})),
            "big refunds"
        );
        assert_eq!(
            rule("create_refund", json!({"currency": "usd"})),
            "big refunds"
        );
        // A condition that is known to fail still rules the rule out.
        assert_eq!(
            rule("create_refund", json!({"amount": "500", "currency": "gbp"})),
            "small refunds"
        );
        assert_eq!(
            rule("create_refund", json!({"amount": 50, "currency": "usd"})),
            "small refunds"
        );
        // A non-string under `matches` makes the deny rule match.
        assert_eq!(rule("deploy", json!({"env": 1})), "no prod");
        assert_eq!(rule("deploy", json!({})), "no prod");
        assert_eq!(rule("deploy", json!({"env": "dev"})), "default");
        // An allow rule that cannot be evaluated is skipped.
        assert_eq!(rule("buy", json!({"price": "5"})), "buying");
        assert_eq!(rule("buy", json!({"price": 5})), "cheap");
    }

    #[test]
    fn the_assessment_names_the_rules_it_could_not_evaluate() {
        let p = Policy::parse(FAIL_CLOSED).unwrap();
        let a = p.assess("buy", &json!({}), &agent());
        assert_eq!(
            (a.verdict.rule.as_ref(), a.unevaluable.len()),
            ("buying", 1)
        );
        assert_eq!(a.unevaluable[0].as_ref(), "cheap");
        let a = p.assess(
            "create_refund",
            &json!({"amount": "1", "currency": "usd"}),
            &agent(),
        );
        assert_eq!(a.verdict.action, Action::Approve);
        assert_eq!(
            a.unevaluable.iter().map(|r| r.as_ref()).collect::<Vec<_>>(),
            ["big refunds"]
        );
        assert!(
            p.assess("buy", &json!({"price": 1}), &agent())
                .unevaluable
                .is_empty()
        );
    }

    #[test]
    fn argument_validation_is_on_unless_the_file_turns_it_off() {
        assert!(
            Policy::parse("version: 1\ndefault: deny\n")
                .unwrap()
                .validate_arguments
        );
        let off = Policy::parse("version: 1\ndefault: deny\nvalidate_arguments: false\n").unwrap();
        assert!(!off.validate_arguments);
        let bad = err("version: 1\ndefault: deny\nvalidate_arguments: maybe\n");
        assert!(bad.contains("line 3"), "{bad}");
    }

    #[test]
    fn durations_read_like_the_environment_s() {
        let p = Policy::parse("version: 1\ndefault: deny\nrules:\n  - { name: x, tools: [a], action: approve, timeout: 1h30m }\n").unwrap();
        assert_eq!(
            p.evaluate("a", &json!({})).timeout,
            Some(Duration::from_secs(5400))
        );
    }
}
