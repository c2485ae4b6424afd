//! Which addresses Herald may call on a tenant's behalf. A tenant chooses the URL, so without
//! this an endpoint could make Herald reach its own network: private ranges, loopback, the
//! cloud's metadata service. Checked when an endpoint is saved (the URL's scheme, a literal
//! address, names that mean this host) and again at every delivery, where every address the
//! name resolves to must be public, so a name that later points inside is refused too.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use crate::domain::notify::EndpointUrl;

/// What the operator allows beyond the public internet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AddressPolicy {
    /// Development: endpoints on this host (http allowed there, https elsewhere still).
    pub allow_loopback: bool,
}

fn v4_forbidden(ip: Ipv4Addr, allow_loopback: bool) -> bool {
    let [a, b, ..] = ip.octets();
    (ip.is_loopback() && !allow_loopback)
        || ip.is_private()
        || ip.is_link_local() // 169.254/16: the metadata service lives here
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240 // reserved
}

fn v6_forbidden(ip: Ipv6Addr, allow_loopback: bool) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return v4_forbidden(v4, allow_loopback);
    }
    let first = ip.segments()[0];
    (ip.is_loopback() && !allow_loopback)
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local, AWS's fd00:ec2::254 metadata too
        || (first & 0xffc0) == 0xfe80 // link-local
        || (first == 0x64 && ip.segments()[1] == 0xff9b) // NAT64 to any v4 address
        || first == 0x2001 && ip.segments()[1] == 0x0db8 // documentation
}

/// Whether Herald refuses to call `ip`.
pub fn is_forbidden(ip: IpAddr, policy: AddressPolicy) -> bool {
    match ip {
        IpAddr::V4(v4) => v4_forbidden(v4, policy.allow_loopback),
        IpAddr::V6(v6) => v6_forbidden(v6, policy.allow_loopback),
    }
}

fn is_loopback_host(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => is_local_name(d),
        None => false,
    }
}

/// Names that mean this host or the cloud's metadata service, whatever DNS says.
fn is_local_name(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost")
}

fn is_metadata_name(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    matches!(
        name.as_str(),
        "metadata" | "metadata.google.internal" | "instance-data" | "instance-data.ec2.internal"
    )
}

/// The checks that need no DNS: scheme, a literal address, names that mean this host.
pub fn check_url(url: &EndpointUrl, policy: AddressPolicy) -> Result<(), String> {
    let u = url.url();
    let loopback = is_loopback_host(u);
    if u.scheme() != "https" && !(loopback && policy.allow_loopback) {
        return Err("the URL must be https".into());
    }
    match u.host() {
        Some(url::Host::Ipv4(ip)) if is_forbidden(IpAddr::V4(ip), policy) => {
            Err(format!("{ip} is a private, loopback or reserved address"))
        }
        Some(url::Host::Ipv6(ip)) if is_forbidden(IpAddr::V6(ip), policy) => {
            Err(format!("{ip} is a private, loopback or reserved address"))
        }
        Some(url::Host::Domain(d)) if is_metadata_name(d) => {
            Err(format!("{d} names a metadata service"))
        }
        Some(url::Host::Domain(d)) if is_local_name(d) && !policy.allow_loopback => {
            Err(format!("{d} names this host"))
        }
        _ => Ok(()),
    }
}

/// The networks the operator lets development forwards reach beyond the public internet
/// (`[events_out] dev_forward_allow`): a laptop, a VPN range. Events endpoints never may.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DevAllowList(Arc<[ipnet::IpNet]>);

impl DevAllowList {
    /// From CIDR blocks (`127.0.0.1/32`, `10.8.0.0/16`) or single addresses. A block that
    /// reaches a link-local range (where the cloud's metadata service lives) is refused.
    pub fn parse<S: AsRef<str>>(blocks: &[S]) -> Result<DevAllowList, String> {
        let nets = blocks
            .iter()
            .map(|b| {
                let b = b.as_ref();
                let net = b
                    .parse::<ipnet::IpNet>()
                    .or_else(|_| b.parse::<IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| format!("`{b}` is not an address or CIDR block"))?;
                match NEVER_ALLOWED.iter().find(|n| overlaps(n, &net)) {
                    Some(n) => Err(format!("`{b}` reaches {n}, where metadata services live")),
                    None => Ok(net),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(DevAllowList(nets.into()))
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.0.iter().any(|n| n.contains(&ip))
    }
}

/// Link-local ranges (the metadata service's 169.254.169.254 and AWS's fd00:ec2::254 among
/// them): no allow-list reaches these.
const NEVER_ALLOWED: [ipnet::IpNet; 3] = [
    ipnet::IpNet::V4(
        match ipnet::Ipv4Net::new(Ipv4Addr::new(169, 254, 0, 0), 16) {
            Ok(n) => n,
            Err(_) => panic!("a valid block"),
        },
    ),
    ipnet::IpNet::V6(
        match ipnet::Ipv6Net::new(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10) {
            Ok(n) => n,
            Err(_) => panic!("a valid block"),
        },
    ),
    ipnet::IpNet::V6(
        match ipnet::Ipv6Net::new(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0), 32) {
            Ok(n) => n,
            Err(_) => panic!("a valid block"),
        },
    ),
];

fn overlaps(a: &ipnet::IpNet, b: &ipnet::IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Exactly `localhost`: the one name resolved here, never by DNS.
fn is_localhost(name: &str) -> bool {
    name.trim_end_matches('.').eq_ignore_ascii_case("localhost")
}

/// The checks for a development forward's URL: an allow-listed address (or `localhost` when
/// loopback is allow-listed) may be plain http; anything else is held to [`check_url`].
pub fn check_forward_url(
    url: &EndpointUrl,
    policy: AddressPolicy,
    allow: &DevAllowList,
) -> Result<(), String> {
    let allowed = match url.url().host() {
        Some(url::Host::Ipv4(ip)) => allow.contains(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => allow.contains(IpAddr::V6(ip)),
        Some(url::Host::Domain(d)) => {
            is_localhost(d)
                && (allow.contains(Ipv4Addr::LOCALHOST.into())
                    || allow.contains(Ipv6Addr::LOCALHOST.into()))
        }
        None => false,
    };
    match allowed {
        true => Ok(()),
        false => check_url(url, policy).map_err(|why| {
            format!("{why} (development forwards may also reach the addresses in [events_out] dev_forward_allow)")
        }),
    }
}

/// Resolves names for delivery: every address must be allowed, or the name is refused whole
/// (a name with one public and one private address is how rebinding attacks start).
#[derive(Debug, Clone, Default)]
pub struct GuardedResolver {
    pub policy: AddressPolicy,
    /// Allowed even if not public (development forwards only).
    pub allow: DevAllowList,
}

impl GuardedResolver {
    fn refuses(&self, ip: IpAddr) -> bool {
        is_forbidden(ip, self.policy) && !self.allow.contains(ip)
    }
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = self.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            if is_localhost(&host) {
                // The loopback addresses this client may reach, whichever of them the hosts
                // file lists: a name that also meant ::1 would otherwise be refused whole.
                let addrs: Vec<SocketAddr> =
                    [Ipv4Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into()]
                        .into_iter()
                        .filter(|ip: &IpAddr| !guard.refuses(*ip))
                        .map(|ip| SocketAddr::new(ip, 0))
                        .collect();
                if addrs.is_empty() {
                    return Err("localhost is not public".into());
                }
                return Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs);
            }
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if let Some(bad) = addrs.iter().find(|a| guard.refuses(a.ip())) {
                return Err(format!("{host} resolves to {}, which is not public", bad.ip()).into());
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The HTTP client for deliveries: no redirects (a 3xx is an answer, not an instruction), no
/// proxy from the environment, names resolved through [`GuardedResolver`].
pub fn client(resolver: GuardedResolver, timeout: std::time::Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(timeout)
        .connect_timeout(timeout)
        .user_agent(concat!("Herald-Webhooks/", env!("CARGO_PKG_VERSION")))
        .dns_resolver(Arc::new(resolver))
        .build()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> EndpointUrl {
        EndpointUrl::parse(s).unwrap()
    }

    const STRICT: AddressPolicy = AddressPolicy {
        allow_loopback: false,
    };
    const DEV: AddressPolicy = AddressPolicy {
        allow_loopback: true,
    };

    #[test]
    fn private_loopback_link_local_and_metadata_addresses_are_refused() {
        for bad in [
            "https://10.1.2.3/",
            "https://172.16.0.1/",
            "https://192.168.1.1/",
            "https://169.254.169.254/latest/meta-data/",
            "https://127.0.0.1/",
            "https://[::1]/",
            "https://[fd00:ec2::254]/",
            "https://[fe80::1]/",
            "https://[::ffff:10.0.0.1]/",
            "https://0.0.0.0/",
            "https://100.64.0.1/",
            "https://localhost/",
            "https://a.localhost/",
            "https://metadata.google.internal/",
        ] {
            assert!(check_url(&url(bad), STRICT).is_err(), "{bad}");
        }
        assert!(check_url(&url("https://203.0.114.1/x"), STRICT).is_ok());
        assert!(check_url(&url("https://hooks.example.com/x"), STRICT).is_ok());
    }

    #[test]
    fn http_is_only_for_loopback_in_development() {
        assert!(check_url(&url("http://hooks.example.com/"), DEV).is_err());
        assert!(check_url(&url("http://127.0.0.1:8080/"), STRICT).is_err());
        assert!(check_url(&url("http://127.0.0.1:8080/"), DEV).is_ok());
        assert!(check_url(&url("http://localhost:8080/"), DEV).is_ok());
        assert!(check_url(&url("https://10.0.0.1/"), DEV).is_err());
        assert!(check_url(&url("https://169.254.169.254/"), DEV).is_err());
    }

    #[tokio::test]
    async fn the_resolver_refuses_a_name_that_resolves_inside() {
        use reqwest::dns::Resolve;
        let name: reqwest::dns::Name = "localhost".parse().unwrap();
        let strict = GuardedResolver::default();
        assert!(strict.resolve(name).await.is_err());
        let dev = GuardedResolver {
            policy: DEV,
            ..Default::default()
        };
        let name: reqwest::dns::Name = "localhost".parse().unwrap();
        assert!(dev.resolve(name).await.is_ok());
        let forward = GuardedResolver {
            policy: STRICT,
            allow: DevAllowList::parse(&["127.0.0.0/8"]).unwrap(),
        };
        let name: reqwest::dns::Name = "localhost".parse().unwrap();
        assert!(forward.resolve(name).await.is_ok());
    }

    #[test]
    fn a_dev_forward_may_reach_the_allow_list_and_only_it_beyond_public_https() {
        let allow = DevAllowList::parse(&["127.0.0.1", "10.8.0.0/16"]).unwrap();
        for ok in [
            "http://127.0.0.1:3000/hooks",
            "http://localhost:3000/",
            "http://10.8.1.2/",
            "https://hooks.example.com/",
        ] {
            assert!(check_forward_url(&url(ok), STRICT, &allow).is_ok(), "{ok}");
        }
        for bad in [
            "http://10.9.0.1/",
            "https://169.254.169.254/",
            "http://hooks.example.com/",
            "http://127.0.0.2/",
        ] {
            assert!(
                check_forward_url(&url(bad), STRICT, &allow).is_err(),
                "{bad}"
            );
        }
        assert!(check_forward_url(&url("http://a.localhost:3000/"), STRICT, &allow).is_err());
        let none = DevAllowList::default();
        assert!(check_forward_url(&url("http://localhost:3000/"), STRICT, &none).is_err());
        assert!(DevAllowList::parse(&["10.0.0.0/33"]).is_err());
        for reaching_metadata in [
            "169.254.169.254",
            "0.0.0.0/0",
            "::/0",
            "fd00:ec2::254",
            "fe80::1",
        ] {
            assert!(
                DevAllowList::parse(&[reaching_metadata]).is_err(),
                "{reaching_metadata}"
            );
        }
        assert!(DevAllowList::parse(&["nope"]).is_err());
    }
}
