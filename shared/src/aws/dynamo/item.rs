//! Item <-> domain mapping for the messages table. A message is one item: its fields, plus its
//! timeline as the list attribute `events`, appended in the same conditional update that
//! changes the state (see docs/dynamodb.md).

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};

use crate::domain::{
    sms::SmsInfo, Channel, Content, DeliveryEvent, DeliveryOptions, EventKind, Message, MessageId,
    MessageStatus, NewMessage, Priority, TenantId,
};
use crate::ports::StoreError;

pub(crate) type Item = HashMap<String, AttributeValue>;

pub(crate) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub(crate) fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

pub(crate) fn get_s<'a>(item: &'a Item, key: &str) -> Result<&'a str, StoreError> {
    opt_s(item, key).ok_or_else(|| corrupt(format!("item has no string `{key}`")))
}

pub(crate) fn opt_s<'a>(item: &'a Item, key: &str) -> Option<&'a str> {
    match item.get(key) {
        Some(AttributeValue::S(v)) => Some(v.as_str()),
        _ => None,
    }
}

pub(crate) fn opt_n<T: std::str::FromStr>(item: &Item, key: &str) -> Result<Option<T>, StoreError> {
    match item.get(key) {
        Some(AttributeValue::N(v)) => v
            .parse()
            .map(Some)
            .map_err(|_| corrupt(format!("`{key}` is not a valid number: {v}"))),
        Some(_) => Err(corrupt(format!("`{key}` is not a number"))),
        None => Ok(None),
    }
}

pub(crate) fn get_n<T: std::str::FromStr>(item: &Item, key: &str) -> Result<T, StoreError> {
    opt_n(item, key)?.ok_or_else(|| corrupt(format!("item has no number `{key}`")))
}

pub(crate) fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn from_ms(v: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(v).unwrap_or_default()
}

fn json_of<T: serde::de::DeserializeOwned>(
    item: &Item,
    key: &str,
) -> Result<Option<T>, StoreError> {
    opt_s(item, key)
        .map(|v| serde_json::from_str(v).map_err(|e| corrupt(format!("`{key}`: {e}"))))
        .transpose()
}

/// The key of the `by_provider` index: a provider's id is unique within its gateway only.
pub(crate) fn provider_key(gateway: &str, provider_message_id: &str) -> String {
    format!("{gateway}#{provider_message_id}")
}

/// One timeline entry, as an element of the `events` list.
pub(crate) fn event_value(
    kind: EventKind,
    at: DateTime<Utc>,
    detail: &serde_json::Value,
) -> AttributeValue {
    let mut m = HashMap::from([
        ("kind".to_owned(), s(kind.as_str())),
        ("at".to_owned(), n(ms(at))),
    ]);
    if !detail.is_null() {
        m.insert("detail".to_owned(), s(detail.to_string()));
    }
    AttributeValue::M(m)
}

/// The item of a newly accepted message, with its first event. `indexed`: whether search
/// finds it through the `by_tenant` index (a write unit); a bulk message with a derived id is
/// found through its job's listing instead.
pub(crate) fn new_message_item(m: &NewMessage, indexed: bool) -> Item {
    let mut item = Item::new();
    let mut put = |k: &str, v: AttributeValue| {
        item.insert(k.to_owned(), v);
    };
    put("id", s(m.id.to_string()));
    put("tenant", s(m.tenant.as_str()));
    if indexed {
        put(
            "search_shard",
            s(super::search::search_shard(&m.tenant, m.id)),
        );
    }
    put("channel", s(m.channel.as_str()));
    put("priority", s(m.priority.as_str()));
    put("status", s(m.status.as_str()));
    put("recipient", s(&m.to));
    put("correlation_id", s(&m.correlation_id));
    put("attempts", n(0));
    put("created_at", n(ms(m.created_at)));
    put("updated_at", n(ms(m.created_at)));
    let optional = [
        ("sender", m.from.clone()),
        ("subject", m.content.subject.clone()),
        ("body", m.content.body.clone()),
        ("html", m.content.html.clone()),
        ("template", m.template.clone()),
        ("sms", m.sms.map(|x| serde_json::json!(x).to_string())),
        ("message_type", m.message_type.clone()),
        ("source_type", m.source_type.clone()),
        ("source_id", m.source_id.clone()),
        ("metadata", m.metadata.as_ref().map(|v| v.to_string())),
        ("bulk_id", m.bulk_id.clone()),
        ("external_id", m.external_id.clone()),
    ];
    for (k, v) in optional {
        if let Some(v) = v {
            put(k, s(v));
        }
    }
    if let Some(at) = m.send_at {
        put("send_at", n(ms(at)));
    }
    put(
        "events",
        AttributeValue::L(vec![event_value(
            m.status.into(),
            m.created_at,
            &m.first_event_detail(),
        )]),
    );
    item
}

pub(crate) fn status_of(item: &Item) -> Result<MessageStatus, StoreError> {
    let raw = get_s(item, "status")?;
    MessageStatus::parse(raw).ok_or_else(|| corrupt(format!("unknown status {raw}")))
}

pub(crate) fn message_from_item(item: &Item) -> Result<Message, StoreError> {
    let id = get_s(item, "id")?;
    let channel = get_s(item, "channel")?;
    let priority = get_s(item, "priority")?;
    let owned = |k: &str| opt_s(item, k).map(str::to_owned);
    let tenant = get_s(item, "tenant")?;
    let metadata: Option<serde_json::Value> = json_of(item, "metadata")?;
    let options = DeliveryOptions::from_metadata(metadata.as_ref())
        .map_err(|e| corrupt(format!("delivery options: {}", e.detail)))?;
    Ok(Message {
        id: MessageId::parse(id).ok_or_else(|| corrupt(format!("bad message id {id}")))?,
        tenant: TenantId::parse(tenant).map_err(|_| corrupt(format!("bad tenant {tenant}")))?,
        channel: Channel::parse(channel)
            .ok_or_else(|| corrupt(format!("unknown channel {channel}")))?,
        priority: Priority::parse(priority)
            .ok_or_else(|| corrupt(format!("unknown priority {priority}")))?,
        status: status_of(item)?,
        to: get_s(item, "recipient")?.to_owned(),
        from: owned("sender"),
        content: Content {
            subject: owned("subject"),
            body: owned("body"),
            html: owned("html"),
        },
        template: owned("template"),
        sms: json_of::<SmsInfo>(item, "sms")?,
        message_type: owned("message_type"),
        source_type: owned("source_type"),
        source_id: owned("source_id"),
        metadata,
        options,
        send_at: opt_n::<i64>(item, "send_at")?.map(from_ms),
        bulk_id: owned("bulk_id"),
        external_id: owned("external_id"),
        correlation_id: get_s(item, "correlation_id")?.to_owned(),
        attempts: get_n(item, "attempts")?,
        gateway: owned("gateway"),
        provider_message_id: owned("provider_message_id"),
        last_error: owned("last_error"),
        created_at: from_ms(get_n(item, "created_at")?),
        updated_at: from_ms(get_n(item, "updated_at")?),
    })
}

pub(crate) fn events_from_item(item: &Item) -> Result<Vec<DeliveryEvent>, StoreError> {
    let Some(AttributeValue::L(list)) = item.get("events") else {
        return Ok(Vec::new());
    };
    list.iter()
        .map(|v| {
            let AttributeValue::M(e) = v else {
                return Err(corrupt("an event is not a map"));
            };
            let kind = get_s(e, "kind")?;
            Ok(DeliveryEvent {
                kind: EventKind::parse(kind)
                    .ok_or_else(|| corrupt(format!("unknown event {kind}")))?,
                at: from_ms(get_n(e, "at")?),
                detail: json_of(e, "detail")?.unwrap_or(serde_json::Value::Null),
            })
        })
        .collect()
}
