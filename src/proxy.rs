//! HTTP proxies: which origins go through one (`NO_PROXY` rules), and the `CONNECT` tunnel
//! that https connections take through it.
//!
//! An https origin is reached through a `CONNECT host:port` tunnel, over which TLS runs end to
//! end as without a proxy; an http origin's requests go to the proxy in absolute form
//! (`GET http://host:port/path HTTP/1.1`). Either way the socket to the proxy is one of the
//! pool's, counted under `max_connections`, and pooled for the origin it serves. Only proxies
//! spoken to in plain HTTP (`http://` proxy URLs) are supported, with optional Basic
//! credentials in the URL's user information, which are never shown.

use std::net::IpAddr;

use http::header::HeaderValue;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::ConfigError;

/// The most bytes of a proxy's reply to `CONNECT` that are read.
const MAX_CONNECT_REPLY: usize = 16 << 10;

/// One proxy: where it is and what to authenticate with.
#[derive(Clone)]
pub(crate) struct Proxy {
    pub(crate) host: String,
    pub(crate) port: u16,
    /// `Proxy-Authorization`, from the URL's user information (sensitive).
    pub(crate) authorization: Option<HeaderValue>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("authorization", &self.authorization.as_ref().map(|_| ".."))
            .finish()
    }
}

impl Proxy {
    /// Parses `http://[user[:password]@]host[:port]` (port 80 when left out); `field` names the
    /// setting in errors.
    pub(crate) fn parse(url: &str, field: &'static str) -> Result<Self, ConfigError> {
        let bad = |why: &str| ConfigError::new(field, format!("{url:?} {why}"));
        let rest = match url.split_once("://") {
            Some(("http" | "HTTP", rest)) => rest,
            Some(("https" | "HTTPS", _)) => {
                return Err(bad(
                    "is an https proxy; only proxies spoken to in plain HTTP (http://) are \
                     supported (https endpoints still use TLS end to end, through CONNECT)",
                ))
            }
            Some(_) => return Err(bad("must be an http:// URL")),
            // `host:port` without a scheme, as some environments set it.
            None => url,
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let uri: http::uri::Authority = hostport.parse().map_err(|_| bad("has no valid host"))?;
        let host = uri.host().trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(bad("has no host"));
        }
        let authorization = match userinfo {
            None => None,
            Some(u) => {
                use base64::Engine as _;
                let decoded = percent_encoding::percent_decode_str(u).decode_utf8_lossy();
                let token = base64::engine::general_purpose::STANDARD.encode(decoded.as_bytes());
                let mut v = HeaderValue::from_str(&format!("Basic {token}"))
                    .map_err(|_| bad("has invalid credentials"))?;
                v.set_sensitive(true);
                Some(v)
            }
        };
        Ok(Proxy {
            host: host.to_ascii_lowercase(),
            port: uri.port_u16().unwrap_or(80),
            authorization,
        })
    }

    /// Opens a tunnel through the proxy to `host:port` over `tcp` (connected to the proxy):
    /// sends `CONNECT`, and returns once the proxy answered 2xx.
    ///
    /// # Errors
    ///
    /// An I/O error for a failed write or read, a reply that is not HTTP, a refusal (its status
    /// line in the message), or bytes after the reply head.
    pub(crate) async fn tunnel(
        &self,
        tcp: &mut TcpStream,
        host: &str,
        port: u16,
    ) -> std::io::Result<()> {
        let authority = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let mut head =
            format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n").into_bytes();
        if let Some(auth) = &self.authorization {
            head.extend_from_slice(b"Proxy-Authorization: ");
            head.extend_from_slice(auth.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        head.extend_from_slice(b"\r\n");
        tcp.write_all(&head).await?;

        let invalid = |why: String| std::io::Error::new(std::io::ErrorKind::InvalidData, why);
        let mut reply = Vec::with_capacity(512);
        let mut chunk = [0u8; 1024];
        let end = loop {
            let n = tcp.read(&mut chunk).await?;
            if n == 0 {
                return Err(invalid(format!(
                    "the proxy {}:{} closed the connection before answering CONNECT",
                    self.host, self.port
                )));
            }
            reply.extend_from_slice(&chunk[..n]);
            if let Some(at) = reply.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            if reply.len() > MAX_CONNECT_REPLY {
                return Err(invalid("the proxy's reply to CONNECT is too large".into()));
            }
        };
        let mut fields = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Response::new(&mut fields);
        match parsed.parse(&reply[..end]) {
            Ok(httparse::Status::Complete(_)) => {}
            _ => return Err(invalid("the proxy's reply to CONNECT is not HTTP".into())),
        }
        let code = parsed.code.unwrap_or(0);
        if !(200..300).contains(&code) {
            return Err(std::io::Error::other(format!(
                "the proxy {}:{} refused to CONNECT to {authority}: {code} {}",
                self.host,
                self.port,
                parsed.reason.unwrap_or_default()
            )));
        }
        if end != reply.len() {
            // The server speaks only after the client's TLS hello: these bytes are no one's.
            return Err(invalid(
                "the proxy sent data after its reply to CONNECT".into(),
            ));
        }
        Ok(())
    }
}

/// The proxies of a client, and the hosts that bypass them.
#[derive(Debug, Clone, Default)]
pub(crate) struct Proxies {
    pub(crate) http: Option<Proxy>,
    pub(crate) https: Option<Proxy>,
    pub(crate) no_proxy: NoProxy,
}

impl Proxies {
    /// The proxy for an origin of `scheme` at `host:port`, if it takes one.
    pub(crate) fn for_origin(&self, https: bool, host: &str, port: u16) -> Option<&Proxy> {
        let proxy = if https { &self.https } else { &self.http };
        proxy
            .as_ref()
            .filter(|_| !self.no_proxy.bypasses(host, port))
    }
}

/// `NO_PROXY` rules: comma-separated hosts (`example.com`, which covers its subdomains too,
/// `.example.com`, `*.example.com`), `host:port`, IP addresses, CIDR blocks (`10.0.0.0/8`), or
/// `*` for every host.
#[derive(Debug, Clone, Default)]
pub(crate) struct NoProxy {
    rules: Vec<Rule>,
}

#[derive(Debug, Clone)]
enum Rule {
    All,
    Domain { name: String, port: Option<u16> },
    Net { addr: IpAddr, bits: u8 },
}

impl NoProxy {
    /// Parses a `NO_PROXY` value; entries that fit no form are ignored, as curl does.
    pub(crate) fn parse(text: &str) -> Self {
        let rules = text
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .filter_map(|e| {
                if e == "*" {
                    return Some(Rule::All);
                }
                if let Some((addr, bits)) = e.split_once('/') {
                    let addr: IpAddr = addr.trim_matches(['[', ']']).parse().ok()?;
                    let max = if addr.is_ipv4() { 32 } else { 128 };
                    let bits = bits.parse::<u8>().ok().filter(|b| *b <= max)?;
                    return Some(Rule::Net { addr, bits });
                }
                if let Ok(addr) = e.trim_matches(['[', ']']).parse::<IpAddr>() {
                    let bits = if addr.is_ipv4() { 32 } else { 128 };
                    return Some(Rule::Net { addr, bits });
                }
                let (name, port) = match e.rsplit_once(':') {
                    Some((n, p)) => (n, Some(p.parse::<u16>().ok()?)),
                    None => (e, None),
                };
                let name = name.trim_start_matches("*.").trim_start_matches('.');
                Some(Rule::Domain {
                    name: name.to_ascii_lowercase(),
                    port,
                })
            })
            .collect();
        NoProxy { rules }
    }

    /// True when `host:port` goes direct.
    pub(crate) fn bypasses(&self, host: &str, port: u16) -> bool {
        let host = host.trim_matches(['[', ']']).to_ascii_lowercase();
        let ip = host.parse::<IpAddr>().ok();
        self.rules.iter().any(|r| match r {
            Rule::All => true,
            Rule::Net { addr, bits } => ip.is_some_and(|ip| in_net(ip, *addr, *bits)),
            Rule::Domain { name, port: p } => {
                p.is_none_or(|p| p == port)
                    && (host == *name
                        || host
                            .strip_suffix(name.as_str())
                            .is_some_and(|rest| rest.ends_with('.')))
            }
        })
    }
}

fn in_net(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    let (a, b, width) = match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u128::from(u32::from(a)), u128::from(u32::from(b)), 32),
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
        _ => return false,
    };
    if bits == 0 {
        return true;
    }
    let shift = width - u32::from(bits);
    a >> shift == b >> shift
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_urls() {
        let p = Proxy::parse("http://proxy.corp:3128", "proxy").unwrap();
        assert_eq!((p.host.as_str(), p.port), ("proxy.corp", 3128));
        assert!(p.authorization.is_none());
        let p = Proxy::parse("http://us%40r:p%3Ass@10.0.0.1/", "proxy").unwrap();
        assert_eq!((p.host.as_str(), p.port), ("10.0.0.1", 80));
        // base64("us@r:p:ss")
        assert_eq!(
            p.authorization.unwrap().to_str().unwrap(),
            "Basic dXNAcjpwOnNz"
        );
        let p = Proxy::parse("127.0.0.1:8080", "proxy").unwrap();
        assert_eq!((p.host.as_str(), p.port), ("127.0.0.1", 8080));
        assert!(
            !format!("{:?}", Proxy::parse("http://u:secret@h:1", "p").unwrap()).contains("secret")
        );
        for bad in ["https://p:1", "socks5://p:1", "http://", "http://:80"] {
            let e = Proxy::parse(bad, "https_proxy").unwrap_err();
            assert_eq!(e.field(), "https_proxy", "{bad}");
        }
    }

    #[test]
    fn no_proxy_rules() {
        let n = NoProxy::parse(
            " example.com, .internal ,*.corp, 10.0.0.0/8, ::1, s3.local:9000, bad/x",
        );
        for (host, port, bypass) in [
            ("example.com", 443, true),
            ("a.b.example.com", 443, true),
            ("notexample.com", 443, false),
            ("svc.internal", 80, true),
            ("internal", 80, true),
            ("x.corp", 443, true),
            ("10.20.30.40", 80, true),
            ("11.0.0.1", 80, false),
            ("[::1]", 80, true),
            ("s3.local", 9000, true),
            ("s3.local", 9001, false),
            ("s3.amazonaws.com", 443, false),
        ] {
            assert_eq!(n.bypasses(host, port), bypass, "{host}:{port}");
        }
        assert!(NoProxy::parse("*").bypasses("anything", 1));
        assert!(!NoProxy::parse("").bypasses("anything", 1));
        let p = Proxies {
            https: Some(Proxy::parse("http://p:1", "p").unwrap()),
            http: None,
            no_proxy: NoProxy::parse("127.0.0.1"),
        };
        assert!(p
            .for_origin(true, "s3.eu-west-1.amazonaws.com", 443)
            .is_some());
        assert!(p.for_origin(true, "127.0.0.1", 9000).is_none());
        assert!(
            p.for_origin(false, "example.com", 80).is_none(),
            "no http proxy"
        );
    }
}
