//! Stored media on AWS: an S3 bucket (`HERALD_MEDIA_BUCKET`), each file at `<tenant>/<id>` with
//! its type, so one tenant's key never opens another's file; the bucket's lifecycle rule
//! expires them after the retention period. Files are handed out as presigned URLs that live
//! a few minutes.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use chrono::{DateTime, Utc};

use crate::domain::media::MediaId;
use crate::domain::TenantId;
use crate::ports::{MediaBody, MediaFile, MediaStore, StoreError};

/// How long a presigned URL serves its file.
pub const URL_LIFETIME: Duration = Duration::from_secs(300);

pub struct S3Media {
    client: aws_sdk_s3::Client,
    bucket: Option<String>,
}

impl S3Media {
    pub fn new(client: aws_sdk_s3::Client, bucket: Option<String>) -> S3Media {
        S3Media { client, bucket }
    }

    fn bucket(&self) -> Result<&str, StoreError> {
        self.bucket
            .as_deref()
            .ok_or_else(|| StoreError::Unavailable("HERALD_MEDIA_BUCKET is not set".into()))
    }
}

fn key(tenant: &TenantId, id: MediaId) -> String {
    format!("{tenant}/{id}")
}

fn unavailable(op: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("S3 {op}: {e}"))
}

/// `attachment; filename="..."` with the name made safe for a header.
fn disposition(filename: Option<&str>) -> String {
    match filename {
        Some(name) => {
            let safe: String = name
                .chars()
                .filter(|c| c.is_ascii_graphic() && *c != '"' && *c != '\\' || *c == ' ')
                .take(100)
                .collect();
            format!("attachment; filename=\"{safe}\"")
        }
        None => "attachment".into(),
    }
}

#[async_trait]
impl MediaStore for S3Media {
    async fn put_media(
        &self,
        tenant: &TenantId,
        id: MediaId,
        file: MediaFile,
    ) -> Result<(), StoreError> {
        self.client
            .put_object()
            .bucket(self.bucket()?)
            .key(key(tenant, id))
            .content_type(file.content_type)
            .content_disposition(disposition(file.filename.as_deref()))
            .body(ByteStream::from(file.bytes))
            .send()
            .await
            .map_err(|e| unavailable("PutObject", aws_sdk_s3::error::DisplayErrorContext(e)))?;
        Ok(())
    }

    async fn open_media(
        &self,
        tenant: &TenantId,
        id: MediaId,
    ) -> Result<Option<MediaBody>, StoreError> {
        let Some(bucket) = self.bucket.as_deref() else {
            return Ok(None);
        };
        let key = key(tenant, id);
        match self
            .client
            .head_object()
            .bucket(bucket)
            .key(&key)
            .send()
            .await
        {
            Ok(_) => {}
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => return Ok(None),
            Err(e) => {
                return Err(unavailable(
                    "HeadObject",
                    aws_sdk_s3::error::DisplayErrorContext(e),
                ))
            }
        }
        let presigning =
            PresigningConfig::expires_in(URL_LIFETIME).map_err(|e| unavailable("presign", e))?;
        let request = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .presigned(presigning)
            .await
            .map_err(|e| unavailable("presign", aws_sdk_s3::error::DisplayErrorContext(e)))?;
        Ok(Some(MediaBody::Url(request.uri().to_owned())))
    }

    /// The bucket's lifecycle rule expires files: nothing to do here.
    async fn purge_media(&self, _: DateTime<Utc>) -> Result<usize, StoreError> {
        Ok(0)
    }
}
