//! Users as markets see them.

/// The public face of a user, embedded in market views.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSummary {
    /// User id.
    pub id: i64,
    /// Unique username.
    pub username: String,
}
