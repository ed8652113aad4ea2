//! Who is asking: the client address of a request. The peer of the TCP
//! connection, unless that peer is one of the configured trusted proxies
//! (`--trusted-proxy`); then the right-most `X-Forwarded-For` entry that is
//! not itself a trusted proxy. Throttles, sessions, the audit log and key
//! usage all see the address this module computes.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use ipnet::IpNet;

use crate::state::AppState;

/// Parses a `--trusted-proxy` value: a CIDR block (`10.0.0.0/8`) or one
/// address (`10.0.0.7`, `::1`).
pub fn parse_trusted_proxy(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    text.parse::<IpNet>()
        .map(|net| net.trunc())
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| {
            format!("`{text}` is neither an IP address nor a CIDR block such as 10.0.0.0/8")
        })
}

/// Whether `ip` is one of the trusted proxies.
pub fn is_trusted_proxy(ip: IpAddr, trusted: &[IpNet]) -> bool {
    let ip = ip.to_canonical();
    trusted.iter().any(|net| net.contains(&ip))
}

/// The client address of a request that came from `peer` with `headers`.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer = peer.to_canonical();
    if !is_trusted_proxy(peer, trusted) {
        return peer;
    }
    let mut leftmost = None;
    // Every X-Forwarded-For header, in order, as one comma-separated list,
    // read from the right: each proxy appends the address it saw.
    let values: Vec<&str> = match headers
        .get_all("x-forwarded-for")
        .iter()
        .map(|v| v.to_str())
        .collect::<Result<_, _>>()
    {
        Ok(values) => values,
        Err(_) => return peer,
    };
    for entry in values.iter().rev().flat_map(|v| v.rsplit(',')) {
        let Some(ip) = parse_forwarded_entry(entry) else {
            // Malformed: trust none of it.
            return peer;
        };
        if !is_trusted_proxy(ip, trusted) {
            return ip;
        }
        leftmost = Some(ip);
    }
    // Only proxies (or no header): the farthest one known.
    leftmost.unwrap_or(peer)
}

/// An `X-Forwarded-For` entry: an address, possibly with a port
/// (`1.2.3.4:5678`, `[2001:db8::1]:443`).
fn parse_forwarded_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    entry
        .parse::<IpAddr>()
        .or_else(|_| entry.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

/// The client address of a request, from its connection ([`peer_addr`])
/// and headers; `None` when the request did not come over a connection
/// (e.g. a router called directly).
pub fn request_client_ip(parts: &Parts, trusted: &[IpNet]) -> Option<IpAddr> {
    let peer = peer_addr(&parts.extensions)?;
    Some(client_ip(peer.ip(), &parts.headers, trusted))
}

/// The connection's peer: in the request's `KeySlot` when our connection
/// layer served it, in `ConnectInfo` when axum's `serve` did.
pub fn peer_addr(extensions: &axum::http::Extensions) -> Option<SocketAddr> {
    extensions
        .get::<crate::usage::KeySlot>()
        .and_then(crate::usage::KeySlot::peer)
        .or_else(|| {
            extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(peer)| *peer)
        })
}

/// The client address as an extractor (never fails).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr {
    /// The client, seen through trusted proxies.
    pub ip: Option<IpAddr>,
    /// The connection's peer is a trusted proxy (so its `X-Forwarded-*`
    /// headers may be believed).
    pub via_trusted_proxy: bool,
}

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let trusted = &state.config().trusted_proxies;
        let peer = peer_addr(&parts.extensions).map(|peer| peer.ip());
        Ok(Self {
            ip: peer.map(|peer| client_ip(peer, &parts.headers, trusted)),
            via_trusted_proxy: peer.is_some_and(|peer| is_trusted_proxy(peer, trusted)),
        })
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(
                "x-forwarded-for",
                HeaderValue::from_str(value).expect("a header"),
            );
        }
        headers
    }

    fn proxies() -> Vec<IpNet> {
        ["10.0.0.0/8", "2001:db8:ffff::1"]
            .iter()
            .map(|p| parse_trusted_proxy(p).expect("a proxy"))
            .collect()
    }

    #[test]
    fn forwarded_addresses_are_believed_only_from_trusted_proxies() {
        let headers = forwarded(&["203.0.113.9"]);
        assert_eq!(
            client_ip(ip("198.51.100.1"), &headers, &proxies()),
            ip("198.51.100.1"),
            "an untrusted peer's header is ignored"
        );
        assert_eq!(
            client_ip(ip("10.1.2.3"), &headers, &proxies()),
            ip("203.0.113.9")
        );
        assert_eq!(
            client_ip(ip("10.1.2.3"), &headers, &[]),
            ip("10.1.2.3"),
            "nothing is trusted by default"
        );
    }

    #[test]
    fn the_rightmost_untrusted_entry_is_the_client() {
        let trusted = proxies();
        // The client forged the first entry; our proxies appended the rest.
        let headers = forwarded(&["1.1.1.1, 203.0.113.9", "10.0.0.5"]);
        assert_eq!(
            client_ip(ip("10.0.0.6"), &headers, &trusted),
            ip("203.0.113.9")
        );
        // Only proxies: the farthest one.
        let headers = forwarded(&["10.0.0.9, 10.0.0.5"]);
        assert_eq!(
            client_ip(ip("10.0.0.6"), &headers, &trusted),
            ip("10.0.0.9")
        );
        // No header: the proxy itself.
        assert_eq!(
            client_ip(ip("10.0.0.6"), &HeaderMap::new(), &trusted),
            ip("10.0.0.6")
        );
        // Ports, IPv6, IPv4-mapped peers.
        let headers = forwarded(&["[2001:db8::7]:443, 203.0.113.9:5000"]);
        assert_eq!(
            client_ip(ip("::ffff:10.0.0.6"), &headers, &trusted),
            ip("203.0.113.9")
        );
        let headers = forwarded(&["2001:db8::7"]);
        assert_eq!(
            client_ip(ip("2001:db8:ffff::1"), &headers, &trusted),
            ip("2001:db8::7")
        );
    }

    #[test]
    fn a_malformed_forwarded_header_means_the_peer() {
        let trusted = proxies();
        for bad in ["not-an-address", "203.0.113.9, , 10.0.0.1", "unknown", ""] {
            let headers = forwarded(&[bad]);
            assert_eq!(
                client_ip(ip("10.0.0.6"), &headers, &trusted),
                ip("10.0.0.6"),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn trusted_proxies_parse_as_blocks_or_addresses() {
        assert_eq!(
            parse_trusted_proxy("10.1.2.3/8").expect("cidr").to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(
            parse_trusted_proxy(" 127.0.0.1 ")
                .expect("address")
                .to_string(),
            "127.0.0.1/32"
        );
        assert_eq!(
            parse_trusted_proxy("::1").expect("address").to_string(),
            "::1/128"
        );
        let err = parse_trusted_proxy("10.0.0.0/33").expect_err("bad prefix");
        assert!(err.contains("CIDR"), "{err}");
        assert!(parse_trusted_proxy("proxy.internal").is_err());
    }
}
