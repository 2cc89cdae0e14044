//! The market list on SQLite: one page by offset or by keyset cursor, and its total, read in one
//! snapshot.
//!
//! Every page query reads the page's ids from the sort's index alone (it covers the filter, the
//! sort column and the id), then reads only those rows whole (a deferred join): rows skipped by
//! an offset cost an index step each, and a cursor page starts with an index seek to the
//! cursor's row. `close_time` sorts put markets without one last in both directions, which no
//! single index range gives for a cursor, so a cursor page there is two seeks (the rest of the
//! dated markets, then the undated ones by id) of at most a page each, merged.

use rusqlite::{Connection, ToSql};

use super::markets::{market_from_row, MARKET_COLUMNS};
use crate::{
    db::snapshot,
    domain::{
        market::{ListQuery, MarketPage, MarketStatus, SortKey},
        paging::KeyPart,
        Page,
    },
    repo::RepoError,
};

/// The sort column as the index holds it.
fn column(sort: SortKey) -> &'static str {
    match sort {
        SortKey::Volume => "m.volume",
        SortKey::CreatedAt => "m.created_at",
        SortKey::CloseTime => "m.close_time",
        SortKey::Name => "m.name COLLATE NOCASE",
    }
}

/// The SQL of the page's ids (the `:limit` it reads is one past the page).
fn ids_sql(q: &ListQuery) -> String {
    let mut filter = String::from(" WHERE 1 = 1");
    if q.status.is_some() {
        filter.push_str(" AND m.status = :status");
    }
    if q.creator_id.is_some() {
        filter.push_str(" AND m.creator_id = :creator");
    }
    let (dir, op) = if q.descending {
        ("DESC", "<")
    } else {
        ("ASC", ">")
    };
    let col = column(q.sort);
    let nulls = if q.sort == SortKey::CloseTime {
        " NULLS LAST"
    } else {
        ""
    };
    let order = format!("{col} {dir}{nulls}, m.id {dir}");
    match (&q.paging.after, q.sort) {
        (None, _) => {
            format!("SELECT m.id FROM markets m{filter} ORDER BY {order} LIMIT :limit OFFSET :offset")
        }
        (Some(key), SortKey::CloseTime) if key.first() == Some(&KeyPart::Null) => format!(
            "SELECT m.id FROM markets m{filter} AND m.close_time IS NULL AND m.id {op} :id
              ORDER BY m.id {dir} LIMIT :limit"
        ),
        (Some(_), SortKey::CloseTime) => format!(
            "SELECT id FROM (
                 SELECT * FROM (SELECT m.id, m.close_time FROM markets m{filter}
                                   AND m.close_time {op}= :key AND (m.close_time {op} :key OR m.id {op} :id)
                                 ORDER BY m.close_time {dir}, m.id {dir} LIMIT :limit)
                 UNION ALL
                 SELECT * FROM (SELECT m.id, m.close_time FROM markets m{filter} AND m.close_time IS NULL
                                 ORDER BY m.id {dir} LIMIT :limit))
              ORDER BY close_time IS NULL, close_time {dir}, id {dir} LIMIT :limit"
        ),
        // Not a row value `({col}, m.id) > (:key, :id)`: SQLite does not seek the name index
        // (COLLATE NOCASE) with one. The first term seeks, the second drops the cursor's ties
        // up to its id.
        (Some(_), _) => format!(
            "SELECT m.id FROM markets m{filter} AND {col} {op}= :key AND ({col} {op} :key OR m.id {op} :id)
              ORDER BY {order} LIMIT :limit"
        ),
    }
}

/// The SQL of the page (the rows of [`ids_sql`], whole, in order) and of the total.
fn list_sql(q: &ListQuery) -> (String, String) {
    let dir = if q.descending { "DESC" } else { "ASC" };
    let nulls = if q.sort == SortKey::CloseTime {
        " NULLS LAST"
    } else {
        ""
    };
    let order = format!("{} {dir}{nulls}, m.id {dir}", column(q.sort));
    let count = match (q.status.is_some(), q.creator_id.is_some()) {
        // Without a creator filter the total is kept per status by triggers (migration 4).
        (true, false) => "SELECT n FROM market_counts WHERE status = :status".to_owned(),
        (false, false) => "SELECT coalesce(sum(n), 0) FROM market_counts".to_owned(),
        (_, true) => {
            let status = if q.status.is_some() {
                " AND m.status = :status"
            } else {
                ""
            };
            format!("SELECT count(*) FROM markets m WHERE m.creator_id = :creator{status}")
        }
    };
    (
        format!(
            "{MARKET_COLUMNS}
               FROM ({}) p
              CROSS JOIN markets m ON m.id = p.id
               JOIN users u ON u.id = m.creator_id
              ORDER BY {order}",
            ids_sql(q)
        ),
        count,
    )
}

/// One page of markets and the number matching the filters.
pub(super) fn list(conn: &Connection, q: &ListQuery) -> Result<MarketPage, RepoError> {
    let (page_sql, count_sql) = list_sql(q);
    let status = q.status.map(MarketStatus::as_str);
    let mut filters: Vec<(&str, &dyn ToSql)> = Vec::new();
    if let Some(status) = &status {
        filters.push((":status", status));
    }
    if let Some(creator) = &q.creator_id {
        filters.push((":creator", creator));
    }
    let (limit, offset) = (q.paging.fetch(), q.paging.offset as i64);
    let mut page_params = filters.clone();
    page_params.push((":limit", &limit));
    match q.paging.after.as_deref() {
        None => page_params.push((":offset", &offset)),
        Some([KeyPart::Null, id]) if q.sort == SortKey::CloseTime => {
            page_params.push((":id", id));
        }
        Some([key, id]) => {
            page_params.push((":key", key));
            page_params.push((":id", id));
        }
        Some(_) => return Err(RepoError::Internal("a market cursor has two parts".into())),
    }
    snapshot(conn, || {
        let total: i64 = conn
            .prepare_cached(&count_sql)?
            .query_row(&filters[..], |r| r.get(0))?;
        let rows = conn
            .prepare_cached(&page_sql)?
            .query_map(&page_params[..], market_from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(Page::of(rows, total as u64, &q.paging, |m| q.key_of(m)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{Db, DbOptions};

    /// Every sort, order, filter and paging mode, as its id query would run.
    fn queries() -> Vec<ListQuery> {
        let sorts = [
            SortKey::Volume,
            SortKey::CreatedAt,
            SortKey::CloseTime,
            SortKey::Name,
        ];
        let mut all = Vec::new();
        for sort in sorts {
            for descending in [false, true] {
                for status in [None, Some(MarketStatus::Active)] {
                    for creator in [None, Some(1)] {
                        let q = ListQuery::parse(
                            status,
                            creator,
                            Some(sort),
                            Some(descending),
                            None,
                            None,
                            None,
                        )
                        .unwrap();
                        let key = match sort {
                            SortKey::Name => KeyPart::Text("m".into()),
                            _ => KeyPart::Int(5),
                        };
                        let after = |key: KeyPart| {
                            let mut q = q.clone();
                            q.paging.after = Some(vec![key, KeyPart::Int(3)]);
                            q
                        };
                        all.push(after(key));
                        if sort == SortKey::CloseTime {
                            all.push(after(KeyPart::Null));
                        }
                        all.push(q);
                    }
                }
            }
        }
        all
    }

    #[tokio::test]
    async fn every_page_query_reads_ids_from_an_index_without_sorting_the_table() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("t.db"), &DbOptions::default()).unwrap();
        db.read(|conn| {
            for q in queries() {
                let sql = format!("EXPLAIN QUERY PLAN {}", ids_sql(&q));
                let plan: Vec<String> = conn
                    .prepare(&sql)?
                    .query_map(
                        rusqlite::named_params! {
                            ":status": "active", ":creator": 1, ":limit": 21, ":offset": 0,
                            ":key": 5, ":id": 3,
                        }
                        .iter()
                        .filter(|(name, _)| sql.contains(name))
                        .copied()
                        .collect::<Vec<_>>()
                        .as_slice(),
                        |r| r.get::<_, String>(3),
                    )?
                    .collect::<rusqlite::Result<_>>()?;
                let plan = plan.join(" / ");
                // The merge of a close_time cursor page sorts its two seeks' few rows, never
                // the table.
                let merged = q.sort == SortKey::CloseTime
                    && q.paging
                        .after
                        .as_deref()
                        .is_some_and(|k| k[0] != KeyPart::Null);
                // A creator's markets are found by the creator index (in creation order) and
                // sorted: they are one user's, not the table.
                let merged = merged || (q.creator_id.is_some() && q.sort != SortKey::CreatedAt);
                assert!(
                    merged || !plan.contains("TEMP B-TREE"),
                    "{q:?} sorts: {plan}"
                );
                assert!(
                    plan.contains("USING") && !plan.contains("SCAN m\u{0}"),
                    "{q:?}: {plan}"
                );
                if q.paging.after.is_some() || q.creator_id.is_some() || q.status.is_some() {
                    assert!(plan.contains("SEARCH"), "{q:?} does not seek: {plan}");
                }
            }
            Ok::<_, RepoError>(())
        })
        .await
        .unwrap();
    }
}
