//! Recipient address newtypes: e-mail addresses, E.164 phone numbers and
//! push-notification device tokens.
//!
//! Each type follows "parse, don't validate": the only way to obtain a value
//! is through `parse`, which checks the input and stores it in a canonical
//! form, so a value of the type is always valid.

use std::fmt;

/// Maximum length of an e-mail local part, in octets (RFC 5321 §4.5.3.1.1).
const EMAIL_LOCAL_MAX: usize = 64;
/// Maximum length of an e-mail domain, in octets (RFC 5321 §4.5.3.1.2).
const EMAIL_DOMAIN_MAX: usize = 255;
/// Maximum length of a DNS label, in octets.
const EMAIL_LABEL_MAX: usize = 63;
/// Maximum length of a whole e-mail address, in octets (RFC 5321 path limit
/// of 256 minus the surrounding angle brackets).
const EMAIL_TOTAL_MAX: usize = 254;
/// Minimum number of digits accepted in an E.164 number.
const PHONE_DIGITS_MIN: usize = 8;
/// Maximum number of digits in an E.164 number.
const PHONE_DIGITS_MAX: usize = 15;
/// Maximum length of a device token, in bytes.
const DEVICE_TOKEN_MAX: usize = 4096;

/// Why an address failed to parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("address is empty")]
    Empty,
    #[error("email address must contain '@'")]
    EmailMissingAt,
    #[error("email local part must be at most 64 octets")]
    EmailLocalPartTooLong,
    #[error("email local part is invalid")]
    EmailLocalPartInvalid,
    #[error("email domain is invalid: {0}")]
    EmailDomainInvalid(String),
    #[error("email address must be at most 254 octets")]
    EmailTooLong,
    #[error("phone number must be in E.164 format: '+' followed by 8 to 15 digits")]
    PhoneNotE164,
    #[error("device token is empty")]
    DeviceTokenEmpty,
    #[error("device token must be at most 4096 bytes")]
    DeviceTokenTooLong,
    #[error("device token must not contain whitespace or control characters")]
    DeviceTokenInvalid,
    #[error(
        "telegram chat must be a chat id (a whole number) or @username (5-32 of A-Z, a-z, 0-9, _)"
    )]
    TelegramChatInvalid,
}

impl AddressError {
    /// A stable, machine-readable snake_case code for this error.
    pub fn code(&self) -> &'static str {
        match self {
            AddressError::Empty => "empty_address",
            AddressError::EmailMissingAt
            | AddressError::EmailLocalPartTooLong
            | AddressError::EmailLocalPartInvalid
            | AddressError::EmailDomainInvalid(_)
            | AddressError::EmailTooLong => "invalid_email",
            AddressError::PhoneNotE164 => "invalid_phone",
            AddressError::DeviceTokenEmpty
            | AddressError::DeviceTokenTooLong
            | AddressError::DeviceTokenInvalid => "invalid_device_token",
            AddressError::TelegramChatInvalid => "invalid_telegram_chat",
        }
    }
}

macro_rules! string_newtype_impls {
    ($ty:ident) => {
        impl $ty {
            /// The canonical string form.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

// ---------------------------------------------------------------------------
// E-mail
// ---------------------------------------------------------------------------

/// A syntactically valid e-mail address.
///
/// Stored as `local@domain` where the local part is kept exactly as given and
/// the domain is lowercased and converted to its ASCII (punycode) form.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EmailAddress(String);

string_newtype_impls!(EmailAddress);

impl EmailAddress {
    /// Parses and normalizes an e-mail address.
    ///
    /// Surrounding whitespace is trimmed; the address is split at its last
    /// `@`. Quoted local parts are not supported.
    pub fn parse(input: &str) -> Result<Self, AddressError> {
        let s = input.trim();
        if s.is_empty() {
            return Err(AddressError::Empty);
        }
        let (local, domain) = s.rsplit_once('@').ok_or(AddressError::EmailMissingAt)?;
        validate_local_part(local)?;
        let domain = normalize_domain(domain)?;
        if local.len() + 1 + domain.len() > EMAIL_TOTAL_MAX {
            return Err(AddressError::EmailTooLong);
        }
        Ok(Self(format!("{local}@{domain}")))
    }

    /// The local part (before the `@`), exactly as given.
    pub fn local_part(&self) -> &str {
        self.0.rsplit_once('@').map_or("", |(local, _)| local)
    }

    /// The domain (after the `@`), lowercased ASCII/punycode form.
    pub fn domain(&self) -> &str {
        self.0.rsplit_once('@').map_or("", |(_, domain)| domain)
    }
}

/// RFC 5322 `atext`, ASCII subset.
fn is_ascii_atext(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            '!' | '#'
                | '$'
                | '%'
                | '&'
                | '\''
                | '*'
                | '+'
                | '-'
                | '/'
                | '='
                | '?'
                | '^'
                | '_'
                | '`'
                | '{'
                | '|'
                | '}'
                | '~'
        )
}

/// Checks a dot-atom local part (RFC 5322, with RFC 6531 UTF-8 extension).
fn validate_local_part(local: &str) -> Result<(), AddressError> {
    if local.is_empty() {
        return Err(AddressError::EmailLocalPartInvalid);
    }
    if local.len() > EMAIL_LOCAL_MAX {
        return Err(AddressError::EmailLocalPartTooLong);
    }
    for atom in local.split('.') {
        // An empty atom means a leading, trailing or doubled dot.
        if atom.is_empty() {
            return Err(AddressError::EmailLocalPartInvalid);
        }
        let ok = atom.chars().all(|c| {
            if c.is_ascii() {
                is_ascii_atext(c)
            } else {
                !c.is_whitespace() && !c.is_control()
            }
        });
        if !ok {
            return Err(AddressError::EmailLocalPartInvalid);
        }
    }
    Ok(())
}

fn domain_err(msg: impl Into<String>) -> AddressError {
    AddressError::EmailDomainInvalid(msg.into())
}

/// Converts a domain to lowercase ASCII (punycode) and checks its labels.
pub(crate) fn normalize_domain(domain: &str) -> Result<String, AddressError> {
    if domain.is_empty() {
        return Err(domain_err("domain is empty"));
    }
    if domain.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(domain_err(
            "domain contains whitespace or control characters",
        ));
    }
    let ascii = idna::domain_to_ascii(domain)
        .map_err(|_| domain_err("not a valid internationalized domain name"))?;
    if ascii.is_empty() {
        return Err(domain_err("domain is empty"));
    }
    if ascii.len() > EMAIL_DOMAIN_MAX {
        return Err(domain_err("domain must be at most 255 octets"));
    }
    let labels: Vec<&str> = ascii.split('.').collect();
    if labels.len() < 2 {
        return Err(domain_err("domain must have at least two labels"));
    }
    for label in &labels {
        if label.is_empty() {
            return Err(domain_err("domain has an empty label"));
        }
        if label.len() > EMAIL_LABEL_MAX {
            return Err(domain_err(format!(
                "label '{label}' is longer than 63 characters"
            )));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(domain_err(format!(
                "label '{label}' may only contain letters, digits and hyphens"
            )));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(domain_err(format!(
                "label '{label}' must not start or end with a hyphen"
            )));
        }
    }
    if labels
        .last()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(domain_err("top-level domain must not be all-numeric"));
    }
    Ok(ascii)
}

// ---------------------------------------------------------------------------
// Phone
// ---------------------------------------------------------------------------

/// A phone number in canonical E.164 form: `+` followed by 8 to 15 digits,
/// the first of which is not `0`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PhoneNumber(String);

string_newtype_impls!(PhoneNumber);

impl PhoneNumber {
    /// Parses an E.164 number, accepting (and stripping) spaces, dashes,
    /// dots and parentheses used for formatting, e.g. `+1 (415) 555-0100`.
    pub fn parse(input: &str) -> Result<Self, AddressError> {
        let s = input.trim();
        if s.is_empty() {
            return Err(AddressError::Empty);
        }
        let rest = s.strip_prefix('+').ok_or(AddressError::PhoneNotE164)?;
        let mut canonical = String::with_capacity(PHONE_DIGITS_MAX + 1);
        canonical.push('+');
        let mut digits = 0usize;
        for c in rest.chars() {
            match c {
                '0'..='9' => {
                    if digits == 0 && c == '0' {
                        return Err(AddressError::PhoneNotE164);
                    }
                    digits += 1;
                    if digits > PHONE_DIGITS_MAX {
                        return Err(AddressError::PhoneNotE164);
                    }
                    canonical.push(c);
                }
                ' ' | '-' | '.' | '(' | ')' => {}
                _ => return Err(AddressError::PhoneNotE164),
            }
        }
        if digits < PHONE_DIGITS_MIN {
            return Err(AddressError::PhoneNotE164);
        }
        Ok(Self(canonical))
    }
}

// ---------------------------------------------------------------------------
// Device token
// ---------------------------------------------------------------------------

/// An opaque push-notification device token: non-empty, at most 4096 bytes,
/// with no whitespace or control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeviceToken(String);

string_newtype_impls!(DeviceToken);

impl DeviceToken {
    /// Parses a device token, trimming surrounding whitespace.
    pub fn parse(input: &str) -> Result<Self, AddressError> {
        let s = input.trim();
        if s.is_empty() {
            return Err(AddressError::DeviceTokenEmpty);
        }
        if s.len() > DEVICE_TOKEN_MAX {
            return Err(AddressError::DeviceTokenTooLong);
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(AddressError::DeviceTokenInvalid);
        }
        Ok(Self(s.to_owned()))
    }
}

/// A Telegram chat: its numeric id (negative for groups and channels) or a public @username.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TelegramChat(String);

string_newtype_impls!(TelegramChat);

impl TelegramChat {
    pub fn parse(input: &str) -> Result<Self, AddressError> {
        let s = input.trim();
        let digits = s.strip_prefix('-').unwrap_or(s);
        let numeric = !digits.is_empty()
            && digits.bytes().all(|b| b.is_ascii_digit())
            && s.parse::<i64>().is_ok();
        let username = s.strip_prefix('@').is_some_and(|u| {
            (5..=32).contains(&u.len()) && u.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        });
        if numeric || username {
            Ok(Self(s.to_owned()))
        } else {
            Err(AddressError::TelegramChatInvalid)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn telegram_chats_are_ids_or_usernames() {
        for ok in ["123456789", "-1001234567890", "@herald_news"] {
            assert!(TelegramChat::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-", "@abc", "12a", "@has space", "99999999999999999999"] {
            assert_eq!(
                TelegramChat::parse(bad),
                Err(AddressError::TelegramChatInvalid),
                "{bad}"
            );
        }
    }

    type R = Result<(), AddressError>;

    fn domain_of(n: usize) -> String {
        // Builds an ASCII domain of exactly `n` octets (n >= 5) from labels
        // of at most 63 characters, ending in ".com".
        let mut body = n - 3;
        let mut labels = Vec::new();
        while body > 0 {
            // Each label costs len + 1 (for its trailing dot).
            let take = (body - 1).min(63);
            let take = if body - 1 - take == 1 { take - 1 } else { take };
            labels.push("a".repeat(take));
            body -= take + 1;
        }
        let d = format!("{}.com", labels.join("."));
        assert_eq!(d.len(), n);
        d
    }

    // ---- email --------------------------------------------------------

    #[test]
    fn email_basic_and_accessors() -> R {
        let e = EmailAddress::parse("  Alice.Smith+tag@Example.COM \n")?;
        assert_eq!(e.as_str(), "Alice.Smith+tag@example.com");
        assert_eq!(e.local_part(), "Alice.Smith+tag");
        assert_eq!(e.domain(), "example.com");
        assert_eq!(e.to_string(), "Alice.Smith+tag@example.com");
        let r: &str = e.as_ref();
        assert_eq!(r, e.as_str());
        Ok(())
    }

    #[test]
    fn email_all_atext_chars_accepted() -> R {
        let local = "a!#$%&'*+/=?^_`{|}~-z.0";
        let e = EmailAddress::parse(&format!("{local}@example.org"))?;
        assert_eq!(e.local_part(), local);
        Ok(())
    }

    #[test]
    fn email_idn_domain_to_punycode() -> R {
        let e = EmailAddress::parse("user@bücher.de")?;
        assert_eq!(e.domain(), "xn--bcher-kva.de");
        assert_eq!(e.as_str(), "user@xn--bcher-kva.de");
        let e = EmailAddress::parse("user@BÜCHER.DE")?;
        assert_eq!(e.domain(), "xn--bcher-kva.de");
        // Already-punycoded input is preserved.
        let e = EmailAddress::parse("user@xn--bcher-kva.de")?;
        assert_eq!(e.domain(), "xn--bcher-kva.de");
        Ok(())
    }

    #[test]
    fn email_utf8_local_part_allowed() -> R {
        let e = EmailAddress::parse("josé.müller@example.com")?;
        assert_eq!(e.local_part(), "josé.müller");
        Ok(())
    }

    #[test]
    fn email_empty_and_missing_at() {
        assert_eq!(EmailAddress::parse(""), Err(AddressError::Empty));
        assert_eq!(EmailAddress::parse("   \t"), Err(AddressError::Empty));
        assert_eq!(
            EmailAddress::parse("user.example.com"),
            Err(AddressError::EmailMissingAt)
        );
    }

    #[test]
    fn email_multiple_at_rejected() {
        assert_eq!(
            EmailAddress::parse("a@b@example.com"),
            Err(AddressError::EmailLocalPartInvalid)
        );
        assert_eq!(
            EmailAddress::parse("\"a@b\"@example.com"),
            Err(AddressError::EmailLocalPartInvalid)
        );
    }

    #[test]
    fn email_local_part_64_vs_65() -> R {
        let ok = format!("{}@example.com", "a".repeat(64));
        assert_eq!(EmailAddress::parse(&ok)?.local_part().len(), 64);
        let bad = format!("{}@example.com", "a".repeat(65));
        assert_eq!(
            EmailAddress::parse(&bad),
            Err(AddressError::EmailLocalPartTooLong)
        );
        // Octets, not characters: 32 two-byte chars = 64 octets, 33 = 66.
        let ok = format!("{}@example.com", "é".repeat(32));
        EmailAddress::parse(&ok)?;
        let bad = format!("{}@example.com", "é".repeat(33));
        assert_eq!(
            EmailAddress::parse(&bad),
            Err(AddressError::EmailLocalPartTooLong)
        );
        Ok(())
    }

    #[test]
    fn email_local_part_dots_and_chars() {
        for bad in [
            "@example.com",
            ".a@example.com",
            "a.@example.com",
            "a..b@example.com",
            "a b@example.com",
            "a\tb@example.com",
            "a(b)@example.com",
            "a,b@example.com",
            "a\"b@example.com",
            "a\u{00a0}b@example.com",
            "a\u{0085}b@example.com",
        ] {
            assert_eq!(
                EmailAddress::parse(bad),
                Err(AddressError::EmailLocalPartInvalid),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn email_total_254_vs_255() -> R {
        // 64 + 1 + 189 = 254
        let ok = format!("{}@{}", "a".repeat(64), domain_of(189));
        assert_eq!(ok.len(), 254);
        assert_eq!(EmailAddress::parse(&ok)?.as_str().len(), 254);
        let bad = format!("{}@{}", "a".repeat(64), domain_of(190));
        assert_eq!(bad.len(), 255);
        assert_eq!(EmailAddress::parse(&bad), Err(AddressError::EmailTooLong));
        Ok(())
    }

    #[test]
    fn email_domain_too_long() {
        let bad = format!("a@{}", domain_of(256));
        assert!(matches!(
            EmailAddress::parse(&bad),
            Err(AddressError::EmailDomainInvalid(_))
        ));
    }

    #[test]
    fn email_label_63_vs_64() -> R {
        let ok = format!("a@{}.com", "b".repeat(63));
        EmailAddress::parse(&ok)?;
        let bad = format!("a@{}.com", "b".repeat(64));
        assert!(matches!(
            EmailAddress::parse(&bad),
            Err(AddressError::EmailDomainInvalid(_))
        ));
        Ok(())
    }

    #[test]
    fn email_bad_domains() {
        for bad in [
            "a@",
            "a@localhost",
            "a@example",
            "a@.example.com",
            "a@example.com.",
            "a@example..com",
            "a@-example.com",
            "a@example-.com",
            "a@exa_mple.com",
            "a@exa mple.com",
            "a@example.123",
            "a@1.2.3.4",
            "a@[127.0.0.1]",
            "a@example.c-",
            "a@exa!mple.com",
        ] {
            let r = EmailAddress::parse(bad);
            assert!(
                matches!(r, Err(AddressError::EmailDomainInvalid(_))),
                "{bad:?} -> {r:?}"
            );
        }
    }

    #[test]
    fn email_domain_digits_and_hyphens_ok() -> R {
        let e = EmailAddress::parse("a@123-abc.example.co")?;
        assert_eq!(e.domain(), "123-abc.example.co");
        let e = EmailAddress::parse("a@3com.com")?;
        assert_eq!(e.domain(), "3com.com");
        Ok(())
    }

    #[test]
    fn email_error_codes_and_messages() {
        assert_eq!(AddressError::EmailMissingAt.code(), "invalid_email");
        assert_eq!(
            AddressError::EmailDomainInvalid("x".into()).code(),
            "invalid_email"
        );
        assert_eq!(AddressError::EmailTooLong.code(), "invalid_email");
        assert_eq!(AddressError::Empty.code(), "empty_address");
        assert_eq!(AddressError::PhoneNotE164.code(), "invalid_phone");
        assert_eq!(
            AddressError::DeviceTokenTooLong.code(),
            "invalid_device_token"
        );
        assert!(AddressError::EmailDomainInvalid("bad label".into())
            .to_string()
            .contains("bad label"));
        assert!(!AddressError::PhoneNotE164.to_string().is_empty());
    }

    #[test]
    fn email_hash_eq_normalized() -> R {
        let mut set = HashSet::new();
        set.insert(EmailAddress::parse("x@Example.com")?);
        set.insert(EmailAddress::parse("x@EXAMPLE.COM")?);
        assert_eq!(set.len(), 1);
        // Local part is case-sensitive as given.
        assert_ne!(
            EmailAddress::parse("X@example.com")?,
            EmailAddress::parse("x@example.com")?
        );
        Ok(())
    }

    // ---- phone --------------------------------------------------------

    #[test]
    fn phone_formatted_input_canonicalized() -> R {
        for input in [
            "+14155550100",
            "+1 (415) 555-0100",
            " +1.415.555.0100 ",
            "+1-415-555-0100",
        ] {
            let p = PhoneNumber::parse(input)?;
            assert_eq!(p.as_str(), "+14155550100", "{input:?}");
            assert_eq!(p.to_string(), "+14155550100");
        }
        Ok(())
    }

    #[test]
    fn phone_length_boundaries() -> R {
        // 8 and 15 digits OK; 7 and 16 rejected.
        assert_eq!(PhoneNumber::parse("+12345678")?.as_str(), "+12345678");
        assert_eq!(
            PhoneNumber::parse("+123456789012345")?.as_str(),
            "+123456789012345"
        );
        assert_eq!(
            PhoneNumber::parse("+1234567"),
            Err(AddressError::PhoneNotE164)
        );
        assert_eq!(
            PhoneNumber::parse("+1234567890123456"),
            Err(AddressError::PhoneNotE164)
        );
        // Formatting characters don't count toward length.
        assert_eq!(
            PhoneNumber::parse("+1 2 3 4 5 6 7"),
            Err(AddressError::PhoneNotE164)
        );
        Ok(())
    }

    #[test]
    fn phone_rejects_bad_input() {
        assert_eq!(PhoneNumber::parse(""), Err(AddressError::Empty));
        assert_eq!(PhoneNumber::parse("  "), Err(AddressError::Empty));
        for bad in [
            "14155550100",
            "+04155550100",
            "+ 0415 555 0100",
            "++14155550100",
            "+1415555010a",
            "+1/415/555/0100",
            "+1 415 555 0100 ext 2",
            "+",
            "+١٤١٥٥٥٥٠١٠٠",
            "0014155550100",
        ] {
            assert_eq!(
                PhoneNumber::parse(bad),
                Err(AddressError::PhoneNotE164),
                "{bad:?}"
            );
        }
    }

    // ---- device token -------------------------------------------------

    #[test]
    fn device_token_basic() -> R {
        let t = DeviceToken::parse("  abc:DEF_123-xyz  ")?;
        assert_eq!(t.as_str(), "abc:DEF_123-xyz");
        assert_eq!(t.to_string(), "abc:DEF_123-xyz");
        let r: &str = t.as_ref();
        assert_eq!(r, "abc:DEF_123-xyz");
        Ok(())
    }

    #[test]
    fn device_token_4096_vs_4097() -> R {
        let ok = "a".repeat(4096);
        assert_eq!(DeviceToken::parse(&ok)?.as_str().len(), 4096);
        // Surrounding whitespace does not count.
        DeviceToken::parse(&format!("  {ok}\n"))?;
        let bad = "a".repeat(4097);
        assert_eq!(
            DeviceToken::parse(&bad),
            Err(AddressError::DeviceTokenTooLong)
        );
        // Bytes, not chars: 2049 two-byte chars = 4098 bytes.
        assert_eq!(
            DeviceToken::parse(&"é".repeat(2049)),
            Err(AddressError::DeviceTokenTooLong)
        );
        Ok(())
    }

    #[test]
    fn device_token_rejects_empty_whitespace_control() {
        assert_eq!(DeviceToken::parse(""), Err(AddressError::DeviceTokenEmpty));
        assert_eq!(
            DeviceToken::parse(" \t\n "),
            Err(AddressError::DeviceTokenEmpty)
        );
        for bad in [
            "ab cd",
            "ab\tcd",
            "ab\ncd",
            "ab\u{0}cd",
            "ab\u{7f}cd",
            "ab\u{2028}cd",
        ] {
            assert_eq!(
                DeviceToken::parse(bad),
                Err(AddressError::DeviceTokenInvalid),
                "{bad:?}"
            );
        }
    }
}
