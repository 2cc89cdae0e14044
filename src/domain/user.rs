//! Users, roles and permissions, and the validated inputs that create accounts.

use time::OffsetDateTime;

use super::{FieldError, Problems};

/// Shortest username.
pub const USERNAME_MIN: usize = 3;
/// Longest username.
pub const USERNAME_MAX: usize = 32;
/// Shortest password, in characters.
pub const PASSWORD_MIN: usize = 8;
/// Longest password, in characters (bounds hashing work).
pub const PASSWORD_MAX: usize = 128;

/// What a role may do, as the seed defines it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Read resources.
    Read,
    /// Create resources and change one's own.
    Write,
    /// Change or delete anyone's resources (moderation).
    Delete,
    /// Administer accounts.
    Admin,
}

/// A user's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Everything.
    Admin,
    /// Everything but account administration.
    Moderator,
    /// Read, and write one's own.
    User,
}

impl Role {
    /// The one table of permissions.
    pub fn permissions(self) -> &'static [Permission] {
        use Permission::*;
        match self {
            Role::Admin => &[Read, Write, Delete, Admin],
            Role::Moderator => &[Read, Write, Delete],
            Role::User => &[Read, Write],
        }
    }

    /// True when the role grants `p`.
    pub fn has(self, p: Permission) -> bool {
        self.permissions().contains(&p)
    }

    /// Stored and serialized name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Moderator => "moderator",
            Role::User => "user",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "admin" => Some(Role::Admin),
            "moderator" => Some(Role::Moderator),
            "user" => Some(Role::User),
            _ => None,
        }
    }
}

/// The public face of a user, embedded in market views.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSummary {
    /// User id.
    pub id: i64,
    /// Unique username.
    pub username: String,
}

/// An account (never with its password hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// User id.
    pub id: i64,
    /// Unique (case-insensitively) username.
    pub username: String,
    /// Role.
    pub role: Role,
    /// Credits available.
    pub balance: i64,
    /// Sign-up time.
    pub created_at: OffsetDateTime,
}

/// Who is acting: the authenticated caller, as its access token says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Actor {
    /// The caller's user id.
    pub user_id: i64,
    /// The caller's role when the token was issued.
    pub role: Role,
}

impl Actor {
    /// True when the actor's role grants `p`.
    pub fn can(&self, p: Permission) -> bool {
        self.role.has(p)
    }

    /// True when the actor may change or delete a resource owned by `owner`: its own with
    /// `Write`, anyone's with `Delete` (moderators and admins).
    pub fn may_modify(&self, owner: i64) -> bool {
        (self.user_id == owner && self.can(Permission::Write)) || self.can(Permission::Delete)
    }
}

/// Validated credentials for a new account.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// Username as given (uniqueness is case-insensitive).
    pub username: String,
    /// The plain password, to be hashed at once.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// Validates a username and password for sign-up.
    pub fn parse(username: &str, password: &str) -> Result<Self, Vec<FieldError>> {
        let mut p = Problems::default();
        let len = username.chars().count();
        if !(USERNAME_MIN..=USERNAME_MAX).contains(&len) {
            p.add(
                "username",
                format!("must be {USERNAME_MIN} to {USERNAME_MAX} characters long"),
            );
        } else if !username
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            p.add(
                "username",
                "may contain only letters, digits, '_', '-' and '.'",
            );
        }
        let len = password.chars().count();
        if !(PASSWORD_MIN..=PASSWORD_MAX).contains(&len) {
            p.add(
                "password",
                format!("must be {PASSWORD_MIN} to {PASSWORD_MAX} characters long"),
            );
        }
        p.finish(Credentials {
            username: username.to_owned(),
            password: password.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permissions_follow_the_seed_table() {
        assert!(Role::Admin.has(Permission::Admin));
        assert!(!Role::Moderator.has(Permission::Admin) && Role::Moderator.has(Permission::Delete));
        assert!(Role::User.has(Permission::Write) && !Role::User.has(Permission::Delete));
    }

    #[test]
    fn owners_and_moderators_may_modify() {
        let user = Actor {
            user_id: 1,
            role: Role::User,
        };
        assert!(user.may_modify(1) && !user.may_modify(2));
        assert!(Actor {
            user_id: 3,
            role: Role::Moderator
        }
        .may_modify(2));
    }

    #[test]
    fn credentials_are_checked() {
        assert!(Credentials::parse("alice_1", "correct horse").is_ok());
        let errs = Credentials::parse("a b", "short").unwrap_err();
        assert_eq!(
            errs.iter().map(|e| e.field.as_str()).collect::<Vec<_>>(),
            ["username", "password"]
        );
        assert!(Credentials::parse("ab", "long enough").is_err());
        assert!(Credentials::parse("alice", &"x".repeat(129)).is_err());
        assert!(
            !format!("{:?}", Credentials::parse("alice", "secret pw").unwrap()).contains("secret")
        );
    }
}
