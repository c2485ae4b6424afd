//! The relay's numbers and assignments on SQLite: each as a JSON record beside the columns it
//! is found by. An assignment is created in one writer job that reads the parties'
//! assignments, picks the number and writes, so creations never race.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};

use super::{ms, SqliteBackend};
use crate::domain::relay::assignment::{Assignment, AssignmentId, PickError};
use crate::domain::relay::number::TenantNumber;
use crate::domain::{PhoneNumber, TenantId};
use crate::ports::{
    AssignmentDraft, AssignmentRecord, NumberRecord, NumberWriteError, RelayStore, StoreError,
};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS relay_numbers (
    number TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    record TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS relay_numbers_by_tenant ON relay_numbers (tenant, number);
CREATE TABLE IF NOT EXISTS relay_assignments (
    tenant TEXT NOT NULL,
    id TEXT NOT NULL,
    number TEXT NOT NULL,
    client TEXT NOT NULL,
    worker TEXT NOT NULL,
    -- The end of the window (or of an early end) plus the grace, ms: the number is held
    -- for the parties until then.
    held_until INTEGER NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (tenant, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS relay_assignments_by_client
    ON relay_assignments (tenant, client, held_until);
CREATE INDEX IF NOT EXISTS relay_assignments_by_worker
    ON relay_assignments (tenant, worker, held_until);
CREATE INDEX IF NOT EXISTS relay_assignments_by_number
    ON relay_assignments (tenant, number, held_until);
";

fn corrupt(e: StoreError) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
}

/// Rows of `(tenant, key, record)`, each read into its type by `read`.
fn read_records<T>(
    conn: &Connection,
    (sql, args): (&str, &[&dyn rusqlite::ToSql]),
    read: fn(&str, &str, &str) -> Result<T, StoreError>,
) -> rusqlite::Result<Vec<T>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(args, |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    rows.map(|row| {
        let (tenant, key, record) = row?;
        read(&tenant, &key, &record).map_err(corrupt)
    })
    .collect()
}

fn read_numbers(
    conn: &Connection,
    sql: &str,
    args: &[&dyn rusqlite::ToSql],
) -> rusqlite::Result<Vec<TenantNumber>> {
    read_records(conn, (sql, args), NumberRecord::read)
}

fn read_assignments(
    conn: &Connection,
    sql: &str,
    args: &[&dyn rusqlite::ToSql],
) -> rusqlite::Result<Vec<Assignment>> {
    read_records(conn, (sql, args), AssignmentRecord::read)
}

fn one_assignment(
    conn: &Connection,
    tenant: &str,
    id: &str,
) -> rusqlite::Result<Option<Assignment>> {
    let sql = "SELECT tenant, id, record FROM relay_assignments WHERE tenant = ?1 AND id = ?2";
    Ok(read_assignments(conn, sql, &[&tenant, &id])?
        .into_iter()
        .next())
}

/// The assignments `party` is in (as client, worker or pool number), held after `since`.
fn party_assignments(
    conn: &Connection,
    tenant: &str,
    party: &str,
    since: DateTime<Utc>,
) -> rusqlite::Result<Vec<Assignment>> {
    read_assignments(
        conn,
        "SELECT tenant, id, record FROM relay_assignments WHERE tenant = ?1 AND client = ?2 \
         AND held_until > ?3 UNION SELECT tenant, id, record FROM relay_assignments \
         WHERE tenant = ?1 AND worker = ?2 AND held_until > ?3 UNION SELECT tenant, id, record \
         FROM relay_assignments WHERE tenant = ?1 AND number = ?2 AND held_until > ?3 \
         ORDER BY id",
        &[&tenant, &party, &ms(since)],
    )
}

fn save_assignment(conn: &Connection, a: &Assignment) -> rusqlite::Result<()> {
    let held = a.held().1;
    conn.prepare_cached(
        "INSERT INTO relay_assignments (tenant, id, number, client, worker, held_until, record) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (tenant, id) DO UPDATE SET \
         held_until = excluded.held_until, record = excluded.record",
    )?
    .execute(params![
        a.tenant.as_str(),
        a.id.to_string(),
        a.number.as_str(),
        a.client.number.as_str(),
        a.worker.number.as_str(),
        ms(held),
        AssignmentRecord::to_json(a),
    ])?;
    Ok(())
}

/// Reads what the pick needs and writes the assignment, inside one writer job.
fn create(
    conn: &Connection,
    draft: AssignmentDraft,
) -> rusqlite::Result<Result<Assignment, PickError>> {
    let tenant = draft.tenant.as_str().to_owned();
    let numbers = read_numbers(
        conn,
        "SELECT tenant, number, record FROM relay_numbers WHERE tenant = ?1 ORDER BY number",
        &[&tenant],
    )?;
    let (client, worker) = (
        draft.client.number.to_string(),
        draft.worker.number.to_string(),
    );
    let mut theirs = party_assignments(conn, &tenant, &client, draft.starts_at)?;
    theirs.extend(party_assignments(conn, &tenant, &worker, draft.starts_at)?);
    let previous: Option<String> = conn
        .prepare_cached(
            "SELECT number FROM relay_assignments WHERE tenant = ?1 AND client = ?2 \
             AND worker = ?3 ORDER BY id DESC LIMIT 1",
        )?
        .query_row(params![tenant, client, worker], |r| r.get(0))
        .optional()?;
    let previous = previous.and_then(|p| PhoneNumber::parse(&p).ok());
    let picked = draft.pick(&numbers, &theirs, previous.as_ref());
    if let Ok(a) = &picked {
        save_assignment(conn, a)?;
    }
    Ok(picked)
}

#[async_trait]
impl RelayStore for SqliteBackend {
    async fn add_number(&self, n: &TenantNumber) -> Result<(), NumberWriteError> {
        let (number, tenant, record) = (
            n.number.to_string(),
            n.tenant.as_str().to_owned(),
            NumberRecord::to_json(n),
        );
        let shown = number.clone();
        let added = self
            .writer
            .run(1, move |conn| {
                conn.prepare_cached(
                    "INSERT INTO relay_numbers (number, tenant, record) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (number) DO NOTHING",
                )?
                .execute(params![number, tenant, record])
            })
            .await?;
        match added {
            1 => Ok(()),
            _ => Err(NumberWriteError::Exists(shown)),
        }
    }

    async fn number(
        &self,
        tenant: &TenantId,
        number: &PhoneNumber,
    ) -> Result<Option<TenantNumber>, StoreError> {
        Ok(self
            .number_owner(number)
            .await?
            .filter(|n| &n.tenant == tenant))
    }

    async fn number_owner(&self, number: &PhoneNumber) -> Result<Option<TenantNumber>, StoreError> {
        let number = number.to_string();
        let found = self
            .readers
            .run(move |conn| {
                read_numbers(
                    conn,
                    "SELECT tenant, number, record FROM relay_numbers WHERE number = ?1",
                    &[&number],
                )
            })
            .await?;
        Ok(found.into_iter().next())
    }

    async fn numbers(
        &self,
        tenant: &TenantId,
        after: Option<&PhoneNumber>,
        limit: usize,
    ) -> Result<Vec<TenantNumber>, StoreError> {
        let tenant = tenant.as_str().to_owned();
        let after = after.map(|a| a.to_string()).unwrap_or_default();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.readers
            .run(move |conn| {
                read_numbers(
                    conn,
                    "SELECT tenant, number, record FROM relay_numbers WHERE tenant = ?1 \
                     AND number > ?2 ORDER BY number LIMIT ?3",
                    &[&tenant, &after, &limit],
                )
            })
            .await
    }

    async fn update_number(&self, n: &TenantNumber) -> Result<(), NumberWriteError> {
        let (number, tenant, record) = (
            n.number.to_string(),
            n.tenant.as_str().to_owned(),
            NumberRecord::to_json(n),
        );
        let was = n.version.saturating_sub(1);
        let changed = self
            .writer
            .run(1, move |conn| {
                conn.prepare_cached(
                    "UPDATE relay_numbers SET record = ?3 WHERE number = ?1 AND tenant = ?2 \
                     AND json_extract(record, '$.version') = ?4",
                )?
                .execute(params![number, tenant, record, was])
            })
            .await?;
        match changed {
            1 => Ok(()),
            _ => Err(NumberWriteError::Changed),
        }
    }

    async fn create_assignment(
        &self,
        draft: AssignmentDraft,
    ) -> Result<Result<Assignment, PickError>, StoreError> {
        self.writer
            .run(1, move |conn| create(conn, draft.clone()))
            .await
    }

    async fn assignment(
        &self,
        tenant: &TenantId,
        id: AssignmentId,
    ) -> Result<Option<Assignment>, StoreError> {
        let (tenant, id) = (tenant.as_str().to_owned(), id.to_string());
        self.readers
            .run(move |conn| one_assignment(conn, &tenant, &id))
            .await
    }

    async fn assignments(
        &self,
        tenant: &TenantId,
        before: Option<AssignmentId>,
        limit: usize,
    ) -> Result<Vec<Assignment>, StoreError> {
        let tenant = tenant.as_str().to_owned();
        let before = before.map_or_else(|| "~".to_owned(), |b| b.to_string());
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.readers
            .run(move |conn| {
                read_assignments(
                    conn,
                    "SELECT tenant, id, record FROM relay_assignments WHERE tenant = ?1 \
                     AND id < ?2 ORDER BY id DESC LIMIT ?3",
                    &[&tenant, &before, &limit],
                )
            })
            .await
    }

    async fn assignments_of(
        &self,
        tenant: &TenantId,
        party: &PhoneNumber,
        since: DateTime<Utc>,
    ) -> Result<Vec<Assignment>, StoreError> {
        let (tenant, party) = (tenant.as_str().to_owned(), party.to_string());
        self.readers
            .run(move |conn| party_assignments(conn, &tenant, &party, since))
            .await
    }

    async fn is_participant(
        &self,
        tenant: &TenantId,
        party: &PhoneNumber,
    ) -> Result<bool, StoreError> {
        let (tenant, party) = (tenant.as_str().to_owned(), party.to_string());
        self.readers
            .run(move |conn| {
                conn.prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM relay_assignments WHERE tenant = ?1 \
                     AND client = ?2) OR EXISTS (SELECT 1 FROM relay_assignments \
                     WHERE tenant = ?1 AND worker = ?2)",
                )?
                .query_row(params![tenant, party], |r| r.get(0))
            })
            .await
    }

    async fn end_assignment(
        &self,
        tenant: &TenantId,
        id: AssignmentId,
        at: DateTime<Utc>,
        keep_grace: bool,
    ) -> Result<Option<Assignment>, StoreError> {
        let (tenant, key) = (tenant.as_str().to_owned(), id.to_string());
        self.writer
            .run(1, move |conn| {
                let Some(a) = one_assignment(conn, &tenant, &key)? else {
                    return Ok(None);
                };
                let ended = a.ended(at, keep_grace);
                if ended != a {
                    save_assignment(conn, &ended)?;
                }
                Ok(Some(ended))
            })
            .await
    }
}
