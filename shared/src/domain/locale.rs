//! Locales for template variants: a BCP 47 language tag kept to what Herald needs (`en`,
//! `en-GB`, `es-419`, `zh-Hant-TW`), in its canonical case, with the chain it falls back along.

use serde::{Deserialize, Serialize};

const MAX_CHARS: usize = 35;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Locale(String);

impl Locale {
    /// A language (2-3 letters) and optional subtags (script, region, ...), each 2-8 letters or
    /// digits, separated by `-` (or `_`, taken as `-`).
    pub fn parse(raw: &str) -> Result<Locale, String> {
        let bad = || format!("`{raw}` is not a locale like en, en-GB or es-419");
        if raw.is_empty() || raw.len() > MAX_CHARS {
            return Err(bad());
        }
        let mut parts = raw.split(['-', '_']);
        let language = parts.next().ok_or_else(bad)?;
        if !(2..=3).contains(&language.len()) || !language.chars().all(|c| c.is_ascii_alphabetic())
        {
            return Err(bad());
        }
        let mut tag = language.to_ascii_lowercase();
        for sub in parts {
            if !(2..=8).contains(&sub.len()) || !sub.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(bad());
            }
            tag.push('-');
            tag.push_str(&match sub.len() {
                2 => sub.to_ascii_uppercase(),
                4 => {
                    let mut s = sub.to_ascii_lowercase();
                    s[..1].make_ascii_uppercase();
                    s
                }
                _ => sub.to_ascii_lowercase(),
            });
        }
        Ok(Locale(tag))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// This locale, then each shorter prefix: `es-MX` -> `es-MX`, `es`.
    pub fn fallbacks(&self) -> impl Iterator<Item = &str> {
        let tag = self.0.as_str();
        let cuts = tag.match_indices('-').map(|(i, _)| i).collect::<Vec<_>>();
        std::iter::once(tag).chain(cuts.into_iter().rev().map(move |i| &tag[..i]))
    }
}

impl TryFrom<String> for Locale {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Locale::parse(&s)
    }
}

impl From<Locale> for String {
    fn from(l: Locale) -> String {
        l.0
    }
}

impl std::fmt::Display for Locale {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locales_are_canonical_and_fall_back_by_prefix() {
        let l = Locale::parse("es_mx").unwrap();
        assert_eq!(l.as_str(), "es-MX");
        assert_eq!(l.fallbacks().collect::<Vec<_>>(), ["es-MX", "es"]);
        let z = Locale::parse("ZH-hant-tw").unwrap();
        assert_eq!(z.as_str(), "zh-Hant-TW");
        assert_eq!(
            z.fallbacks().collect::<Vec<_>>(),
            ["zh-Hant-TW", "zh-Hant", "zh"]
        );
        assert_eq!(Locale::parse("es-419").unwrap().as_str(), "es-419");
        for bad in [
            "", "e", "english", "en-", "en--GB", "en-G", "en GB", "../x", "en-ÅÅ",
        ] {
            assert!(Locale::parse(bad).is_err(), "{bad}");
        }
    }
}
