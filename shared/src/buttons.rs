//! The contract between the Slack message the notifier posts and the clicks the webhook reads.

/// `action_id` of the Approve button; its `value` is the hyphenated ticket id.
pub const APPROVE_ACTION_ID: &str = "airlock_approve";

/// `action_id` of the Deny button; its `value` is the hyphenated ticket id.
pub const DENY_ACTION_ID: &str = "airlock_deny";

/// `action_id` of the "Approve for …" button, offered when the rule allows a standing grant;
/// its `value` is the same as Approve's. It counts as an approval and, deciding, makes a grant.
pub const GRANT_ACTION_ID: &str = "airlock_approve_for";

/// `action_id` of the Revoke button on a decided message whose ticket made a grant; its `value`
/// is the same as Approve's.
pub const REVOKE_ACTION_ID: &str = "airlock_revoke_grant";
