//! The channel page a person clicks in a browser.

use axum::response::Html;

/// `GET /`.
pub async fn index() -> Html<&'static str> {
    Html(include_str!("page.html"))
}
