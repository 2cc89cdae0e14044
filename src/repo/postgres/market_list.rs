//! The market list on PostgreSQL: one page by offset or by keyset cursor, and its total, read
//! in one snapshot. The page's ids come from the sort's index (filter, sort column, id; row
//! comparisons for cursors), then only those rows are read whole. `close_time` sorts put
//! markets without one last in both directions.

use futures_util::FutureExt;
use tokio_postgres::types::ToSql;

use super::{
    key_param,
    markets::{market_from_row, MARKET_COLUMNS},
    snapshot, Pg, TxError,
};
use crate::{
    domain::{
        market::{ListQuery, MarketPage, SortKey},
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
        SortKey::Name => "lower(m.name) COLLATE \"C\"",
    }
}

/// The page's SQL and parameters, and the total's.
struct Sql {
    page: String,
    page_params: Vec<Box<dyn ToSql + Sync + Send>>,
    count: String,
    count_params: Vec<Box<dyn ToSql + Sync + Send>>,
}

fn sql(q: &ListQuery) -> Result<Sql, RepoError> {
    let mut params: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
    let mut param = |p: Box<dyn ToSql + Sync + Send>| {
        params.push(p);
        format!("${}", params.len())
    };
    let mut filter = String::from("TRUE");
    if let Some(s) = q.status {
        filter.push_str(&format!(" AND m.status = {}", param(Box::new(s.as_str()))));
    }
    if let Some(c) = q.creator_id {
        filter.push_str(&format!(" AND m.creator_id = {}", param(Box::new(c))));
    }
    let filters = usize::from(q.status.is_some()) + usize::from(q.creator_id.is_some());
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
    let limit = param(Box::new(q.paging.fetch()));
    let ids = match q.paging.after.as_deref() {
        None => {
            let offset = param(Box::new(q.paging.offset as i64));
            format!("SELECT m.id FROM markets m WHERE {filter} ORDER BY {order} LIMIT {limit} OFFSET {offset}")
        }
        Some([KeyPart::Null, id]) if q.sort == SortKey::CloseTime => {
            let id = param(key_param(id));
            format!(
                "SELECT m.id FROM markets m WHERE {filter} AND m.close_time IS NULL AND m.id {op} {id}
                  ORDER BY m.id {dir} LIMIT {limit}"
            )
        }
        Some([key, id]) => {
            let key = param(key_param(key));
            let id = param(key_param(id));
            let key = if q.sort == SortKey::Name {
                format!("lower({key}::text) COLLATE \"C\"")
            } else {
                format!("{key}::bigint")
            };
            let undated = if q.sort == SortKey::CloseTime {
                " OR m.close_time IS NULL"
            } else {
                ""
            };
            format!(
                "SELECT m.id FROM markets m WHERE {filter} AND (({col}, m.id) {op} ({key}, {id}::bigint){undated})
                  ORDER BY {order} LIMIT {limit}"
            )
        }
        Some(_) => return Err(RepoError::Internal("a market cursor has two parts".into())),
    };
    let count = match (q.status.is_some(), q.creator_id.is_some()) {
        // Without a creator filter the total is kept per status by triggers.
        (true, false) => "SELECT n FROM market_counts WHERE status = $1".to_owned(),
        (false, false) => "SELECT coalesce(sum(n), 0)::bigint FROM market_counts".to_owned(),
        (_, true) => format!("SELECT count(*) FROM markets m WHERE {filter}"),
    };
    let page = format!(
        "{MARKET_COLUMNS}
           FROM ({ids}) p
           JOIN markets m ON m.id = p.id
           JOIN users u ON u.id = m.creator_id
          ORDER BY {order}"
    );
    let mut count_params: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
    if let Some(s) = q.status {
        count_params.push(Box::new(s.as_str()));
    }
    if let Some(c) = q.creator_id {
        count_params.push(Box::new(c));
    }
    debug_assert_eq!(count_params.len(), filters);
    Ok(Sql {
        page,
        page_params: params,
        count,
        count_params,
    })
}

/// One page of markets and the number matching the filters.
pub(super) async fn list(pg: &Pg, q: ListQuery) -> Result<MarketPage, RepoError> {
    let sql = sql(&q)?;
    snapshot(pg, move |c| {
        async move {
            let count_params: Vec<&(dyn ToSql + Sync)> =
                sql.count_params.iter().map(|p| &**p as _).collect();
            let total: i64 = c.one(&sql.count, &count_params).await?.try_get(0)?;
            let page_params: Vec<&(dyn ToSql + Sync)> =
                sql.page_params.iter().map(|p| &**p as _).collect();
            let rows = c
                .rows(&sql.page, &page_params)
                .await?
                .iter()
                .map(market_from_row)
                .collect::<Result<Vec<_>, TxError>>()?;
            Ok(Page::of(rows, total as u64, &q.paging, |m| q.key_of(m)))
        }
        .boxed()
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::market::MarketStatus;

    #[test]
    fn a_name_cursor_compares_case_insensitively_and_a_dated_one_keeps_the_undated_after() {
        let mut q = ListQuery::parse(
            Some(MarketStatus::Active),
            None,
            Some(SortKey::Name),
            Some(false),
            None,
            None,
            None,
        )
        .unwrap();
        q.paging.after = Some(vec![KeyPart::Text("m".into()), KeyPart::Int(3)]);
        let s = sql(&q).unwrap();
        assert!(
            s.page.contains(
                "(lower(m.name) COLLATE \"C\", m.id) > (lower($3::text) COLLATE \"C\", $4::bigint)"
            ),
            "{}",
            s.page
        );
        q.sort = SortKey::CloseTime;
        q.paging.after = Some(vec![KeyPart::Int(5), KeyPart::Int(3)]);
        let s = sql(&q).unwrap();
        assert!(s.page.contains("OR m.close_time IS NULL"), "{}", s.page);
        assert!(s.page.contains("NULLS LAST"), "{}", s.page);
    }
}
