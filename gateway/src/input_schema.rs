//! The tools' input schemas, compiled once per `tools/list` answer, and the check of a call's
//! arguments against them (JSON Schema 2020-12 unless a schema's `$schema` says otherwise).
//!
//! A schema can only refer to itself: the validator is built without network or file
//! resolvers, so an upstream schema never makes the gateway fetch anything.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use jsonschema::Validator;
use serde::Serialize;
use serde_json::Value;

/// How many violations a refusal names, and how long each message may be.
const MAX_VIOLATIONS: usize = 5;
const MAX_MESSAGE: usize = 200;
/// Violations counted past the named ones; a huge call is not walked to its end.
const MAX_COUNTED: usize = 100;
/// Sessions remembered as listed in full before the memory starts over.
const MAX_LISTED_SESSIONS: usize = 10_000;

/// One tool's compiled schema, or why it did not compile.
type Compiled = Result<Arc<Validator>, Arc<str>>;

/// The compiled schemas of the upstream's tools.
#[derive(Default)]
pub struct InputSchemas {
    /// By `tools/list` cursor ("" for the first page), then by tool name: a fresh answer for a
    /// page replaces that page's tools.
    pages: Mutex<HashMap<String, Arc<HashMap<String, Compiled>>>>,
    /// The `x-mcp-header` annotations of each tool (2026-07-28), by tool name.
    params: Mutex<HashMap<String, Arc<[ParamHeader]>>>,
    /// Sessions in which the gateway listed every page itself.
    listed: Mutex<HashSet<String>>,
    /// One listing at a time: calls that wait for it find its result.
    pub listing: tokio::sync::Mutex<()>,
}

/// Where and why arguments do not fit.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Violation {
    /// A JSON pointer into the arguments.
    pub path: String,
    /// The schema keyword that failed (`type`, `required`, ...).
    pub keyword: String,
    pub message: String,
}

/// Why a call's arguments were not accepted.
#[derive(Debug, thiserror::Error)]
pub enum ArgumentsError {
    #[error("arguments do not fit the tool's inputSchema")]
    Invalid {
        violations: Vec<Violation>,
        /// Violations found beyond those named.
        more: usize,
    },
    #[error("unknown tool {0:?}: the upstream does not list it")]
    UnknownTool(String),
    #[error("arguments could not be checked: the tool's inputSchema does not compile: {0}")]
    BadSchema(Arc<str>),
    #[error("arguments could not be checked: the upstream's tools/list failed: {0}")]
    Unlisted(String),
}

/// The outcome of looking a tool up.
pub enum Lookup {
    Found(Compiled),
    /// Not in any page seen; `listed` says whether this session already listed every page.
    Missing {
        listed: bool,
    },
}

impl InputSchemas {
    /// Compiles the schemas of one `tools/list` result page.
    pub fn put_page(&self, cursor: &str, result: &Value) {
        let tools = result.get("tools").and_then(Value::as_array);
        let page: HashMap<String, Compiled> = tools
            .into_iter()
            .flatten()
            .filter_map(|t| {
                let name = t.get("name")?.as_str()?.to_owned();
                Some((name, compile(t.get("inputSchema"))))
            })
            .collect();
        if let Ok(mut pages) = self.pages.lock() {
            pages.insert(cursor.to_owned(), Arc::new(page));
        }
        if let Ok(mut params) = self.params.lock() {
            for t in tools.into_iter().flatten() {
                if let Some(name) = t.get("name").and_then(Value::as_str) {
                    let a = t.get("inputSchema").map(annotations).unwrap_or_default();
                    params.insert(name.to_owned(), a.into());
                }
            }
        }
    }

    /// The `x-mcp-header` annotations of `tool`, if some page listed it.
    pub fn param_headers(&self, tool: &str) -> Option<Arc<[ParamHeader]>> {
        self.params.lock().ok()?.get(tool).cloned()
    }

    /// Remembers that `session` listed every page.
    pub fn mark_listed(&self, session: &str) {
        if let Ok(mut l) = self.listed.lock() {
            if l.len() >= MAX_LISTED_SESSIONS {
                l.clear();
            }
            l.insert(session.to_owned());
        }
    }

    /// The schema of `tool`, if some page lists it.
    pub fn lookup(&self, tool: &str, session: &str) -> Lookup {
        let found = self
            .pages
            .lock()
            .ok()
            .and_then(|pages| pages.values().find_map(|p| p.get(tool).cloned()));
        match found {
            Some(c) => Lookup::Found(c),
            None => Lookup::Missing {
                listed: self.listed.lock().is_ok_and(|l| l.contains(session)),
            },
        }
    }
}

/// One `x-mcp-header` annotation of a tool: the header's token (lower case), the argument's
/// path of `properties` keys, and its declared type.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamHeader {
    pub token: String,
    pub path: Vec<String>,
    pub kind: Option<String>,
}

/// The `x-mcp-header` annotations reachable from the schema's root through `properties` only
/// (the spec's rule; others make the tool invalid, and the client drops it).
pub fn annotations(schema: &Value) -> Vec<ParamHeader> {
    let mut out = Vec::new();
    let mut stack: Vec<(Vec<String>, &Value)> = vec![(Vec::new(), schema)];
    while let Some((path, node)) = stack.pop() {
        let Some(props) = node.get("properties").and_then(Value::as_object) else {
            continue;
        };
        for (key, prop) in props {
            let mut p = path.clone();
            p.push(key.clone());
            if let Some(token) = prop.get("x-mcp-header").and_then(Value::as_str) {
                out.push(ParamHeader {
                    token: token.to_ascii_lowercase(),
                    path: p.clone(),
                    kind: prop.get("type").and_then(Value::as_str).map(str::to_owned),
                });
            }
            stack.push((p, prop));
        }
    }
    out
}

/// Checks `args` against a compiled schema.
pub fn check(compiled: &Compiled, args: &Value) -> Result<(), ArgumentsError> {
    let validator = compiled
        .as_ref()
        .map_err(|why| ArgumentsError::BadSchema(why.clone()))?;
    let mut errors = validator.iter_errors(args).take(MAX_COUNTED);
    let violations: Vec<Violation> = errors
        .by_ref()
        .take(MAX_VIOLATIONS)
        .map(|e| Violation {
            path: e.instance_path().to_string(),
            keyword: e.kind().keyword().to_owned(),
            message: bounded(&e.to_string()),
        })
        .collect();
    if violations.is_empty() {
        return Ok(());
    }
    Err(ArgumentsError::Invalid {
        violations,
        more: errors.count(),
    })
}

fn compile(schema: Option<&Value>) -> Compiled {
    let Some(schema) = schema else {
        return Err("the tool has no inputSchema".into());
    };
    jsonschema::validator_for(schema)
        .map(Arc::new)
        .map_err(|e| bounded(&e.to_string()).into())
}

fn bounded(s: &str) -> String {
    match s.char_indices().nth(MAX_MESSAGE) {
        Some((at, _)) => format!("{}...", &s[..at]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schemas() -> InputSchemas {
        let s = InputSchemas::default();
        s.put_page(
            "",
            &json!({"tools": [
                {"name": "create_refund", "inputSchema": {"type": "object",
                    "properties": {"amount": {"type": "number"}}, "required": ["amount"]}},
                {"name": "broken", "inputSchema": {"type": 12}},
                {"name": "remote", "inputSchema": {"$ref": "https://example.invalid/s.json"}},
                {"name": "bare"},
            ]}),
        );
        s
    }

    fn found(s: &InputSchemas, tool: &str) -> Compiled {
        match s.lookup(tool, "s1") {
            Lookup::Found(c) => c,
            Lookup::Missing { .. } => panic!("{tool} not found"),
        }
    }

    #[test]
    fn arguments_are_checked_and_violations_named() {
        let s = schemas();
        let c = found(&s, "create_refund");
        assert!(check(&c, &json!({"amount": 500})).is_ok());
        match check(&c, &json!({"amount": "500"})) {
            Err(ArgumentsError::Invalid { violations, more }) => {
                assert_eq!((violations[0].path.as_str(), more), ("/amount", 0));
                assert_eq!(violations[0].keyword, "type");
            }
            other => panic!("{other:?}"),
        }
        match check(&c, &json!({})) {
            Err(ArgumentsError::Invalid { violations, .. }) => {
                assert_eq!(violations[0].keyword, "required")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn many_violations_are_bounded() {
        let s = InputSchemas::default();
        s.put_page(
            "",
            &json!({"tools": [{"name": "t", "inputSchema": {"additionalProperties": {"type": "number"}}}]}),
        );
        let args: serde_json::Map<String, Value> = (0..300)
            .map(|i| (format!("k{i}"), json!("x".repeat(500))))
            .collect();
        match check(&found(&s, "t"), &Value::Object(args)) {
            Err(ArgumentsError::Invalid { violations, more }) => {
                assert_eq!(
                    (violations.len(), more),
                    (MAX_VIOLATIONS, MAX_COUNTED - MAX_VIOLATIONS)
                );
                assert!(
                    violations
                        .iter()
                        .all(|v| v.message.chars().count() <= MAX_MESSAGE + 3)
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn schemas_that_cannot_be_used_refuse_the_call() {
        let s = schemas();
        for tool in ["broken", "remote", "bare"] {
            assert!(
                matches!(
                    check(&found(&s, tool), &json!({})),
                    Err(ArgumentsError::BadSchema(_))
                ),
                "{tool}"
            );
        }
    }

    #[test]
    fn a_new_answer_for_a_page_replaces_its_tools() {
        let s = schemas();
        assert!(matches!(
            s.lookup("nope", "s1"),
            Lookup::Missing { listed: false }
        ));
        s.put_page("", &json!({"tools": [{"name": "nope", "inputSchema": {}}]}));
        assert!(matches!(
            s.lookup("create_refund", "s1"),
            Lookup::Missing { .. }
        ));
        assert!(matches!(s.lookup("nope", "s1"), Lookup::Found(Ok(_))));
        s.mark_listed("s1");
        assert!(matches!(
            s.lookup("other", "s1"),
            Lookup::Missing { listed: true }
        ));
        assert!(matches!(
            s.lookup("other", "s2"),
            Lookup::Missing { listed: false }
        ));
    }
}
