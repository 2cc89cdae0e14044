//! Reading rows on either engine: one column type, a tuple of them, or a whole row of
//! [`SqlValue`]s.

use agora::db::rusqlite;
use postgres::types::{FromSql, Type};

/// A value of any column type, for comparing whole rows.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

/// A column value readable from both engines.
pub trait Column: Sized + Send {
    fn from_sqlite(row: &rusqlite::Row<'_>, i: usize) -> Result<Self, String>;
    fn from_pg(row: &postgres::Row, i: usize) -> Result<Self, String>;
}

macro_rules! column {
    ($($t:ty),*) => {$(
        impl Column for $t {
            fn from_sqlite(row: &rusqlite::Row<'_>, i: usize) -> Result<Self, String> {
                row.get(i).map_err(|e| format!("column {i}: {e}"))
            }
            fn from_pg(row: &postgres::Row, i: usize) -> Result<Self, String> {
                row.try_get(i).map_err(|e| {
                    format!(
                        "column {i} ({}): {e}; cast it to the portable type, e.g. CAST(x AS BIGINT)",
                        row.columns()[i].type_()
                    )
                })
            }
        }
    )*};
}

column!(
    i64,
    Option<i64>,
    String,
    Option<String>,
    f64,
    Option<f64>,
    Vec<u8>,
    Option<Vec<u8>>
);

impl Column for SqlValue {
    fn from_sqlite(row: &rusqlite::Row<'_>, i: usize) -> Result<Self, String> {
        use rusqlite::types::ValueRef;
        Ok(match row.get_ref(i).map_err(|e| e.to_string())? {
            ValueRef::Null => SqlValue::Null,
            ValueRef::Integer(n) => SqlValue::Int(n),
            ValueRef::Real(x) => SqlValue::Real(x),
            ValueRef::Text(t) => SqlValue::Text(String::from_utf8_lossy(t).into_owned()),
            ValueRef::Blob(b) => SqlValue::Blob(b.to_vec()),
        })
    }

    fn from_pg(row: &postgres::Row, i: usize) -> Result<Self, String> {
        let ty = row.columns()[i].type_().clone();
        let get = |e: postgres::Error| format!("column {i} ({ty}): {e}");
        let value = match ty {
            Type::INT8 => row
                .try_get::<_, Option<i64>>(i)
                .map_err(get)?
                .map(SqlValue::Int),
            Type::INT4 => row
                .try_get::<_, Option<i32>>(i)
                .map_err(get)?
                .map(|n| SqlValue::Int(n.into())),
            Type::INT2 => row
                .try_get::<_, Option<i16>>(i)
                .map_err(get)?
                .map(|n| SqlValue::Int(n.into())),
            Type::BOOL => row
                .try_get::<_, Option<bool>>(i)
                .map_err(get)?
                .map(|b| SqlValue::Int(b.into())),
            Type::FLOAT8 => row
                .try_get::<_, Option<f64>>(i)
                .map_err(get)?
                .map(SqlValue::Real),
            Type::BYTEA => row
                .try_get::<_, Option<Vec<u8>>>(i)
                .map_err(get)?
                .map(SqlValue::Blob),
            Type::JSON | Type::JSONB => row
                .try_get::<_, Option<Json>>(i)
                .map_err(get)?
                .map(|j| SqlValue::Text(j.0)),
            _ => row
                .try_get::<_, Option<String>>(i)
                .map_err(|_| format!("column {i} has type {ty}; cast it to BIGINT, TEXT or BYTEA"))?
                .map(SqlValue::Text),
        };
        Ok(value.unwrap_or(SqlValue::Null))
    }
}

/// JSON or JSONB as its text.
struct Json(String);

impl<'a> FromSql<'a> for Json {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        // JSONB's binary form is a version byte (1) and the text.
        let text = if *ty == Type::JSONB { &raw[1..] } else { raw };
        Ok(Json(std::str::from_utf8(text)?.to_owned()))
    }

    fn accepts(ty: &Type) -> bool {
        matches!(*ty, Type::JSON | Type::JSONB)
    }
}

/// A row readable from both engines: one [`Column`] type, a tuple of them, or `Vec<SqlValue>`
/// (every column).
pub trait FromRow: Sized + Send {
    fn from_sqlite(row: &rusqlite::Row<'_>) -> Result<Self, String>;
    fn from_pg(row: &postgres::Row) -> Result<Self, String>;
}

macro_rules! single {
    ($($t:ty),*) => {$(
        impl FromRow for $t {
            fn from_sqlite(row: &rusqlite::Row<'_>) -> Result<Self, String> {
                Column::from_sqlite(row, 0)
            }
            fn from_pg(row: &postgres::Row) -> Result<Self, String> {
                Column::from_pg(row, 0)
            }
        }
    )*};
}

single!(
    i64,
    Option<i64>,
    String,
    Option<String>,
    f64,
    Option<f64>,
    Vec<u8>,
    Option<Vec<u8>>,
    SqlValue
);

macro_rules! tuple {
    ($($name:ident $i:tt),+) => {
        impl<$($name: Column),+> FromRow for ($($name,)+) {
            fn from_sqlite(row: &rusqlite::Row<'_>) -> Result<Self, String> {
                Ok(($($name::from_sqlite(row, $i)?,)+))
            }
            fn from_pg(row: &postgres::Row) -> Result<Self, String> {
                Ok(($($name::from_pg(row, $i)?,)+))
            }
        }
    };
}

tuple!(A 0, B 1);
tuple!(A 0, B 1, C 2);
tuple!(A 0, B 1, C 2, D 3);

impl FromRow for Vec<SqlValue> {
    fn from_sqlite(row: &rusqlite::Row<'_>) -> Result<Self, String> {
        (0..row.as_ref().column_count())
            .map(|i| <SqlValue as Column>::from_sqlite(row, i))
            .collect()
    }

    fn from_pg(row: &postgres::Row) -> Result<Self, String> {
        (0..row.len())
            .map(|i| <SqlValue as Column>::from_pg(row, i))
            .collect()
    }
}
