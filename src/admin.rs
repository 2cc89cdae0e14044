//! Offline account administration: `agora users create`, the documented way to make the first
//! admin on a fresh data directory (it works whether or not a server is running on it).

use std::io::BufRead;

use crate::{
    app::{open_storage, StartError},
    config::{Config, CreateUserArgs, RoleArg},
    domain::user::{Credentials, Role, User},
    repo::RepoError,
    service::passwords::hash_blocking,
};

/// Creates an account with the given role and the signup grant.
pub async fn create_user(config: &Config, args: &CreateUserArgs) -> Result<User, StartError> {
    let password = match &args.password {
        Some(p) => p.clone(),
        None => {
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line).map_err(|e| {
                StartError::Init(format!("cannot read the password from stdin: {e}"))
            })?;
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
    };
    let credentials = Credentials::parse(&args.username, &password).map_err(|errs| {
        StartError::Init(
            errs.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        )
    })?;
    let role = match args.role {
        RoleArg::Admin => Role::Admin,
        RoleArg::Moderator => Role::Moderator,
        RoleArg::User => Role::User,
    };
    let hash = hash_blocking(&credentials.password).map_err(|e| StartError::Init(e.to_string()))?;
    let storage = open_storage(config).await?;
    let created = storage
        .users
        .create(credentials.username, hash, role, config.signup_grant)
        .await;
    storage.engine.close().await;
    created.map_err(|e| match e {
        RepoError::Duplicate(_) => {
            StartError::Init(format!("the username {} is taken", args.username))
        }
        other => StartError::Init(other.to_string()),
    })
}
