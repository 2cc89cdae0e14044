//! [`SearchRepository`] on PostgreSQL: full-text search on the generated `markets.search`
//! column (a `tsvector`, English stemming, names weighted above descriptions, GIN-indexed),
//! ranked by `ts_rank`; vectors in `market_vectors` as little-endian `f32` in `bytea` (the
//! same bytes as on SQLite; no pgvector needed: the index lives in agora's memory).

use std::{collections::HashMap, sync::Arc};

use async_trait::async_trait;
use futures_util::{pin_mut, TryStreamExt};

use super::{markets::status, now_ms, read, Conn, Pg, TxError};
use crate::{
    domain::market::MarketStatus,
    repo::{
        decode_vector as decode, encode_vector as encode, Change, MarketText, RepoError,
        SearchRepository, VectorSink,
    },
};

/// The search indexes in PostgreSQL.
pub struct PgSearchRepository {
    pg: Arc<Pg>,
}

impl PgSearchRepository {
    pub(super) fn new(pg: Arc<Pg>) -> Self {
        Self { pg }
    }
}

/// The `to_tsquery` text for `terms`: each one quoted as a lexeme (so no term is read as query
/// syntax), any of them matching.
fn ts_query(terms: &[String]) -> String {
    terms
        .iter()
        .map(|t| {
            t.chars()
                .filter(|c| c.is_alphanumeric())
                .collect::<String>()
        })
        .filter(|t| !t.is_empty())
        .map(|t| format!("'{t}'"))
        .collect::<Vec<_>>()
        .join(" | ")
}

/// Ranks: names (weight A) count double descriptions (B), and a match in a shorter text ranks
/// higher (normalization 1: divided by 1 + the log of the length), as bm25 does on SQLite.
const RANK: &str = "ts_rank('{0.1, 0.2, 0.5, 1.0}', m.search, q, 1)";

#[async_trait]
impl SearchRepository for PgSearchRepository {
    #[tracing::instrument(level = "debug", skip_all)]
    async fn term_matches(
        &self,
        term: String,
        status: Option<MarketStatus>,
        limit: u32,
    ) -> Result<Vec<(i64, f64)>, RepoError> {
        let query = ts_query(&[term]);
        if query.is_empty() {
            return Ok(Vec::new());
        }
        read(&self.pg, |client| async move {
            let status = status.map(MarketStatus::as_str);
            Conn::client(&client)
                .rows(
                    &format!(
                        "SELECT m.id, {RANK} AS rank FROM markets m, to_tsquery('english', $1) q
                          WHERE m.search @@ q AND ($2::text IS NULL OR m.status = $2)
                          ORDER BY rank DESC, m.id LIMIT $3"
                    ),
                    &[&query, &status, &i64::from(limit)],
                )
                .await?
                .iter()
                .map(|r| Ok((r.try_get(0)?, f64::from(r.try_get::<_, f32>(1)?))))
                .collect()
        })
        .await
    }

    async fn statuses(&self, ids: Vec<i64>) -> Result<HashMap<i64, MarketStatus>, RepoError> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        read(&self.pg, |client| async move {
            Conn::client(&client)
                .rows("SELECT id, status FROM markets WHERE id = ANY($1)", &[&ids])
                .await?
                .iter()
                .map(|r| Ok((r.try_get(0)?, status(r.try_get(1)?)?)))
                .collect()
        })
        .await
    }

    async fn text(
        &self,
        id: i64,
        model: String,
    ) -> Result<Option<(MarketText, Option<String>, MarketStatus)>, RepoError> {
        read(&self.pg, |client| async move {
            Conn::client(&client)
                .opt(
                    "SELECT m.name, m.description, v.content_hash, m.status
                       FROM markets m
                       LEFT JOIN market_vectors v ON v.market_id = m.id AND v.model = $2
                      WHERE m.id = $1",
                    &[&id, &model],
                )
                .await?
                .map(|r| {
                    Ok((
                        MarketText {
                            name: r.try_get(0)?,
                            description: r.try_get(1)?,
                        },
                        r.try_get(2)?,
                        status(r.try_get(3)?)?,
                    ))
                })
                .transpose()
        })
        .await
    }

    async fn store_vector(
        &self,
        id: i64,
        model: String,
        text: MarketText,
        vector: Vec<f32>,
    ) -> Result<bool, RepoError> {
        let hash = text.content_hash(&model);
        let stored = read(&self.pg, |client| async move {
            let stored = Conn::client(&client)
                .exec(
                    "INSERT INTO market_vectors (market_id, model, content_hash, vector, updated_at)
                     SELECT id, $2, $3, $4, $5 FROM markets
                      WHERE id = $1 AND name = $6 AND description IS NOT DISTINCT FROM $7
                     ON CONFLICT (market_id) DO UPDATE SET
                        model = excluded.model, content_hash = excluded.content_hash,
                        vector = excluded.vector, updated_at = excluded.updated_at",
                    &[
                        &id,
                        &model,
                        &hash,
                        &encode(&vector),
                        &now_ms(),
                        &text.name,
                        &text.description,
                    ],
                )
                .await?;
            Ok(stored == 1)
        })
        .await?;
        if stored {
            self.pg.announcer.send(vec![Change::Vector(id)]);
        }
        Ok(stored)
    }

    async fn vector(
        &self,
        id: i64,
        model: String,
    ) -> Result<Option<(Vec<f32>, MarketStatus)>, RepoError> {
        read(&self.pg, |client| async move {
            Conn::client(&client)
                .opt(
                    "SELECT v.vector, m.status FROM market_vectors v
                       JOIN markets m ON m.id = v.market_id
                      WHERE v.market_id = $1 AND v.model = $2",
                    &[&id, &model],
                )
                .await?
                .map(|r| Ok((decode(r.try_get::<_, &[u8]>(0)?), status(r.try_get(1)?)?)))
                .transpose()
        })
        .await
    }

    async fn each_vector(&self, model: String, mut each: VectorSink) -> Result<u64, RepoError> {
        let mut client = self.pg.client().await?;
        let result = async {
            // One snapshot for the count and the rows; the rows are streamed, not collected.
            let tx = client
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await?;
            // Loading every vector takes as long as it takes, not a request's bound.
            tx.batch_execute("SET LOCAL statement_timeout = 0").await?;
            let count: i64 = tx
                .query_one(
                    "SELECT count(*) FROM market_vectors WHERE model = $1",
                    &[&model],
                )
                .await?
                .try_get(0)?;
            each(count, None);
            let rows = tx
                .query_raw(
                    "SELECT v.market_id, v.vector, m.status FROM market_vectors v
                       JOIN markets m ON m.id = v.market_id
                      WHERE v.model = $1",
                    [&model],
                )
                .await?;
            pin_mut!(rows);
            let (mut n, mut vector) = (0, Vec::new());
            while let Some(row) = rows.try_next().await? {
                let blob: &[u8] = row.try_get(1)?;
                // One buffer for every row: loading 100,000 vectors allocates nothing per row.
                vector.clear();
                vector.extend(
                    blob.chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                );
                each(row.try_get(0)?, Some((&vector, status(row.try_get(2)?)?)));
                n += 1;
            }
            tx.commit().await?;
            Ok::<_, TxError>(n)
        }
        .await;
        result.map_err(RepoError::from)
    }

    async fn markets_to_index(
        &self,
        model: String,
        missing_only: bool,
    ) -> Result<Vec<i64>, RepoError> {
        read(&self.pg, |client| async move {
            Conn::client(&client)
                .rows(
                    "SELECT m.id FROM markets m
                      WHERE NOT $2 OR NOT EXISTS (
                            SELECT 1 FROM market_vectors v
                             WHERE v.market_id = m.id AND v.model = $1)
                      ORDER BY m.id",
                    &[&model, &missing_only],
                )
                .await?
                .iter()
                .map(|r| Ok(r.try_get(0)?))
                .collect()
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_become_quoted_lexemes_any_of_which_match() {
        use crate::domain::search::keywords;
        assert_eq!(
            ts_query(&keywords("Will the Fed cut rates?")),
            "'fed' | 'cut' | 'rates'"
        );
        assert_eq!(
            ts_query(&keywords("x:* & !y | (z) <-> 'w'")),
            "'x' | 'y' | 'z' | 'w'"
        );
        assert_eq!(ts_query(&["a'b".into(), "'".into()]), "'ab'");
    }
}
