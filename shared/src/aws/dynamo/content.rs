//! Large content lives apart from the status item. A write costs a unit per KB of the whole
//! item, so a 20 KB email kept inline would cost 20 write units at every status change. Above
//! [`INLINE_CONTENT_MAX`], the body and HTML go to their own item, `<id>#content`, written once
//! before the message and read once at the claim (and by a view). The status item stays near
//! 1 KB for the message's life.

use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::Utc;

use super::item::{n, new_message_item, opt_s, s, Item};
use super::{epoch_seconds, unavailable, DynamoStore};
use crate::domain::{Message, NewMessage};
use crate::ports::StoreError;

/// Body and HTML up to this many bytes stay in the status item.
pub(crate) const INLINE_CONTENT_MAX: usize = 1024;
/// How long a content item outlives its message's accept (or schedule) beyond the retention:
/// the longest a message may wait in a backlog and still be sent whole.
pub(super) const BACKLOG_ALLOWANCE: Duration = Duration::from_secs(14 * 24 * 3600);
/// Marks a status item whose content is apart.
const APART: &str = "content_apart";

fn content_key(id: &str) -> String {
    format!("{id}#content")
}

/// The status item of a new message, and its content item when the content is kept apart
/// (`indexed`: as for [`new_message_item`]).
pub(crate) fn message_items(
    m: &NewMessage,
    retention: Duration,
    indexed: bool,
) -> (Item, Option<Item>) {
    let mut item = new_message_item(m, indexed);
    let size = [&m.content.body, &m.content.html]
        .iter()
        .map(|part| part.as_ref().map_or(0, String::len))
        .sum::<usize>();
    if size <= INLINE_CONTENT_MAX {
        return (item, None);
    }
    let id = m.id.to_string();
    let mut content = Item::from([("id".to_owned(), s(content_key(&id)))]);
    for part in ["body", "html"] {
        if let Some(v) = item.remove(part) {
            content.insert(part.to_owned(), v);
        }
    }
    // Content expires on its own clock (TTL deletes are free; touching the item to move its
    // TTL would cost what it weighs).
    let from = m.send_at.unwrap_or(m.created_at).max(Utc::now());
    let expires =
        from + chrono::Duration::from_std(retention + BACKLOG_ALLOWANCE).unwrap_or_default();
    content.insert("expires_at".to_owned(), n(epoch_seconds(expires)));
    item.insert(APART.to_owned(), AttributeValue::Bool(true));
    (item, Some(content))
}

impl DynamoStore {
    /// Writes content items ahead of their messages, so no message exists without its content
    /// (an accept that fails after this leaves content that expires on its own).
    pub(super) async fn put_contents(&self, contents: Vec<Item>) -> Result<(), StoreError> {
        if contents.is_empty() {
            return Ok(());
        }
        self.batch_put(self.messages_table()?, contents).await
    }

    /// Fills in the content of a message whose status item says it is apart. Eventually
    /// consistent (half the read units); a content item written a moment ago may need a
    /// consistent read.
    pub(super) async fn load_content(
        &self,
        item: &Item,
        m: &mut Message,
    ) -> Result<(), StoreError> {
        if !matches!(item.get(APART), Some(AttributeValue::Bool(true))) {
            return Ok(());
        }
        let key = content_key(&m.id.to_string());
        let mut content = None;
        for consistent in [false, true] {
            content = self
                .client
                .get_item()
                .table_name(self.messages_table()?)
                .key("id", s(&key))
                .consistent_read(consistent)
                .send()
                .await
                .map_err(|e| unavailable("GetItem", e))?
                .item;
            if content.is_some() {
                break;
            }
        }
        let Some(content) = content else {
            tracing::error!(id = %m.id, "the message's content has expired");
            return Ok(());
        };
        m.content.body = opt_s(&content, "body").map(str::to_owned);
        m.content.html = opt_s(&content, "html").map(str::to_owned);
        Ok(())
    }
}
