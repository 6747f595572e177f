//! Upstreams: named groups of origin addresses, the choice of an address
//! for each request, and the health of each address.
//!
//! - [`Upstreams`] is shared by every worker of a configuration: per
//!   address, its requests in flight, its counters and its health. A reload
//!   keeps a group whose definition did not change, health and counters
//!   included.
//! - [`UpstreamClient`] is one worker's side of a group: a connection pool
//!   per address ([`crate::origin`]).
//!
//! An address is out of rotation while it is *backing off*
//! (`max_fails` consecutive failures: connect errors, response-head
//! timeouts, broken responses; for `fail_timeout`) or while its active
//! health check fails. When every address is out, the one due back first
//! is tried anyway: refusing outright would only turn a short outage into
//! a longer one.
//!
//! A request whose connection could not be opened has not reached the
//! origin; an idempotent one (RFC 9110 §9.2.2) is then sent to another
//! address, each address tried at most once. Nothing is retried once a
//! connection was made, and non-idempotent requests never are.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;

use crate::config::{Balance, Config, UpstreamSettings};
use crate::error::ProxyError;
use crate::origin::{Address, AddressState, ClientShare, Origin, OriginBody, ResponseBody};
use crate::request_body::Upload;

// A checked configuration has at most `config::MAX_SERVERS` addresses per
// upstream, so a request tracks those it tried in one word.
const _: () = assert!(crate::config::MAX_SERVERS <= 64);

/// Every upstream of one configuration.
pub struct Upstreams {
    groups: Vec<Arc<Group>>,
}

/// One upstream.
pub struct Group {
    pub name: String,
    settings: UpstreamSettings,
    members: Vec<Arc<Member>>,
    /// Where the next round starts.
    next: AtomicUsize,
    /// Requests sent to another address after a connect failure.
    retries: AtomicU64,
}

/// One address of an upstream.
pub struct Member {
    pub state: Arc<AddressState>,
    /// The address as metrics and logs name it.
    label: Arc<str>,
    /// Consecutive failures.
    fails: AtomicU32,
    /// While backing off: until when, in [`now_ms`] time; 0 when not.
    out_until: AtomicU64,
    /// The last active check passed (true until one fails).
    check_ok: AtomicBool,
    /// An active check task runs for this address.
    checking: AtomicBool,
    connect_failures: AtomicU64,
    timeouts: AtomicU64,
    protocol_errors: AtomicU64,
    /// Times taken out of rotation by failures.
    ejections: AtomicU64,
}

impl Upstreams {
    /// The upstreams of `config`; groups that `previous` has with the
    /// same name and settings are carried over whole.
    pub fn new(config: &Config, previous: Option<&Upstreams>) -> Upstreams {
        let groups = config
            .upstreams
            .iter()
            .map(|upstream| {
                let kept = previous.and_then(|previous| {
                    previous
                        .groups
                        .iter()
                        .find(|g| g.name == upstream.name && g.settings == upstream.settings)
                });
                match kept {
                    Some(group) => group.clone(),
                    None => Arc::new(Group::new(&upstream.name, &upstream.settings)),
                }
            })
            .collect();
        Upstreams { groups }
    }

    /// The groups, in [`Config::upstreams`] order.
    pub fn groups(&self) -> &[Arc<Group>] {
        &self.groups
    }

    /// Start the active health checks not yet running, on the current
    /// runtime. Each stops once its address is no longer configured.
    pub fn start_checks(&self) {
        for group in &self.groups {
            let Some(path) = &group.settings.health_check_path else {
                continue;
            };
            for member in &group.members {
                if member.checking.swap(true, Ordering::AcqRel) {
                    continue;
                }
                let check = Check {
                    member: Arc::downgrade(member),
                    proxy_protocol: group.settings.proxy_protocol,
                    group: group.name.clone(),
                    path: path.clone(),
                    interval: group.settings.health_check_interval,
                    timeout: group.settings.health_check_timeout,
                    status: group.settings.health_check_status,
                };
                tokio::spawn(check.run());
            }
        }
    }

    /// Whether every upstream has an address that accepts a connection
    /// within `limit`; otherwise why not, in one line.
    pub async fn ready(&self, limit: Duration) -> Result<(), String> {
        for group in &self.groups {
            let mut why = String::new();
            let mut reached = false;
            for member in &group.members {
                let address = &member.state.address;
                match tokio::time::timeout(limit, address.connect()).await {
                    Ok(Ok(_socket)) => {
                        reached = true;
                        break;
                    }
                    Ok(Err(error)) => why = format!("{address} unreachable: {error}"),
                    Err(_) => {
                        why = format!("{address} did not accept a connection within {limit:?}")
                    }
                }
            }
            if !reached {
                return Err(if group.name == crate::config::ORIGIN_UPSTREAM {
                    format!("origin {why}")
                } else {
                    format!("upstream {}: {why}", group.name)
                });
            }
        }
        Ok(())
    }

    /// The Prometheus exposition of every address's counters.
    pub fn render(&self, out: &mut String) {
        type Value = fn(&Member) -> u64;
        let families: [(&str, &str, &str, Value); 3] = [
            (
                "linkpush_upstream_requests_total",
                "counter",
                "Requests sent to each upstream address.",
                |m| m.state.requests(),
            ),
            (
                "linkpush_upstream_in_flight",
                "gauge",
                "Requests in flight at each upstream address.",
                |m| m.state.in_flight() as u64,
            ),
            (
                "linkpush_upstream_up",
                "gauge",
                "1 while an upstream address is in rotation: not backing off after failures, and passing its health check.",
                |m| u64::from(m.available(now_ms())),
            ),
        ];
        for (name, kind, help, value) in families {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (group, member) in self.members() {
                let _ = writeln!(out, "{name}{{{}}} {}", labels(group, member), value(member));
            }
        }
        let name = "linkpush_upstream_failures_total";
        let _ = writeln!(
            out,
            "# HELP {name} Failed requests per upstream address: connect errors, response-head timeouts, broken responses.\n# TYPE {name} counter"
        );
        for (group, member) in self.members() {
            let labels = labels(group, member);
            for (kind, counter) in [
                ("connect", &member.connect_failures),
                ("timeout", &member.timeouts),
                ("protocol", &member.protocol_errors),
            ] {
                let count = counter.load(Ordering::Relaxed);
                let _ = writeln!(out, "{name}{{{labels},kind=\"{kind}\"}} {count}");
            }
        }
        let name = "linkpush_upstream_ejections_total";
        let _ = writeln!(
            out,
            "# HELP {name} Times an upstream address was taken out of rotation after max_fails failures.\n# TYPE {name} counter"
        );
        for (group, member) in self.members() {
            let count = member.ejections.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}{{{}}} {count}", labels(group, member));
        }
        let name = "linkpush_upstream_retries_total";
        let _ = writeln!(
            out,
            "# HELP {name} Idempotent requests sent to another address after a connect failure.\n# TYPE {name} counter"
        );
        for group in &self.groups {
            let count = group.retries.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}{{upstream=\"{}\"}} {count}",
                escape(&group.name)
            );
        }
    }

    fn members(&self) -> impl Iterator<Item = (&Group, &Member)> {
        self.groups
            .iter()
            .flat_map(|g| g.members.iter().map(move |m| (&**g, &**m)))
    }
}

fn labels(group: &Group, member: &Member) -> String {
    format!(
        "upstream=\"{}\",address=\"{}\"",
        escape(&group.name),
        escape(&member.label)
    )
}

/// A Prometheus label value: backslash, quote and newline escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Group {
    fn new(name: &str, settings: &UpstreamSettings) -> Group {
        let members = settings
            .servers
            .iter()
            .map(|server| {
                let address = Address::new(server);
                Arc::new(Member {
                    label: Arc::from(address.to_string()),
                    state: Arc::new(AddressState::new(address)),
                    fails: AtomicU32::new(0),
                    out_until: AtomicU64::new(0),
                    check_ok: AtomicBool::new(true),
                    checking: AtomicBool::new(false),
                    connect_failures: AtomicU64::new(0),
                    timeouts: AtomicU64::new(0),
                    protocol_errors: AtomicU64::new(0),
                    ejections: AtomicU64::new(0),
                })
            })
            .collect();
        Group {
            name: name.to_owned(),
            settings: settings.clone(),
            members,
            next: AtomicUsize::new(0),
            retries: AtomicU64::new(0),
        }
    }

    /// The address for the next request, among those not in `tried` (a
    /// bit per address): the next in rotation by the balancing method, or,
    /// when none is in rotation, the one due back first.
    fn pick(&self, tried: u64) -> Option<usize> {
        let n = self.members.len();
        let untried = |i: usize| tried & (1 << i) == 0;
        if n == 1 {
            return untried(0).then_some(0);
        }
        let now = now_ms();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let order = (0..n).map(|k| (start + k) % n).filter(|&i| untried(i));
        let mut in_rotation = order.filter(|&i| self.members[i].available(now));
        let picked = match self.settings.balance {
            Balance::RoundRobin => in_rotation.next(),
            Balance::LeastOutstanding => {
                in_rotation.min_by_key(|&i| self.members[i].state.in_flight())
            }
        };
        picked.or_else(|| {
            (0..n)
                .filter(|&i| untried(i))
                .min_by_key(|&i| self.members[i].back_at())
        })
    }
}

impl Member {
    /// In rotation at `now`.
    fn available(&self, now: u64) -> bool {
        self.check_ok.load(Ordering::Relaxed) && self.out_until.load(Ordering::Relaxed) <= now
    }

    /// When it is back in rotation, for picking among those out: a
    /// failing health check counts as far away.
    fn back_at(&self) -> u64 {
        let until = self.out_until.load(Ordering::Relaxed);
        if self.check_ok.load(Ordering::Relaxed) {
            until
        } else {
            until.saturating_add(u64::MAX / 2)
        }
    }

    fn succeeded(&self) {
        if self.fails.load(Ordering::Relaxed) != 0 {
            self.fails.store(0, Ordering::Relaxed);
        }
        if self.out_until.load(Ordering::Relaxed) != 0 {
            // It answered while out (every address was): back in.
            self.out_until.store(0, Ordering::Relaxed);
        }
    }

    /// Count a failure of `error`'s kind; `false` when the error is not
    /// the address's fault (the pool was busy).
    fn failed(&self, error: &ProxyError, group: &Group) -> bool {
        let counter = match error {
            ProxyError::OriginConnect(_) => &self.connect_failures,
            ProxyError::OriginTimeout(_) => &self.timeouts,
            ProxyError::OriginProtocol(_) => &self.protocol_errors,
            _ => return false,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let max = group.settings.max_fails;
        let fails = self.fails.fetch_add(1, Ordering::Relaxed) + 1;
        if max > 0 && fails >= max {
            self.fails.store(0, Ordering::Relaxed);
            let backoff = group.settings.fail_timeout;
            let until = now_ms().saturating_add(backoff.as_millis() as u64);
            self.out_until.store(until, Ordering::Relaxed);
            self.ejections.fetch_add(1, Ordering::Relaxed);
            let what = if group.members.len() > 1 {
                "taken out of rotation"
            } else {
                "failing (the upstream's only address, so it stays in use)"
            };
            tracing::warn!(
                upstream = %group.name,
                address = %self.label,
                failures = fails,
                "upstream address {what} for {backoff:?}: {}",
                error.chain()
            );
        }
        true
    }
}

/// Milliseconds since the process first asked, never 0.
fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// One worker's side of an upstream: a pool per address.
pub struct UpstreamClient {
    group: Arc<Group>,
    pools: Vec<Origin>,
}

impl UpstreamClient {
    /// Pools for every address of `group`, on the current runtime.
    pub fn new(group: &Arc<Group>, config: &Config, workers: usize) -> UpstreamClient {
        let pools = group
            .members
            .iter()
            .map(|member| {
                let proxy_protocol = group.settings.proxy_protocol;
                Origin::new(config, workers, member.state.clone(), proxy_protocol)
            })
            .collect();
        UpstreamClient {
            group: group.clone(),
            pools,
        }
    }

    /// Connections open (idle or busy) in this worker's pools.
    pub fn open_connections(&self) -> usize {
        self.pools.iter().map(Origin::open_connections).sum()
    }

    /// Send `request` to an address of this upstream and wait for the
    /// response head; see [`Origin::send`]. Also the address it was last
    /// sent to, for the access log.
    pub async fn send(
        &self,
        mut request: Request<OriginBody>,
        share: &ClientShare,
        upload: Option<Arc<Upload>>,
    ) -> (Result<Response<ResponseBody>, ProxyError>, Option<Arc<str>>) {
        let group = &*self.group;
        let idempotent = request.method().is_idempotent();
        let mut tried = 0u64;
        loop {
            let Some(index) = group.pick(tried) else {
                let error = ProxyError::Unavailable("no upstream address left to try");
                return (Err(error), None);
            };
            tried |= 1 << index;
            let member = &group.members[index];
            let sent = self.pools[index].send(request, share, upload.clone()).await;
            let failure = match sent {
                Ok(response) => {
                    member.succeeded();
                    return (Ok(response), Some(member.label.clone()));
                }
                Err(failure) => failure,
            };
            member.failed(&failure.error, group);
            match failure.unsent {
                // Another address is left to try (asked without moving
                // the rotation on).
                Some(unsent)
                    if idempotent && (tried.count_ones() as usize) < group.members.len() =>
                {
                    group.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(
                        upstream = %group.name,
                        address = %member.label,
                        "connect failed, sending the request to another address: {}",
                        failure.error.chain()
                    );
                    request = unsent;
                }
                _ => return (Err(failure.error), Some(member.label.clone())),
            }
        }
    }
}

/// The active health check of one address.
struct Check {
    member: Weak<Member>,
    /// The address expects a PROXY v2 header: a check sends `LOCAL`.
    proxy_protocol: bool,
    group: String,
    path: String,
    interval: Duration,
    timeout: Duration,
    status: u16,
}

impl Check {
    async fn run(self) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(member) = self.member.upgrade() else {
                return;
            };
            let outcome = tokio::time::timeout(self.timeout, self.probe(&member.state.address))
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {:?}", self.timeout)));
            let ok = outcome.is_ok();
            let was = member.check_ok.swap(ok, Ordering::Relaxed);
            match outcome {
                Err(why) if was => tracing::warn!(
                    upstream = %self.group,
                    address = %member.label,
                    "upstream address failed its health check, out of rotation: {why}"
                ),
                Ok(()) if !was => tracing::info!(
                    upstream = %self.group,
                    address = %member.label,
                    "upstream address passed its health check, back in rotation"
                ),
                _ => {}
            }
        }
    }

    /// `GET path` on a connection of its own; `Ok` for the expected status.
    async fn probe(&self, address: &Address) -> Result<(), String> {
        let mut socket = address.connect().await.map_err(|e| e.to_string())?;
        if self.proxy_protocol {
            let header = crate::proxy_protocol::v2_local();
            tokio::io::AsyncWriteExt::write_all(&mut socket, &header)
                .await
                .map_err(|e| e.to_string())?;
        }
        let (mut send, connection) = hyper::client::conn::http1::handshake(TokioIo::new(socket))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let host = match address {
            Address::Unix(_) => "localhost".to_owned(),
            other => other.to_string(),
        };
        let request = Request::get(self.path.as_str())
            .header(http::header::HOST, host)
            .header(http::header::USER_AGENT, "linkpush-health-check")
            .header(http::header::CONNECTION, "close")
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let response = send
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        match response.status().as_u16() {
            status if status == self.status => Ok(()),
            status => Err(format!("status {status}, expected {}", self.status)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OriginAddr;

    fn group(balance: Balance, servers: usize) -> Group {
        let settings = UpstreamSettings {
            servers: (0..servers)
                .map(|i| OriginAddr::Tcp {
                    host: "127.0.0.1".into(),
                    port: 8000 + i as u16,
                })
                .collect(),
            balance,
            max_fails: 2,
            ..UpstreamSettings::default()
        };
        Group::new("app", &settings)
    }

    #[test]
    fn round_robin_takes_each_address_in_turn_and_skips_those_tried() {
        let group = group(Balance::RoundRobin, 3);
        let picks: Vec<usize> = (0..6).filter_map(|_| group.pick(0)).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        for _ in 0..5 {
            let picked = group.pick(0b001).expect("two untried");
            assert_ne!(picked, 0);
        }
        assert_eq!(group.pick(0b111), None);
    }

    #[test]
    fn least_outstanding_takes_the_address_with_fewest_in_flight() {
        let group = group(Balance::LeastOutstanding, 3);
        group.members[0].state.in_flight.store(4, Ordering::Relaxed);
        group.members[1].state.in_flight.store(1, Ordering::Relaxed);
        group.members[2].state.in_flight.store(2, Ordering::Relaxed);
        for _ in 0..4 {
            assert_eq!(group.pick(0), Some(1));
        }
        assert_eq!(group.pick(0b010), Some(2));
    }

    #[test]
    fn failures_take_an_address_out_and_a_success_brings_it_back() {
        let group = group(Balance::RoundRobin, 2);
        let refused = || ProxyError::OriginConnect("refused".into());
        let busy = ProxyError::Unavailable("busy");
        assert!(
            !group.members[0].failed(&busy, &group),
            "a busy pool is no failure"
        );
        group.members[0].failed(&refused(), &group);
        assert!(
            group.members[0].available(now_ms()),
            "one failure of two allowed"
        );
        group.members[0].failed(&refused(), &group);
        assert!(!group.members[0].available(now_ms()));
        for _ in 0..4 {
            assert_eq!(group.pick(0), Some(1), "the failing address is skipped");
        }
        // Every address out: the one due back first is still tried.
        group.members[1].check_ok.store(false, Ordering::Relaxed);
        assert_eq!(group.pick(0), Some(0));
        group.members[0].succeeded();
        assert!(group.members[0].available(now_ms()));
    }
}
