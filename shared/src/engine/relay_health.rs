//! The relay numbers' health, counted when asked from what Herald stores: the inbound texts
//! to each number and the relay's sends from it over the last [`HEALTH_DAYS`] days, each read
//! within a budget so a busy tenant's request stays bounded (`partial` says it stopped).

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};

use super::Herald;
use crate::domain::relay::health::{is_carrier_error, NumberHealth, HEALTH_DAYS};
use crate::domain::{Keyword, MessageStatus, TenantId};
use crate::ports::{MessageFilter, StoreError};

/// Messages read per direction at most.
const READ_BUDGET: usize = 10_000;
const PAGE: usize = 500;

impl Herald {
    /// Each relay number's health, by number.
    pub async fn number_health(
        &self,
        tenant: &TenantId,
        now: DateTime<Utc>,
    ) -> Result<HashMap<String, NumberHealth>, StoreError> {
        let since = now - Duration::days(HEALTH_DAYS);
        let mut health: HashMap<String, NumberHealth> = HashMap::new();
        let inbound_partial = self.count_inbound(tenant, since, &mut health).await?;
        let outbound_partial = self.count_outbound(tenant, since, &mut health).await?;
        Ok(health
            .into_iter()
            .map(|(n, mut h)| {
                h.partial = inbound_partial || outbound_partial;
                (n, h.judged())
            })
            .collect())
    }

    /// Texts in by the number they were sent to; true when the budget ran out first.
    async fn count_inbound(
        &self,
        tenant: &TenantId,
        since: DateTime<Utc>,
        health: &mut HashMap<String, NumberHealth>,
    ) -> Result<bool, StoreError> {
        let (mut before, mut read) = (None, 0);
        loop {
            let page = self.inbound.list_inbound(tenant, before, PAGE).await?;
            for m in &page {
                if m.received_at < since {
                    return Ok(false);
                }
                let h = health.entry(m.to.clone()).or_default();
                h.inbound += 1;
                if m.keyword == Some(Keyword::Stop) {
                    h.opt_outs += 1;
                }
            }
            read += page.len();
            match page.last() {
                Some(last) if page.len() == PAGE && read < READ_BUDGET => before = Some(last.id),
                _ => return Ok(page.len() == PAGE),
            }
        }
    }

    /// The relay's sends by the number they went from; true when the budget ran out first.
    async fn count_outbound(
        &self,
        tenant: &TenantId,
        since: DateTime<Utc>,
        health: &mut HashMap<String, NumberHealth>,
    ) -> Result<bool, StoreError> {
        let filter = MessageFilter {
            source_type: Some("relay".into()),
            created_after: Some(since),
            ..MessageFilter::default()
        };
        // Each page reads a bounded slice of the tenant's messages, found or not: the pages are
        // counted too, so a tenant with few relay sends among many others is not walked whole.
        let (mut cursor, mut read, mut pages) = (None, 0, 0);
        loop {
            pages += 1;
            let page = self.store.search(tenant, &filter, cursor, PAGE).await?;
            for m in &page.items {
                let Some(from) = &m.from else { continue };
                let h = health.entry(from.clone()).or_default();
                h.outbound += 1;
                if matches!(m.status, MessageStatus::Failed | MessageStatus::Bounced) {
                    h.failed += 1;
                    if m.last_error.as_deref().is_some_and(is_carrier_error) {
                        h.carrier_errors += 1;
                    }
                }
            }
            read += page.items.len();
            match page.resume_below {
                Some(next) if read < READ_BUDGET && pages < READ_BUDGET / PAGE => {
                    cursor = Some(next)
                }
                Some(_) => return Ok(true),
                None => return Ok(false),
            }
        }
    }
}
