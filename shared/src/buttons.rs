//! The contract between the Slack message the notifier posts and the clicks the webhook reads.

/// `action_id` of the Approve button; its `value` is the hyphenated ticket id.
pub const APPROVE_ACTION_ID: &str = "airlock_approve";

/// `action_id` of the Deny button; its `value` is the hyphenated ticket id.
pub const DENY_ACTION_ID: &str = "airlock_deny";
