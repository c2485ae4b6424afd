//! A credential in configuration: written in place (`"abc"`, for herald.toml on a developer's
//! machine) or named by an environment variable (`{ env = "TWILIO_AUTH_TOKEN" }`, which the SAM
//! template fills from SSM or Secrets Manager). It never prints.

use serde::{Deserialize, Deserializer};

#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Raw {
    Value(String),
    Env { env: String },
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
        match Raw::deserialize(d)? {
            Raw::Value(v) => Ok(Secret(v)),
            Raw::Env { env } => std::env::var(&env).map(Secret).map_err(|_| {
                serde::de::Error::custom(format!("environment variable {env} is not set"))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_or_from_the_environment_and_never_printed() {
        let s: Secret = serde_json::from_str("\"abc\"").unwrap();
        assert_eq!(s.expose(), "abc");
        assert_eq!(format!("{s:?}"), "Secret(…)");
        let missing = serde_json::from_str::<Secret>(r#"{"env":"HERALD_TEST_NO_SUCH_VARIABLE"}"#);
        assert!(missing
            .unwrap_err()
            .to_string()
            .contains("HERALD_TEST_NO_SUCH_VARIABLE"));
        let home: Secret = serde_json::from_str(r#"{"env":"PATH"}"#).unwrap();
        assert!(!home.expose().is_empty());
    }
}
