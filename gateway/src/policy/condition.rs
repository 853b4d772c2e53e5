//! `when` conditions: a JSON pointer into the arguments (`arg`) or a claim of the caller's
//! access token (`claim`), and one operator, evaluated to holds, fails, or cannot be evaluated.

use regex::Regex;
use serde::Deserialize;
use serde_json::Value;

use crate::identity::Identity;

/// One `when` condition: what it looks at and exactly one operator.
#[derive(Debug, Deserialize)]
#[serde(try_from = "RawCondition")]
pub(super) struct Condition {
    subject: Subject,
    op: Op,
}

/// What a condition looks at.
#[derive(Debug)]
enum Subject {
    /// A JSON pointer into the call's arguments.
    Arg(String),
    /// A claim of the caller's access token: a name, or a JSON pointer into the claims.
    Claim(String),
}

#[derive(Debug)]
enum Op {
    Equals(Value),
    NotEquals(Value),
    Lt(f64),
    Lte(f64),
    Gt(f64),
    Gte(f64),
    In(Vec<Value>),
    Matches(Regex),
    Exists(bool),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCondition {
    #[serde(default)]
    arg: Option<String>,
    #[serde(default)]
    claim: Option<String>,
    equals: Option<Value>,
    not_equals: Option<Value>,
    lt: Option<f64>,
    lte: Option<f64>,
    gt: Option<f64>,
    gte: Option<f64>,
    #[serde(rename = "in")]
    in_: Option<Vec<Value>>,
    matches: Option<String>,
    exists: Option<bool>,
}

impl TryFrom<RawCondition> for Condition {
    type Error = String;

    fn try_from(c: RawCondition) -> Result<Self, Self::Error> {
        let subject = match (c.arg, c.claim) {
            (Some(arg), None) if arg.is_empty() || arg.starts_with('/') => Subject::Arg(arg),
            (Some(arg), None) => {
                return Err(format!(
                    "arg {arg:?} is not a JSON pointer (it must start with /, e.g. /amount)"
                ));
            }
            (None, Some(claim)) if !claim.is_empty() => Subject::Claim(claim),
            (None, Some(_)) => return Err("claim must name a claim (e.g. team)".into()),
            (Some(_), Some(_)) | (None, None) => {
                return Err("a condition needs exactly one of arg or claim".into());
            }
        };
        let shown = match &subject {
            Subject::Arg(p) | Subject::Claim(p) => p.clone(),
        };
        let mut ops = Vec::new();
        if let Some(v) = c.equals {
            ops.push(Op::Equals(v));
        }
        if let Some(v) = c.not_equals {
            ops.push(Op::NotEquals(v));
        }
        if let Some(v) = c.lt {
            ops.push(Op::Lt(v));
        }
        if let Some(v) = c.lte {
            ops.push(Op::Lte(v));
        }
        if let Some(v) = c.gt {
            ops.push(Op::Gt(v));
        }
        if let Some(v) = c.gte {
            ops.push(Op::Gte(v));
        }
        if let Some(v) = c.in_ {
            ops.push(Op::In(v));
        }
        if let Some(r) = c.matches {
            let re = Regex::new(&r).map_err(|e| format!("bad regex {r:?}: {e}"))?;
            ops.push(Op::Matches(re));
        }
        if let Some(v) = c.exists {
            ops.push(Op::Exists(v));
        }
        let mut ops = ops.into_iter();
        match (ops.next(), ops.next()) {
            (Some(op), None) => Ok(Condition { subject, op }),
            (None, _) => Err(format!(
                "condition on {shown:?} needs one operator: equals, not_equals, lt, lte, gt, gte, in, matches or exists"
            )),
            (Some(_), Some(_)) => Err(format!(
                "condition on {shown:?} has more than one operator; use one condition per operator"
            )),
        }
    }
}

fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// What a condition, or a rule's conditions together, say about a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Truth {
    Holds,
    Fails,
    /// The arguments do not have the type the condition compares (or lack it).
    Unevaluable,
}

impl Truth {
    fn of(b: bool) -> Self {
        if b { Self::Holds } else { Self::Fails }
    }

    fn of_number(v: Option<&Value>, test: impl Fn(f64) -> bool) -> Self {
        v.and_then(Value::as_f64)
            .map_or(Self::Unevaluable, |n| Self::of(test(n)))
    }
}

impl Condition {
    /// The condition on a call with `args` by `id`. A claim condition never holds for a
    /// static-token agent: it has no claims to compare, and is no token holder.
    pub(super) fn check(&self, args: &Value, id: &Identity) -> Truth {
        let v = match &self.subject {
            Subject::Arg(pointer) => args.pointer(pointer),
            Subject::Claim(_) if !id.has_token() => return Truth::Fails,
            Subject::Claim(name) => id.claim(name),
        };
        match &self.op {
            Op::Exists(want) => Truth::of(v.is_some() == *want),
            Op::Equals(x) => Truth::of(v.is_some_and(|v| json_eq(v, x))),
            // A missing argument is "not equal" to anything.
            Op::NotEquals(x) => Truth::of(!v.is_some_and(|v| json_eq(v, x))),
            Op::Lt(n) => Truth::of_number(v, |v| v < *n),
            Op::Lte(n) => Truth::of_number(v, |v| v <= *n),
            Op::Gt(n) => Truth::of_number(v, |v| v > *n),
            Op::Gte(n) => Truth::of_number(v, |v| v >= *n),
            Op::In(set) => Truth::of(v.is_some_and(|v| set.iter().any(|x| json_eq(v, x)))),
            Op::Matches(re) => v
                .and_then(Value::as_str)
                .map_or(Truth::Unevaluable, |s| Truth::of(re.is_match(s))),
        }
    }
}

impl Condition {
    /// The condition as it was written (pointer and operator), for the rule hash: two files
    /// that say the same thing hash alike, and any change to the condition changes the hash.
    pub(super) fn canonical(&self) -> Value {
        let (op, v) = match &self.op {
            Op::Equals(x) => ("equals", x.clone()),
            Op::NotEquals(x) => ("not_equals", x.clone()),
            Op::Lt(n) => ("lt", serde_json::json!(n)),
            Op::Lte(n) => ("lte", serde_json::json!(n)),
            Op::Gt(n) => ("gt", serde_json::json!(n)),
            Op::Gte(n) => ("gte", serde_json::json!(n)),
            Op::In(set) => ("in", Value::Array(set.clone())),
            Op::Matches(re) => ("matches", Value::String(re.as_str().to_owned())),
            Op::Exists(b) => ("exists", Value::Bool(*b)),
        };
        match &self.subject {
            Subject::Arg(p) => serde_json::json!({ "arg": p, op: v }),
            Subject::Claim(c) => serde_json::json!({ "claim": c, op: v }),
        }
    }

    /// The claim this condition looks at, if it looks at one (shown to approvers).
    pub(super) fn claim(&self) -> Option<&str> {
        match &self.subject {
            Subject::Claim(c) => Some(c),
            Subject::Arg(_) => None,
        }
    }
}
