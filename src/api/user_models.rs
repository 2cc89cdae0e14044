//! Schemas of accounts and sessions. No schema here has a password or token hash: hashes never
//! leave the repository layer.

use poem_openapi::{types::Example, Enum, Object};
use time::{macros::datetime, OffsetDateTime};

use super::{envelope::envelope, text::Text};
use crate::{
    domain::user::{Role, User},
    service::auth::Session,
};

/// A role: `admin` (read, write, delete, admin), `moderator` (read, write, delete) or `user`
/// (read, write; changes only its own markets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum RoleView {
    /// Everything, including role changes.
    Admin,
    /// Everything but account administration.
    Moderator,
    /// Reads, and writes its own resources.
    User,
}

impl From<Role> for RoleView {
    fn from(r: Role) -> Self {
        match r {
            Role::Admin => Self::Admin,
            Role::Moderator => Self::Moderator,
            Role::User => Self::User,
        }
    }
}

impl From<RoleView> for Role {
    fn from(r: RoleView) -> Self {
        match r {
            RoleView::Admin => Self::Admin,
            RoleView::Moderator => Self::Moderator,
            RoleView::User => Self::User,
        }
    }
}

/// An account.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct UserView {
    /// User id.
    pub id: i64,
    /// Username (unique, case-insensitively).
    pub username: String,
    /// Role.
    pub role: RoleView,
    /// Credits available to stake.
    pub balance: i64,
    /// Sign-up time.
    pub created_at: OffsetDateTime,
}

impl From<User> for UserView {
    fn from(u: User) -> Self {
        UserView {
            id: u.id,
            username: u.username,
            role: u.role.into(),
            balance: u.balance,
            created_at: u.created_at,
        }
    }
}

impl Example for UserView {
    fn example() -> Self {
        UserView {
            id: 7,
            username: "alice".into(),
            role: RoleView::User,
            balance: 1000,
            created_at: datetime!(2026-11-01 12:00 UTC),
        }
    }
}

/// Tokens for a logged-in user.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct SessionView {
    /// Access JWT: send as `Authorization: Bearer <access_token>`.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// Opaque refresh token: exchange it at `POST /api/auth/refresh` for new tokens. It works
    /// once; presenting it again revokes the whole session.
    pub refresh_token: String,
    /// Seconds until the refresh token expires.
    pub refresh_expires_in: u64,
    /// The logged-in account.
    pub user: UserView,
}

impl From<Session> for SessionView {
    fn from(s: Session) -> Self {
        SessionView {
            access_token: s.access_token,
            token_type: "Bearer".into(),
            expires_in: s.expires_in,
            refresh_token: s.refresh_token,
            refresh_expires_in: s.refresh_expires_in,
            user: s.user.into(),
        }
    }
}

impl Example for SessionView {
    fn example() -> Self {
        SessionView {
            access_token: "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI3In0.c2lnbmF0dXJl".into(),
            token_type: "Bearer".into(),
            expires_in: 900,
            refresh_token: "9f2c4b7e0d1a3c5e7f9b1d3f5a7c9e1b3d5f7a9c1e3b5d7f9a1c3e5b7d9f1a3c"
                .into(),
            refresh_expires_in: 2_592_000,
            user: UserView::example(),
        }
    }
}

envelope!(
    /// One account.
    UserEnvelope { data: UserView }
);
envelope!(
    /// A new session.
    SessionEnvelope { data: SessionView }
);

/// A new account.
#[derive(Debug, Clone, Object)]
#[oai(example, deny_unknown_fields)]
pub struct RegisterBody {
    /// 3 to 32 characters: letters, digits, `_`, `-`, `.`; unique (case-insensitively).
    #[oai(validator(min_length = 3, max_length = 32, pattern = r"^[A-Za-z0-9_.\-]+$"))]
    pub username: Text,
    /// 8 to 128 characters.
    #[oai(validator(min_length = 8, max_length = 128))]
    pub password: Text,
}

impl Example for RegisterBody {
    fn example() -> Self {
        RegisterBody {
            username: "alice".into(),
            password: "correct horse battery".into(),
        }
    }
}

/// Login credentials.
#[derive(Debug, Clone, Object)]
#[oai(example, deny_unknown_fields)]
pub struct LoginBody {
    /// Username.
    #[oai(validator(min_length = 1, max_length = 32))]
    pub username: Text,
    /// Password.
    #[oai(validator(min_length = 1, max_length = 128))]
    pub password: Text,
}

impl Example for LoginBody {
    fn example() -> Self {
        LoginBody {
            username: "alice".into(),
            password: "correct horse battery".into(),
        }
    }
}

/// A refresh token.
#[derive(Debug, Clone, Object)]
#[oai(example, deny_unknown_fields)]
pub struct RefreshBody {
    /// The refresh token from the last login or refresh.
    #[oai(validator(min_length = 1, max_length = 256))]
    pub refresh_token: Text,
}

impl Example for RefreshBody {
    fn example() -> Self {
        RefreshBody {
            refresh_token: SessionView::example().refresh_token.as_str().into(),
        }
    }
}

/// A role change.
#[derive(Debug, Clone, Object)]
#[oai(example, deny_unknown_fields)]
pub struct UpdateUserBody {
    /// The new role.
    pub role: RoleView,
}

impl Example for UpdateUserBody {
    fn example() -> Self {
        UpdateUserBody {
            role: RoleView::Moderator,
        }
    }
}
