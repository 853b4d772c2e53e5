//! Typed configuration from the environment, reporting every problem at once.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use secrecy::SecretString;

/// Everything that was wrong with the configuration.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "invalid configuration ({} problem(s)):",
            self.problems.len()
        )?;
        for p in &self.problems {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}

/// Reads variables and collects problems instead of stopping at the first.
pub struct Env {
    vars: HashMap<String, String>,
    problems: Vec<String>,
}

impl Env {
    /// The process environment.
    pub fn from_process() -> Self {
        Self::from_map(std::env::vars().collect())
    }

    /// A given set of variables (tests).
    pub fn from_map(vars: HashMap<String, String>) -> Self {
        Self {
            vars,
            problems: Vec::new(),
        }
    }

    /// An environment of exactly these pairs (tests and benches).
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Self {
        Self::from_map(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    /// The raw value, if set and not empty.
    pub fn raw(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.trim().is_empty())
    }

    /// A variable that must be set and parse.
    pub fn required<T: FromStr>(&mut self, name: &str) -> Option<T>
    where
        T::Err: fmt::Display,
    {
        match self.raw(name) {
            None => {
                self.problems
                    .push(format!("{name} is required but not set"));
                None
            }
            Some(_) => self.optional(name),
        }
    }

    /// A variable that may be unset; if set it must parse.
    pub fn optional<T: FromStr>(&mut self, name: &str) -> Option<T>
    where
        T::Err: fmt::Display,
    {
        let raw = self.raw(name)?.trim().to_owned();
        match raw.parse::<T>() {
            Ok(v) => Some(v),
            Err(e) => {
                self.problems.push(format!("{name}: invalid value: {e}"));
                None
            }
        }
    }

    /// A variable with a default.
    pub fn or<T: FromStr>(&mut self, name: &str, default: T) -> T
    where
        T::Err: fmt::Display,
    {
        self.optional(name).unwrap_or(default)
    }

    /// A humantime duration (`5m`, `30s`, `250ms`) with a default, which must be above zero.
    pub fn duration(&mut self, name: &str, default: Duration) -> Duration {
        let Some(raw) = self.raw(name).map(str::to_owned) else {
            return default;
        };
        match humantime::parse_duration(raw.trim()) {
            Ok(d) if d.is_zero() => {
                self.problems
                    .push(format!("{name}: must be greater than zero"));
                default
            }
            Ok(d) => d,
            Err(e) => {
                self.problems.push(format!(
                    "{name}: invalid duration {raw:?}: {e} (try 30s, 5m, 1h)"
                ));
                default
            }
        }
    }

    /// A secret; never echoed in problems.
    pub fn secret(&mut self, name: &str) -> Option<SecretString> {
        self.raw(name).map(|v| SecretString::from(v.to_owned()))
    }

    /// A secret that must be set; never echoed in problems.
    pub fn required_secret(&mut self, name: &str) -> Option<SecretString> {
        let v = self.secret(name);
        if v.is_none() {
            self.problems
                .push(format!("{name} is required but not set"));
        }
        v
    }

    /// A boolean (`true`/`false`/`1`/`0`) with a default.
    pub fn flag(&mut self, name: &str, default: bool) -> bool {
        match self.raw(name).map(|v| v.trim().to_ascii_lowercase()) {
            None => default,
            Some(v) if v == "true" || v == "1" || v == "yes" => true,
            Some(v) if v == "false" || v == "0" || v == "no" => false,
            Some(v) => {
                self.problems
                    .push(format!("{name}: expected true or false, got {v:?}"));
                default
            }
        }
    }

    /// Records a problem found by the caller.
    pub fn problem(&mut self, msg: impl Into<String>) {
        self.problems.push(msg.into());
    }

    /// Fails with every problem seen, if any.
    pub fn finish(self) -> Result<(), ConfigError> {
        if self.problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError {
                problems: self.problems,
            })
        }
    }
}

/// How logs are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line (deployed).
    Json,
    /// Human-readable (local).
    Pretty,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "json" => Ok(Self::Json),
            "pretty" => Ok(Self::Pretty),
            other => Err(format!("expected json or pretty, got {other:?}")),
        }
    }
}

/// A byte size: a plain number of bytes, or with a KiB/MiB suffix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteSize(pub usize);

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (num, mult) = if let Some(n) = s.strip_suffix("MiB") {
            (n, 1024 * 1024)
        } else if let Some(n) = s.strip_suffix("KiB") {
            (n, 1024)
        } else {
            (s, 1)
        };
        num.trim()
            .parse::<usize>()
            .ok()
            .and_then(|n| n.checked_mul(mult))
            .filter(|n| *n > 0)
            .map(ByteSize)
            .ok_or_else(|| {
                format!("expected a positive size like 4194304, 64KiB or 4MiB, got {s:?}")
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_is_reported_at_once() {
        let mut env = Env::from_map(HashMap::from([
            ("A_DURATION".to_owned(), "five minutes".to_owned()),
            ("A_SIZE".to_owned(), "-3".to_owned()),
        ]));
        let _: Option<String> = env.required("MISSING_ONE");
        let _ = env.duration("A_DURATION", Duration::from_secs(1));
        let _: Option<ByteSize> = env.optional("A_SIZE");
        let err = env.finish().unwrap_err();
        assert_eq!(err.problems.len(), 3, "{err}");
        let text = err.to_string();
        assert!(text.contains("MISSING_ONE is required"));
        assert!(text.contains("A_DURATION"));
        assert!(text.contains("A_SIZE"));
    }

    #[test]
    fn sizes_parse() {
        assert_eq!("4MiB".parse::<ByteSize>().ok(), Some(ByteSize(4 << 20)));
        assert_eq!("64KiB".parse::<ByteSize>().ok(), Some(ByteSize(64 << 10)));
        assert_eq!("100".parse::<ByteSize>().ok(), Some(ByteSize(100)));
        assert!("0".parse::<ByteSize>().is_err());
    }
}
