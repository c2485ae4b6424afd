//! Addresses in logs are masked: `a***@example.com`, `+1555***4321`. Set
//! `HERALD_LOG_ADDRESSES=clear` to log them as they are while debugging.

use std::fmt;
use std::sync::OnceLock;

/// The setting, read once.
fn addresses_in_clear() -> bool {
    static CLEAR: OnceLock<bool> = OnceLock::new();
    *CLEAR.get_or_init(|| {
        std::env::var("HERALD_LOG_ADDRESSES").is_ok_and(|v| v.eq_ignore_ascii_case("clear"))
    })
}

/// An email address, phone number or chat id as a log field: `info!(to = %Masked(&to), ...)`.
pub struct Masked<'a>(pub &'a str);

impl fmt::Display for Masked<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match addresses_in_clear() {
            true => f.write_str(self.0),
            false => f.write_str(&mask(self.0)),
        }
    }
}

fn mask(address: &str) -> String {
    if let Some((local, domain)) = address.rsplit_once('@') {
        let first: String = local.chars().take(1).collect();
        return format!("{first}***@{domain}");
    }
    let chars: Vec<char> = address.chars().collect();
    // A number keeps its country and area digits and its last four; anything else its ends.
    let (head, tail) = match address.starts_with('+') {
        true => (5, 4),
        false => (2, 2),
    };
    if chars.len() <= head + tail {
        return "***".to_owned();
    }
    let start: String = chars[..head].iter().collect();
    let end: String = chars[chars.len() - tail..].iter().collect();
    format!("{start}***{end}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_keep_only_what_tells_them_apart() {
        assert_eq!(mask("ann@example.com"), "a***@example.com");
        assert_eq!(mask("+15551234321"), "+1555***4321");
        assert_eq!(mask("123456789"), "12***89");
        assert_eq!(mask("+1555"), "***");
        assert_eq!(mask("@example.com"), "***@example.com");
        assert_eq!(mask("ünïcode@example.com"), "ü***@example.com");
        assert_eq!(mask(""), "***");
    }
}
