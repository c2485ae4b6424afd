use super::*;

fn at(rfc3339: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(rfc3339)
        .unwrap()
        .with_timezone(&Utc)
}

fn sms<'a>(to: &'a str, priority: Priority) -> SendFacts<'a> {
    SendFacts {
        channel: Channel::Sms,
        priority,
        message_type: None,
        to,
        recipient_timezone: None,
        seed: 12_345,
    }
}

fn tz(name: &str) -> Tz {
    name.parse().unwrap()
}

#[test]
fn a_p3_text_at_23_00_local_waits_for_08_00_local_and_p0_goes_at_once() {
    let q = QuietHours::default();
    // 23:00 in New York (EST, UTC-5) on a Tuesday.
    let now = at("2026-12-01T04:00:00Z");
    let d = q.defer(sms("+12125550100", Priority::P3), now).unwrap();
    let opens = at("2026-12-01T13:00:00Z");
    assert!(d.not_before >= opens && d.not_before < opens + Duration::minutes(30));
    assert_eq!(
        (d.basis, d.zones.as_slice()),
        ("area_code", &["America/New_York".to_owned()][..])
    );
    assert!(q.defer(sms("+12125550100", Priority::P0), now).is_none());
    // P1 waits unless the tenant lets it through.
    assert!(q.defer(sms("+12125550100", Priority::P1), now).is_some());
    let p1 = QuietHours {
        p1_bypass: true,
        ..QuietHours::default()
    };
    assert!(p1.defer(sms("+12125550100", Priority::P1), now).is_none());
    // Inside the window: no deferral. Email has no window unless set.
    assert!(q
        .defer(
            sms("+12125550100", Priority::P3),
            at("2026-12-01T15:00:00Z")
        )
        .is_none());
    let email = SendFacts {
        channel: Channel::Email,
        to: "a@example.com",
        ..sms("", Priority::P3)
    };
    assert!(q.defer(email, now).is_none());
}

#[test]
fn the_spread_is_stable_per_message_and_differs_between_messages() {
    let q = QuietHours::default();
    let now = at("2026-12-01T04:00:00Z");
    let one = |seed| {
        q.defer(
            SendFacts {
                seed,
                ..sms("+12125550100", Priority::P3)
            },
            now,
        )
        .unwrap()
        .not_before
    };
    assert_eq!(one(7), one(7));
    let distinct: std::collections::BTreeSet<_> = (0..50u128).map(|s| one(s * 7919)).collect();
    assert!(distinct.len() > 40, "{}", distinct.len());
    let none = QuietHours {
        spread_minutes: 0,
        ..QuietHours::default()
    };
    let d = none.defer(sms("+12125550100", Priority::P3), now).unwrap();
    assert_eq!(d.not_before, at("2026-12-01T13:00:00Z"));
}

#[test]
fn a_country_with_several_zones_and_no_hint_uses_the_window_open_in_all_of_them() {
    let q = QuietHours {
        spread_minutes: 0,
        ..QuietHours::default()
    };
    // 850 is split between Eastern and Central: every US and Canadian zone applies. At 16:00
    // UTC it is 11:00 in New York but 06:00 in Honolulu.
    let now = at("2026-12-01T16:00:00Z");
    let d = q.defer(sms("+18505550100", Priority::P3), now).unwrap();
    assert_eq!(d.basis, "country");
    // The common window opens at 08:00 in Honolulu (UTC-10): 18:00 UTC, 14:30 in St John's.
    assert_eq!(d.not_before, at("2026-12-01T18:00:00Z"));
    for z in &d.zones {
        assert!(d.window.open_at(tz(z), d.not_before), "{z}");
    }
    // Australia: five zones, from Perth (UTC+8) to Sydney (UTC+11 in summer).
    let d = q
        .defer(
            sms("+61212345678", Priority::P3),
            at("2026-12-01T12:00:00Z"),
        )
        .unwrap();
    for z in &d.zones {
        assert!(
            d.window.open_at(tz(z), d.not_before),
            "{z} at {}",
            d.not_before
        );
    }
    assert!(
        !d.window
            .open_at(tz("Australia/Sydney"), d.not_before - Duration::minutes(1))
            || !d
                .window
                .open_at(tz("Australia/Perth"), d.not_before - Duration::minutes(1))
    );
}

#[test]
fn an_explicit_zone_wins_and_an_unknown_number_uses_the_fallback() {
    let q = QuietHours {
        spread_minutes: 0,
        ..QuietHours::default()
    };
    let now = at("2026-12-01T04:00:00Z"); // 13:00 in Tokyo
    let tokyo = SendFacts {
        recipient_timezone: Some(tz("Asia/Tokyo")),
        ..sms("+12125550100", Priority::P3)
    };
    assert!(q.defer(tokyo, now).is_none());
    assert!(q.defer(sms("+15005550006", Priority::P3), now).is_none());
    let fallback = QuietHours {
        fallback_timezone: Some(TimeZone(tz("America/New_York"))),
        ..q
    };
    let d = fallback
        .defer(sms("+15005550006", Priority::P3), now)
        .unwrap();
    assert_eq!(
        (d.basis, d.not_before),
        ("fallback", at("2026-12-01T13:00:00Z"))
    );
}

#[test]
fn message_types_and_days_narrow_the_window() {
    let json = serde_json::json!({
        "channels": {"email": {"start": "09:00", "end": "17:00", "days": ["mon", "tue", "wed", "thu", "fri"]}},
        "message_types": {"otp": null},
        "fallback_timezone": "Europe/London",
        "spread_minutes": 0
    });
    let q: QuietHours = serde_json::from_value(json).unwrap();
    q.check().unwrap();
    // Saturday 10:00 in London: the email waits for Monday 09:00.
    let email = SendFacts {
        channel: Channel::Email,
        to: "a@example.com",
        ..sms("", Priority::P3)
    };
    let d = q.defer(email, at("2026-12-05T10:00:00Z")).unwrap();
    assert_eq!(d.not_before, at("2026-12-07T09:00:00Z"));
    // A type with no window goes at once, night or not.
    let otp = SendFacts {
        message_type: Some("otp"),
        ..sms("+12125550100", Priority::P3)
    };
    assert!(q.defer(otp, at("2026-12-01T04:00:00Z")).is_none());
}

#[test]
fn a_window_past_midnight_and_bad_settings() {
    let w: SendWindow =
        serde_json::from_value(serde_json::json!({"start": "20:00", "end": "02:00"})).unwrap();
    let ny = tz("America/New_York");
    assert!(w.open_at(ny, at("2026-12-01T06:30:00Z"))); // 01:30
    assert!(!w.open_at(ny, at("2026-12-01T08:00:00Z"))); // 03:00
    let same = serde_json::json!({"channels": {"sms": {"start": "08:00", "end": "08:00"}}});
    let q: QuietHours = serde_json::from_value(same).unwrap();
    assert_eq!(q.check().unwrap_err().pointer, "/channels/sms");
    let wide = QuietHours {
        spread_minutes: 241,
        ..QuietHours::default()
    };
    assert_eq!(wide.check().unwrap_err().pointer, "/spread_minutes");
    assert!(serde_json::from_value::<QuietHours>(
        serde_json::json!({"fallback_timezone": "Mars/Base"})
    )
    .is_err());
    assert!(
        serde_json::from_value::<QuietHours>(serde_json::json!({"channels": {"fax": null}}))
            .is_err()
    );
}
