//! The response envelope: `{"success": true, "data": ..., "meta": ...}` on success and
//! `{"success": false, "error", "code", "details", "request_id"}` on failure.

use poem_openapi::{types::Example, Object};

/// One invalid field.
#[derive(Debug, Clone, Object)]
pub struct ErrorDetail {
    /// The field: a body property (`name`, `outcomes[1]`, `initial_stake.amount`), a query or
    /// path parameter (`status`, `id`, `cursor`), or `body` for the body as a whole.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

/// Every error the server returns has this shape.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct ErrorBody {
    /// Always `false`.
    pub success: bool,
    /// What went wrong, for a human.
    pub error: String,
    /// What went wrong, for a program: stable snake_case codes such as `validation_failed`,
    /// `not_found`, `precondition_failed`.
    pub code: String,
    /// Per-field problems (empty when the error is not about fields).
    pub details: Vec<ErrorDetail>,
    /// The request's id (the `X-Request-Id` response header): quote it when reporting a problem.
    pub request_id: String,
}

impl Example for ErrorBody {
    fn example() -> Self {
        ErrorBody {
            success: false,
            error: "validation failed".into(),
            code: "validation_failed".into(),
            details: vec![ErrorDetail {
                field: "close_time".into(),
                message: "must be in the future".into(),
            }],
            request_id: "3f1c1a8e-2a8b-4d6e-9a53-0b6f4f7f2d11".into(),
        }
    }
}

/// Paging facts of a list.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct ListMeta {
    /// Page size used.
    pub limit: u32,
    /// Rows skipped (0 on a page fetched with `cursor`).
    pub offset: u64,
    /// Rows matching the filters in all.
    pub total: u64,
    /// Pass this as `cursor` (with the same filters, sort and order, and without `offset`) to
    /// get the next page; `null` on the last page. Opaque: it holds the position of this
    /// page's last row, so the next page neither repeats nor skips rows while others are
    /// inserted or deleted.
    #[oai(nullable)]
    pub next_cursor: Option<String>,
}

impl ListMeta {
    /// The meta of `page`, fetched with `paging` (which makes its next cursor).
    pub fn of<T>(page: &crate::domain::Page<T>, paging: &crate::domain::Paging) -> Self {
        ListMeta {
            limit: paging.limit,
            offset: paging.offset,
            total: page.total,
            next_cursor: page.next.as_ref().map(|key| paging.cursor_after(key)),
        }
    }
}

impl Example for ListMeta {
    fn example() -> Self {
        ListMeta {
            limit: 20,
            offset: 0,
            total: 57,
            next_cursor: Some("WzEsMjU0NzI3MDcyNjQ4MTE0LFsyMDAsNDJdXfMoN1ZKpm7U".into()),
        }
    }
}

/// Declares a success envelope around `data` (and `meta`, for lists).
macro_rules! envelope {
    ($(#[$doc:meta])* $name:ident { data: $data:ty }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, poem_openapi::Object)]
        #[oai(example)]
        pub struct $name {
            /// Always `true`.
            pub success: bool,
            /// The result.
            pub data: $data,
        }

        impl $name {
            /// A success envelope around `data`.
            pub fn new(data: $data) -> Self {
                Self { success: true, data }
            }
        }

        impl poem_openapi::types::Example for $name {
            fn example() -> Self {
                Self::new(poem_openapi::types::Example::example())
            }
        }
    };
    ($(#[$doc:meta])* $name:ident { data: Vec<$item:ty>, meta: ListMeta }) => {
        envelope!(@list $(#[$doc])* $name { data: Vec<$item>, meta: ListMeta });

        impl $name {
            /// The envelope of a page fetched with `paging`.
            pub fn from_page<T: Into<$item>>(page: crate::domain::Page<T>, paging: &crate::domain::Paging) -> Self {
                let meta = ListMeta::of(&page, paging);
                Self::new(page.items.into_iter().map(Into::into).collect(), meta)
            }
        }
    };
    ($(#[$doc:meta])* $name:ident { data: Vec<$item:ty>, meta: $meta:ty }) => {
        envelope!(@list $(#[$doc])* $name { data: Vec<$item>, meta: $meta });
    };
    (@list $(#[$doc:meta])* $name:ident { data: Vec<$item:ty>, meta: $meta:ty }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, poem_openapi::Object)]
        #[oai(example)]
        pub struct $name {
            /// Always `true`.
            pub success: bool,
            /// The page's items, in order.
            pub data: Vec<$item>,
            /// Facts about the list.
            pub meta: $meta,
        }

        impl $name {
            /// A success envelope around a list.
            pub fn new(data: Vec<$item>, meta: $meta) -> Self {
                Self { success: true, data, meta }
            }
        }

        impl poem_openapi::types::Example for $name {
            fn example() -> Self {
                Self::new(
                    vec![poem_openapi::types::Example::example()],
                    poem_openapi::types::Example::example(),
                )
            }
        }
    };
}
pub(crate) use envelope;
