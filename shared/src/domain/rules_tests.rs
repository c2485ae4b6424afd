use chrono::TimeZone as _;

use super::*;

fn rules(json: serde_json::Value) -> RuleSet {
    let set: RuleSet = serde_json::from_value(json).expect("rules parse");
    set.check().expect("rules check");
    set
}

fn sample(body: &str) -> Sample<'_> {
    // A Wednesday, 15:00 UTC: 10:00 in New York.
    let at = Utc.with_ymd_and_hms(2026, 12, 2, 15, 0, 0).unwrap();
    Sample::new(Channel::Sms, body, at, None)
}

fn first<'a>(set: &'a RuleSet, m: &Sample<'_>) -> Option<&'a str> {
    set.first_match(m).map(|r| r.name.as_str())
}

#[test]
fn the_first_rule_that_holds_decides() {
    let set = rules(serde_json::json!({"rules": [
        {"name": "email", "when": {"channels": ["email"]}, "actions": [{"type": "webhook"}]},
        {"name": "price", "when": {"keywords": ["price", "quote"]}, "actions": [{"type": "webhook"}]},
        {"name": "any", "actions": [{"type": "label", "label": "new"}]}
    ]}));
    assert_eq!(first(&set, &sample("What's the PRICE?")), Some("price"));
    assert_eq!(first(&set, &sample("a quote, please")), Some("price"));
    // Whole words only.
    assert_eq!(first(&set, &sample("priceless")), Some("any"));
    let mut m = sample("price");
    m.channel = Channel::Email;
    assert_eq!(first(&set, &m), Some("email"));
    assert_eq!(first(&RuleSet::default(), &m), None);
}

#[test]
fn patterns_labels_and_business_hours_are_conditions() {
    let set = rules(serde_json::json!({"rules": [
        {"name": "urgent", "when": {"pattern": "(?i)\\burgent\\b|asap"}, "actions": [{"type": "webhook"}]},
        {"name": "vip", "when": {"labels": ["vip"]}, "actions": [{"type": "webhook"}]},
        {"name": "closed", "when": {"business_hours": {"timezone": "America/New_York",
            "days": ["mon", "tue", "wed", "thu", "fri"], "start": "09:00", "end": "17:00",
            "inside": false}}, "actions": [{"type": "webhook"}]}
    ]}));
    assert_eq!(first(&set, &sample("URGENT: call me")), Some("urgent"));
    let mut m = sample("hello");
    m.label = Some("vip");
    assert_eq!(first(&set, &m), Some("vip"));
    // 10:00 on a Wednesday in New York: open, so "outside hours" does not hold.
    assert_eq!(first(&set, &sample("hello")), None);
    let mut night = sample("hello");
    night.received_at = Utc.with_ymd_and_hms(2026, 12, 3, 3, 0, 0).unwrap();
    assert_eq!(first(&set, &night), Some("closed"));
    // Saturday noon in New York.
    let mut weekend = sample("hello");
    weekend.received_at = Utc.with_ymd_and_hms(2026, 12, 5, 17, 0, 0).unwrap();
    assert_eq!(first(&set, &weekend), Some("closed"));
}

#[test]
fn hours_past_midnight_belong_to_the_day_they_start() {
    let hours: BusinessHours = serde_json::from_value(serde_json::json!({
        "timezone": "UTC", "days": ["fri"], "start": "22:00", "end": "02:00"}))
    .unwrap();
    let at = |d, h| Utc.with_ymd_and_hms(2026, 12, d, h, 0, 0).unwrap();
    // Friday 23:00 and Saturday 01:00 are Friday night; Friday 01:00 is Thursday's.
    assert!(hours.open_at(at(4, 23)));
    assert!(hours.open_at(at(5, 1)));
    assert!(!hours.open_at(at(4, 1)));
    assert!(!hours.open_at(at(4, 12)));
}

#[test]
fn bad_rules_are_refused_with_the_field() {
    let refused = |json: serde_json::Value| -> String {
        match serde_json::from_value::<RuleSet>(json) {
            Err(e) => e.to_string(),
            Ok(set) => set.check().expect_err("refused").pointer,
        }
    };
    let act = serde_json::json!([{"type": "webhook"}]);
    assert!(refused(serde_json::json!({"rules": [{"name": "a", "when": {"pattern": "(unclosed"}, "actions": act}]}))
        .contains("not a valid pattern"));
    // A pattern whose compiled program is too large.
    assert!(refused(serde_json::json!({"rules": [{"name": "a", "when": {"pattern": "\\w{1000}\\w{1000}"}, "actions": act}]}))
        .contains("not a valid pattern"));
    assert!(refused(
        serde_json::json!({"rules": [{"name": "a", "when": {"business_hours": {
        "timezone": "Mars/Olympus", "start": "09:00", "end": "17:00"}}, "actions": act}]})
    )
    .contains("IANA"));
    assert!(refused(
        serde_json::json!({"rules": [{"name": "a", "when": {"business_hours": {
        "timezone": "UTC", "start": "9am", "end": "17:00"}}, "actions": act}]})
    )
    .contains("HH:MM"));
    assert!(refused(
        serde_json::json!({"rules": [{"name": "a", "actions": [{"type": "explode"}]}]})
    )
    .contains("unknown variant"));
    assert_eq!(
        refused(serde_json::json!({"rules": [{"name": "a", "actions": []}]})),
        "/rules/0/actions"
    );
    assert_eq!(
        refused(
            serde_json::json!({"rules": [{"name": "a", "when": {"business_hours": {
            "timezone": "UTC", "start": "09:00", "end": "09:00"}}, "actions": act}]})
        ),
        "/rules/0/when/business_hours/end"
    );
    assert_eq!(
        refused(
            serde_json::json!({"rules": [{"name": "a", "actions": act}, {"name": "a", "actions": act}]})
        ),
        "/rules/1/name"
    );
    assert_eq!(
        refused(
            serde_json::json!({"rules": [{"name": "a", "actions": [{"type": "set_followup", "in_hours": 0}]}]})
        ),
        "/rules/0/actions/0/in_hours"
    );
    assert_eq!(
        refused(
            serde_json::json!({"rules": [{"name": "a", "actions": [{"type": "auto_reply", "template": "no spaces"}]}]})
        ),
        "/rules/0/actions/0/template"
    );
    assert_eq!(
        refused(serde_json::json!({"rules": [{"name": " ", "actions": act}]})),
        "/rules/0/name"
    );
}

#[test]
fn rules_round_trip_through_storage() {
    let set = rules(serde_json::json!({"rules": [{"name": "a",
        "when": {"pattern": "x+", "business_hours": {"timezone": "Europe/Paris", "days": ["sat"],
            "start": "08:30", "end": "12:00"}},
        "actions": [{"type": "auto_reply", "template": "hello", "every_hours": 6},
            {"type": "set_followup", "in_hours": 48, "next_step": "call"}, {"type": "human_takeover"}]}]}));
    let stored = serde_json::to_value(&set).unwrap();
    let back: RuleSet = serde_json::from_value(stored.clone()).unwrap();
    assert_eq!(serde_json::to_value(&back).unwrap(), stored);
    assert_eq!(
        stored["rules"][0]["when"]["business_hours"]["days"][0],
        "sat"
    );
    assert_eq!(
        stored["rules"][0]["when"]["business_hours"]["start"],
        "08:30"
    );
}
