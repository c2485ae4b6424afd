//! The providers' signature schemes: Twilio's HMAC-SHA1 over URL and sorted parameters, Meta's
//! HMAC-SHA256 of the body, RSA PKCS#1 v1.5 (SHA-1 or SHA-256) for SNS and Postal.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::pkcs8::DecodePublicKey;
use rsa::signature::Verifier;
use rsa::RsaPublicKey;
use sha1::Sha1;
use sha2::Sha256;
use x509_cert::der::{DecodePem, Encode};

/// Twilio's `X-Twilio-Signature`: base64 HMAC-SHA1, keyed by the auth token, of the full URL
/// followed by each POST parameter's name and value, sorted by name.
pub fn twilio_signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut data = url.to_owned();
    for (k, v) in sorted {
        data.push_str(k);
        data.push_str(v);
    }
    // HMAC takes keys of any length; were one refused, the empty string matches nothing.
    match <Hmac<Sha1> as Mac>::new_from_slice(auth_token.as_bytes()) {
        Ok(mut mac) => {
            mac.update(data.as_bytes());
            STANDARD.encode(mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    }
}

/// Meta's `X-Hub-Signature-256`: `sha256=` and the hex HMAC-SHA256 of the body.
pub fn hub_signature_256(app_secret: &str, body: &[u8]) -> String {
    match <Hmac<Sha256> as Mac>::new_from_slice(app_secret.as_bytes()) {
        Ok(mut mac) => {
            mac.update(body);
            format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
        }
        Err(_) => String::new(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RsaHash {
    Sha1,
    Sha256,
}

/// Checks a base64 RSA PKCS#1 v1.5 signature of `data`.
pub fn verify_rsa(
    key: &RsaPublicKey,
    hash: RsaHash,
    data: &[u8],
    signature_b64: &str,
) -> Result<(), String> {
    let raw = STANDARD
        .decode(signature_b64.trim())
        .map_err(|e| format!("signature is not base64: {e}"))?;
    let signature = Signature::try_from(raw.as_slice()).map_err(|e| format!("signature: {e}"))?;
    let checked = match hash {
        RsaHash::Sha1 => VerifyingKey::<Sha1>::new(key.clone()).verify(data, &signature),
        RsaHash::Sha256 => VerifyingKey::<Sha256>::new(key.clone()).verify(data, &signature),
    };
    checked.map_err(|_| "signature does not match".to_owned())
}

/// An RSA public key from PEM (`-----BEGIN PUBLIC KEY-----`) or bare base64 DER.
pub fn rsa_public_key(text: &str) -> Result<RsaPublicKey, String> {
    let text = text.trim();
    if text.starts_with("-----BEGIN") {
        return RsaPublicKey::from_public_key_pem(text).map_err(|e| e.to_string());
    }
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let der = STANDARD
        .decode(compact)
        .map_err(|e| format!("neither PEM nor base64: {e}"))?;
    RsaPublicKey::from_public_key_der(&der).map_err(|e| e.to_string())
}

/// The RSA key of a PEM X.509 certificate.
pub fn certificate_key(pem: &str) -> Result<RsaPublicKey, String> {
    let cert = x509_cert::Certificate::from_pem(pem.as_bytes()).map_err(|e| e.to_string())?;
    let spki = cert
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|e| e.to_string())?;
    RsaPublicKey::from_public_key_der(&spki).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example in Twilio's webhook security documentation.
    #[test]
    fn twilios_documented_example_validates() {
        let params: Vec<(String, String)> = [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+12349013030"),
            ("Digits", "1234"),
            ("From", "+12349013030"),
            ("To", "+18005551212"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        assert_eq!(
            twilio_signature("12345", url, &params),
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        );
        let mut tampered = params.clone();
        tampered[2].1 = "1235".into();
        assert_ne!(
            twilio_signature("12345", url, &tampered),
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        );
    }

    #[test]
    fn hub_signature_is_hex_hmac_sha256() {
        // HMAC-SHA256("key", "The quick brown fox jumps over the lazy dog"), RFC 4231 style.
        assert_eq!(
            hub_signature_256("key", b"The quick brown fox jumps over the lazy dog"),
            "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
    }
}
