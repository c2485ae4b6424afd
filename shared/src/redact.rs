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
            false => write_masked(f, self.0),
        }
    }
}

fn write_masked(f: &mut fmt::Formatter<'_>, address: &str) -> fmt::Result {
    if let Some((local, domain)) = address.rsplit_once('@') {
        let first: String = local.chars().take(1).collect();
        return write!(f, "{first}***@{domain}");
    }
    let chars: Vec<char> = address.chars().collect();
    // A number keeps its country and area digits and its last four; anything else its ends.
    let (head, tail) = match address.starts_with('+') {
        true => (5, 4),
        false => (2, 2),
    };
    if chars.len() <= head + tail {
        return f.write_str("***");
    }
    let start: String = chars[..head].iter().collect();
    let end: String = chars[chars.len() - tail..].iter().collect();
    write!(f, "{start}***{end}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(a: &str) -> String {
        struct M<'a>(&'a str);
        impl fmt::Display for M<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write_masked(f, self.0)
            }
        }
        M(a).to_string()
    }

    #[test]
    fn addresses_keep_only_what_tells_them_apart() {
        assert_eq!(masked("ann@example.com"), "a***@example.com");
        assert_eq!(masked("+15551234321"), "+1555***4321");
        assert_eq!(masked("123456789"), "12***89");
        assert_eq!(masked("+1555"), "***");
        assert_eq!(masked("@example.com"), "***@example.com");
        assert_eq!(masked("ünïcode@example.com"), "ü***@example.com");
        assert_eq!(masked(""), "***");
    }
}
