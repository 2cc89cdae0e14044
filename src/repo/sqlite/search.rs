//! [`SearchRepository`] on SQLite: FTS5 (`markets_fts`, kept in step with `markets` by the
//! triggers of migration 6; ranked by bm25) and `market_vectors` (little-endian f32 blobs).

use std::{collections::HashMap, sync::Arc};

use async_trait::async_trait;
use rusqlite::{params, OptionalExtension};
use time::OffsetDateTime;

use super::{markets::status_at, to_millis};
use crate::repo::{decode_vector as decode, encode_vector as encode};
use crate::{
    db::{snapshot, Db},
    domain::market::MarketStatus,
    repo::{MarketText, RepoError, SearchRepository, VectorSink},
};

/// The search indexes in SQLite.
pub struct SqliteSearchRepository {
    db: Arc<Db>,
}

impl SqliteSearchRepository {
    /// A repository over `db`.
    pub fn new(db: Arc<Db>) -> Self {
        Self { db }
    }
}

/// The FTS5 query for `terms`: each one quoted (so no term is read as FTS5 syntax), any of
/// them matching.
fn match_query(terms: &[String]) -> String {
    terms
        .iter()
        .map(|t| format!("\"{}\"", t.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(" OR ")
}

#[async_trait]
impl SearchRepository for SqliteSearchRepository {
    #[tracing::instrument(level = "debug", skip_all)]
    async fn term_matches(
        &self,
        term: String,
        status: Option<MarketStatus>,
        limit: u32,
    ) -> Result<Vec<(i64, f64)>, RepoError> {
        let query = match_query(&[term]);
        self.db
            .read(move |conn| {
                // Without a status filter the index alone answers (its rowids are market ids,
                // kept by triggers): joining every match to `markets` cost 4x here. bm25 is
                // negative, lower is better: the score is its opposite.
                let sql = match status {
                    None => {
                        "SELECT rowid, bm25(markets_fts, 2.0, 1.0) AS rank FROM markets_fts
                          WHERE markets_fts MATCH ?1 ORDER BY rank, rowid LIMIT ?3"
                    }
                    Some(_) => {
                        "SELECT m.id, bm25(markets_fts, 2.0, 1.0) AS rank
                           FROM markets_fts f JOIN markets m ON m.id = f.rowid
                          WHERE markets_fts MATCH ?1 AND m.status = ?2
                          ORDER BY rank, m.id LIMIT ?3"
                    }
                };
                let matches = conn
                    .prepare_cached(sql)?
                    .query_map(
                        params![query, status.map(MarketStatus::as_str), limit],
                        |r| Ok((r.get(0)?, -r.get::<_, f64>(1)?)),
                    )?
                    .collect::<rusqlite::Result<Vec<(i64, f64)>>>()?;
                Ok(matches)
            })
            .await
    }

    async fn statuses(&self, ids: Vec<i64>) -> Result<HashMap<i64, MarketStatus>, RepoError> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        self.db
            .read(move |conn| {
                // Ids are integers: listing them inline is safe and keeps one statement.
                let list = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
                let mut stmt = conn.prepare(&format!(
                    "SELECT id, status FROM markets WHERE id IN ({list})"
                ))?;
                let rows = stmt.query_map([], |r| Ok((r.get(0)?, status_at(r, 1)?)))?;
                Ok(rows.collect::<rusqlite::Result<HashMap<_, _>>>()?)
            })
            .await
    }

    async fn text(
        &self,
        id: i64,
        model: String,
    ) -> Result<Option<(MarketText, Option<String>, MarketStatus)>, RepoError> {
        self.db
            .read_point(move |conn| {
                Ok(conn
                    .prepare_cached(
                        "SELECT m.name, m.description, v.content_hash, m.status
                           FROM markets m
                           LEFT JOIN market_vectors v ON v.market_id = m.id AND v.model = ?2
                          WHERE m.id = ?1",
                    )?
                    .query_row(params![id, model], |r| {
                        Ok((
                            MarketText {
                                name: r.get(0)?,
                                description: r.get(1)?,
                            },
                            r.get(2)?,
                            status_at(r, 3)?,
                        ))
                    })
                    .optional()?)
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
        self.db
            .write(move |conn| {
                let now = to_millis(OffsetDateTime::now_utc());
                let stored = conn
                    .prepare_cached(
                        "INSERT INTO market_vectors (market_id, model, content_hash, vector, updated_at)
                         SELECT id, ?2, ?3, ?4, ?5 FROM markets
                          WHERE id = ?1 AND name = ?6 AND description IS ?7
                         ON CONFLICT (market_id) DO UPDATE SET
                            model = excluded.model, content_hash = excluded.content_hash,
                            vector = excluded.vector, updated_at = excluded.updated_at",
                    )?
                    .execute(params![
                        id,
                        model,
                        hash,
                        encode(&vector),
                        now,
                        text.name,
                        text.description
                    ])?;
                Ok(stored == 1)
            })
            .await
    }

    async fn vector(
        &self,
        id: i64,
        model: String,
    ) -> Result<Option<(Vec<f32>, MarketStatus)>, RepoError> {
        self.db
            .read_point(move |conn| {
                Ok(conn
                    .prepare_cached(
                        "SELECT v.vector, m.status FROM market_vectors v
                           JOIN markets m ON m.id = v.market_id
                          WHERE v.market_id = ?1 AND v.model = ?2",
                    )?
                    .query_row(params![id, model], |r| {
                        let blob = r.get_ref(0)?.as_blob().map_err(rusqlite::Error::from)?;
                        Ok((decode(blob), status_at(r, 1)?))
                    })
                    .optional()?)
            })
            .await
    }

    async fn each_vector(&self, model: String, mut each: VectorSink) -> Result<u64, RepoError> {
        self.db
            .read(move |conn| {
                snapshot(conn, || {
                    let count: i64 = conn.query_row(
                        "SELECT count(*) FROM market_vectors WHERE model = ?1",
                        [&model],
                        |r| r.get(0),
                    )?;
                    each(count, None);
                    let mut stmt = conn.prepare(
                        "SELECT v.market_id, v.vector, m.status FROM market_vectors v
                           JOIN markets m ON m.id = v.market_id
                          WHERE v.model = ?1",
                    )?;
                    let mut rows = stmt.query([&model])?;
                    let (mut n, mut vector) = (0, Vec::new());
                    while let Some(row) = rows.next()? {
                        let blob = row.get_ref(1)?.as_blob().map_err(rusqlite::Error::from)?;
                        // One buffer for every row: loading 100,000 vectors allocates nothing
                        // per row.
                        vector.clear();
                        vector.extend(
                            blob.chunks_exact(4)
                                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                        );
                        each(row.get(0)?, Some((&vector, status_at(row, 2)?)));
                        n += 1;
                    }
                    Ok(n)
                })
            })
            .await
    }

    async fn markets_to_index(
        &self,
        model: String,
        missing_only: bool,
    ) -> Result<Vec<i64>, RepoError> {
        // On a reader: usually none is missing (a start-up check), and the scan of every
        // market should not run through (and fill) the writer's page cache.
        self.db
            .read(move |conn| {
                let ids = conn
                    .prepare_cached(
                        "SELECT m.id FROM markets m
                          WHERE NOT ?2 OR NOT EXISTS (
                                SELECT 1 FROM market_vectors v
                                 WHERE v.market_id = m.id AND v.model = ?1)
                          ORDER BY m.id",
                    )?
                    .query_map(params![model, missing_only], |r| r.get(0))?
                    .collect::<rusqlite::Result<Vec<i64>>>()?;
                Ok(ids)
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_become_quoted_alternatives() {
        use crate::domain::search::keywords;
        assert_eq!(
            match_query(&keywords("Will the Fed cut rates?")),
            "\"fed\" OR \"cut\" OR \"rates\""
        );
        assert_eq!(
            match_query(&keywords("NEAR(\"x\" y) OR z* -- ^a")),
            "\"near\" OR \"x\" OR \"y\" OR \"z\""
        );
        assert_eq!(match_query(&["a\"b".into()]), "\"a\"\"b\"");
    }

    #[test]
    fn vectors_round_trip_through_their_stored_form() {
        let v = vec![0.5f32, -0.25, 1.0e-7, 0.0];
        assert_eq!(decode(&encode(&v)), v);
        assert_eq!(decode(&[0, 0, 128, 63, 1]), vec![1.0]);
    }
}
