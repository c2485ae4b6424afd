//! Which scope a key needs for each route: one table, read by the key extractor.

use axum::http::Method;

use crate::domain::KeyScope;

/// Routes (as the router names them) where every method changes or reveals configuration.
const ADMIN_ROUTES: [&str; 5] = [
    "/v1/gateways",
    "/v1/webhook-endpoints",
    "/v1/webhook-deliveries",
    "/v1/audit",
    "/v1/dev-forwards",
];

/// Routes whose reads are `read` and whose writes are `admin`.
const CONFIG_ROUTES: [&str; 11] = [
    "/v1/templates",
    "/v1/quiet-hours",
    "/v1/reputation",
    "/v1/numbers",
    "/v1/assignments",
    "/v1/relay-settings",
    "/v1/inbound-rules",
    "/v1/thread-policy",
    "/v1/suppressions",
    "/v1/sender-identities",
    "/v1/dead-letters",
];

/// The scope a request needs: configuration is `admin`, other reads are `read`, and sending
/// or cancelling a message is `send`.
pub fn required(method: &Method, route: &str) -> KeyScope {
    let under = |prefixes: &[&str]| prefixes.iter().any(|p| route.starts_with(p));
    if under(&ADMIN_ROUTES) {
        return KeyScope::Admin;
    }
    let reads = matches!(*method, Method::GET | Method::HEAD);
    match (reads, under(&CONFIG_ROUTES)) {
        (true, _) => KeyScope::Read,
        (false, true) => KeyScope::Admin,
        (false, false) => KeyScope::Send,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_route_needs_its_scope() {
        for (method, route, want) in [
            (Method::POST, "/v1/messages", KeyScope::Send),
            (Method::POST, "/v1/messages/bulk", KeyScope::Send),
            (Method::DELETE, "/v1/messages/{id}", KeyScope::Send),
            (Method::GET, "/v1/messages/{id}", KeyScope::Read),
            (Method::GET, "/v1/events/stream", KeyScope::Read),
            (Method::GET, "/v1/templates/{name}", KeyScope::Read),
            (Method::PUT, "/v1/templates/{name}", KeyScope::Admin),
            (Method::POST, "/v1/suppressions/import", KeyScope::Admin),
            (Method::POST, "/v1/dead-letters/redrive", KeyScope::Admin),
            (Method::GET, "/v1/inbound-rules", KeyScope::Read),
            (Method::PUT, "/v1/inbound-rules", KeyScope::Admin),
            (Method::POST, "/v1/inbound-rules/test", KeyScope::Admin),
            (Method::GET, "/v1/thread-policy", KeyScope::Read),
            (Method::PUT, "/v1/thread-policy", KeyScope::Admin),
            (Method::POST, "/v1/numbers", KeyScope::Admin),
            (Method::PATCH, "/v1/numbers/{number}", KeyScope::Admin),
            (Method::GET, "/v1/numbers", KeyScope::Read),
            (
                Method::POST,
                "/v1/assignments/{id}/reassign",
                KeyScope::Admin,
            ),
            (Method::GET, "/v1/assignments/{id}", KeyScope::Read),
            (Method::POST, "/v1/routing/simulate", KeyScope::Send),
            (Method::GET, "/v1/policy/violations", KeyScope::Read),
            (Method::GET, "/v1/webhook-endpoints", KeyScope::Admin),
            (Method::GET, "/v1/audit/export", KeyScope::Admin),
            (Method::GET, "/v1/dev-forwards/stream", KeyScope::Admin),
            (Method::PUT, "/v1/quiet-hours", KeyScope::Admin),
            (Method::GET, "/v1/reputation", KeyScope::Read),
            (Method::GET, "/v1/gateways", KeyScope::Admin),
            (Method::POST, "/v1/reputation/resume", KeyScope::Admin),
            (
                Method::PUT,
                "/v1/templates/{name}/locales/{locale}",
                KeyScope::Admin,
            ),
        ] {
            assert_eq!(required(&method, route), want, "{method} {route}");
        }
    }
}
