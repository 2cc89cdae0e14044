//! The caller's account and account administration.

use std::sync::Arc;

use poem_openapi::{param::Path, payload::Json, OpenApi};

use super::{
    body::JsonBody,
    error::ApiError,
    security::BearerAuth,
    user_models::{UpdateUserBody, UserEnvelope},
    ApiTags,
};
use crate::service::users::UserService;

/// Users API.
pub struct UsersApi {
    /// Account reads and administration.
    pub users: Arc<UserService>,
}

#[OpenApi(tag = "ApiTags::Users")]
impl UsersApi {
    /// Get the caller's account
    ///
    /// The account the bearer token belongs to, with its balance.
    #[oai(path = "/api/me", method = "get", operation_id = "get_me")]
    async fn get_me(&self, auth: BearerAuth) -> Result<Json<UserEnvelope>, ApiError> {
        let user = self.users.me(&auth.0).await?;
        Ok(Json(UserEnvelope::new(user.into())))
    }

    /// Change a user's role
    ///
    /// Admins only (403 for everyone else, for their own account too). The new role shows in the
    /// user's tokens from their next login or refresh.
    #[oai(
        path = "/api/users/:id",
        method = "patch",
        operation_id = "update_user"
    )]
    async fn update_user(
        &self,
        auth: BearerAuth,
        /// User id.
        #[oai(validator(minimum(value = "1")))]
        id: Path<i64>,
        body: JsonBody<UpdateUserBody>,
    ) -> Result<Json<UserEnvelope>, ApiError> {
        let user = self
            .users
            .set_role(&auth.0, id.0, body.0.role.into())
            .await?;
        Ok(Json(UserEnvelope::new(user.into())))
    }
}
