//! Request ids: a sane incoming `X-Request-Id` is kept, anything else replaced by a UUID; the
//! id is visible to the whole request through a task-local.

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The header carrying the id both ways.
pub const HEADER: &str = "x-request-id";

/// The incoming id if it is 1..=64 characters of `[A-Za-z0-9._-]`, else a fresh UUID v4.
pub fn accept_or_generate(incoming: Option<&str>) -> String {
    match incoming {
        Some(id)
            if (1..=64).contains(&id.len())
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) =>
        {
            id.to_owned()
        }
        _ => uuid::Uuid::new_v4().to_string(),
    }
}

/// Runs `fut` with `id` as the current request id.
pub async fn scope<F: std::future::Future>(id: String, fut: F) -> F::Output {
    REQUEST_ID.scope(id, fut).await
}

/// The current request's id (empty outside a request).
pub fn current() -> String {
    REQUEST_ID.try_with(Clone::clone).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_sane_ids_and_replaces_the_rest() {
        assert_eq!(accept_or_generate(Some("abc-123_x.y")), "abc-123_x.y");
        for bad in ["", "has space", "new\nline", &"x".repeat(65), "ünï"] {
            let id = accept_or_generate(Some(bad));
            assert_ne!(id, bad);
            assert!(uuid::Uuid::parse_str(&id).is_ok());
        }
    }
}
