//! A number's health over the last days: texts in and out, failed deliveries, carrier errors
//! (Twilio's 30003-30008: unreachable, blocked, unknown, landline, filtered as spam,
//! unknown), opt-outs; and whether it is over the thresholds that flag it for a look.

use serde::Serialize;
use utoipa::ToSchema;

/// The window health is counted over.
pub const HEALTH_DAYS: i64 = 7;
/// Sends below which rates are not judged (too few to mean anything).
pub const MIN_SENDS: u64 = 20;
pub const MAX_FAILURE_RATE: f64 = 0.10;
pub const MAX_CARRIER_ERROR_RATE: f64 = 0.05;
/// Opt-outs are judged from this many on.
pub const MIN_OPT_OUTS: u64 = 3;
pub const MAX_OPT_OUT_RATE: f64 = 0.02;

#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct NumberHealth {
    pub inbound: u64,
    pub outbound: u64,
    pub failed: u64,
    pub carrier_errors: u64,
    pub opt_outs: u64,
    pub failure_rate: f64,
    pub carrier_error_rate: f64,
    pub opt_out_rate: f64,
    /// Over a threshold; `reasons` says which.
    pub flagged: bool,
    pub reasons: Vec<String>,
    /// The counts stopped at the read budget: the true ones are higher.
    pub partial: bool,
}

/// Whether a provider error is a carrier's refusal of the number (Twilio 30003-30008).
pub fn is_carrier_error(error: &str) -> bool {
    (30003..=30008).any(|code| error.contains(&code.to_string()))
}

impl NumberHealth {
    /// Works out the rates and the flag from the counts.
    pub fn judged(mut self) -> NumberHealth {
        let rate = |n: u64, of: u64| if of == 0 { 0.0 } else { n as f64 / of as f64 };
        self.failure_rate = rate(self.failed, self.outbound);
        self.carrier_error_rate = rate(self.carrier_errors, self.outbound);
        self.opt_out_rate = rate(self.opt_outs, self.inbound + self.outbound);
        let sends = self.outbound >= MIN_SENDS;
        let checks = [
            (
                sends && self.failure_rate >= MAX_FAILURE_RATE,
                "failure_rate",
            ),
            (
                sends && self.carrier_error_rate >= MAX_CARRIER_ERROR_RATE,
                "carrier_errors",
            ),
            (
                self.opt_outs >= MIN_OPT_OUTS && self.opt_out_rate >= MAX_OPT_OUT_RATE,
                "opt_outs",
            ),
        ];
        self.reasons = checks
            .iter()
            .filter(|(over, _)| *over)
            .map(|(_, why)| (*why).to_owned())
            .collect();
        self.flagged = !self.reasons.is_empty();
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_flag_a_number_and_say_why() {
        let quiet = NumberHealth {
            outbound: 10,
            failed: 5,
            ..NumberHealth::default()
        }
        .judged();
        assert!(!quiet.flagged, "too few sends to judge");
        let failing = NumberHealth {
            outbound: 40,
            failed: 4,
            carrier_errors: 2,
            ..NumberHealth::default()
        }
        .judged();
        assert_eq!(failing.reasons, ["failure_rate", "carrier_errors"]);
        let fine = NumberHealth {
            outbound: 100,
            failed: 2,
            inbound: 100,
            opt_outs: 2,
            ..NumberHealth::default()
        }
        .judged();
        assert!(!fine.flagged, "{fine:?}");
        let opted = NumberHealth {
            inbound: 50,
            opt_outs: 3,
            ..NumberHealth::default()
        }
        .judged();
        assert_eq!(opted.reasons, ["opt_outs"]);
        assert!(is_carrier_error("twilio error 30007"));
        assert!(!is_carrier_error("twilio error 21610"));
    }
}
