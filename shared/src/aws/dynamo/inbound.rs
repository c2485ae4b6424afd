//! Inbound messages on DynamoDB (`inbound`: PK `tenant`, SK `id`, TTL `expires_at`), stored
//! once per `(gateway, provider_message_id)` through an `inbound#...` marker in the
//! idempotency table, written in the same transaction (see docs/dynamodb.md).

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem};
use chrono::DateTime;

use super::item::{get_n, get_s, ms, n, opt_s, s, Item};
use super::{
    build_error, cancelled_by_condition, epoch_seconds, query_up_to, unavailable, DynamoStore,
};
use crate::domain::{Channel, InboundMessage, Keyword, MessageId, TenantId};
use crate::ports::{InboundStore, StoreError};

/// The idempotency-table key that says a provider's message was stored.
fn marker_pk(gateway: &str, provider_message_id: &str) -> String {
    format!("inbound#{gateway}#{provider_message_id}")
}

fn to_item(m: &InboundMessage, expires_at: i64) -> Item {
    let mut item = Item::new();
    let mut put = |k: &str, v: AttributeValue| {
        item.insert(k.to_owned(), v);
    };
    put("tenant", s(m.tenant.as_str()));
    put("id", s(m.id.to_string()));
    put("channel", s(m.channel.as_str()));
    put("gateway", s(&m.gateway));
    put("provider_message_id", s(&m.provider_message_id));
    put("from", s(&m.from));
    put("to", s(&m.to));
    put("body", s(&m.body));
    put(
        "media_urls",
        AttributeValue::L(m.media_urls.iter().map(s).collect()),
    );
    if let Some(k) = m.keyword {
        put("keyword", s(k.as_str()));
    }
    put("received_at", n(ms(m.received_at)));
    put("expires_at", n(expires_at));
    item
}

fn from_item(item: &Item) -> Result<InboundMessage, StoreError> {
    let corrupt = |what: String| StoreError::Corrupt(format!("inbound item: {what}"));
    let id = get_s(item, "id")?;
    let tenant = get_s(item, "tenant")?;
    let channel = get_s(item, "channel")?;
    let media_urls = match item.get("media_urls") {
        None => Vec::new(),
        Some(AttributeValue::L(list)) => list
            .iter()
            .map(|v| match v {
                AttributeValue::S(url) => Ok(url.clone()),
                _ => Err(corrupt("a media url is not a string".into())),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(corrupt("media_urls is not a list".into())),
    };
    let keyword = opt_s(item, "keyword")
        .map(|k| Keyword::parse(k).ok_or_else(|| corrupt(format!("keyword {k}"))))
        .transpose()?;
    Ok(InboundMessage {
        id: MessageId::parse(id).ok_or_else(|| corrupt(format!("id {id}")))?,
        tenant: TenantId::parse(tenant).map_err(|e| corrupt(format!("tenant {tenant}: {e}")))?,
        channel: Channel::parse(channel).ok_or_else(|| corrupt(format!("channel {channel}")))?,
        gateway: get_s(item, "gateway")?.to_owned(),
        provider_message_id: get_s(item, "provider_message_id")?.to_owned(),
        from: get_s(item, "from")?.to_owned(),
        to: get_s(item, "to")?.to_owned(),
        body: get_s(item, "body")?.to_owned(),
        media_urls,
        keyword,
        received_at: DateTime::from_timestamp_millis(get_n(item, "received_at")?)
            .unwrap_or_default(),
    })
}

#[async_trait]
impl InboundStore for DynamoStore {
    async fn record_inbound(&self, m: &InboundMessage) -> Result<bool, StoreError> {
        // The message and its marker expire together: a retry is recognised for as long as
        // the message it repeats is kept.
        let expires_at = epoch_seconds(
            m.received_at + chrono::Duration::from_std(self.retention).unwrap_or_default(),
        );
        let marker = Put::builder()
            .table_name(self.idempotency_table()?)
            .item("pk", s(marker_pk(&m.gateway, &m.provider_message_id)))
            .item("tenant", s(m.tenant.as_str()))
            .item("id", s(m.id.to_string()))
            .item("expires_at", n(expires_at))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(build_error)?;
        let message = Put::builder()
            .table_name(self.inbound_table()?)
            .set_item(Some(to_item(m, expires_at)))
            .condition_expression("attribute_not_exists(id)")
            .build()
            .map_err(build_error)?;
        // Threading reads before it writes: a contact or thread made meanwhile by another
        // message of the same sender cancels the transaction, and the next try finds it.
        let mut tries = 0;
        loop {
            tries += 1;
            let mut items = vec![
                TransactWriteItem::builder().put(marker.clone()).build(),
                TransactWriteItem::builder().put(message.clone()).build(),
            ];
            items.extend(self.inbound_thread_items(m).await?);
            let written = self
                .client
                .transact_write_items()
                .set_transact_items(Some(items))
                .send()
                .await;
            match written {
                Ok(_) => return Ok(true),
                // The marker is the first item: its condition failing means a retry.
                Err(e) if cancelled_by_condition(&e, Some(0)) => return Ok(false),
                Err(e) if tries < 5 && super::transaction_cancelled(&e) => {
                    // Messages of one sender often come in a burst: spread the tries.
                    let jitter = u64::from(m.id.to_string().as_bytes()[35] % 16);
                    tokio::time::sleep(std::time::Duration::from_millis(15 * tries + jitter)).await;
                }
                Err(e) => return Err(unavailable("TransactWriteItems", e)),
            }
        }
    }

    async fn list_inbound(
        &self,
        tenant: &TenantId,
        before: Option<MessageId>,
        limit: usize,
    ) -> Result<Vec<InboundMessage>, StoreError> {
        let query = self
            .client
            .query()
            .table_name(self.inbound_table()?)
            .scan_index_forward(false)
            .expression_attribute_values(":t", s(tenant.as_str()));
        let query = match before {
            Some(b) => query
                .key_condition_expression("tenant = :t AND id < :before")
                .expression_attribute_values(":before", s(b.to_string())),
            None => query.key_condition_expression("tenant = :t"),
        };
        query_up_to(query, limit, from_item).await
    }
}
