//! SES event publishing notifications (configuration set -> SNS), read into provider events.
//! The same reader serves the SQS path (the `suppression` function) and, later, SNS over HTTP.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::instances::is_instance_name;
use crate::domain::MessageId;
use crate::ports::{ProviderEvent, ProviderEventKind};

/// The gateway name SES events belong to.
pub const SES: &str = "ses";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SesEventError {
    #[error("not an SNS notification: {0}")]
    NotSns(String),
    #[error("not an SES event: {0}")]
    NotSes(String),
}

/// An SNS notification: its id (for de-duplication) and its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnsNotification {
    pub message_id: String,
    pub topic_arn: String,
    pub message: String,
}

/// Reads an SNS envelope (the body of an SQS message from an SNS subscription without raw
/// delivery, or an SNS HTTP POST).
pub fn sns_notification(body: &str) -> Result<SnsNotification, SesEventError> {
    let v: Value =
        serde_json::from_str(body).map_err(|e| SesEventError::NotSns(format!("not JSON: {e}")))?;
    let field = |name: &str| {
        v.get(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| SesEventError::NotSns(format!("no {name}")))
    };
    if field("Type")? != "Notification" {
        return Err(SesEventError::NotSns(format!("type {}", field("Type")?)));
    }
    Ok(SnsNotification {
        message_id: field("MessageId")?,
        topic_arn: field("TopicArn")?,
        message: field("Message")?,
    })
}

fn time(v: Option<&Value>) -> Option<DateTime<Utc>> {
    v.and_then(Value::as_str)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// The provider events an SES event makes: none for types that change nothing (Send,
/// Subscription), one otherwise (Herald sends each message to one recipient).
pub fn ses_events(message: &str) -> Result<Vec<ProviderEvent>, SesEventError> {
    let v: Value = serde_json::from_str(message)
        .map_err(|e| SesEventError::NotSes(format!("not JSON: {e}")))?;
    let event_type = v
        .get("eventType")
        .or_else(|| v.get("notificationType"))
        .and_then(Value::as_str)
        .ok_or_else(|| SesEventError::NotSes("no eventType".into()))?;
    let mail = v
        .get("mail")
        .ok_or_else(|| SesEventError::NotSes("no mail".into()))?;
    let provider_message_id = mail
        .get("messageId")
        .and_then(Value::as_str)
        .ok_or_else(|| SesEventError::NotSes("no mail.messageId".into()))?
        .to_owned();
    // Herald tags each send with its own id (ses::HERALD_ID_TAG).
    let message_id = mail
        .pointer("/tags/herald_id/0")
        .and_then(Value::as_str)
        .and_then(MessageId::parse);
    // A send through an instance (`ses-dedicated`) is tagged with its name.
    let gateway = mail
        .pointer("/tags/herald_gateway/0")
        .and_then(Value::as_str)
        .filter(|name| is_instance_name(name))
        .unwrap_or(SES)
        .to_owned();
    let mail_time = time(mail.get("timestamp"));
    let body = |key: &str| v.get(key).cloned().unwrap_or(Value::Null);
    let (kind, detail, at) = match event_type {
        "Bounce" => {
            let b = body("bounce");
            let permanent = b.get("bounceType").and_then(Value::as_str) == Some("Permanent");
            let recipient = b
                .pointer("/bouncedRecipients/0")
                .cloned()
                .unwrap_or(Value::Null);
            (
                ProviderEventKind::Bounced { permanent },
                json!({ "bounce_type": b["bounceType"], "bounce_subtype": b["bounceSubType"],
                        "status": recipient["status"], "diagnostic": recipient["diagnosticCode"],
                        "feedback_id": b["feedbackId"] }),
                time(b.get("timestamp")),
            )
        }
        "Complaint" => {
            let c = body("complaint");
            (
                ProviderEventKind::Complained,
                json!({ "feedback_type": c["complaintFeedbackType"], "feedback_id": c["feedbackId"],
                        "user_agent": c["userAgent"] }),
                time(c.get("timestamp")),
            )
        }
        "Delivery" => {
            let d = body("delivery");
            (
                ProviderEventKind::Delivered,
                json!({ "smtp_response": d["smtpResponse"],
                        "processing_time_ms": d["processingTimeMillis"] }),
                time(d.get("timestamp")),
            )
        }
        "Open" => {
            let o = body("open");
            (
                ProviderEventKind::Opened,
                json!({ "ip": o["ipAddress"], "user_agent": o["userAgent"] }),
                time(o.get("timestamp")),
            )
        }
        "Click" => {
            let c = body("click");
            (
                ProviderEventKind::Clicked,
                json!({ "link": c["link"], "ip": c["ipAddress"], "user_agent": c["userAgent"] }),
                time(c.get("timestamp")),
            )
        }
        "DeliveryDelay" => {
            let d = body("deliveryDelay");
            (
                ProviderEventKind::Delayed,
                json!({ "delay_type": d["delayType"], "expires_at": d["expirationTime"],
                        "status": d.pointer("/delayedRecipients/0/status"),
                        "diagnostic": d.pointer("/delayedRecipients/0/diagnosticCode") }),
                time(d.get("timestamp")),
            )
        }
        "Reject" => (
            ProviderEventKind::Failed,
            json!({ "error": format!("SES rejected the message: {}",
                                     body("reject")["reason"].as_str().unwrap_or("no reason given")) }),
            None,
        ),
        "Rendering Failure" => (
            ProviderEventKind::Failed,
            json!({ "error": format!("SES could not render the template: {}",
                                     body("failure")["errorMessage"].as_str().unwrap_or("no reason given")) }),
            None,
        ),
        // Send: SES took it, which `sent` already records; Subscription: preference changes.
        "Send" | "Subscription" => return Ok(Vec::new()),
        other => return Err(SesEventError::NotSes(format!("unknown eventType {other}"))),
    };
    Ok(vec![ProviderEvent {
        gateway,
        provider_message_id,
        message_id,
        kind,
        at: at.or(mail_time).unwrap_or_else(Utc::now),
        detail,
    }])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ses(event_type: &str, body: Value) -> String {
        let mut v = json!({
            "eventType": event_type,
            "mail": { "timestamp": "2026-11-22T09:00:00.000Z", "messageId": "0100-abc",
                      "destination": ["ann@example.com"],
                      "tags": { "herald_id": ["0192f7a4-1c2b-7d3e-8f40-5a6b7c8d9f01"] } }
        });
        if let Value::Object(extra) = body {
            for (k, val) in extra {
                v[k] = val;
            }
        }
        v.to_string()
    }

    #[test]
    fn an_instances_events_count_for_it_and_a_strange_tag_for_ses() {
        let tagged = |gateway: &str| {
            let delivery = json!({ "delivery": { "timestamp": "2026-11-22T09:00:01Z" } });
            let mut v: Value = serde_json::from_str(&ses("Delivery", delivery)).unwrap();
            v["mail"]["tags"]["herald_gateway"] = json!([gateway]);
            ses_events(&v.to_string()).unwrap()[0].gateway.clone()
        };
        assert_eq!(tagged("ses-dedicated"), "ses-dedicated");
        assert_eq!(tagged("../Admin"), SES);
        let untagged = ses("Delivery", json!({ "delivery": {} }));
        assert_eq!(ses_events(&untagged).unwrap()[0].gateway, SES);
    }

    #[test]
    fn bounces_tell_permanent_from_transient() {
        let hard = ses_events(&ses(
            "Bounce",
            json!({ "bounce": { "bounceType": "Permanent",
            "bouncedRecipients": [{ "status": "5.1.1" }], "timestamp": "2026-11-22T09:00:01Z" } }),
        ))
        .unwrap();
        assert_eq!(hard[0].kind, ProviderEventKind::Bounced { permanent: true });
        assert_eq!(hard[0].detail["status"], "5.1.1");
        assert_eq!(
            hard[0].message_id.map(|m| m.to_string()).as_deref(),
            Some("0192f7a4-1c2b-7d3e-8f40-5a6b7c8d9f01")
        );
        let soft = ses_events(&ses(
            "Bounce",
            json!({ "bounce": { "bounceType": "Transient" } }),
        ))
        .unwrap();
        assert_eq!(
            soft[0].kind,
            ProviderEventKind::Bounced { permanent: false }
        );
        assert!(ses_events(&ses("Send", json!({ "send": {} })))
            .unwrap()
            .is_empty());
        assert!(ses_events(&ses("Teleport", json!({}))).is_err());
    }

    #[test]
    fn sns_envelopes_are_read_and_others_refused() {
        let body = json!({ "Type": "Notification", "MessageId": "m-1", "TopicArn": "arn:t",
                           "Message": "{}" })
        .to_string();
        let n = sns_notification(&body).unwrap();
        assert_eq!((n.message_id.as_str(), n.message.as_str()), ("m-1", "{}"));
        assert!(sns_notification("{\"hello\":\"world\"}").is_err());
        assert!(sns_notification("not json").is_err());
    }
}
