//! The suppression list on DynamoDB (`suppressions`: PK `scope`, SK `entry` =
//! `<channel>#<address>`, TTL `expires_at`), soft-bounce strikes in the same table, and the
//! processed-event log in the idempotency table. The check reads look-up items, one per
//! address (`suppression_lookup.rs`).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::batch::Read;
use super::item::{get_n, get_s, ms, n, opt_n, opt_s, s, Item};
use super::{applied, epoch_seconds, query_up_to, unavailable, DynamoStore};
use crate::domain::suppression::{Reason, Scope, Suppression};
use crate::domain::{Channel, MessageId, TenantId};
use aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure;

use super::Updated;
use crate::ports::{
    ClaimToken, EventClaim, EventLog, ParkedEvents, ParkedMark, ProviderEvent, SentUnder,
    StoreError, SuppressionFilter, SuppressionStore,
};

pub(super) fn entry_key(channel: Channel, address: &str) -> String {
    format!("{}#{address}", channel.as_str())
}

pub(super) fn key(scope: &str, entry: String) -> Item {
    HashMap::from([
        ("scope".to_owned(), s(scope)),
        ("entry".to_owned(), s(entry)),
    ])
}

/// An entry's own fields: the list item holds them beside its key, the look-up item as a map.
pub(super) fn entry_fields(e: &Suppression) -> Item {
    let mut fields = HashMap::from([
        ("reason".to_owned(), s(e.reason.as_str())),
        ("created_at".to_owned(), n(ms(e.created_at))),
    ]);
    if let Some(source) = &e.source {
        fields.insert("source".into(), s(source));
    }
    if let Some(at) = e.expires_at {
        // TTL takes epoch seconds; Herald also checks it, since TTL deletes late.
        fields.insert("expires_at".into(), n(epoch_seconds(at)));
    }
    fields
}

pub(super) fn to_item(e: &Suppression) -> Item {
    let mut item = key(e.scope.key(), entry_key(e.channel, &e.address));
    item.extend(entry_fields(e));
    item
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("suppression item: {what}"))
}

pub(super) fn from_item(item: &Item) -> Result<Suppression, StoreError> {
    let scope = Scope::from_key(get_s(item, "scope")?).ok_or_else(|| corrupt("scope"))?;
    let (channel, address) = get_s(item, "entry")?
        .split_once('#')
        .ok_or_else(|| corrupt("entry"))?;
    let channel = Channel::parse(channel).ok_or_else(|| corrupt("channel"))?;
    from_fields(scope, channel, address, item)
}

/// The entry of `scope` for an address, from its fields ([`entry_fields`]).
pub(super) fn from_fields(
    scope: Scope,
    channel: Channel,
    address: &str,
    fields: &Item,
) -> Result<Suppression, StoreError> {
    Ok(Suppression {
        scope,
        channel,
        address: address.to_owned(),
        reason: Reason::parse(get_s(fields, "reason")?).ok_or_else(|| corrupt("reason"))?,
        source: opt_s(fields, "source").map(str::to_owned),
        created_at: DateTime::from_timestamp_millis(get_n(fields, "created_at")?)
            .unwrap_or_default(),
        expires_at: opt_n::<i64>(fields, "expires_at")?
            .and_then(|t| DateTime::from_timestamp(t, 0)),
    })
}

#[async_trait]
impl SuppressionStore for DynamoStore {
    async fn suppressed(
        &self,
        tenant: &TenantId,
        channel: Channel,
        addresses: &[String],
        now: DateTime<Utc>,
    ) -> Result<HashMap<String, Suppression>, StoreError> {
        let table = self.suppressions_table()?;
        self.lookup_suppressions(table, tenant, channel, addresses, now)
            .await
    }

    async fn put_suppressions(&self, entries: Vec<Suppression>) -> Result<usize, StoreError> {
        let table = self.suppressions_table()?;
        // Who is new: one batch read of the distinct keys first (BatchGetItem refuses a key
        // given twice), then the transactions (an import is thousands).
        let distinct: HashSet<(&str, String)> = entries
            .iter()
            .map(|e| (e.scope.key(), entry_key(e.channel, &e.address)))
            .collect();
        let keys: Vec<Item> = distinct
            .iter()
            .map(|(scope, entry)| key(scope, entry.clone()))
            .collect();
        let distinct = keys.len();
        let existing = self
            .batch_get_keys(table, keys, None, Read::Strong)
            .await?
            .len();
        self.write_suppressions(table, entries).await?;
        Ok(distinct.saturating_sub(existing))
    }

    async fn get_suppression(
        &self,
        scope: &Scope,
        channel: Channel,
        address: &str,
    ) -> Result<Option<Suppression>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(self.suppressions_table()?)
            .set_key(Some(key(scope.key(), entry_key(channel, address))))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| unavailable("GetItem", e))?;
        out.item.as_ref().map(from_item).transpose()
    }

    async fn delete_suppression(
        &self,
        scope: &Scope,
        channel: Channel,
        address: &str,
    ) -> Result<bool, StoreError> {
        let table = self.suppressions_table()?;
        self.delete_suppression_entry(table, scope, channel, address, None)
            .await
    }

    async fn lift_suppression(
        &self,
        scope: &Scope,
        channel: Channel,
        address: &str,
        reason: Reason,
        made_by: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let table = self.suppressions_table()?;
        let only_if = Some((reason, made_by));
        self.delete_suppression_entry(table, scope, channel, address, only_if)
            .await
    }

    async fn list_suppressions(
        &self,
        scope: &Scope,
        filter: &SuppressionFilter,
        after: Option<(Channel, String)>,
        limit: usize,
    ) -> Result<Vec<Suppression>, StoreError> {
        let mut query = self
            .client
            .query()
            .table_name(self.suppressions_table()?)
            .expression_attribute_names("#scope", "scope")
            .expression_attribute_values(":scope", s(scope.key()))
            .set_exclusive_start_key(after.map(|(c, a)| key(scope.key(), entry_key(c, &a))));
        query = match filter.channel {
            Some(c) => query
                .key_condition_expression("#scope = :scope AND begins_with(entry, :channel)")
                .expression_attribute_values(":channel", s(format!("{}#", c.as_str()))),
            None => query.key_condition_expression("#scope = :scope"),
        };
        if let Some(r) = filter.reason {
            query = query
                .filter_expression("reason = :reason")
                .expression_attribute_values(":reason", s(r.as_str()));
        }
        query_up_to(query, limit, from_item).await
    }

    async fn soft_bounce(
        &self,
        tenant: &TenantId,
        channel: Channel,
        address: &str,
        at: DateTime<Utc>,
        window: Duration,
    ) -> Result<u32, StoreError> {
        let table = self.suppressions_table()?;
        let scope = format!("soft#{}", tenant.as_str());
        let prefix = format!("{}#", entry_key(channel, address));
        // One item per strike, gone (TTL) when it leaves the window.
        let expires = at + chrono::Duration::from_std(window).unwrap_or_default();
        self.client
            .put_item()
            .table_name(table)
            .item("scope", s(&scope))
            .item(
                "entry",
                s(format!(
                    "{prefix}{}#{}",
                    ms(at),
                    uuid::Uuid::now_v7().simple()
                )),
            )
            .item("at", n(ms(at)))
            .item("expires_at", n(epoch_seconds(expires)))
            .send()
            .await
            .map_err(|e| unavailable("PutItem", e))?;
        let since = ms(at) - window.as_millis() as i64;
        let out = self
            .client
            .query()
            .table_name(table)
            .key_condition_expression("#scope = :scope AND begins_with(entry, :prefix)")
            .filter_expression("#at >= :since")
            .expression_attribute_names("#scope", "scope")
            .expression_attribute_names("#at", "at")
            .expression_attribute_values(":scope", s(scope))
            .expression_attribute_values(":prefix", s(prefix))
            .expression_attribute_values(":since", n(since))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| unavailable("Query", e))?;
        Ok(out.count.max(0) as u32)
    }
}

/// A provider event's claim or mark in the `idempotency` table.
fn event_key(source: &str, id: &str) -> String {
    format!("event#{source}#{id}")
}

/// Epoch seconds `d` after `now` (the `expires_at` of a mark or claim).
fn after(now: DateTime<Utc>, d: Duration) -> i64 {
    epoch_seconds(now + chrono::Duration::from_std(d).unwrap_or_default())
}

impl DynamoStore {
    /// Ends `token`'s claim on an event with a mark kept for `keep`: applied, or (`parked`)
    /// its events parked and not all tried, for the next claim to release.
    async fn end_claim(
        &self,
        source: &str,
        id: &str,
        token: ClaimToken,
        keep: Duration,
        parked: bool,
    ) -> Result<(), StoreError> {
        let until = after(Utc::now(), keep);
        let mut mark = self.event_mark(source, id, until)?;
        if parked {
            mark = mark.item("parked_until", n(until));
        }
        let result = mark
            // An item gone (TTL once its lease ran out, or released by a holder that took
            // over and failed) is this holder's to mark: it did apply (or park) the event.
            .condition_expression("attribute_not_exists(pk) OR applying = :token")
            .expression_attribute_values(":token", n(token.0))
            .send()
            .await;
        applied(result, "PutItem").map(|_| ())
    }

    /// Claims an event whose earlier claim was given up as parked (its item lives until
    /// `parked_until`, its TTL): the lease is `lease_until`, so that a holder that dies
    /// leaves the item to its TTL, not to the lease's.
    async fn claim_parked(
        &self,
        source: &str,
        id: &str,
        token: ClaimToken,
        now: DateTime<Utc>,
        until: i64,
    ) -> Result<EventClaim, StoreError> {
        let result = self
            .event_claim(source, id, token, now, until)?
            .update_expression("SET applying = :token, lease_until = :until")
            .condition_expression(
                "parked_until > :now AND (attribute_not_exists(applying) OR lease_until < :now)",
            )
            .send()
            .await;
        Ok(match super::updated(result)? {
            Updated::Applied(_) => EventClaim::Parked(token),
            // Marked applied meanwhile: a mark alone.
            Updated::Refused(Some(was))
                if !was.contains_key("applying") && !was.contains_key("parked_until") =>
            {
                EventClaim::Applied
            }
            // Held; or its word ran out this second, or the item went: come back.
            Updated::Refused(_) => EventClaim::Applying,
        })
    }

    /// The update of an event's claim by `token`: `:token`, `:until` (epoch seconds) and
    /// `:now` are bound, and a refusal returns the item as it was. Its expressions are the
    /// caller's.
    fn event_claim(
        &self,
        source: &str,
        id: &str,
        token: ClaimToken,
        now: DateTime<Utc>,
        until: i64,
    ) -> Result<
        aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder,
        StoreError,
    > {
        Ok(self
            .client
            .update_item()
            .table_name(self.idempotency_table()?)
            .key("pk", s(event_key(source, id)))
            .expression_attribute_values(":until", n(until))
            .expression_attribute_values(":token", n(token.0))
            .expression_attribute_values(":now", n(epoch_seconds(now)))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld))
    }

    /// The put of an event's mark, expiring at `expires` (epoch seconds); its condition is
    /// the caller's.
    fn event_mark(
        &self,
        source: &str,
        id: &str,
        expires: i64,
    ) -> Result<aws_sdk_dynamodb::operation::put_item::builders::PutItemFluentBuilder, StoreError>
    {
        Ok(self
            .client
            .put_item()
            .table_name(self.idempotency_table()?)
            .item("pk", s(event_key(source, id)))
            .item("expires_at", n(expires)))
    }
}

#[async_trait]
impl EventLog for DynamoStore {
    async fn first_seen(&self, source: &str, id: &str, keep: Duration) -> Result<bool, StoreError> {
        let now = Utc::now();
        let result = self
            .event_mark(source, id, after(now, keep))?
            .condition_expression("attribute_not_exists(pk) OR expires_at < :now")
            .expression_attribute_values(":now", n(epoch_seconds(now)))
            .send()
            .await;
        applied(result, "PutItem")
    }

    async fn claim_event(
        &self,
        source: &str,
        id: &str,
        lease: Duration,
    ) -> Result<EventClaim, StoreError> {
        let now = Utc::now();
        let until = after(now, lease);
        let token = ClaimToken::new();
        let result = self
            .event_claim(source, id, token, now, until)?
            .update_expression(
                "SET expires_at = :until, applying = :token REMOVE parked_until, lease_until",
            )
            // A claim or mark that ran out counts as never made.
            .condition_expression("attribute_not_exists(pk) OR expires_at < :now")
            .send()
            .await;
        Ok(match super::updated(result)? {
            Updated::Applied(_) => EventClaim::First(token),
            Updated::Refused(Some(was)) if opt_n::<i64>(&was, "parked_until")?.is_some() => {
                self.claim_parked(source, id, token, now, until).await?
            }
            Updated::Refused(Some(was)) if was.contains_key("applying") => EventClaim::Applying,
            Updated::Refused(_) => EventClaim::Applied,
        })
    }

    async fn event_applied(
        &self,
        source: &str,
        id: &str,
        token: ClaimToken,
        keep: Duration,
    ) -> Result<(), StoreError> {
        self.end_claim(source, id, token, keep, false).await
    }

    async fn event_parked(
        &self,
        source: &str,
        id: &str,
        token: ClaimToken,
        keep: Duration,
    ) -> Result<(), StoreError> {
        self.end_claim(source, id, token, keep, true).await
    }

    async fn release_event(
        &self,
        source: &str,
        id: &str,
        token: ClaimToken,
    ) -> Result<(), StoreError> {
        let result = self
            .client
            .delete_item()
            .table_name(self.idempotency_table()?)
            .key("pk", s(event_key(source, id)))
            .condition_expression("applying = :token")
            .expression_attribute_values(":token", n(token.0))
            .send()
            .await;
        applied(result, "DeleteItem").map(|_| ())
    }

    async fn park(
        &self,
        events: &[ProviderEvent],
        keep: Duration,
    ) -> Result<SentUnder, StoreError> {
        self.park_events(events, keep).await
    }

    async fn parked(
        &self,
        gateway: &str,
        provider_message_id: &str,
        sent: Option<MessageId>,
    ) -> Result<ParkedEvents, StoreError> {
        match sent {
            Some(id) => {
                self.parked_after_sent(gateway, provider_message_id, id)
                    .await
            }
            None => self.parked_events(gateway, provider_message_id).await,
        }
    }

    async fn forget_parked(
        &self,
        gateway: &str,
        provider_message_id: &str,
        mark: ParkedMark,
    ) -> Result<(), StoreError> {
        self.forget_parked_events(gateway, provider_message_id, mark)
            .await
    }
}
