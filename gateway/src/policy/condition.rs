//! `when` conditions: a JSON pointer into the arguments and one operator, evaluated to holds,
//! fails, or cannot be evaluated.

use regex::Regex;
use serde::Deserialize;
use serde_json::Value;

/// One `when` condition: a JSON pointer into the arguments and exactly one operator.
#[derive(Debug, Deserialize)]
#[serde(try_from = "RawCondition")]
pub(super) struct Condition {
    pointer: String,
    op: Op,
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
    arg: String,
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
        if !c.arg.is_empty() && !c.arg.starts_with('/') {
            return Err(format!(
                "arg {:?} is not a JSON pointer (it must start with /, e.g. /amount)",
                c.arg
            ));
        }
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
            (Some(op), None) => Ok(Condition { pointer: c.arg, op }),
            (None, _) => Err(format!(
                "condition on {:?} needs one operator: equals, not_equals, lt, lte, gt, gte, in, matches or exists",
                c.arg
            )),
            (Some(_), Some(_)) => Err(format!(
                "condition on {:?} has more than one operator; use one condition per operator",
                c.arg
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
    pub(super) fn check(&self, args: &Value) -> Truth {
        let v = args.pointer(&self.pointer);
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
        serde_json::json!({ "arg": self.pointer, op: v })
    }
}
