//! Users as others see and manage them: the caller's own account, role changes by admins.

use std::sync::Arc;

use super::authenticator::Authenticator;
use crate::{
    domain::user::{Actor, Permission, Role, User},
    error::AppError,
    repo::UserRepository,
};

/// Account reads and administration.
pub struct UserService {
    users: Arc<dyn UserRepository>,
    authenticator: Arc<Authenticator>,
}

impl UserService {
    /// The service over `users`; role changes reach `authenticator` at once.
    pub fn new(users: Arc<dyn UserRepository>, authenticator: Arc<Authenticator>) -> Self {
        Self {
            users,
            authenticator,
        }
    }

    /// The caller's account.
    pub async fn me(&self, actor: &Actor) -> Result<User, AppError> {
        require(actor, Permission::Read)?;
        // The token is valid but its account is gone (deleted): treat the token as invalid.
        self.users
            .get(actor.user_id)
            .await?
            .ok_or_else(|| AppError::Unauthorized("the account no longer exists".into()))
    }

    /// Changes a user's role. Admins only; nobody else can change any role, their own included.
    pub async fn set_role(&self, actor: &Actor, id: i64, role: Role) -> Result<User, AppError> {
        require(actor, Permission::Admin)?;
        let user = self
            .users
            .set_role(id, role)
            .await?
            .ok_or(AppError::NotFound("user"))?;
        // The user's tokens act with the new role from the next request on.
        self.authenticator.forget_user(id);
        Ok(user)
    }
}

/// `Forbidden` unless the actor's role grants `p`.
pub fn require(actor: &Actor, p: Permission) -> Result<(), AppError> {
    if actor.can(p) {
        Ok(())
    } else {
        Err(AppError::forbidden(format!(
            "the {} role may not do this",
            actor.role.as_str()
        )))
    }
}
