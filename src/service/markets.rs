//! Market rules: creation, edits (only while active, guarded by version), deletion, and the
//! search indexing each write enqueues (in the write's own transaction: a crash cannot lose it).
//!
//! Edits and deletions may carry an `If-Match` [`Precondition`] (strong comparison against the
//! market's entity tag). Once users other than the creator have staked, the creator can no
//! longer change the name, description or close time (409 `market_frozen`); moderators and
//! admins can. That rule is [`crate::domain::authority`], checked in the writing transaction.

use std::sync::Arc;

use super::{users::require, MarketChanged, MarketListener};
use crate::{
    domain::{
        authority::Standing,
        job::NewJob,
        market::{ListQuery, Market, MarketChanges, MarketPage, MarketStatus, NewMarket},
        precondition::Precondition,
        user::{Actor, Permission},
    },
    error::AppError,
    repo::{JobRepository, MarketRepository, RepoError},
};

/// How often an unconditional edit retries when a concurrent edit bumps the version between
/// its read and its write.
const EDIT_ATTEMPTS: usize = 3;

/// Market use cases.
pub struct MarketService {
    repo: Arc<dyn MarketRepository>,
    jobs: Arc<dyn JobRepository>,
    listener: Option<MarketListener>,
}

impl MarketService {
    /// A service over `repo`; `jobs` is woken when a write enqueued indexing.
    pub fn new(repo: Arc<dyn MarketRepository>, jobs: Arc<dyn JobRepository>) -> Self {
        Self {
            repo,
            jobs,
            listener: None,
        }
    }

    /// The service, telling `listener` of every market it deletes.
    pub fn telling(mut self, listener: MarketListener) -> Self {
        self.listener = Some(listener);
        self
    }

    /// A page of markets.
    pub async fn list(&self, query: ListQuery) -> Result<Arc<MarketPage>, AppError> {
        Ok(self.repo.list(query).await?)
    }

    /// One market, or `NotFound`.
    pub async fn get(&self, id: i64) -> Result<Arc<Market>, AppError> {
        self.repo.get(id).await?.ok_or(AppError::NotFound("market"))
    }

    /// Creates a market for the actor (who must be allowed to write, and still exist).
    pub async fn create(&self, actor: &Actor, market: NewMarket) -> Result<Market, AppError> {
        require(actor, Permission::Write)?;
        if market.creator_id != actor.user_id {
            return Err(AppError::forbidden(
                "markets are created in the caller's own name",
            ));
        }
        let market = self
            .repo
            .create(market, |m| {
                vec![NewJob::index_market(m.id, Some(m.creator.id))]
            })
            .await
            .map_err(|e| match e {
                RepoError::MissingReference => {
                    AppError::Unauthorized("the account no longer exists".into())
                }
                other => AppError::from(other),
            })?;
        // Its indexing job was committed with it.
        self.jobs.wake();
        Ok(market)
    }

    /// Changes a market's editable fields. With `if_match`, the change applies only while the
    /// market's current entity tag matches it (else 412); without, it applies to whatever
    /// version is current. The creator's changes to frozen fields get 409 `market_frozen`.
    pub async fn update(
        &self,
        actor: &Actor,
        id: i64,
        changes: MarketChanges,
        if_match: Option<Precondition>,
    ) -> Result<Market, AppError> {
        for _ in 0..EDIT_ATTEMPTS {
            let market = self.get(id).await?;
            let standing = standing(actor, &market)?;
            check_precondition(&market, if_match.as_ref())?;
            ensure_editable(&market)?;
            if changes.is_empty() {
                return Ok(Arc::unwrap_or_clone(market));
            }
            // The write applies only to this version, so the text it changes is decided here.
            let jobs = if changes.alters_text(&market) {
                vec![NewJob::index_market(id, Some(market.creator.id))]
            } else {
                Vec::new()
            };
            match self
                .repo
                .update(id, market.version, changes.clone(), standing, jobs)
                .await
            {
                // Changed since it was read: read it again (the precondition is checked
                // against the new version, so a conditional edit gets 412).
                Err(RepoError::VersionMismatch { .. }) => continue,
                Err(RepoError::NotFound) => return Err(AppError::NotFound("market")),
                other => {
                    let market = other?;
                    self.jobs.wake();
                    return Ok(market);
                }
            }
        }
        Err(AppError::conflict(
            "edit_conflict",
            "the market is being changed concurrently; retry",
        ))
    }

    /// Deletes a market, optionally only while its entity tag matches `if_match`.
    pub async fn delete(
        &self,
        actor: &Actor,
        id: i64,
        if_match: Option<Precondition>,
    ) -> Result<(), AppError> {
        for _ in 0..EDIT_ATTEMPTS {
            let market = self.get(id).await?;
            standing(actor, &market)?;
            check_precondition(&market, if_match.as_ref())?;
            if market.volume > 0 {
                return Err(AppError::conflict(
                    "market_has_stakes",
                    "a market that has had stakes cannot be deleted (cancel it to refund them)",
                ));
            }
            match self.repo.delete(id, market.version).await {
                Err(RepoError::VersionMismatch { .. }) => continue,
                Err(RepoError::NotFound) => return Err(AppError::NotFound("market")),
                other => {
                    other?;
                    if let Some(listener) = &self.listener {
                        listener(MarketChanged::Deleted(id));
                    }
                    return Ok(());
                }
            }
        }
        Err(AppError::conflict(
            "edit_conflict",
            "the market is being changed concurrently; retry",
        ))
    }
}

/// The actor's standing towards `market`, or 403 when it may not change it at all.
fn standing(actor: &Actor, market: &Market) -> Result<Standing, AppError> {
    Standing::of(actor, market.creator.id).ok_or_else(|| {
        AppError::forbidden("only the market's creator, a moderator or an admin may change it")
    })
}

fn check_precondition(market: &Market, if_match: Option<&Precondition>) -> Result<(), AppError> {
    match if_match {
        Some(p) if !p.holds(market) => Err(AppError::PreconditionFailed {
            current: market.version,
        }),
        _ => Ok(()),
    }
}

fn ensure_editable(market: &Market) -> Result<(), AppError> {
    if market.status == MarketStatus::Active {
        Ok(())
    } else {
        Err(AppError::conflict(
            "market_not_active",
            format!(
                "market {} is {} and can no longer be edited",
                market.id,
                market.status.as_str()
            ),
        ))
    }
}
