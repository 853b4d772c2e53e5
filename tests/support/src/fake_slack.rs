//! A faithful fake of the Slack Web API (filled in by the notifier work).
