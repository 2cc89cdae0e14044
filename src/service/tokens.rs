//! Access tokens (HS256 JWTs with pinned algorithm and every registered claim checked) and
//! opaque refresh tokens (random, stored only as SHA-256 hashes).

use std::time::Duration;

use jsonwebtoken::{
    decode, encode, errors::ErrorKind, Algorithm, DecodingKey, EncodingKey, Header, Validation,
};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::{
    domain::user::{Role, User},
    error::AppError,
};

/// Shortest accepted signing secret, in bytes.
pub const SECRET_MIN: usize = 32;
/// `iss` of every token.
pub const ISSUER: &str = "agora";
/// `aud` of every token.
pub const AUDIENCE: &str = "agora-api";
/// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
pub const LEEWAY_SECS: u64 = 10;

/// The claims of an access token.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    /// User id.
    pub sub: String,
    /// Role at issue time.
    pub role: String,
    /// Issued at (Unix seconds).
    pub iat: i64,
    /// Not before.
    pub nbf: i64,
    /// Expires.
    pub exp: i64,
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// Token id.
    pub jti: String,
    /// The session (login) the token belongs to: its refresh-token family. Logging out or a
    /// replayed refresh token ends the session, and with it every access token it issued.
    pub sid: String,
}

/// What a correctly signed, current access token claims; whether its session and account
/// still stand is [`Authenticator`](super::authenticator::Authenticator)'s question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSubject {
    /// The user id.
    pub user_id: i64,
    /// The session id (refresh-token family).
    pub session: String,
}

/// Issues and verifies tokens.
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    access_ttl: Duration,
    refresh_ttl: Duration,
}

/// A freshly issued access token.
pub struct AccessToken {
    /// The JWT.
    pub token: String,
    /// Seconds until it expires.
    pub expires_in: u64,
}

impl Tokens {
    /// Tokens signed with `secret` (already checked to be at least [`SECRET_MIN`] bytes).
    pub fn new(secret: &[u8], access_ttl: Duration, refresh_ttl: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        Tokens {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            access_ttl,
            refresh_ttl,
        }
    }

    /// Lifetime of refresh tokens.
    pub fn refresh_ttl(&self) -> Duration {
        self.refresh_ttl
    }

    /// A signed access token for `user` in `session` (its refresh-token family).
    pub fn issue(&self, user: &User, session: &str) -> Result<AccessToken, AppError> {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let claims = Claims {
            sub: user.id.to_string(),
            role: user.role.as_str().into(),
            iat: now,
            nbf: now,
            exp: now + self.access_ttl.as_secs() as i64,
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            jti: uuid::Uuid::new_v4().to_string(),
            sid: session.to_owned(),
        };
        let token = encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| AppError::Internal(format!("token signing failed: {e}")))?;
        Ok(AccessToken {
            token,
            expires_in: self.access_ttl.as_secs(),
        })
    }

    /// Who an access token speaks for, or `Unauthorized` saying why not. The signature and
    /// every registered claim are checked; the role it was issued with is not trusted (it may
    /// have changed since), only the user and session ids are returned.
    pub fn verify(&self, token: &str) -> Result<TokenSubject, AppError> {
        let data = decode::<Claims>(token, &self.decoding, &self.validation).map_err(|e| {
            AppError::Unauthorized(
                match e.kind() {
                    ErrorKind::ExpiredSignature => "the access token has expired",
                    ErrorKind::ImmatureSignature => "the access token is not valid yet",
                    ErrorKind::InvalidSignature => "the access token signature is invalid",
                    ErrorKind::InvalidAudience | ErrorKind::InvalidIssuer => {
                        "the access token is not for this service"
                    }
                    ErrorKind::MissingRequiredClaim(_) => "the access token lacks a required claim",
                    ErrorKind::InvalidAlgorithm => "the access token uses an unsupported algorithm",
                    _ => "the access token is malformed",
                }
                .into(),
            )
        })?;
        let claims = data.claims;
        let now = OffsetDateTime::now_utc().unix_timestamp();
        if claims.iat > now + LEEWAY_SECS as i64 {
            return Err(AppError::Unauthorized(
                "the access token was issued in the future".into(),
            ));
        }
        let user_id = claims
            .sub
            .parse()
            .map_err(|_| AppError::Unauthorized("the access token subject is invalid".into()))?;
        if Role::parse(&claims.role).is_none() {
            return Err(AppError::Unauthorized(
                "the access token role is invalid".into(),
            ));
        }
        Ok(TokenSubject {
            user_id,
            session: claims.sid,
        })
    }

    /// A new opaque refresh token and the hash to store for it.
    pub fn new_refresh(&self) -> (String, String) {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let token = hex::encode(bytes);
        let hash = hash_refresh(&token);
        (token, hash)
    }
}

/// The stored form of a refresh token.
pub fn hash_refresh(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}
