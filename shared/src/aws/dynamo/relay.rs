//! The relay on DynamoDB, in the contacts table:
//! - `#numbers` / `<number>` (a partition no tenant can have: `#` is no tenant character):
//!   which tenant has a number, and its record, so an inbound text finds both with one read;
//! - `<tenant>` / `n#<number>`: the same record in the tenant's partition, for its list;
//! - `<tenant>` / `a#<assignment id>`: an assignment, its record and `held_until`;
//! - `<tenant>` / `l#<party number>#<held_until, ms, 13 digits>#<assignment id>`: a leg per
//!   party and one for the pool number, so the assignments of a party (or on a number) held
//!   after a time are one Query;
//! - `<tenant>` / `k#<party number>`: a party's lock, a version every creation for the party
//!   moves, so two creations racing for one party cannot both write;
//! - `<tenant>` / `pr#<client>#<worker>`: the pair's last number.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{Delete, TransactWriteItem, Update};
use chrono::{DateTime, Utc};

use super::item::{get_s, n, opt_n, s, Item};
use super::{build_error, query_up_to, unavailable, DynamoStore};
use crate::domain::relay::assignment::{Assignment, AssignmentId, PickError};
use crate::domain::relay::number::TenantNumber;
use crate::domain::{PhoneNumber, TenantId};
use crate::ports::{
    AssignmentDraft, AssignmentRecord, NumberRecord, NumberWriteError, RelayStore, StoreError,
};

const NUMBERS: &str = "#numbers";
/// The most numbers a tenant's pick reads.
const MAX_NUMBERS: usize = 5000;
/// Tries of a creation that races others for a party.
const CREATE_TRIES: u32 = 5;

fn leg_key(party: &PhoneNumber, held_until: DateTime<Utc>, id: AssignmentId) -> String {
    format!(
        "l#{party}#{:013}#{id}",
        held_until.timestamp_millis().max(0)
    )
}

fn lock_key(party: &PhoneNumber) -> String {
    format!("k#{party}")
}

fn read_number(item: &Item) -> Result<TenantNumber, StoreError> {
    let sk = get_s(item, "sk")?;
    let number = sk.strip_prefix("n#").unwrap_or(sk);
    NumberRecord::read(get_s(item, "owner")?, number, get_s(item, "record")?)
}

/// An assignment's item at `sk`: its main item (`a#`) or a leg (`l#`).
fn assignment_item(a: &Assignment, sk: String) -> Item {
    Item::from([
        ("tenant".to_owned(), s(a.tenant.as_str())),
        ("sk".to_owned(), s(sk)),
        ("owner".to_owned(), s(a.tenant.as_str())),
        ("id".to_owned(), s(a.id.to_string())),
        ("record".to_owned(), s(AssignmentRecord::to_json(a))),
        ("held_until".to_owned(), n(a.held().1.timestamp_millis())),
    ])
}

fn read_assignment(item: &Item) -> Result<Assignment, StoreError> {
    AssignmentRecord::read(
        get_s(item, "owner")?,
        get_s(item, "id")?,
        get_s(item, "record")?,
    )
}

impl DynamoStore {
    fn number_items(&self, t: &TenantNumber) -> [Item; 2] {
        let record = NumberRecord::to_json(t);
        let item = |pk: &str, sk: String| {
            Item::from([
                ("tenant".to_owned(), s(pk)),
                ("sk".to_owned(), s(sk)),
                ("owner".to_owned(), s(t.tenant.as_str())),
                ("record".to_owned(), s(record.clone())),
                ("version".to_owned(), n(t.version)),
            ])
        };
        [
            item(NUMBERS, t.number.to_string()),
            item(t.tenant.as_str(), format!("n#{}", t.number)),
        ]
    }

    fn assignment_items(&self, a: &Assignment) -> Result<Vec<TransactWriteItem>, StoreError> {
        let held = a.held().1;
        let mut items = vec![self.put(assignment_item(a, format!("a#{}", a.id)), None)?];
        for party in [&a.client.number, &a.worker.number, &a.number] {
            items.push(self.put(assignment_item(a, leg_key(party, held, a.id)), None)?);
        }
        Ok(items)
    }

    /// Moves a party's lock from `version` (none: never locked) to the next.
    fn lock(
        &self,
        tenant: &TenantId,
        party: &PhoneNumber,
        version: Option<u64>,
    ) -> Result<TransactWriteItem, StoreError> {
        let update = Update::builder()
            .table_name(self.contacts_table()?)
            .key("tenant", s(tenant.as_str()))
            .key("sk", s(lock_key(party)))
            .update_expression("SET version = :next")
            .expression_attribute_values(":next", n(version.unwrap_or(0) + 1));
        let update = match version {
            None => update.condition_expression("attribute_not_exists(sk)"),
            Some(v) => update
                .condition_expression("version = :v")
                .expression_attribute_values(":v", n(v)),
        };
        Ok(TransactWriteItem::builder()
            .update(update.build().map_err(build_error)?)
            .build())
    }

    async fn lock_version(
        &self,
        tenant: &TenantId,
        party: &PhoneNumber,
    ) -> Result<Option<u64>, StoreError> {
        let item = self.get_contact_item(tenant, lock_key(party)).await?;
        item.map_or(Ok(None), |i| opt_n(&i, "version"))
    }

    async fn tenant_numbers(
        &self,
        tenant: &TenantId,
        after: &str,
        limit: usize,
    ) -> Result<Vec<TenantNumber>, StoreError> {
        let query = self
            .client
            .query()
            .table_name(self.contacts_table()?)
            .key_condition_expression("tenant = :t AND sk BETWEEN :from AND :to")
            .expression_attribute_values(":t", s(tenant.as_str()))
            .expression_attribute_values(":from", s(format!("n#{after}!")))
            .expression_attribute_values(":to", s("n#~"))
            .consistent_read(true);
        query_up_to(query, limit, read_number).await
    }

    async fn legs(
        &self,
        tenant: &TenantId,
        party: &PhoneNumber,
        since: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Assignment>, StoreError> {
        let from = format!("l#{party}#{:013}", since.timestamp_millis().max(0) + 1);
        let query = self
            .client
            .query()
            .table_name(self.contacts_table()?)
            .key_condition_expression("tenant = :t AND sk BETWEEN :from AND :to")
            .expression_attribute_values(":t", s(tenant.as_str()))
            .expression_attribute_values(":from", s(from))
            .expression_attribute_values(":to", s(format!("l#{party}#~")))
            .consistent_read(true);
        query_up_to(query, limit, read_assignment).await
    }

    /// One try of a creation: reads, picks, and writes on the parties' locks as read. None
    /// when another write for a party came between.
    async fn try_create(
        &self,
        draft: &AssignmentDraft,
    ) -> Result<Option<Result<Assignment, PickError>>, StoreError> {
        let tenant = &draft.tenant;
        let (client, worker) = (&draft.client.number, &draft.worker.number);
        let locks = (
            self.lock_version(tenant, client).await?,
            self.lock_version(tenant, worker).await?,
        );
        let numbers = self.tenant_numbers(tenant, "", MAX_NUMBERS).await?;
        let mut theirs = self.legs(tenant, client, draft.starts_at, 1000).await?;
        theirs.extend(self.legs(tenant, worker, draft.starts_at, 1000).await?);
        let pair = format!("pr#{client}#{worker}");
        let previous = self.get_contact_item(tenant, pair.clone()).await?;
        let previous = previous.and_then(|i| {
            get_s(&i, "number")
                .ok()
                .and_then(|p| PhoneNumber::parse(p).ok())
        });
        let a = match draft.clone().pick(&numbers, &theirs, previous.as_ref()) {
            Ok(a) => a,
            Err(refused) => return Ok(Some(Err(refused))),
        };
        let mut items = self.assignment_items(&a)?;
        let pair_item = Item::from([
            ("tenant".to_owned(), s(tenant.as_str())),
            ("sk".to_owned(), s(pair)),
            ("number".to_owned(), s(a.number.to_string())),
        ]);
        items.push(self.put(pair_item, None)?);
        items.push(self.lock(tenant, client, locks.0)?);
        if client != worker {
            items.push(self.lock(tenant, worker, locks.1)?);
        }
        Ok(self.transact(items).await?.then_some(Ok(a)))
    }
}

#[async_trait]
impl RelayStore for DynamoStore {
    async fn add_number(&self, t: &TenantNumber) -> Result<(), NumberWriteError> {
        let [global, own] = self.number_items(t);
        let items = vec![self.put_new(global)?, self.put_new(own)?];
        match self.transact(items).await? {
            true => Ok(()),
            false => Err(NumberWriteError::Exists(t.number.to_string())),
        }
    }

    async fn number(
        &self,
        tenant: &TenantId,
        number: &PhoneNumber,
    ) -> Result<Option<TenantNumber>, StoreError> {
        let item = self.get_contact_item(tenant, format!("n#{number}")).await?;
        item.as_ref().map(read_number).transpose()
    }

    async fn number_owner(&self, number: &PhoneNumber) -> Result<Option<TenantNumber>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(self.contacts_table()?)
            .key("tenant", s(NUMBERS))
            .key("sk", s(number.to_string()))
            .send()
            .await
            .map_err(|e| unavailable("GetItem", e))?;
        out.item.as_ref().map(read_number).transpose()
    }

    async fn numbers(
        &self,
        tenant: &TenantId,
        after: Option<&PhoneNumber>,
        limit: usize,
    ) -> Result<Vec<TenantNumber>, StoreError> {
        let after = after.map(|a| a.to_string()).unwrap_or_default();
        self.tenant_numbers(tenant, &after, limit).await
    }

    async fn update_number(&self, t: &TenantNumber) -> Result<(), NumberWriteError> {
        let was = || n(t.version.saturating_sub(1));
        let [global, own] = self.number_items(t);
        let items = vec![
            self.put_if(global, "version = :v", was())?,
            self.put_if(own, "version = :v", was())?,
        ];
        match self.transact(items).await? {
            true => Ok(()),
            false => Err(NumberWriteError::Changed),
        }
    }

    async fn create_assignment(
        &self,
        draft: AssignmentDraft,
    ) -> Result<Result<Assignment, PickError>, StoreError> {
        for tries in 1..=CREATE_TRIES {
            if let Some(done) = self.try_create(&draft).await? {
                return Ok(done);
            }
            tokio::time::sleep(std::time::Duration::from_millis(10 * u64::from(tries))).await;
        }
        Err(StoreError::Unavailable(
            "an assignment's parties kept changing: try again".into(),
        ))
    }

    async fn assignment(
        &self,
        tenant: &TenantId,
        id: AssignmentId,
    ) -> Result<Option<Assignment>, StoreError> {
        let item = self.get_contact_item(tenant, format!("a#{id}")).await?;
        item.as_ref().map(read_assignment).transpose()
    }

    async fn assignments(
        &self,
        tenant: &TenantId,
        before: Option<AssignmentId>,
        limit: usize,
    ) -> Result<Vec<Assignment>, StoreError> {
        let to = before.map_or_else(|| "a#~".to_owned(), |b| format!("a#{b}"));
        let query = self
            .client
            .query()
            .table_name(self.contacts_table()?)
            .key_condition_expression("tenant = :t AND sk BETWEEN :from AND :to")
            .expression_attribute_values(":t", s(tenant.as_str()))
            .expression_attribute_values(":from", s("a#"))
            .expression_attribute_values(":to", s(to))
            .scan_index_forward(false);
        let found = query_up_to(query, limit + 1, read_assignment).await?;
        Ok(found
            .into_iter()
            .filter(|a| Some(a.id) != before)
            .take(limit)
            .collect())
    }

    async fn assignments_of(
        &self,
        tenant: &TenantId,
        party: &PhoneNumber,
        since: DateTime<Utc>,
    ) -> Result<Vec<Assignment>, StoreError> {
        self.legs(tenant, party, since, 1000).await
    }

    async fn is_participant(
        &self,
        tenant: &TenantId,
        party: &PhoneNumber,
    ) -> Result<bool, StoreError> {
        let legs = self.legs(tenant, party, DateTime::UNIX_EPOCH, 10).await?;
        Ok(legs.iter().any(|a| a.role_of(party).is_some()))
    }

    async fn end_assignment(
        &self,
        tenant: &TenantId,
        id: AssignmentId,
        at: DateTime<Utc>,
        keep_grace: bool,
    ) -> Result<Option<Assignment>, StoreError> {
        let Some(was) = self.assignment(tenant, id).await? else {
            return Ok(None);
        };
        let a = was.ended(at, keep_grace);
        if a == was {
            return Ok(Some(a));
        }
        let was = was.held().1;
        let mut items = self.assignment_items(&a)?;
        // The main item's put holds only if it is still as read.
        let main = assignment_item(&a, format!("a#{id}"));
        items[0] = self.put_if(main, "held_until = :v", n(was.timestamp_millis()))?;
        for party in [&a.client.number, &a.worker.number, &a.number] {
            let delete = Delete::builder()
                .table_name(self.contacts_table()?)
                .key("tenant", s(tenant.as_str()))
                .key("sk", s(leg_key(party, was, id)))
                .build()
                .map_err(build_error)?;
            items.push(TransactWriteItem::builder().delete(delete).build());
        }
        if !self.transact(items).await? {
            return Err(StoreError::Unavailable(format!(
                "assignment {id} changed meanwhile: try again"
            )));
        }
        Ok(Some(a))
    }
}
