//! Inbound rules: what a tenant wants done with a message a contact sends, decided the same
//! way every time. Rules are tried in order and the first whose conditions all hold makes the
//! decision; its actions run in order. Carrier keywords (STOP, START, HELP) are handled before
//! any rule.

use chrono::{DateTime, Datelike, NaiveTime, Utc, Weekday};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Channel, FieldError, TemplateName};

/// The most rules a tenant has.
pub const MAX_RULES: usize = 50;
/// The most actions one rule takes, keywords it lists, labels it matches.
pub const MAX_LIST: usize = 20;
/// The longest pattern, in bytes.
pub const MAX_PATTERN: usize = 512;
/// What a compiled pattern may take: a pattern cannot make processing slow or large.
const PATTERN_SIZE_LIMIT: usize = 256 * 1024;
/// The longest name, keyword, label, assignee or next step, in characters.
pub const MAX_TEXT: usize = 200;
/// The most hours an auto-reply guard or a follow-up reaches ahead (a year).
pub const MAX_HOURS: u32 = 24 * 366;

/// A tenant's rules, in the order they are tried.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleSet {
    #[schema(max_items = 50)]
    pub rules: Vec<InboundRule>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InboundRule {
    /// Unique within the set; recorded on the decisions it makes (`rule:<name>`).
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub name: String,
    #[serde(default)]
    pub when: Conditions,
    #[schema(min_items = 1, max_items = 20)]
    pub actions: Vec<Action>,
}

/// Every condition given must hold; a list holds when any of its items does.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Conditions {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<Channel>,
    /// Words the body holds, whole and ignoring case: `price` matches "Price?" but not "priceless".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keywords: Vec<String>,
    /// A regular expression the body matches somewhere (`(?i)` for any case).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub pattern: Option<Pattern>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub business_hours: Option<BusinessHours>,
    /// The label of the contact's thread is one of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
}

/// A regular expression, compiled when the rules are saved (the `regex` crate: linear time,
/// no back-references, and a size limit).
#[derive(Debug, Clone)]
pub struct Pattern(regex::Regex);

impl TryFrom<String> for Pattern {
    type Error = String;

    fn try_from(raw: String) -> Result<Self, String> {
        if raw.len() > MAX_PATTERN {
            return Err(format!("a pattern is at most {MAX_PATTERN} bytes"));
        }
        regex::RegexBuilder::new(&raw)
            .size_limit(PATTERN_SIZE_LIMIT)
            .dfa_size_limit(PATTERN_SIZE_LIMIT)
            .build()
            .map(Pattern)
            .map_err(|e| format!("not a valid pattern: {e}"))
    }
}

impl From<Pattern> for String {
    fn from(p: Pattern) -> String {
        p.0.as_str().to_owned()
    }
}

impl Serialize for Pattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.as_str())
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Pattern::try_from(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// Opening hours in a time zone: the condition holds inside them (or outside, with
/// `inside: false`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BusinessHours {
    /// An IANA name, e.g. `America/New_York`.
    #[schema(value_type = String)]
    pub timezone: TimeZone,
    /// `mon` to `sun`; every day when empty.
    #[serde(default)]
    #[schema(value_type = Vec<String>)]
    pub days: Vec<Day>,
    /// `HH:MM`, local time; the hours are `[start, end)`, and wrap past midnight when end < start.
    #[schema(value_type = String)]
    pub start: ClockTime,
    #[schema(value_type = String)]
    pub end: ClockTime,
    #[serde(default = "yes")]
    pub inside: bool,
}

fn yes() -> bool {
    true
}

impl BusinessHours {
    /// Whether `at` falls in the hours (on a listed day, by the day the hours start on).
    pub fn open_at(&self, at: DateTime<Utc>) -> bool {
        within_hours(
            at.with_timezone(&self.timezone.0),
            self.start,
            self.end,
            &self.days,
        )
    }
}

/// Whether a local time falls in the hours `[start, end)` (past midnight when end < start) on
/// one of `days` (every day when empty), counting hours past midnight to the day they began.
pub fn within_hours(
    local: DateTime<chrono_tz::Tz>,
    start: ClockTime,
    end: ClockTime,
    days: &[Day],
) -> bool {
    let (time, start, end) = (local.time(), start.0, end.0);
    let (open, day) = if start <= end {
        (time >= start && time < end, local.weekday())
    } else if time >= start {
        (true, local.weekday())
    } else {
        (time < end, local.weekday().pred())
    };
    open && (days.is_empty() || days.iter().any(|d| d.0 == day))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeZone(pub chrono_tz::Tz);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Day(pub Weekday);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockTime(pub NaiveTime);

macro_rules! as_string {
    ($ty:ty, $parse:expr, $show:expr) => {
        impl Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                #[allow(clippy::redundant_closure_call)]
                s.serialize_str(&($show)(self))
            }
        }
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(d)?;
                #[allow(clippy::redundant_closure_call)]
                ($parse)(&raw).map_err(serde::de::Error::custom)
            }
        }
    };
}

as_string!(
    TimeZone,
    |raw: &str| raw
        .parse::<chrono_tz::Tz>()
        .map(TimeZone)
        .map_err(|_| format!("`{raw}` is not an IANA time zone")),
    |t: &TimeZone| t.0.name().to_owned()
);

const DAYS: [(&str, Weekday); 7] = [
    ("mon", Weekday::Mon),
    ("tue", Weekday::Tue),
    ("wed", Weekday::Wed),
    ("thu", Weekday::Thu),
    ("fri", Weekday::Fri),
    ("sat", Weekday::Sat),
    ("sun", Weekday::Sun),
];

as_string!(
    Day,
    |raw: &str| DAYS
        .iter()
        .find(|(name, _)| *name == raw)
        .map(|(_, d)| Day(*d))
        .ok_or_else(|| format!("`{raw}` is not a day: mon, tue, wed, thu, fri, sat or sun")),
    |d: &Day| DAYS
        .iter()
        .find(|(_, w)| *w == d.0)
        .map_or("mon", |(name, _)| name)
        .to_owned()
);

as_string!(
    ClockTime,
    |raw: &str| {
        let ok = raw.len() == 5 && raw.as_bytes()[2] == b':';
        ok.then(|| NaiveTime::parse_from_str(raw, "%H:%M").ok())
            .flatten()
            .map(ClockTime)
            .ok_or_else(|| format!("`{raw}` is not a time of day as HH:MM"))
    },
    |t: &ClockTime| t.0.format("%H:%M").to_string()
);

/// What a rule does, in the order given.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// Answers with a template (variables: `body`, `from`, `to`, `channel`) on the channel the
    /// message came on, at most once per thread in `every_hours` (default 24), so that two
    /// automatic responders cannot loop; never on a thread a human took over.
    AutoReply {
        #[schema(value_type = String)]
        template: TemplateName,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        every_hours: Option<u32>,
    },
    /// Sets the thread's label.
    Label { label: String },
    /// Sets the thread's follow-up `in_hours` after the message, and its next step.
    SetFollowup {
        in_hours: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next_step: Option<String>,
    },
    /// Assigns the thread.
    Assign { assignee: String },
    /// No more auto-replies on the thread until it is closed (or the flag is cleared).
    HumanTakeover,
    /// Announces `inbound.matched` to the tenant's webhook endpoints.
    Webhook,
}

/// The guard of an auto-reply that gives none.
pub const DEFAULT_AUTO_REPLY_HOURS: u32 = 24;

impl Action {
    pub fn kind(&self) -> &'static str {
        match self {
            Action::AutoReply { .. } => "auto_reply",
            Action::Label { .. } => "label",
            Action::SetFollowup { .. } => "set_followup",
            Action::Assign { .. } => "assign",
            Action::HumanTakeover => "human_takeover",
            Action::Webhook => "webhook",
        }
    }
}

/// What the rules look at in a message.
#[derive(Debug, Clone)]
pub struct Sample<'a> {
    pub channel: Channel,
    pub body: &'a str,
    /// The body lowercased once, for the keywords of every rule.
    pub lower: String,
    pub received_at: DateTime<Utc>,
    /// The label of the sender's thread.
    pub label: Option<&'a str>,
}

impl<'a> Sample<'a> {
    pub fn new(
        channel: Channel,
        body: &'a str,
        received_at: DateTime<Utc>,
        label: Option<&'a str>,
    ) -> Sample<'a> {
        Sample {
            channel,
            body,
            lower: body.to_lowercase(),
            received_at,
            label,
        }
    }
}

impl Conditions {
    pub fn hold(&self, m: &Sample<'_>) -> bool {
        (self.channels.is_empty() || self.channels.contains(&m.channel))
            && (self.keywords.is_empty() || self.keywords.iter().any(|k| has_word(&m.lower, k)))
            && self.pattern.as_ref().is_none_or(|p| p.0.is_match(m.body))
            && self
                .business_hours
                .as_ref()
                .is_none_or(|h| h.open_at(m.received_at) == h.inside)
            && (self.labels.is_empty()
                || m.label.is_some_and(|l| self.labels.iter().any(|x| x == l)))
    }
}

/// Whether `body` (lowercased) holds `word` bounded by non-alphanumeric characters, ignoring
/// case.
fn has_word(body: &str, word: &str) -> bool {
    let word = word.to_lowercase();
    let alnum = |c: Option<char>| c.is_some_and(char::is_alphanumeric);
    body.match_indices(&word).any(|(at, _)| {
        !alnum(body[..at].chars().next_back()) && !alnum(body[at + word.len()..].chars().next())
    })
}

impl RuleSet {
    /// The first rule whose conditions hold.
    pub fn first_match(&self, m: &Sample<'_>) -> Option<&InboundRule> {
        self.rules.iter().find(|r| r.when.hold(m))
    }

    /// Checks what parsing cannot: names, counts and lengths. The error points at the field.
    pub fn check(&self) -> Result<(), FieldError> {
        if self.rules.len() > MAX_RULES {
            let detail = format!("at most {MAX_RULES} rules");
            return Err(FieldError::new("/rules", "too_many", detail));
        }
        for (i, rule) in self.rules.iter().enumerate() {
            let at = format!("/rules/{i}");
            if self.rules[..i].iter().any(|r| r.name == rule.name) {
                let detail = format!("rule names are unique: `{}` is used twice", rule.name);
                return Err(FieldError::new(format!("{at}/name"), "duplicate", detail));
            }
            rule.check(&at)?;
        }
        Ok(())
    }
}

impl InboundRule {
    fn check(&self, at: &str) -> Result<(), FieldError> {
        text(&format!("{at}/name"), &self.name)?;
        let w = &self.when;
        for (field, list) in [("keywords", &w.keywords), ("labels", &w.labels)] {
            count(&format!("{at}/when/{field}"), list.len(), 0)?;
            for (j, v) in list.iter().enumerate() {
                text(&format!("{at}/when/{field}/{j}"), v)?;
            }
        }
        count(&format!("{at}/when/channels"), w.channels.len(), 0)?;
        if let Some(h) = &w.business_hours {
            if h.start.0 == h.end.0 {
                let detail = "start and end differ (hours past midnight wrap: 22:00 to 06:00)";
                let at = format!("{at}/when/business_hours/end");
                return Err(FieldError::new(at, "invalid", detail));
            }
        }
        count(&format!("{at}/actions"), self.actions.len(), 1)?;
        for (j, action) in self.actions.iter().enumerate() {
            action.check(&format!("{at}/actions/{j}"))?;
        }
        Ok(())
    }
}

impl Action {
    fn check(&self, at: &str) -> Result<(), FieldError> {
        let hours = |field: &str, h: u32| {
            if (1..=MAX_HOURS).contains(&h) {
                Ok(())
            } else {
                let detail = format!("1 to {MAX_HOURS} hours");
                Err(FieldError::new(format!("{at}/{field}"), "invalid", detail))
            }
        };
        match self {
            Action::AutoReply {
                template,
                every_hours,
            } => {
                // A name read from JSON is checked here, as a send's is at the edge.
                TemplateName::parse(&template.to_string()).map_err(|e| {
                    FieldError::new(format!("{at}/template"), "invalid", e.to_string())
                })?;
                hours(
                    "every_hours",
                    every_hours.unwrap_or(DEFAULT_AUTO_REPLY_HOURS),
                )
            }
            Action::Label { label } => text(&format!("{at}/label"), label),
            Action::Assign { assignee } => text(&format!("{at}/assignee"), assignee),
            Action::SetFollowup {
                in_hours,
                next_step,
            } => {
                hours("in_hours", *in_hours)?;
                next_step
                    .as_deref()
                    .map_or(Ok(()), |s| text(&format!("{at}/next_step"), s))
            }
            Action::HumanTakeover | Action::Webhook => Ok(()),
        }
    }
}

/// Checks a name, keyword, label or assignee: 1 to [`MAX_TEXT`] characters, not all blank, no
/// control characters.
pub fn text(at: &str, v: &str) -> Result<(), FieldError> {
    if v.trim().is_empty() || v.chars().count() > MAX_TEXT || v.chars().any(char::is_control) {
        let detail = format!("1 to {MAX_TEXT} characters, not all blank, no control characters");
        return Err(FieldError::new(at, "invalid", detail));
    }
    Ok(())
}

fn count(at: &str, n: usize, min: usize) -> Result<(), FieldError> {
    if n < min || n > MAX_LIST {
        let detail = format!("{min} to {MAX_LIST} items");
        return Err(FieldError::new(at, "invalid_count", detail));
    }
    Ok(())
}

/// Why a message was processed the way it was: recorded on the message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Decision {
    /// `keyword` (a carrier keyword, handled before any rule), `rule` or `no_rule`.
    pub outcome: DecisionOutcome,
    /// The rule that made it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(default)]
    pub actions: Vec<ActionResult>,
    /// For a text to a relay number: where the routing engine sent it, why (its trace), and
    /// what was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub relay: Option<Box<super::relay::routing::RelayRecord>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DecisionOutcome {
    Keyword,
    Rule,
    NoRule,
    /// The relay sent it on (to an assignment's other party, or a dedicated number's
    /// worker): no rule ran.
    Relayed,
}

/// What one action came to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ActionResult {
    /// The action's `type`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `applied`, `planned` (the rule tester), or `skipped`.
    pub result: String,
    /// Why it was skipped: `loop_guard`, `human_takeover`, `no_thread`, or the send's error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The auto-reply sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
}

impl ActionResult {
    pub fn applied(a: &Action) -> ActionResult {
        ActionResult::with(a, "applied", None)
    }

    pub fn planned(a: &Action) -> ActionResult {
        ActionResult::with(a, "planned", None)
    }

    pub fn skipped(a: &Action, reason: impl Into<String>) -> ActionResult {
        ActionResult::with(a, "skipped", Some(reason.into()))
    }

    fn with(a: &Action, result: &str, reason: Option<String>) -> ActionResult {
        ActionResult {
            kind: a.kind().to_owned(),
            result: result.to_owned(),
            reason,
            message_id: None,
        }
    }
}

impl Decision {
    pub fn keyword() -> Decision {
        Decision {
            outcome: DecisionOutcome::Keyword,
            rule: None,
            actions: Vec::new(),
            relay: None,
        }
    }

    /// What `rule` (if any) would do, without doing it.
    pub fn planned(rule: Option<&InboundRule>) -> Decision {
        match rule {
            None => Decision {
                outcome: DecisionOutcome::NoRule,
                rule: None,
                actions: Vec::new(),
                relay: None,
            },
            Some(r) => Decision {
                outcome: DecisionOutcome::Rule,
                rule: Some(r.name.clone()),
                actions: r.actions.iter().map(ActionResult::planned).collect(),
                relay: None,
            },
        }
    }
}

#[cfg(test)]
#[path = "rules_tests.rs"]
mod tests;
