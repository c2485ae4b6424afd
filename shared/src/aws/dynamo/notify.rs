//! Webhooks out on DynamoDB. `webhook-endpoints` (PK `tenant`, SK `id`): one item per endpoint,
//! its fields as JSON. `webhook-deliveries` (PK `id`, TTL `expires_at`; index `by_endpoint`:
//! `endpoint_id`, `id`): one item per delivery, its attempts appended as they are made. Events
//! and deliveries wait on the notify queue for the `notify` function.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};

use super::item::{get_n, get_s, n, opt_n, s, Item};
use super::{epoch_seconds, unavailable, DynamoStore};
use crate::aws::settings::{required, WEBHOOK_DELIVERIES_TABLE, WEBHOOK_ENDPOINTS_TABLE};
use crate::aws::sqs::NotifyMessage;
use crate::domain::notify::{DeliveryId, EndpointId, EventId, EventType, Notice, WebhookEndpoint};
use crate::domain::TenantId;
use crate::ports::{
    first_id_at, Attempt, DeliveryState, EndpointRecord, StoreError, WebhookDelivery, WebhookStore,
};

fn endpoint_item(ep: &WebhookEndpoint) -> Item {
    Item::from([
        ("tenant".to_owned(), s(ep.tenant.as_str())),
        ("id".to_owned(), s(ep.id.to_string())),
        ("enabled".to_owned(), AttributeValue::Bool(ep.enabled)),
        ("endpoint".to_owned(), s(EndpointRecord::of(ep).to_json())),
    ])
}

fn endpoint_of(item: &Item) -> Result<WebhookEndpoint, StoreError> {
    EndpointRecord::read(
        get_s(item, "id")?,
        get_s(item, "tenant")?,
        get_s(item, "endpoint")?,
    )
    .map_err(|what| StoreError::Corrupt(format!("webhook endpoint item: bad {what}")))
}

fn delivery_item(d: &WebhookDelivery, expires_at: i64) -> Item {
    let mut item = Item::from([
        ("id".to_owned(), s(d.id.to_string())),
        ("tenant".to_owned(), s(d.tenant.as_str())),
        ("endpoint_id".to_owned(), s(d.endpoint.to_string())),
        ("event_id".to_owned(), s(d.event_id.to_string())),
        ("event_type".to_owned(), s(d.event_type.as_str())),
        ("payload".to_owned(), s(d.payload.clone())),
        ("created_at".to_owned(), n(d.created_at.timestamp_millis())),
        ("state".to_owned(), s(d.state.as_str())),
        ("attempts".to_owned(), AttributeValue::L(Vec::new())),
        ("expires_at".to_owned(), n(expires_at)),
    ]);
    if let Some(at) = d.next_attempt_at {
        item.insert("next_attempt_at".to_owned(), n(at.timestamp_millis()));
    }
    item
}

fn delivery_of(item: &Item) -> Result<WebhookDelivery, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("webhook delivery item: bad {what}"));
    let at = |v: i64| DateTime::from_timestamp_millis(v).unwrap_or_default();
    let attempts = match item.get("attempts") {
        Some(AttributeValue::L(list)) => list
            .iter()
            .map(|v| match v {
                AttributeValue::S(json) => {
                    serde_json::from_str(json).map_err(|_| corrupt("attempt"))
                }
                _ => Err(corrupt("attempt")),
            })
            .collect::<Result<Vec<Attempt>, _>>()?,
        _ => Vec::new(),
    };
    Ok(WebhookDelivery {
        id: DeliveryId::parse(get_s(item, "id")?).ok_or_else(|| corrupt("id"))?,
        event_id: EventId::parse(get_s(item, "event_id")?).ok_or_else(|| corrupt("event id"))?,
        tenant: TenantId::parse(get_s(item, "tenant")?).map_err(|_| corrupt("tenant"))?,
        endpoint: EndpointId::parse(get_s(item, "endpoint_id")?)
            .ok_or_else(|| corrupt("endpoint id"))?,
        event_type: EventType::parse(get_s(item, "event_type")?)
            .ok_or_else(|| corrupt("event type"))?,
        payload: get_s(item, "payload")?.to_owned(),
        created_at: at(get_n(item, "created_at")?),
        state: DeliveryState::parse(get_s(item, "state")?).ok_or_else(|| corrupt("state"))?,
        next_attempt_at: opt_n::<i64>(item, "next_attempt_at")?.map(at),
        attempts,
    })
}

impl DynamoStore {
    fn endpoints_table(&self) -> Result<&str, StoreError> {
        required(&self.tables.webhook_endpoints, WEBHOOK_ENDPOINTS_TABLE)
    }

    fn deliveries_table(&self) -> Result<&str, StoreError> {
        required(&self.tables.webhook_deliveries, WEBHOOK_DELIVERIES_TABLE)
    }

    /// An endpoint's deliveries through `by_endpoint`, in id order (newest first unless
    /// `forward`), from `low` or below `below` (one of them), at most `limit`.
    async fn query_deliveries(
        &self,
        tenant: &TenantId,
        endpoint: EndpointId,
        (low, below): (Option<String>, Option<String>),
        forward: bool,
        limit: usize,
    ) -> Result<Vec<WebhookDelivery>, StoreError> {
        let mut values = HashMap::from([(":e".to_owned(), s(endpoint.to_string()))]);
        let range = match (low, below) {
            (Some(l), _) => {
                values.insert(":low".into(), s(l));
                " AND id >= :low"
            }
            (None, Some(b)) => {
                values.insert(":below".into(), s(b));
                " AND id < :below"
            }
            (None, None) => "",
        };
        let (mut out, mut start) = (Vec::new(), None);
        while out.len() < limit {
            let page = self
                .client
                .query()
                .table_name(self.deliveries_table()?)
                .index_name("by_endpoint")
                .key_condition_expression(format!("endpoint_id = :e{range}"))
                .set_expression_attribute_values(Some(values.clone()))
                .scan_index_forward(forward)
                .limit((limit - out.len()).min(1000) as i32)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| unavailable("Query", e))?;
            for item in page.items() {
                let d = delivery_of(item)?;
                if d.tenant == *tenant {
                    out.push(d);
                }
            }
            start = page.last_evaluated_key().cloned();
            if start.is_none() {
                break;
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl WebhookStore for DynamoStore {
    async fn put_endpoint(&self, endpoint: &WebhookEndpoint) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(self.endpoints_table()?)
            .set_item(Some(endpoint_item(endpoint)))
            .send()
            .await
            .map_err(|e| unavailable("PutItem", e))?;
        Ok(())
    }

    async fn endpoint(
        &self,
        tenant: &TenantId,
        id: EndpointId,
    ) -> Result<Option<WebhookEndpoint>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(self.endpoints_table()?)
            .key("tenant", s(tenant.as_str()))
            .key("id", s(id.to_string()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| unavailable("GetItem", e))?;
        out.item().map(endpoint_of).transpose()
    }

    async fn endpoints(&self, tenant: &TenantId) -> Result<Vec<WebhookEndpoint>, StoreError> {
        let out = self
            .client
            .query()
            .table_name(self.endpoints_table()?)
            .key_condition_expression("tenant = :t")
            .expression_attribute_values(":t", s(tenant.as_str()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| unavailable("Query", e))?;
        out.items().iter().map(endpoint_of).collect()
    }

    async fn delete_endpoint(&self, tenant: &TenantId, id: EndpointId) -> Result<bool, StoreError> {
        let out = self
            .client
            .delete_item()
            .table_name(self.endpoints_table()?)
            .key("tenant", s(tenant.as_str()))
            .key("id", s(id.to_string()))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| unavailable("DeleteItem", e))?;
        // Its pending deliveries find no endpoint when they come up, and end there.
        Ok(out.attributes().is_some())
    }

    /// A Scan: the table holds endpoints only (at most 20 a tenant), and each function reads
    /// it at most every `subscriptions_refresh`.
    async fn enabled_endpoints(&self) -> Result<Vec<WebhookEndpoint>, StoreError> {
        let (mut out, mut start) = (Vec::new(), None);
        loop {
            let page = self
                .client
                .scan()
                .table_name(self.endpoints_table()?)
                .filter_expression("enabled = :yes")
                .expression_attribute_values(":yes", AttributeValue::Bool(true))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| unavailable("Scan", e))?;
            for item in page.items() {
                out.push(endpoint_of(item)?);
            }
            start = page.last_evaluated_key().cloned();
            if start.is_none() {
                return Ok(out);
            }
        }
    }

    async fn note_endpoint_health(
        &self,
        tenant: &TenantId,
        id: EndpointId,
        failing_since: Option<DateTime<Utc>>,
        disable: Option<String>,
    ) -> Result<(), StoreError> {
        let Some(mut ep) = self.endpoint(tenant, id).await? else {
            return Ok(());
        };
        ep.note_health(failing_since, disable.as_deref(), Utc::now());
        self.put_endpoint(&ep).await
    }

    async fn publish(&self, notices: Vec<Notice>) -> Result<(), StoreError> {
        let messages = notices
            .into_iter()
            .map(|notice| NotifyMessage::Event { notice })
            .collect();
        self.lanes.publish_notify(messages).await
    }

    /// Stores each delivery, then queues it for the `notify` function: on the ordered queue,
    /// in the order given, grouped by endpoint.
    async fn save_deliveries(&self, deliveries: Vec<WebhookDelivery>) -> Result<(), StoreError> {
        let expires = epoch_seconds(Utc::now()) + self.retention.as_secs() as i64;
        for d in &deliveries {
            // A fan-out repeated after a crash makes the same ids: what is stored (and maybe
            // tried) stays as it is. Queued again, it is deduplicated or found settled.
            let put = self
                .client
                .put_item()
                .table_name(self.deliveries_table()?)
                .set_item(Some(delivery_item(d, expires)))
                .condition_expression("attribute_not_exists(id)")
                .send()
                .await;
            super::applied(put, "PutItem")?;
        }
        // Only pushed deliveries go on the queue: a stream's are read from the table.
        let messages = deliveries
            .into_iter()
            .filter(|d| d.state == DeliveryState::Pending)
            .map(|d| NotifyMessage::Delivery {
                id: d.id,
                tenant: d.tenant,
                endpoint: Some(d.endpoint),
                attempts: None,
            })
            .collect();
        self.lanes.publish_notify(messages).await
    }

    async fn record_attempt(
        &self,
        id: DeliveryId,
        attempt: Attempt,
        state: DeliveryState,
        next_attempt_at: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(&attempt)
            .map_err(|e| StoreError::Corrupt(format!("attempt: {e}")))?;
        let append = "attempts = list_append(if_not_exists(attempts, :none), :one)";
        let mut update = self
            .client
            .update_item()
            .table_name(self.deliveries_table()?)
            .key("id", s(id.to_string()))
            .condition_expression("attribute_exists(id)")
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":state", s(state.as_str()))
            .expression_attribute_values(":none", AttributeValue::L(Vec::new()))
            .expression_attribute_values(":one", AttributeValue::L(vec![s(json)]));
        update = match next_attempt_at {
            Some(t) => update
                .update_expression(format!(
                    "SET #state = :state, next_attempt_at = :next, {append}"
                ))
                .expression_attribute_values(":next", n(t.timestamp_millis())),
            None => update.update_expression(format!(
                "SET #state = :state, {append} REMOVE next_attempt_at"
            )),
        };
        update
            .send()
            .await
            .map_err(|e| unavailable("UpdateItem", e))?;
        Ok(())
    }

    async fn deliveries(
        &self,
        tenant: &TenantId,
        endpoint: EndpointId,
        before: Option<DeliveryId>,
        limit: usize,
    ) -> Result<Vec<WebhookDelivery>, StoreError> {
        let range = (None, before.map(|b| b.to_string()));
        self.query_deliveries(tenant, endpoint, range, false, limit)
            .await
    }

    async fn delivery(
        &self,
        tenant: &TenantId,
        id: DeliveryId,
    ) -> Result<Option<WebhookDelivery>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(self.deliveries_table()?)
            .key("id", s(id.to_string()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| unavailable("GetItem", e))?;
        let found = out.item().map(delivery_of).transpose()?;
        Ok(found.filter(|d| d.tenant == *tenant))
    }

    async fn deliveries_since(
        &self,
        tenant: &TenantId,
        endpoint: EndpointId,
        since: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<WebhookDelivery>, StoreError> {
        let low = first_id_at(since).to_string();
        self.query_deliveries(tenant, endpoint, (Some(low), None), true, limit)
            .await
    }

    /// The table's TTL deletes deliveries past retention.
    async fn purge_deliveries(&self, _cutoff: DateTime<Utc>) -> Result<u64, StoreError> {
        Ok(0)
    }
}
