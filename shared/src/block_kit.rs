//! Slack's documented Block Kit limits, in characters: the notifier builds messages within them
//! and the Slack fake refuses messages that break them.

/// Blocks in one message.
pub const MAX_BLOCKS: usize = 50;
/// `text` of a section block.
pub const SECTION_TEXT: usize = 3000;
/// Each of a section's `fields`.
pub const SECTION_FIELD: usize = 2000;
/// Number of a section's `fields`.
pub const SECTION_FIELDS: usize = 10;
/// `text` of a header block.
pub const HEADER_TEXT: usize = 150;
/// Elements of a context block.
pub const CONTEXT_ELEMENTS: usize = 10;
/// A text element of a context block.
pub const CONTEXT_TEXT: usize = 3000;
/// An image element's `alt_text`.
pub const ALT_TEXT: usize = 2000;
/// Elements of an actions block.
pub const ACTIONS_ELEMENTS: usize = 25;
/// A button's label.
pub const BUTTON_TEXT: usize = 75;
/// A button's `value`.
pub const BUTTON_VALUE: usize = 2000;
/// A button's `url`.
pub const BUTTON_URL: usize = 3000;
/// `action_id` and `block_id`.
pub const ID: usize = 255;
/// A confirm dialog's title.
pub const CONFIRM_TITLE: usize = 100;
/// A confirm dialog's text.
pub const CONFIRM_TEXT: usize = 300;
/// A confirm dialog's button labels.
pub const CONFIRM_BUTTON: usize = 30;
/// `text` of a markdown block.
pub const MARKDOWN_TEXT: usize = 12_000;
/// A message's top-level `text` (Slack truncates at 40,000 and refuses far longer ones).
pub const MESSAGE_TEXT: usize = 40_000;
