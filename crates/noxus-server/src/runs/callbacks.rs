//! Callbacks of finished runs (`callback_url`) and security events (to a
//! workspace's security webhook: a key revoked as reported leaked): the
//! store queues one delivery per run in the transaction that ends it, and
//! one per event in the transaction of the revocation; each process claims
//! due deliveries (PostgreSQL hands each attempt to exactly one claimer:
//! `FOR UPDATE SKIP LOCKED`), sends at most [`CONCURRENCY`] at once, and
//! retries failures with exponential backoff and jitter, up to
//! [`MAX_CALLBACK_ATTEMPTS`] attempts (about 18 hours).
//!
//! **Signing.** A delivery carries `Noxus-Signature: t=<unix seconds>,
//! v1=<hex HMAC-SHA-256(secret, "<t>.<body>")>`, where the secret is the
//! workspace's (`whsec_…`). That secret is derived, never stored: HMAC of
//! the workspace id and a generation number (bumped by a rotation) under a
//! server master secret, itself derived from the key pepper
//! (`NOXUS_KEY_PEPPER`) — or, on SQLite without a pepper, a random one kept
//! in the data directory, outside the database. So a stolen database alone
//! cannot forge callbacks. During a grace period after a rotation (and
//! during a pepper rotation) the header holds one `v1=` per valid secret.
//!
//! **Targets (SSRF).** A target is an outsider's choice, so the server
//! sends only to public addresses: the host is resolved at each attempt,
//! every address checked ([`refusal`]: loopback, private, link-local,
//! shared, documentation, multicast… and their IPv6 forms), and the
//! connection pinned to the checked addresses, so a DNS answer that
//! changes in between (rebinding) cannot move it. Redirects are not
//! followed, timeouts are short, the answer's body is not read.
//! `--allow-loopback-callbacks` allows loopback targets only (tests,
//! local development).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::Duration;

use hmac::{Hmac, Mac};
use rand::Rng;
use secrecy::{ExposeSecret, SecretBox, SecretString};
use sha2::Sha256;
use time::OffsetDateTime;
use tokio::sync::{Notify, Semaphore};

use crate::config::Config;
use crate::domain::keys::PreviousPepper;
use crate::state::AppState;
use crate::store::{
    CallbackAttempt, CallbackDelivery, CallbackKind, CallbackSecretGeneration, WorkspaceId,
    MAX_CALLBACK_ATTEMPTS,
};

/// Deliveries one process sends at once.
pub const CONCURRENCY: usize = 16;
/// Deliveries of one workspace sent at once (by all processes, give or
/// take a claim racing another): a workspace whose receiver hangs holds at
/// most this many senders, and the others' callbacks go on.
pub const PER_WORKSPACE: u32 = 4;
/// How long a claim lasts: longer than an attempt can take.
const LEASE: Duration = Duration::from_secs(60);
/// How often the sender looks for due deliveries (at most).
const POLL_EVERY: Duration = Duration::from_millis(250);
/// Longest wait for the host's addresses.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest an attempt may take, from connecting to the answer's head.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest `callback_url`, in characters.
pub const MAX_URL_CHARS: usize = 2048;
/// Each retry waits this many times longer than the one before (before
/// jitter): with a base of 60 s, 1, 3, 9, 27, 81, 243 and 729 minutes.
const BACKOFF_FACTOR: u32 = 3;
/// The file, in the data directory, that holds the master secret on
/// SQLite without a pepper.
pub const MASTER_FILE: &str = "callback-signing.key";
/// What the signature header is called.
pub const SIGNATURE_HEADER: &str = "Noxus-Signature";
/// How long receivers should accept a signature's timestamp (documented;
/// the server signs each attempt afresh).
pub const SIGNATURE_TOLERANCE: Duration = Duration::from_secs(300);

/// Why callbacks cannot be signed on this server (and so are refused).
pub const NO_SIGNING_SECRET: &str = "This server has no secret to sign callbacks with: on PostgreSQL its operator must set NOXUS_KEY_PEPPER (see docs/configuration.md)";

/// A 32-byte secret that never shows in `Debug`.
struct Master(SecretBox<[u8]>);

impl Master {
    fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(SecretBox::new(bytes.into_boxed_slice()))
    }

    /// The master of a pepper: an HMAC of a constant under it, so the
    /// pepper itself signs nothing.
    fn of_pepper(pepper: &SecretString) -> Self {
        Self::from_bytes(hmac(
            pepper.expose_secret().as_bytes(),
            b"noxus callback master v1",
        ))
    }

    /// The workspace's secret of a generation: `whsec_` and 64 hex digits.
    fn workspace_secret(&self, workspace: &WorkspaceId, generation: i64) -> SecretString {
        let message = format!("noxus callback secret v1\n{workspace}\n{generation}");
        let bytes = hmac(self.0.expose_secret(), message.as_bytes());
        SecretString::from(format!("whsec_{}", hex::encode(bytes)))
    }
}

fn hmac(key: &[u8], message: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length; the error case cannot happen.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// The signature of a body at time `t` under `secret` (the whole
/// `whsec_…` text is the HMAC key): hex HMAC-SHA-256 of `"<t>.<body>"`.
pub fn sign(secret: &str, t: i64, body: &[u8]) -> String {
    let mut message = format!("{t}.").into_bytes();
    message.extend_from_slice(body);
    hex::encode(hmac(secret.as_bytes(), &message))
}

/// Signs callbacks: the current master, and during a pepper rotation the
/// previous one.
pub struct Signer {
    current: Master,
    previous: Option<Master>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("rotating", &self.previous.is_some())
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// The master secrets of this configuration: from the pepper, else
    /// (SQLite) from the data directory's file, created on first use;
    /// `None` on PostgreSQL without a pepper. Fails on a damaged file.
    pub fn from_config(config: &Config) -> anyhow::Result<Option<Self>> {
        let sqlite_dir = config
            .postgres
            .is_none()
            .then_some(config.data_dir.as_path());
        let current = match (&config.pepper, sqlite_dir) {
            (Some(pepper), _) if !pepper.expose_secret().is_empty() => Master::of_pepper(pepper),
            (_, Some(dir)) => master_file(dir, true)?
                .ok_or_else(|| anyhow::anyhow!("the callback master secret was not created"))?,
            (_, None) => return Ok(None),
        };
        // While the pepper rotates, callbacks are also signed with the
        // secrets of the master before, so receivers keep verifying.
        let previous = match (&config.previous_pepper, &config.pepper) {
            (Some(PreviousPepper::Pepper(previous)), _) => Some(Master::of_pepper(previous)),
            (Some(PreviousPepper::None), Some(_)) => match sqlite_dir {
                Some(dir) => master_file(dir, false)?,
                None => None,
            },
            _ => None,
        };
        Ok(Some(Self { current, previous }))
    }

    /// The workspace's current secret (what its admins are given).
    pub fn workspace_secret(&self, workspace: &WorkspaceId, generation: i64) -> SecretString {
        self.current.workspace_secret(workspace, generation)
    }

    /// The `Noxus-Signature` value of `body` at `t`: one `v1=` per secret
    /// valid at `now` (the current generation, the previous one during its
    /// grace period; under the current master, and the previous master
    /// during a pepper rotation).
    pub fn signature_header(
        &self,
        workspace: &WorkspaceId,
        generation: &CallbackSecretGeneration,
        now: OffsetDateTime,
        body: &[u8],
    ) -> String {
        let t = now.unix_timestamp();
        let mut generations = vec![generation.generation];
        if generation.generation > 1 && generation.previous_valid_until.is_some_and(|u| u > now) {
            generations.push(generation.generation - 1);
        }
        let mut header = format!("t={t}");
        for master in std::iter::once(&self.current).chain(self.previous.as_ref()) {
            for g in &generations {
                let secret = master.workspace_secret(workspace, *g);
                header.push_str(",v1=");
                header.push_str(&sign(secret.expose_secret(), t, body));
            }
        }
        header
    }
}

/// Reads (or, with `create`, makes) the data directory's master secret:
/// 64 hex digits, readable by this user only.
fn master_file(dir: &Path, create: bool) -> anyhow::Result<Option<Master>> {
    let path = dir.join(MASTER_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let bytes = hex::decode(text.trim())
                .ok()
                .filter(|b| b.len() == 32)
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "{} is damaged (it should hold 64 hex digits); restore it from a backup, or delete it to make a new one (every workspace's callback secret then changes)",
                        path.display()
                    )
                })?;
            Ok(Some(Master::from_bytes(bytes)))
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound && create => {
            let mut bytes = vec![0u8; 32];
            rand::rngs::OsRng.fill(&mut bytes[..]);
            write_private(&path, hex::encode(&bytes).as_bytes())
                .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", path.display()))?;
            Ok(Some(Master::from_bytes(bytes)))
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(anyhow::anyhow!("cannot read {}: {err}", path.display())),
    }
}

/// Creates a file only its owner may read (never replacing one).
fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// What the request path shares with the sender: its wake-up, its name,
/// and the signer.
#[derive(Debug)]
pub struct CallbackHub {
    wake: Notify,
    sender: String,
    signer: Option<Signer>,
    allow_loopback: bool,
    retry_base: Duration,
}

impl CallbackHub {
    /// The hub of this configuration (see [`Signer::from_config`]).
    pub fn new(config: &Config) -> anyhow::Result<Self> {
        Ok(Self {
            wake: Notify::new(),
            sender: format!("noxus-callbacks-{}", uuid::Uuid::new_v4()),
            signer: Signer::from_config(config)?,
            allow_loopback: config.allow_loopback_callbacks,
            retry_base: config.callback_retry_base,
        })
    }

    /// Deliveries may be due: look now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// The signer, if this server can sign callbacks.
    pub fn signer(&self) -> Option<&Signer> {
        self.signer.as_ref()
    }

    /// Whether loopback targets are allowed (`--allow-loopback-callbacks`).
    pub fn allow_loopback(&self) -> bool {
        self.allow_loopback
    }

    /// When to try again after `attempts` failed attempts: the base times
    /// 3^(attempts − 1) (`BACKOFF_FACTOR`), ±20 % so that the deliveries of
    /// many runs that failed together do not come back together.
    pub fn next_attempt_at(&self, attempts: i64, now: OffsetDateTime) -> OffsetDateTime {
        let exponent = u32::try_from(attempts.clamp(1, MAX_CALLBACK_ATTEMPTS) - 1).unwrap_or(0);
        let delay = self
            .retry_base
            .saturating_mul(BACKOFF_FACTOR.saturating_pow(exponent));
        let jitter = rand::thread_rng().gen_range(0.8..1.2);
        now + delay.mul_f64(jitter)
    }
}

// ---------------------------------------------------------------------------
// Targets.

/// Why an address is refused as a callback target (the kind of address, to
/// name in a sentence), or `None` for a public address. `allow_loopback`
/// lets loopback addresses through, and nothing else.
pub fn refusal(ip: IpAddr, allow_loopback: bool) -> Option<&'static str> {
    let kind = match ip {
        IpAddr::V4(v4) => refusal_v4(v4),
        IpAddr::V6(v6) => refusal_v6(v6),
    };
    match kind {
        Some("loopback") if allow_loopback => None,
        other => other,
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn refusal_v4(ip: Ipv4Addr) -> Option<&'static str> {
    const RANGES: &[([u8; 4], u32, &str)] = &[
        ([0, 0, 0, 0], 32, "unspecified"),
        ([0, 0, 0, 0], 8, "reserved (\"this network\")"),
        ([10, 0, 0, 0], 8, "private"),
        ([100, 64, 0, 0], 10, "shared (carrier-grade NAT)"),
        ([127, 0, 0, 0], 8, "loopback"),
        ([169, 254, 0, 0], 16, "link-local"),
        ([172, 16, 0, 0], 12, "private"),
        ([192, 0, 0, 0], 24, "reserved (IETF protocol assignments)"),
        ([192, 0, 2, 0], 24, "documentation"),
        ([192, 88, 99, 0], 24, "reserved (6to4 relay)"),
        ([192, 168, 0, 0], 16, "private"),
        ([198, 18, 0, 0], 15, "benchmarking"),
        ([198, 51, 100, 0], 24, "documentation"),
        ([203, 0, 113, 0], 24, "documentation"),
        ([224, 0, 0, 0], 4, "multicast"),
        ([255, 255, 255, 255], 32, "broadcast"),
        ([240, 0, 0, 0], 4, "reserved"),
    ];
    RANGES
        .iter()
        .find(|(net, prefix, _)| in_v4(ip, *net, *prefix))
        .map(|(_, _, kind)| *kind)
}

fn in_v6(ip: Ipv6Addr, net: u128, prefix: u32) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - prefix)
    };
    u128::from(ip) & mask == net & mask
}

fn refusal_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let bits = u128::from(ip);
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    // IPv6 forms that carry an IPv4 address are judged by it.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return refusal_v4(v4);
    }
    let embedded = |shift: u32| Ipv4Addr::from((bits >> shift) as u32);
    if in_v6(ip, 0x0064_ff9b_0000_0000_0000_0000_0000_0000, 96) {
        // NAT64, well-known prefix.
        return refusal_v4(embedded(0));
    }
    if in_v6(ip, 0x2002_0000_0000_0000_0000_0000_0000_0000, 16) {
        // 6to4: the IPv4 address follows the prefix.
        return refusal_v4(embedded(80));
    }
    if in_v6(ip, 0, 96) {
        return Some("reserved (IPv4-compatible)");
    }
    const RANGES: &[(u128, u32, &str)] = &[
        (
            0x0064_ff9b_0001_0000_0000_0000_0000_0000,
            48,
            "private (local NAT64)",
        ),
        (
            0x0100_0000_0000_0000_0000_0000_0000_0000,
            64,
            "reserved (discard)",
        ),
        (
            0x2001_0000_0000_0000_0000_0000_0000_0000,
            32,
            "reserved (Teredo)",
        ),
        (
            0x2001_0002_0000_0000_0000_0000_0000_0000,
            48,
            "benchmarking",
        ),
        (
            0x2001_0db8_0000_0000_0000_0000_0000_0000,
            32,
            "documentation",
        ),
        (
            0x2001_0000_0000_0000_0000_0000_0000_0000,
            23,
            "reserved (IETF protocol assignments)",
        ),
        (
            0x3fff_0000_0000_0000_0000_0000_0000_0000,
            20,
            "documentation",
        ),
        (0xfc00_0000_0000_0000_0000_0000_0000_0000, 7, "private"),
        (0xfe80_0000_0000_0000_0000_0000_0000_0000, 10, "link-local"),
        (
            0xfec0_0000_0000_0000_0000_0000_0000_0000,
            10,
            "private (site-local)",
        ),
        (0xff00_0000_0000_0000_0000_0000_0000_0000, 8, "multicast"),
    ];
    if let Some((_, _, kind)) = RANGES
        .iter()
        .find(|(net, prefix, _)| in_v6(ip, *net, *prefix))
    {
        return Some(kind);
    }
    // Only global unicast (2000::/3) is routed on the internet.
    (!in_v6(ip, 0x2000_0000_0000_0000_0000_0000_0000_0000, 3)).then_some("reserved")
}

/// "an" or "a", for the kind of an address in a sentence.
fn article(kind: &str) -> &'static str {
    if kind.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

/// The end of a sentence refusing `ip` of `kind`.
fn refused_because(ip: IpAddr, kind: &str, allow_loopback: bool) -> String {
    let hint = if kind == "loopback" && !allow_loopback {
        " (an operator may allow loopback targets with --allow-loopback-callbacks, for tests and local development)"
    } else {
        ""
    };
    format!(
        "{ip}, {} {kind} address; callbacks go only to public addresses{hint}",
        article(kind)
    )
}

/// Checks a `callback_url` when a run is created: http or https, at most
/// [`MAX_URL_CHARS`] characters, a host, no user name or password, and a
/// literal IP address only if it is public. Returns the URL as it is
/// stored (normalized, e.g. `http://2130706433/` is `http://127.0.0.1/`)
/// or why it is refused, as a sentence. Host names are resolved at each
/// attempt, not here.
pub fn check_url(raw: &str, allow_loopback: bool) -> Result<String, String> {
    check_url_of("callback_url", raw, allow_loopback)
}

/// [`check_url`] of a URL that the sentences call `field` (`url` for a
/// security webhook).
pub fn check_url_of(field: &str, raw: &str, allow_loopback: bool) -> Result<String, String> {
    if raw.chars().count() > MAX_URL_CHARS {
        return Err(format!("{field} is at most {MAX_URL_CHARS} characters"));
    }
    let url = reqwest::Url::parse(raw).map_err(|e| format!("{field} is not a valid URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "{field} must be an http or https URL, not {}:",
            url.scheme()
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "{field} must not hold a user name or password; put a token in its path or query instead"
        ));
    }
    if url.port() == Some(0) {
        return Err(format!("{field}'s port must be from 1 to 65535"));
    }
    match url.host() {
        None | Some(url::Host::Domain("")) => return Err(format!("{field} must name a host")),
        Some(url::Host::Ipv4(ip)) => literal_ip(field, IpAddr::V4(ip), allow_loopback)?,
        Some(url::Host::Ipv6(ip)) => literal_ip(field, IpAddr::V6(ip), allow_loopback)?,
        Some(url::Host::Domain(_)) => {}
    }
    let normalized = url.to_string();
    if normalized.chars().count() > MAX_URL_CHARS {
        return Err(format!(
            "{field} is at most {MAX_URL_CHARS} characters (once normalized)"
        ));
    }
    Ok(normalized)
}

fn literal_ip(field: &str, ip: IpAddr, allow_loopback: bool) -> Result<(), String> {
    match refusal(ip, allow_loopback) {
        None => Ok(()),
        Some(kind) => Err(format!(
            "{field} points to {}",
            refused_because(ip, kind, allow_loopback)
        )),
    }
}

// ---------------------------------------------------------------------------
// The sender.

/// Starts this process's sender; it ends when the state is dropped.
pub fn start(state: &AppState) {
    tokio::spawn(send_loop(state.downgrade()));
}

async fn send_loop(weak: Weak<crate::state::Inner>) {
    let slots = Arc::new(Semaphore::new(CONCURRENCY));
    loop {
        let Some(state) = AppState::upgrade(&weak) else {
            return;
        };
        let free = slots.available_permits();
        let hub = state.callbacks();
        if free > 0 && !state.is_draining() && hub.signer.is_some() {
            let now = OffsetDateTime::now_utc();
            match state
                .store()
                .claim_callbacks(&hub.sender, free as u32, PER_WORKSPACE, now, now + LEASE)
                .await
            {
                Ok(claimed) => {
                    for delivery in claimed {
                        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
                            break;
                        };
                        let state = state.clone();
                        tokio::spawn(async move {
                            deliver(&state, delivery).await;
                            drop(permit);
                        });
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "claiming due callbacks failed; trying again");
                }
            }
        }
        let poll = POLL_EVERY.min(hub.retry_base.max(Duration::from_millis(10)));
        let woken = {
            let state = state.clone();
            async move { state.callbacks().wake.notified().await }
        };
        drop(state);
        tokio::select! {
            () = woken => {}
            () = tokio::time::sleep(poll) => {}
        }
    }
}

/// Why an attempt failed.
#[derive(Debug)]
enum Failure {
    /// The target is refused: no attempt will do better.
    Refused(String),
    /// Worth trying again.
    Transient {
        error: String,
        status_code: Option<u16>,
    },
}

/// What an attempt of a delivery posts, where; or why it is not made.
enum Prepared {
    /// Post `body` to `url`.
    Send { url: String, body: Vec<u8> },
    /// Record this failure without an attempt.
    Refused(String),
    /// Nothing to record (the run went; or reading failed, and the lease
    /// will lapse so that it is tried again).
    Skip,
}

/// The body and target of an attempt: a run's current state to its
/// `callback_url`; a security event's fixed body to the workspace's
/// security webhook as it is now.
async fn prepare(state: &AppState, delivery: &CallbackDelivery) -> Prepared {
    let store = state.store();
    match delivery.kind {
        CallbackKind::Run => {
            // The run's current state is what is sent; a deleted run took
            // its delivery with it.
            let Some(run_id) = delivery.run_id.as_ref() else {
                return Prepared::Skip;
            };
            let run = match store.run(&delivery.workspace_id, run_id).await {
                Ok(Some(run)) => run,
                Ok(None) => return Prepared::Skip,
                Err(err) => {
                    tracing::warn!(delivery = %delivery.id, error = %err, "reading a callback's run failed; its lease will lapse and it is tried again");
                    return Prepared::Skip;
                }
            };
            match serde_json::to_vec(&crate::http::runs::callback_payload(&run)) {
                Ok(body) => Prepared::Send {
                    url: delivery.url.clone(),
                    body,
                },
                Err(err) => {
                    tracing::error!(delivery = %delivery.id, error = %err, "a run could not be written as JSON");
                    Prepared::Skip
                }
            }
        }
        CallbackKind::Security => {
            let Some(payload) = delivery.payload.as_ref() else {
                return Prepared::Skip;
            };
            match store.security_webhook(&delivery.workspace_id).await {
                Ok(Some(hook)) => Prepared::Send {
                    url: hook.url,
                    body: payload.clone().into_bytes(),
                },
                Ok(None) => Prepared::Refused(
                    "The workspace's security webhook was removed before this event was delivered."
                        .to_owned(),
                ),
                Err(err) => {
                    tracing::warn!(delivery = %delivery.id, error = %err, "reading a workspace's security webhook failed; the lease will lapse and it is tried again");
                    Prepared::Skip
                }
            }
        }
    }
}

/// Makes one attempt of a claimed delivery and records it.
async fn deliver(state: &AppState, delivery: CallbackDelivery) {
    let hub = state.callbacks();
    let store = state.store();
    let outcome = match prepare(state, &delivery).await {
        Prepared::Skip => return,
        Prepared::Refused(why) => Err(Failure::Refused(why)),
        Prepared::Send { url, body } => attempt(state, &delivery, &url, &body).await,
    };
    let now = OffsetDateTime::now_utc();
    let recorded = match outcome {
        Ok(status_code) => CallbackAttempt::Delivered { status_code },
        Err(Failure::Refused(error)) => CallbackAttempt::Failed {
            error,
            status_code: None,
        },
        Err(Failure::Transient { error, status_code }) => {
            if delivery.attempts >= MAX_CALLBACK_ATTEMPTS {
                CallbackAttempt::Failed {
                    error: format!(
                        "{error} No attempt is left (all {MAX_CALLBACK_ATTEMPTS} were made)."
                    ),
                    status_code,
                }
            } else {
                CallbackAttempt::Retry {
                    error,
                    status_code,
                    next_attempt_at: hub.next_attempt_at(delivery.attempts, now),
                }
            }
        }
    };
    match &recorded {
        CallbackAttempt::Delivered { status_code } => {
            tracing::debug!(delivery = %delivery.id, event = %delivery.event, attempt = delivery.attempts, status_code, "callback delivered");
        }
        CallbackAttempt::Retry { error, .. } | CallbackAttempt::Failed { error, .. } => {
            tracing::info!(delivery = %delivery.id, event = %delivery.event, attempt = delivery.attempts, error = %error, "callback attempt failed");
        }
    }
    match store
        .record_callback_attempt(&delivery.id, &hub.sender, &recorded, now)
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            tracing::debug!(delivery = %delivery.id, "callback gone or taken over before its attempt was recorded");
        }
        Err(err) => {
            tracing::warn!(delivery = %delivery.id, error = %err, "recording a callback attempt failed; its lease will lapse and it is tried again");
        }
    }
}

/// One POST of `body` to `target`; the receiver's 2xx status, or why not.
async fn attempt(
    state: &AppState,
    delivery: &CallbackDelivery,
    target: &str,
    body: &[u8],
) -> Result<u16, Failure> {
    let hub = state.callbacks();
    let Some(signer) = hub.signer.as_ref() else {
        return Err(Failure::Refused(NO_SIGNING_SECRET.to_owned() + "."));
    };
    let field = match delivery.kind {
        CallbackKind::Run => "callback_url",
        CallbackKind::Security => "the security webhook's url",
    };
    let url = check_url_of(field, target, hub.allow_loopback)
        .and_then(|u| reqwest::Url::parse(&u).map_err(|e| e.to_string()))
        .map_err(|why| Failure::Refused(crate::domain::sentence(&why)))?;
    let mut client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(ATTEMPT_TIMEOUT)
        .user_agent(concat!("noxus-callbacks/", env!("CARGO_PKG_VERSION")));
    let host = url.host_str().unwrap_or_default().to_owned();
    if let Some(url::Host::Domain(domain)) = url.host() {
        let addresses = resolve(
            domain,
            url.port_or_known_default().unwrap_or(443),
            hub.allow_loopback,
        )
        .await?;
        // Connect only to the addresses just checked.
        client = client.resolve_to_addrs(domain, &addresses);
    }
    let client = client.build().map_err(|e| Failure::Transient {
        error: format!("The HTTP client could not be set up: {}.", e.without_url()),
        status_code: None,
    })?;
    let generation = state
        .store()
        .callback_secret_generation(&delivery.workspace_id)
        .await
        .map_err(|e| Failure::Transient {
            error: format!("The signing secret could not be read: {e}."),
            status_code: None,
        })?;
    let now = OffsetDateTime::now_utc();
    let signature = signer.signature_header(&delivery.workspace_id, &generation, now, body);
    let response = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(SIGNATURE_HEADER, signature)
        .header("Noxus-Delivery", delivery.id.as_str())
        .header("Noxus-Event", &delivery.event)
        .header("Noxus-Attempt", delivery.attempts.to_string())
        .body(body.to_vec())
        .send()
        .await
        .map_err(|e| Failure::Transient {
            error: send_error(&host, &e),
            status_code: None,
        })?;
    // Only the status matters; the body is never read (dropping the
    // response closes the connection).
    let status = response.status();
    if status.is_success() {
        return Ok(status.as_u16());
    }
    let redirect = if status.is_redirection() {
        " (redirects are not followed)"
    } else {
        ""
    };
    let reason = status
        .canonical_reason()
        .map(|r| format!(" {r}"))
        .unwrap_or_default();
    Err(Failure::Transient {
        error: format!(
            "The receiver answered {}{reason}{redirect}.",
            status.as_u16()
        ),
        status_code: Some(status.as_u16()),
    })
}

/// The host's addresses, each checked; refused if any is not public.
async fn resolve(
    domain: &str,
    port: u16,
    allow_loopback: bool,
) -> Result<Vec<SocketAddr>, Failure> {
    let found = tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((domain, port)))
        .await
        .map_err(|_| Failure::Transient {
            error: format!(
                "The host {domain} could not be resolved within {} s.",
                RESOLVE_TIMEOUT.as_secs()
            ),
            status_code: None,
        })?
        .map_err(|e| Failure::Transient {
            error: format!("The host {domain} could not be resolved ({e})."),
            status_code: None,
        })?;
    let mut addresses = Vec::new();
    for address in found {
        let ip = address.ip().to_canonical();
        if let Some(kind) = refusal(ip, allow_loopback) {
            return Err(Failure::Refused(format!(
                "The host {domain} resolves to {}, so the callback was not sent.",
                refused_because(ip, kind, allow_loopback)
            )));
        }
        addresses.push(SocketAddr::new(ip, port));
    }
    if addresses.is_empty() {
        return Err(Failure::Transient {
            error: format!("The host {domain} has no address."),
            status_code: None,
        });
    }
    Ok(addresses)
}

/// A sentence for a request that got no answer (never the URL: it may hold
/// a token).
fn send_error(host: &str, err: &reqwest::Error) -> String {
    if err.is_timeout() {
        return format!(
            "The receiver at {host} did not answer within {} s.",
            ATTEMPT_TIMEOUT.as_secs()
        );
    }
    let mut cause = String::new();
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(err);
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    if err.is_connect() {
        format!("Could not connect to {host}: {cause}.")
    } else if cause.is_empty() {
        format!("Sending to {host} failed.")
    } else {
        format!("Sending to {host} failed: {cause}.")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn kind(ip: &str) -> Option<&'static str> {
        refusal(ip.parse().unwrap(), false)
    }

    #[test]
    fn public_addresses_pass_and_the_others_are_named() {
        for public in [
            "93.184.215.14",
            "8.8.8.8",
            "1.1.1.1",
            "2606:4700:4700::1111",
            "2a00:1450:4001:82a::200e",
            "64:ff9b::808:808",
            "2002:0808:0808::1",
            "::ffff:8.8.8.8",
        ] {
            assert_eq!(kind(public), None, "{public}");
        }
        for (ip, expected) in [
            ("127.0.0.1", "loopback"),
            ("127.255.0.9", "loopback"),
            ("::1", "loopback"),
            ("::ffff:127.0.0.1", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("fd00::1", "private"),
            ("::ffff:10.0.0.1", "private"),
            ("64:ff9b::a00:1", "private"),
            ("2002:0a00:0001::1", "private"),
            ("169.254.169.254", "link-local"),
            ("fe80::1", "link-local"),
            ("100.64.0.1", "shared (carrier-grade NAT)"),
            ("0.0.0.0", "unspecified"),
            ("::", "unspecified"),
            ("224.0.0.1", "multicast"),
            ("ff02::1", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("192.0.2.1", "documentation"),
            ("198.51.100.1", "documentation"),
            ("203.0.113.1", "documentation"),
            ("2001:db8::1", "documentation"),
            ("198.18.0.1", "benchmarking"),
            ("240.0.0.1", "reserved"),
            ("::7f00:1", "reserved (IPv4-compatible)"),
            ("2001::1", "reserved (Teredo)"),
        ] {
            assert_eq!(kind(ip), Some(expected), "{ip}");
        }
        assert_eq!(kind("172.32.0.1"), None);
        assert_eq!(kind("100.128.0.1"), None);
    }

    #[test]
    fn the_loopback_flag_allows_loopback_only() {
        let allowed = |ip: &str| refusal(ip.parse().unwrap(), true);
        assert_eq!(allowed("127.0.0.1"), None);
        assert_eq!(allowed("::1"), None);
        assert_eq!(allowed("::ffff:127.0.0.1"), None);
        assert_eq!(allowed("10.0.0.1"), Some("private"));
        assert_eq!(allowed("169.254.169.254"), Some("link-local"));
        assert_eq!(allowed("0.0.0.0"), Some("unspecified"));
    }

    #[test]
    fn urls_are_checked_and_normalized() {
        assert_eq!(
            check_url("https://hooks.example.com/a?b=c", false).unwrap(),
            "https://hooks.example.com/a?b=c"
        );
        assert!(check_url("https://localhost:9/x", false).is_ok());
        for (raw, says) in [
            ("ftp://example.com/", "http or https"),
            ("file:///etc/passwd", "http or https"),
            ("https://user:pw@example.com/", "user name or password"),
            ("https://user@example.com/", "user name or password"),
            ("not a url", "not a valid URL"),
            ("http://127.0.0.1:8080/", "127.0.0.1, a loopback address"),
            ("http://2130706433/", "127.0.0.1, a loopback address"),
            ("http://[::1]/", "::1, a loopback address"),
            (
                "http://169.254.169.254/latest/meta-data",
                "a link-local address",
            ),
            ("http://10.0.0.1/", "a private address"),
            ("http://[::ffff:192.168.0.1]/", "a private address"),
            ("http://0.0.0.0/", "an unspecified address"),
            ("http://example.com:0/", "port"),
        ] {
            let refused = check_url(raw, false).unwrap_err();
            assert!(refused.contains(says), "{raw}: {refused}");
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_CHARS));
        assert!(check_url(&long, false).unwrap_err().contains("at most"));
        assert!(check_url("http://127.0.0.1:8080/", true).is_ok());
        assert!(check_url("http://10.0.0.1/", true).is_err());
    }

    /// Whether the standard library (an oracle independent of
    /// [`refusal`]) calls `ip` something that must never be a target.
    fn std_says_internal(ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(v4) => {
                v4.is_private()
                    || v4.is_loopback()
                    || v4.is_link_local()
                    || v4.is_unspecified()
                    || v4.is_multicast()
                    || v4.is_broadcast()
                    || v4.is_documentation()
            }
            IpAddr::V6(v6) => {
                let first = v6.segments()[0];
                v6.is_loopback()
                    || v6.is_unspecified()
                    || v6.is_multicast()
                    || first & 0xfe00 == 0xfc00
                    || first & 0xffc0 == 0xfe80
                    || v6
                        .to_ipv4_mapped()
                        .is_some_and(|v4| std_says_internal(v4.into()))
            }
        }
    }

    /// An address of a range that must be refused, with random host bits.
    fn internal_v4() -> impl Strategy<Value = Ipv4Addr> {
        let ranges: Vec<([u8; 4], u32)> = vec![
            ([10, 0, 0, 0], 8),
            ([172, 16, 0, 0], 12),
            ([192, 168, 0, 0], 16),
            ([127, 0, 0, 0], 8),
            ([169, 254, 0, 0], 16),
            ([0, 0, 0, 0], 8),
            ([224, 0, 0, 0], 4),
            ([255, 255, 255, 255], 32),
            ([192, 0, 2, 0], 24),
            ([198, 51, 100, 0], 24),
            ([203, 0, 113, 0], 24),
        ];
        (proptest::sample::select(ranges), any::<u32>()).prop_map(|((net, prefix), bits)| {
            let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
            Ipv4Addr::from((u32::from(Ipv4Addr::from(net)) & mask) | (bits & !mask))
        })
    }

    /// The ways a URL can spell an IPv4 address (the URL parser reads them
    /// all as the same address).
    fn spelled(ip: Ipv4Addr, how: u8) -> String {
        let n = u32::from(ip);
        let [a, b, c, d] = ip.octets();
        match how % 6 {
            0 => ip.to_string(),
            1 => n.to_string(),
            2 => format!("0x{n:x}"),
            3 => format!("0{a:o}.{b}.{c}.{d}"),
            4 => format!("[{}]", ip.to_ipv6_mapped()),
            _ => format!(
                "{a}.{}",
                (u32::from(b) << 16) | (u32::from(c) << 8) | u32::from(d)
            ),
        }
    }

    proptest::proptest! {
        // A fixed number of cases from a fixed seed, unless the environment
        // asks for others (as the API's properties, docs/testing.md).
        #![proptest_config({
            let mut config = ProptestConfig {
                failure_persistence: None,
                ..ProptestConfig::default()
            };
            if std::env::var_os("PROPTEST_CASES").is_none() {
                config.cases = 2048;
            }
            if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
                config.rng_seed = proptest::test_runner::RngSeed::Fixed(0x6361_6c6c);
            }
            config
        })]

        /// Whatever a client sends, the check answers (never panics); what
        /// it accepts it accepts again as is, and a literal address it
        /// accepts is public.
        #[test]
        fn the_url_check_never_lets_an_internal_literal_through(
            raw in proptest::prop_oneof![
                ".{0,80}",
                (
                    proptest::sample::select(vec!["http", "https", "HTTP", "ftp", "file", "gopher"]),
                    proptest::prop_oneof![
                        proptest::arbitrary::any::<std::net::Ipv4Addr>().prop_map(|ip| ip.to_string()),
                        proptest::arbitrary::any::<std::net::Ipv6Addr>().prop_map(|ip| format!("[{ip}]")),
                        proptest::arbitrary::any::<u32>().prop_map(|n| n.to_string()),
                        proptest::arbitrary::any::<u32>().prop_map(|n| format!("0x{n:x}")),
                        (0u8..=255, 0u8..=255).prop_map(|(a, b)| format!("0{a:o}.{b}")),
                        (internal_v4(), any::<u8>()).prop_map(|(ip, how)| spelled(ip, how)),
                        (internal_v4(), any::<u8>()).prop_map(|(ip, how)| spelled(ip, how)),
                        (proptest::sample::select(vec![0xfc00u16, 0xfd12, 0xfe80, 0xfebf, 0xff02]), any::<u128>())
                            .prop_map(|(top, rest)| format!(
                                "[{}]",
                                Ipv6Addr::from((u128::from(top) << 112) | (rest >> 16))
                            )),
                        "[a-z0-9.-]{1,20}",
                        r"[a-zA-Z0-9:%@.\\\[\]-]{0,30}",
                    ],
                    "(:[0-9]{0,6})?",
                    "[/?#a-z0-9@:%.=&-]{0,20}",
                )
                    .prop_map(|(scheme, host, port, rest)| format!("{scheme}://{host}{port}{rest}")),
            ],
        ) {
            if let Ok(stored) = check_url(&raw, false) {
                prop_assert_eq!(check_url(&stored, false), Ok(stored.clone()));
                let url = reqwest::Url::parse(&stored).unwrap();
                prop_assert!(matches!(url.scheme(), "http" | "https"));
                let literal = match url.host() {
                    Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
                    Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
                    _ => None,
                };
                if let Some(ip) = literal {
                    prop_assert!(!std_says_internal(ip), "{raw} accepted as {stored}");
                }
            }
        }
    }

    #[test]
    fn a_signature_is_the_hmac_of_the_timestamp_and_the_body() {
        // Computed independently: printf '1700000000.{"a":1}' |
        // openssl dgst -sha256 -hmac 'whsec_test'
        assert_eq!(
            sign("whsec_test", 1_700_000_000, br#"{"a":1}"#),
            "38877139021993b830af32feea6e18a8da83eb2f6e49ee50bd9e4cf4ca4d3789"
        );
        assert_eq!(sign("whsec_test", 1_700_000_000, b"").len(), 64);
    }

    fn signer() -> Signer {
        Signer {
            current: Master::from_bytes(vec![7; 32]),
            previous: None,
        }
    }

    #[test]
    fn workspaces_and_generations_have_different_secrets() {
        let s = signer();
        let a = WorkspaceId::from("a");
        let b = WorkspaceId::from("b");
        let one = s.workspace_secret(&a, 1);
        assert!(one.expose_secret().starts_with("whsec_"));
        assert_eq!(one.expose_secret().len(), 6 + 64);
        assert_eq!(
            one.expose_secret(),
            s.workspace_secret(&a, 1).expose_secret()
        );
        assert_ne!(
            one.expose_secret(),
            s.workspace_secret(&a, 2).expose_secret()
        );
        assert_ne!(
            one.expose_secret(),
            s.workspace_secret(&b, 1).expose_secret()
        );
        assert!(!format!("{s:?}").contains("7, 7"));
    }

    #[test]
    fn a_grace_period_signs_with_both_generations() {
        let s = signer();
        let ws = WorkspaceId::from("w");
        let now = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let plain = s.signature_header(&ws, &CallbackSecretGeneration::default(), now, b"x");
        let current = s.workspace_secret(&ws, 1);
        assert_eq!(
            plain,
            format!(
                "t=1700000000,v1={}",
                sign(current.expose_secret(), 1_700_000_000, b"x")
            )
        );
        let rotated = CallbackSecretGeneration {
            generation: 2,
            previous_valid_until: Some(now + Duration::from_secs(60)),
        };
        let header = s.signature_header(&ws, &rotated, now, b"x");
        assert_eq!(header.matches("v1=").count(), 2);
        assert!(header.contains(&sign(current.expose_secret(), 1_700_000_000, b"x")));
        let expired = CallbackSecretGeneration {
            previous_valid_until: Some(now - Duration::from_secs(1)),
            ..rotated
        };
        assert_eq!(
            s.signature_header(&ws, &expired, now, b"x")
                .matches("v1=")
                .count(),
            1
        );
    }

    #[test]
    fn the_backoff_grows_by_three_with_jitter() {
        let mut config = Config::new("/nonexistent");
        config.pepper = Some(SecretString::from("p".repeat(40)));
        let hub = CallbackHub::new(&config).unwrap();
        let now = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let mut total = Duration::ZERO;
        for attempts in 1..MAX_CALLBACK_ATTEMPTS {
            let wait: Duration = (hub.next_attempt_at(attempts, now) - now)
                .try_into()
                .unwrap();
            let nominal = 60.0 * 3f64.powi(attempts as i32 - 1);
            assert!(
                wait.as_secs_f64() >= nominal * 0.8 && wait.as_secs_f64() <= nominal * 1.2,
                "attempt {attempts}: {wait:?}"
            );
            total += wait;
        }
        // Eight attempts span about 18 hours.
        assert!(total > Duration::from_secs(14 * 3600) && total < Duration::from_secs(22 * 3600));
    }
}
