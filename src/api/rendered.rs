//! [`Rendered`]: a JSON response serialized once and served many times.
//!
//! poem-openapi's `Json<T>` builds a `serde_json::Value` tree of the whole response and writes
//! it out on every request; for a page of 20 markets that costs more than everything else the
//! request does. A cached list page or market cannot change (the cache hands out the same
//! `Arc` until a write replaces it), so its bytes are rendered once, kept beside it in
//! [`RenderMemo`], and served as they are. With the cache off every value is new, so nothing is
//! kept. The document still describes the response by `T`'s schema.

use std::{marker::PhantomData, sync::Arc};

use bytes::Bytes;
use moka::future::Cache;
use poem::{IntoResponse, Response};
use poem_openapi::{
    payload::Payload,
    registry::{MetaMediaType, MetaResponse, MetaResponses, MetaSchemaRef, Registry},
    types::{ToJSON, Type},
    ApiResponse,
};

/// A 200 JSON response whose body is `T` already serialized.
pub struct Rendered<T>(Bytes, PhantomData<fn() -> T>);

impl<T: ToJSON> Rendered<T> {
    /// Serializes `value` exactly as `Json<T>` would.
    pub fn of(value: &T) -> Self {
        let bytes = serde_json::to_vec(&value.to_json()).unwrap_or_default();
        Rendered(bytes.into(), PhantomData)
    }
}

impl<T> Rendered<T> {
    /// A body already written, which must be what `T`'s `ToJSON` would give (a value rendered
    /// straight from the domain, as [`super::market_json`] does).
    pub fn bytes(json: Vec<u8>) -> Self {
        Rendered(json.into(), PhantomData)
    }
}

impl<T> Clone for Rendered<T> {
    fn clone(&self) -> Self {
        Rendered(self.0.clone(), PhantomData)
    }
}

impl<T: Type> Payload for Rendered<T> {
    const CONTENT_TYPE: &'static str = "application/json; charset=utf-8";

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

impl<T: Type> IntoResponse for Rendered<T> {
    fn into_response(self) -> Response {
        Response::builder()
            .content_type(Self::CONTENT_TYPE)
            .body(self.0)
    }
}

impl<T: Type> ApiResponse for Rendered<T> {
    fn meta() -> MetaResponses {
        MetaResponses {
            responses: vec![MetaResponse {
                description: "",
                status: Some(200),
                status_range: None,
                content: vec![MetaMediaType {
                    content_type: Self::CONTENT_TYPE,
                    schema: Self::schema_ref(),
                }],
                headers: vec![],
            }],
        }
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

/// Rendered responses of immutable shared values, by key. An entry is used only while the
/// value it was rendered from is the very one (`Arc::ptr_eq`) the caller holds now, so a
/// replaced value (a write, a cache refresh) is rendered afresh: never stale, whatever the key.
pub struct RenderMemo<K, V, T> {
    entries: Cache<K, (Arc<V>, Rendered<T>)>,
}

impl<K, V, T> RenderMemo<K, V, T>
where
    K: std::hash::Hash + Eq + Send + Sync + 'static,
    V: Send + Sync + 'static,
    T: ToJSON + 'static,
{
    /// A memo of at most `capacity` entries.
    pub fn new(capacity: u64) -> Self {
        RenderMemo {
            entries: Cache::builder()
                .name("rendered")
                .max_capacity(capacity)
                .build(),
        }
    }

    /// The rendering of `value` under `key`, from `memo` when there is one (see
    /// [`RenderMemo::get_or_render`]), else rendered now.
    pub async fn render(
        memo: Option<&Self>,
        key: K,
        value: Arc<V>,
        render: impl FnOnce(&V) -> T,
    ) -> Rendered<T> {
        match memo {
            Some(memo) => memo.get_or_render(key, value, render).await,
            None => Rendered::of(&render(&value)),
        }
    }

    /// The rendering of `value` under `key`: the kept one if it was made from `value`, else
    /// `render(value)`, kept for next time.
    pub async fn get_or_render(
        &self,
        key: K,
        value: Arc<V>,
        render: impl FnOnce(&V) -> T,
    ) -> Rendered<T> {
        if let Some((from, rendered)) = self.entries.get(&key).await {
            if Arc::ptr_eq(&from, &value) {
                return rendered;
            }
        }
        let rendered = Rendered::of(&render(&value));
        self.entries.insert(key, (value, rendered.clone())).await;
        rendered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_rendering_is_reused_only_for_the_very_value_it_was_made_from() {
        let memo: RenderMemo<&str, String, String> = RenderMemo::new(10);
        let renders = std::sync::atomic::AtomicUsize::new(0);
        let render = |v: &String| {
            renders.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            v.clone()
        };
        let first = Arc::new("one".to_owned());
        assert_eq!(
            memo.get_or_render("k", first.clone(), render).await.0,
            "\"one\""
        );
        assert_eq!(
            memo.get_or_render("k", first.clone(), render).await.0,
            "\"one\""
        );
        assert_eq!(renders.load(std::sync::atomic::Ordering::Relaxed), 1);
        // An equal but different value (a page re-read after a write) is rendered afresh.
        let second = Arc::new("two".to_owned());
        assert_eq!(
            memo.get_or_render("k", second.clone(), render).await.0,
            "\"two\""
        );
        assert_eq!(memo.get_or_render("k", second, render).await.0, "\"two\"");
        assert_eq!(renders.load(std::sync::atomic::Ordering::Relaxed), 2);
    }
}
