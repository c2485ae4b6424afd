//! Event streams: a tenant follows its events live (`GET /v1/events/stream`, `herald tail`).
//!
//! A stream is an endpoint whose deliveries are kept rather than pushed, so it rides on the
//! same fan-out on both backends and a reader that reconnects with its cursor misses nothing
//! still kept. A reader renews the stream's lease each time it connects; a stream nobody reads
//! lapses, is no longer fanned out to, and is deleted when its tenant next registers one.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;

use super::EndpointError;
use crate::domain::notify::{
    DeliveryId, EndpointId, EventType, ProviderSource, Purpose, Target, WebhookEndpoint,
};
use crate::domain::TenantId;
use crate::engine::Herald;
use crate::ports::WebhookDelivery;

#[derive(Debug, Clone)]
pub struct StreamConfig {
    /// How long one connection lasts before the reader reconnects with its cursor (short on
    /// Lambda, whose API Gateway must answer within 30 s and sends the body whole).
    pub window: Duration,
    /// A stream unread for this long past its last connection's window lapses.
    pub lease: Duration,
    /// Events younger than this are held back a moment, so one stored a little late by
    /// another process (several Lambdas fan out at once) is not passed over.
    pub settle: Duration,
    /// How often an open connection looks for new events.
    pub poll: Duration,
    /// Connections open at once, per tenant and in all: each holds a connection slot.
    pub max_open_per_tenant: usize,
    pub max_open: usize,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            window: Duration::from_secs(300),
            lease: Duration::from_secs(600),
            settle: Duration::ZERO,
            poll: Duration::from_millis(250),
            max_open_per_tenant: 4,
            max_open: 64,
        }
    }
}

/// Where a reader is: its stream, and the last event it was sent. Written `<stream>` or
/// `<stream>.<delivery>`; it is each event's SSE `id`, so a reconnecting client sends it back
/// as `Last-Event-ID`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamCursor {
    pub stream: EndpointId,
    pub after: Option<DeliveryId>,
}

impl StreamCursor {
    pub fn parse(s: &str) -> Option<StreamCursor> {
        let (stream, after) = match s.split_once('.') {
            Some((stream, after)) => (stream, Some(DeliveryId::parse(after)?)),
            None => (s, None),
        };
        Some(StreamCursor {
            stream: EndpointId::parse(stream)?,
            after,
        })
    }
}

impl std::fmt::Display for StreamCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.after {
            Some(after) => write!(f, "{}.{after}", self.stream),
            None => write!(f, "{}", self.stream),
        }
    }
}

/// How many connections are open, per tenant.
#[derive(Default)]
pub(crate) struct OpenStreams(Arc<Mutex<HashMap<TenantId, usize>>>);

/// An open connection's place among them, given back when dropped.
pub struct OpenSlot {
    open: Arc<Mutex<HashMap<TenantId, usize>>>,
    tenant: TenantId,
}

impl Drop for OpenSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock();
        if let Some(n) = open.get_mut(&self.tenant) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.tenant);
            }
        }
    }
}

impl OpenStreams {
    fn admit(&self, tenant: &TenantId, cfg: &StreamConfig) -> Result<OpenSlot, EndpointError> {
        let mut open = self.0.lock();
        let total: usize = open.values().sum();
        let mine = open.get(tenant).copied().unwrap_or(0);
        if mine >= cfg.max_open_per_tenant {
            return Err(EndpointError::Busy(format!(
                "a tenant may have {} event streams open at once",
                cfg.max_open_per_tenant
            )));
        }
        if total >= cfg.max_open {
            return Err(EndpointError::Busy(
                "the server has as many event streams open as it serves".into(),
            ));
        }
        open.insert(tenant.clone(), mine + 1);
        Ok(OpenSlot {
            open: self.0.clone(),
            tenant: tenant.clone(),
        })
    }
}

/// What a new stream follows.
#[derive(Debug, Clone)]
pub enum StreamOf {
    /// Herald's events of these types (none: every type).
    Events(Vec<EventType>),
    /// These providers' webhooks (none: every provider's): a development forward.
    Forwards(Vec<ProviderSource>),
}

impl StreamOf {
    fn purpose(&self) -> Purpose {
        match self {
            StreamOf::Events(_) => Purpose::Events,
            StreamOf::Forwards(_) => Purpose::DevForward,
        }
    }

    fn endpoint(
        self,
        tenant: &TenantId,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> WebhookEndpoint {
        let tenant = tenant.clone();
        match self {
            StreamOf::Events(types) => WebhookEndpoint::stream(tenant, types, until, now),
            StreamOf::Forwards(sources) => {
                WebhookEndpoint::dev_forward(tenant, Target::Stream { until }, &sources, now)
            }
        }
    }
}

/// One connection's reading of a stream.
pub struct StreamReader {
    pub tenant: TenantId,
    pub cursor: StreamCursor,
    pub event_types: Vec<EventType>,
    /// When the stream began: nothing older is read.
    began: DateTime<Utc>,
    _slot: OpenSlot,
}

/// The most events one read returns.
const READ_BATCH: usize = 500;

impl Herald {
    /// Opens a connection on the cursor's stream (which must follow the same kind of thing),
    /// renewing its lease, or on a new stream of `of`.
    pub async fn open_stream(
        &self,
        tenant: &TenantId,
        cursor: Option<StreamCursor>,
        of: StreamOf,
    ) -> Result<StreamReader, EndpointError> {
        let cfg = &self.config.notify.streams;
        let slot = self.outbox.open_streams.admit(tenant, cfg)?;
        let store = self.webhook_store()?;
        let now = Utc::now();
        let until = now + chrono::Duration::from_std(cfg.window + cfg.lease).unwrap_or_default();
        let (ep, cursor) = match cursor {
            Some(c) => {
                let mut ep = store
                    .endpoint(tenant, c.stream)
                    .await?
                    .filter(|ep| ep.is_stream() && ep.is_live(now) && ep.purpose == of.purpose())
                    .ok_or(EndpointError::NotFound)?;
                ep.target = Target::Stream { until };
                store.put_endpoint(&ep).await?;
                (ep, c)
            }
            None => {
                self.make_room(tenant).await?;
                let ep = of.endpoint(tenant, until, now);
                self.save_endpoint(&ep).await?;
                let c = StreamCursor {
                    stream: ep.id,
                    after: None,
                };
                (ep, c)
            }
        };
        Ok(StreamReader {
            tenant: tenant.clone(),
            cursor,
            event_types: ep.event_types,
            began: ep.created_at,
            _slot: slot,
        })
    }

    /// The stream's events after the reader's cursor, in order, moving the cursor past them.
    /// Events younger than the settle time wait for a later read.
    pub async fn read_stream(
        &self,
        reader: &mut StreamReader,
    ) -> Result<Vec<WebhookDelivery>, EndpointError> {
        let store = self.webhook_store()?;
        let settle =
            chrono::Duration::from_std(self.config.notify.streams.settle).unwrap_or_default();
        let ripe_before = Utc::now() - settle;
        let mut out = Vec::new();
        // From the settle time before the cursor's event: one stored late may be there.
        let mut since = reader
            .cursor
            .after
            .map_or(reader.began, |d| d.made_at() - settle);
        loop {
            let page = store
                .deliveries_since(&reader.tenant, reader.cursor.stream, since, READ_BATCH)
                .await?;
            let full = page.len() == READ_BATCH;
            let last_made = page.last().map(|d| d.id.made_at());
            for d in page {
                let after = reader.cursor.after;
                if after.is_some_and(|a| d.id <= a) {
                    continue;
                }
                if d.id.made_at() >= ripe_before {
                    return Ok(out);
                }
                reader.cursor.after = Some(d.id);
                out.push(d);
            }
            match last_made {
                // A page of events already sent: read on past it.
                Some(t) if full && out.is_empty() && t > since => since = t,
                _ => return Ok(out),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_reads_back_as_written_and_junk_is_refused() {
        let stream = EndpointId::new();
        for after in [None, Some(DeliveryId::new())] {
            let c = StreamCursor { stream, after };
            assert_eq!(StreamCursor::parse(&c.to_string()), Some(c));
        }
        for junk in [
            "",
            "x",
            "1.2",
            &format!("{stream}."),
            &format!("{stream}.{stream}x"),
        ] {
            assert_eq!(StreamCursor::parse(junk), None, "{junk}");
        }
    }

    #[test]
    fn a_stream_lapses_at_its_lease_and_a_pushed_endpoint_never_does() {
        // Stored to the millisecond.
        let now =
            DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap_or_default();
        let tenant = TenantId::parse("acme").unwrap_or_else(|_| unreachable!());
        let until = now + chrono::Duration::minutes(10);
        let s = WebhookEndpoint::stream(tenant, vec![], until, now);
        assert!(s.is_stream() && s.url().is_none());
        assert!(s.is_live(now));
        assert!(!s.is_live(until));
        let read = crate::ports::EndpointRecord::read(
            &s.id.to_string(),
            "acme",
            &crate::ports::EndpointRecord::of(&s).to_json(),
        );
        assert_eq!(read.map(|r| r.target), Ok(s.target));
    }
}
