//! A policy's revision: a short hash of what the file says, not how it is written, so a
//! comment or re-indented line keeps the revision and a changed rule gets a new one.

use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::PolicyError;

/// Hex digits kept: enough to tell revisions apart on a message and in a metric label.
const LEN: usize = 12;

/// The revision of policy `text` (valid YAML): SHA-256 of its canonical JSON form.
pub(super) fn of(text: &str) -> Result<Arc<str>, PolicyError> {
    let value: serde_json::Value =
        serde_yaml::from_str(text).map_err(|e| PolicyError::Invalid(e.to_string()))?;
    let canonical = airlock_shared::canonical::to_canonical_string(&value);
    let digest = hex::encode(Sha256::digest(canonical.as_bytes()));
    Ok(digest[..LEN].into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_comments_keep_the_revision_and_a_changed_rule_changes_it() {
        let a =
            of("version: 1\ndefault: deny\nrules: [{name: r, tools: [\"x\"], action: allow}]\n")
                .unwrap();
        let b = of("# note\nversion: 1\ndefault: deny\nrules:\n  - action: allow\n    name: r\n    tools:\n      - x\n")
            .unwrap();
        let c =
            of("version: 1\ndefault: deny\nrules: [{name: r, tools: [\"y\"], action: allow}]\n")
                .unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.len(), LEN);
    }
}
