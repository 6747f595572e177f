//! One exchange: a client's request and everything sent back for it. Both
//! frontends drive the same phases, in this order:
//!
//! 1. **validate**: the request head, checked and turned into a
//!    [`Target`], or a 400, 413, 431 or 501 ([`http_rules::validate`]);
//!    then its site and route ([`crate::site`]), or a 421 or 404.
//! 2. **early**: links learned from earlier responses for this page,
//!    promised or hinted before the origin has even seen the request.
//! 3. **forward**: the request to the origin; 502, 503 and 504 come from
//!    here ([`http_rules::origin_request`], [`crate::origin`]).
//! 4. **informational**: each 103 the origin sends while it works, promised
//!    or hinted at once, never twice.
//! 5. **clean**: the response head, made fit for the client
//!    ([`http_rules::clean_response`]). A request that asked to switch
//!    protocols and got a 101 for it leaves the phases here: its head goes
//!    out and the frontend hands both sides to [`tunnel::run`]; any other
//!    answer to it is an ordinary response.
//! 6. **learn**: the learned-hints store takes the final head.
//! 7. **decide**: the push plan for the final `Link` field; promises go
//!    out and the field is rewritten for this client ([`push::decide`]).
//! 8. **respond**: the frontend sends the head and streams the body (the
//!    protocol's business, in [`crate::frontend`]).
//! 9. **log**: the [`Record`] built along the way is written once.
//!
//! What differs between HTTP/1.1 and HTTP/2 is behind [`Client`]: whether
//! a 103 or a promise can be sent, and whether the client went away.
//! Errors become responses in one place, [`reject`].

use std::collections::HashSet;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery};
use http::{Method, Request, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Empty};

use crate::access_log::Record;
use crate::config::RouteConfig;
use crate::conn::ConnContext;
use crate::error::{error_response, BoxError, ErrorSide, ProxyError};
use crate::http_rules::{self, Target};
use crate::origin::{OriginBody, ResponseBody};
use crate::policy::digest::{self, CacheDigest};
use crate::policy::hints;
use crate::policy::push::{self, ClientPush, Diary, Plan, ResponseState};
use crate::request_body::{RequestBody, Upload};
use crate::runtime::Worker;
use crate::site::Site;
use crate::tunnel::{self, Handshake, OriginSide};
use crate::upstream::UpstreamClient;

/// Most 103 responses from the origin acted upon per request; beyond this
/// an origin's 103s are ignored, so a flood of them costs nothing.
pub const MAX_EARLY_HINTS: usize = 8;

/// What an exchange needs from the client's protocol, beyond sending the
/// response.
pub trait Client {
    /// What the push policy may assume of the client right now.
    fn push_state(&self) -> ClientPush;
    /// The connection's memory of pushes, when it can take any.
    fn memory(&self) -> Option<&ConnMemory>;
    /// Whether 103 responses reach this client at all.
    fn takes_informational(&self) -> bool;
    /// Send a 103 Early Hints carrying `links`.
    fn hint(&mut self, links: HeaderMap) -> bool;
    /// Promise a push; the frontend fetches and sends it on its own.
    fn promise(&mut self, promise: Promise) -> Result<(), push::Reason>;
    /// Ready once the client has given up on this request.
    fn poll_gone(&mut self, cx: &mut Context<'_>) -> Poll<()>;
}

/// What one connection remembers of what it was pushed and holds.
#[derive(Default)]
pub struct ConnMemory {
    /// URLs pushed to, or requested by, this client.
    pub diary: Mutex<Diary>,
    /// What this browser holds, from its cache-digest cookie plus what was
    /// pushed on this connection (when `[push] cache_digest` is on).
    pub digest: Mutex<CacheDigest>,
    /// Whether the connection's first authority is served: most
    /// connections only ever name one, so the check runs once.
    served: OnceLock<(Authority, bool)>,
}

impl ConnMemory {
    pub fn new(diary_size: usize) -> ConnMemory {
        ConnMemory {
            diary: Mutex::new(Diary::new(diary_size)),
            ..ConnMemory::default()
        }
    }
}

/// A push the exchange asks the frontend to promise.
pub struct Promise {
    /// The site of the parent request, whose routes the push follows.
    pub site: usize,
    pub authority: Authority,
    pub path: PathAndQuery,
    /// The promised request's header fields.
    pub headers: HeaderMap,
    /// Pushed bytes left for the parent response.
    pub budget: Arc<Budget>,
}

/// The pushed bytes one parent response may still spend.
pub struct Budget {
    left: AtomicU64,
}

impl Budget {
    fn new(bytes: u64) -> Budget {
        Budget {
            left: AtomicU64::new(bytes),
        }
    }

    /// Spend `bytes`, or refuse when they are not left.
    pub fn take(&self, bytes: u64) -> bool {
        self.left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                left.checked_sub(bytes)
            })
            .is_ok()
    }

    pub fn left(&self) -> u64 {
        self.left.load(Ordering::Relaxed)
    }
}

/// What the frontend sends: the head, the body, and the record to finish
/// once the body is out.
pub struct Reply {
    pub head: http::response::Parts,
    pub body: ReplyBody,
    pub record: Record,
    /// The origin's side of a switch of protocols, for the frontend to
    /// splice with the client's once the head is out.
    pub tunnel: Option<OriginSide>,
}

/// A response body: the origin's, or one the proxy wrote.
pub enum ReplyBody {
    Origin(ResponseBody),
    Full(Option<Bytes>),
}

impl Body for ReplyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ReplyBody::Origin(body) => Pin::new(body)
                .poll_frame(cx)
                .map(|frame| frame.map(|result| result.map_err(Into::into))),
            ReplyBody::Full(data) => Poll::Ready(data.take().map(|data| Ok(Frame::data(data)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReplyBody::Origin(body) => body.is_end_stream(),
            ReplyBody::Full(data) => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReplyBody::Origin(body) => body.size_hint(),
            ReplyBody::Full(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}

/// Run the phases for one request. `None` when the client went away before
/// there was anything to send (already logged).
pub async fn serve<C, B>(
    worker: &Worker,
    ctx: &Arc<ConnContext>,
    request: Request<B>,
    client: &mut C,
) -> Option<Reply>
where
    C: Client,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let started = Instant::now();
    let config = &worker.config;
    let (parts, body) = request.into_parts();
    let mut record = Record::begin(ctx, &parts, started);

    // 1. validate
    let target = match http_rules::validate(&parts, ctx, config) {
        Ok(target) => target,
        Err(error) => return Some(reject(worker, error, record)),
    };
    record.authority = Some(target.authority.clone());
    let scope = match Scope::of(worker, ctx, &target.authority, target.path_and_query.path()) {
        Ok(scope) => scope,
        Err(error) => return Some(reject(worker, error, record)),
    };
    let mut links = Links::new(worker, &scope, ctx.scheme(), &target, &parts.headers);
    if let Some(memory) = client.memory() {
        links.note_request(memory, &parts.headers, client.push_state());
    }

    // 2. early: learned hints, for navigations of clients that take 103s.
    let learned = scope.site.learned.as_ref();
    let learn_key = learned
        .map(|learned| learned.key(target.authority.as_str(), target.path_and_query.as_str()));
    if let (Some(learned), Some(key)) = (learned, &learn_key) {
        let wanted = scope.route.hints && client.takes_informational();
        if wanted && hints::wants_hints(&target.method, &parts.headers) {
            if let Some(learned_links) = learned.lookup(key) {
                let lines: Vec<&str> = learned_links.iter().map(String::as_str).collect();
                links.early(&lines, Source::Learned, client);
            }
        }
    }

    // 3. forward, and 4. the origin's 103s while it works.
    let body_is_empty = body.is_end_stream();
    let (body, upload) = if body_is_empty {
        (empty_body(), None)
    } else {
        let (body, upload) = RequestBody::new(
            body,
            config.limits.max_request_body_bytes,
            target.content_length,
            config.timeouts.client_body_read,
        );
        (body.boxed_unsync(), Some(upload))
    };
    let mut request =
        match http_rules::origin_request(&parts, &target, body, body_is_empty, ctx, config) {
            Ok(request) => request,
            Err(error) => return Some(reject(worker, error, record)),
        };
    let handshake = target
        .upgrade
        .as_ref()
        .map(|upgrade| Handshake::start(upgrade, request.headers_mut()))
        .transpose();
    let handshake = match handshake {
        Ok(handshake) => handshake,
        Err(error) => return Some(reject(worker, error, record)),
    };
    let Some((result, origin_time, address)) =
        forward(&scope, ctx, request, upload.as_ref(), &mut links, client).await
    else {
        // Dropping the origin call closed its connection: the origin sees
        // the request abort.
        worker.metrics.client_reset();
        record.status = 499;
        record.pushes = links.pushed;
        record.fail("client reset the stream");
        record.finish(0, &worker.metrics, worker.access_log());
        return None;
    };
    record.origin_time = Some(origin_time);
    record.upstream = address;

    // 5. clean
    let response = result.and_then(|response| {
        let (mut head, body) = response.into_parts();
        let switched = match &handshake {
            Some(handshake) => handshake.accepted(&mut head)?,
            None => false,
        };
        if !switched {
            http_rules::clean_response(&mut head)?;
        }
        Ok((head, body, switched))
    });
    let (mut head, body, switched) = match response {
        Ok(response) => response,
        Err(error) => {
            // A body the client spoilt fails the origin call too; the
            // client's part is what the client is told.
            let error = if upload.as_ref().is_some_and(|upload| upload.too_large()) {
                ProxyError::BodyTooLarge {
                    limit: config.limits.max_request_body_bytes,
                }
            } else if upload.as_ref().is_some_and(|upload| upload.stalled()) {
                ProxyError::BodyTimeout(config.timeouts.client_body_read)
            } else {
                error
            };
            record.pushes = links.pushed;
            return Some(reject(worker, error, record));
        }
    };
    if switched {
        record.status = head.status.as_u16();
        record.pushes = links.pushed;
        let tunnel = tunnel::OriginSide::new(&mut head, body);
        return Some(Reply {
            head,
            body: ReplyBody::Full(None),
            record,
            tunnel: Some(tunnel),
        });
    }
    record_validator(scope.site, &target, &head);

    // 6. learn, from the origin's own Link field before it is rewritten.
    let learned = learned.filter(|_| scope.route.learn);
    if let (Some(learned), Some(key)) = (learned, learn_key) {
        let lesson = hints::lesson(
            &target.method,
            &key,
            head.status.as_u16(),
            &head.headers,
            learned.min_clients(),
        );
        learned.apply(key, ctx.peer, lesson);
    }

    // 7. decide
    links.finish(&mut head, client);
    record.status = head.status.as_u16();
    record.pushes = links.pushed;

    // 8. and 9. are the frontend's: send, then finish the record.
    Some(Reply {
        head,
        body: ReplyBody::Origin(body),
        record,
        tunnel: None,
    })
}

/// Where a request goes: its site, the route its path takes there, and
/// that route's upstream (this worker's pools for it).
struct Scope<'w> {
    index: usize,
    site: &'w Site,
    route: &'w RouteConfig,
    upstream: &'w UpstreamClient,
}

impl<'w> Scope<'w> {
    /// The site `authority` names on this connection, and the route of
    /// `path` there: 421 or 404 for a host no site answers for.
    fn of(
        worker: &'w Worker,
        ctx: &ConnContext,
        authority: &Authority,
        path: &str,
    ) -> Result<Scope<'w>, ProxyError> {
        let index = worker
            .sites
            .find(authority.host(), ctx.secure, ctx.sni_site)?;
        Scope::in_site(worker, index, path)
    }

    /// The route of `path` in the site numbered `index`.
    fn in_site(worker: &'w Worker, index: usize, path: &str) -> Result<Scope<'w>, ProxyError> {
        let site = worker.sites.get(index).ok_or(ProxyError::UnknownSite)?;
        let route = site.route(path).ok_or(ProxyError::UnknownSite)?;
        let upstream = worker
            .upstreams
            .get(route.upstream)
            .ok_or(ProxyError::Unavailable("no such upstream"))?;
        Ok(Scope {
            index,
            site,
            route,
            upstream,
        })
    }

    /// The push rules for this route.
    fn policy(&self) -> &'w push::Policy {
        self.site.policy(self.route)
    }
}

/// The one place an error becomes a response: count it, log it once with
/// its cause chain and the side that caused it, and answer with its status.
fn reject(worker: &Worker, error: ProxyError, mut record: Record) -> Reply {
    let side = error.side().as_str();
    let cause = error.chain();
    let status = error.status();
    let path = record.path();
    let conn = record.conn().id;
    match error.side() {
        ErrorSide::Client => {
            tracing::info!(conn, side, path, status = status.as_u16(), %cause, "request rejected")
        }
        _ => tracing::warn!(conn, side, path, status = status.as_u16(), %cause, "request failed"),
    }
    worker.metrics.origin_error(&error);
    let (head, body) = error_response(&error);
    record.status = status.as_u16();
    record.error = Some(cause.into());
    let body = (record.method != Method::HEAD).then_some(body);
    Reply {
        head,
        body: ReplyBody::Full(body),
        record,
        tunnel: None,
    }
}

/// Send the request and wait for the response head, acting on each 103 as
/// it arrives; with the time it took and the address it went to. `None`
/// when the client gave up first.
async fn forward<C: Client>(
    scope: &Scope<'_>,
    ctx: &ConnContext,
    mut request: Request<OriginBody>,
    upload: Option<&Arc<Upload>>,
    links: &mut Links<'_>,
    client: &mut C,
) -> Option<(
    Result<http::Response<ResponseBody>, ProxyError>,
    Duration,
    Option<Arc<str>>,
)> {
    let watch = (scope.route.hints && client.takes_informational())
        .then(|| Informational::watch(&mut request));
    let started = Instant::now();
    let call = scope.upstream.send(request, &ctx.share, upload.cloned());
    tokio::pin!(call);
    poll_fn(|cx| {
        if let Some(watch) = &watch {
            for headers in watch.take(Some(cx)) {
                links.early(&http_rules::link_lines(&headers), Source::Origin, client);
            }
        }
        if let Poll::Ready((result, address)) = call.as_mut().poll(cx) {
            // hyper hands every 103 over while it parses the response, so
            // one that came in the same read as the final head is queued
            // by now: act on it before the final response.
            if let Some(watch) = &watch {
                for headers in watch.take(None) {
                    links.early(&http_rules::link_lines(&headers), Source::Origin, client);
                }
            }
            return Poll::Ready(Some((result, started.elapsed(), address)));
        }
        client.poll_gone(cx).map(|()| None)
    })
    .await
}

/// The origin's 103 responses for one request, handed over from inside
/// hyper's response parser.
#[derive(Default)]
struct Informational {
    queue: Mutex<(Vec<HeaderMap>, Option<Waker>)>,
}

impl Informational {
    fn watch(request: &mut Request<OriginBody>) -> Arc<Informational> {
        let watch = Arc::new(Informational::default());
        let queue = watch.clone();
        hyper::ext::on_informational(request, move |response| {
            if response.status() != StatusCode::EARLY_HINTS {
                return;
            }
            let Ok(mut queue) = queue.queue.lock() else {
                return;
            };
            if queue.0.len() < MAX_EARLY_HINTS {
                queue.0.push(response.headers().clone());
            }
            if let Some(waker) = queue.1.take() {
                waker.wake();
            }
        });
        watch
    }

    /// The 103s queued so far; with `cx`, wake it for the next one.
    fn take(&self, cx: Option<&mut Context<'_>>) -> Vec<HeaderMap> {
        let Ok(mut queue) = self.queue.lock() else {
            return Vec::new();
        };
        if let Some(cx) = cx {
            if !queue.1.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                queue.1 = Some(cx.waker().clone());
            }
        }
        std::mem::take(&mut queue.0)
    }
}

/// Where links seen before the final response came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// Learned from earlier responses for this page.
    Learned,
    /// A 103 from the origin.
    Origin,
}

/// One response's pushes and hints, across learned hints, the origin's
/// 103s and the final response: a URL is promised at most once, and a link
/// is hinted at most once.
struct Links<'a> {
    worker: &'a Worker,
    scope: &'a Scope<'a>,
    /// The connection's scheme, which links resolve against.
    scheme: &'static str,
    target: &'a Target,
    request_headers: &'a HeaderMap,
    state: ResponseState,
    /// Pushed bytes left for this response; made at the first push, since
    /// most responses push nothing.
    budget: Option<Arc<Budget>>,
    /// Paths promised, for the access log.
    pushed: Vec<String>,
    /// Link elements already sent to the client in a 103.
    hinted: HashSet<String>,
    /// Paths promised from learned hints, to tell confirmed from wasted.
    learned_pushes: Vec<String>,
    early_responses: usize,
}

impl<'a> Links<'a> {
    fn new(
        worker: &'a Worker,
        scope: &'a Scope<'a>,
        scheme: &'static str,
        target: &'a Target,
        request_headers: &'a HeaderMap,
    ) -> Self {
        Links {
            worker,
            scope,
            scheme,
            target,
            request_headers,
            state: ResponseState::default(),
            budget: None,
            pushed: Vec::new(),
            hinted: HashSet::new(),
            learned_pushes: Vec::new(),
            early_responses: 0,
        }
    }

    /// The client asked for this URL itself, and may say what it holds.
    /// Only a client that takes pushes needs it remembered.
    fn note_request(&self, memory: &ConnMemory, headers: &HeaderMap, client: ClientPush) {
        if !matches!(client, ClientPush::Enabled { .. }) || !self.scope.policy().enabled {
            return;
        }
        let target = self.target;
        if let Ok(mut diary) = memory.diary.lock() {
            diary.record_requested(target.authority.as_str(), target.path_and_query.as_str());
        }
        let settings = &self.scope.site.push;
        if settings.cache_digest {
            if let Some(sent) = digest::from_cookies(headers, &settings.cache_digest_cookie) {
                if let Ok(mut held) = memory.digest.lock() {
                    held.merge(&sent);
                }
            }
        }
    }

    /// Links known before the final response: push what the policy picks
    /// at once, and hint the rest in a 103 (all of it, for a client that
    /// takes no pushes).
    fn early<C: Client>(&mut self, lines: &[&str], source: Source, client: &mut C) {
        if self.early_responses >= MAX_EARLY_HINTS {
            return;
        }
        self.early_responses += 1;
        let before = self.pushed.len();
        let Some(plan) = self.promise(lines, StatusCode::EARLY_HINTS.as_u16(), client) else {
            return;
        };
        let metrics = &self.worker.metrics;
        if source == Source::Learned {
            let learned = &self.pushed[before..];
            metrics.learned_pushes(learned.len() as u64);
            self.learned_pushes.extend_from_slice(learned);
        }
        let forward = match source {
            Source::Learned => true,
            Source::Origin => self.scope.site.hints.forward_origin_103,
        };
        if !forward {
            return;
        }
        // Only `Link` fields go out: a 103's other fields are the origin's
        // business, and none of them reaches the final response.
        let mut headers = HeaderMap::new();
        for line in plan.hint_lines(&mut self.hinted) {
            if let Ok(value) = HeaderValue::from_str(&line) {
                headers.append(header::LINK, value);
            }
        }
        if !headers.is_empty() && client.hint(headers) {
            metrics.hint_sent();
        }
    }

    /// The final response: promise what is new in its Link field and
    /// rewrite the field for the client.
    fn finish<C: Client>(&mut self, head: &mut http::response::Parts, client: &mut C) {
        let plan = {
            let lines = http_rules::link_lines(&head.headers);
            self.promise(&lines, head.status.as_u16(), client)
        };
        let metrics = &self.worker.metrics;
        for path in &self.learned_pushes {
            let named = plan.as_ref().is_some_and(|plan| {
                plan.decisions()
                    .iter()
                    .any(|d| d.path.as_deref() == Some(path.as_str()))
            });
            metrics.learned_push_outcome(named);
        }
        let Some(plan) = plan else {
            return;
        };
        if plan.decisions().is_empty() {
            return;
        }
        if plan.changes_links() {
            http_rules::replace_links(&mut head.headers, plan.link_lines());
        }
        if self.scope.site.push.explain {
            if let Ok(value) = HeaderValue::from_str(&plan.explain()) {
                head.headers
                    .insert(HeaderName::from_static("x-push-decision"), value);
            }
        }
    }

    /// Run the push policy over `lines`, ask the frontend to promise each
    /// link it picks (before the response HEADERS, which go out later), and
    /// turn refused promises into preloads.
    fn promise<C: Client>(&mut self, lines: &[&str], status: u16, client: &mut C) -> Option<Plan> {
        if lines.is_empty() {
            return None;
        }
        let worker = self.worker;
        let site = self.scope.site;
        let policy = self.scope.policy();
        let target = self.target;
        let client_state = client.push_state();
        let memory = client.memory();
        let served = match memory {
            Some(memory) => {
                let (authority, served) = memory.served.get_or_init(|| {
                    let served = site.names.serves(target.authority.as_str());
                    (target.authority.clone(), served)
                });
                if *authority == target.authority {
                    *served
                } else {
                    site.names.serves(target.authority.as_str())
                }
            }
            None => site.names.serves(target.authority.as_str()),
        };
        // What the client's cache digest says it holds, by the validators
        // last seen for each asset.
        let held = match (&site.validators, memory) {
            (Some(_), Some(memory)) => memory.digest.lock().ok().map(|d| d.clone()),
            _ => None,
        };
        let authority = target.authority.as_str();
        let holds = |path: &str| {
            let (Some(validators), Some(held)) = (&site.validators, &held) else {
                return false;
            };
            validators
                .fresh(authority, path)
                .is_some_and(|v| held.contains(digest::key(authority, path, &v)))
        };
        let facts = push::Facts {
            method: &target.method,
            scheme: self.scheme,
            authority,
            path_and_query: target.path_and_query.as_str(),
            status,
            authority_served: served,
            client: client_state,
            cached: held.as_ref().map(|_| push::CachedCheck(&holds)),
        };
        let mut plan = match memory {
            Some(memory) => {
                let mut diary = memory.diary.lock().ok()?;
                push::decide(policy, &facts, lines, &mut diary, &mut self.state)
            }
            // A client that never takes pushes needs no memory of them.
            None => push::decide(policy, &facts, lines, &mut Diary::new(0), &mut self.state),
        };
        let planned: Vec<(usize, usize, String, Option<String>)> = plan
            .pushes()
            .filter_map(|d| Some((d.line, d.element, d.path.clone()?, d.destination.clone())))
            .collect();
        let mut refused = Vec::new();
        for (line, element, path, destination) in planned {
            let Ok(promised_path) = PathAndQuery::from_maybe_shared(path.clone()) else {
                refused.push((line, element, push::Reason::CrossOrigin));
                continue;
            };
            let budget = self
                .budget
                .get_or_insert_with(|| {
                    Arc::new(Budget::new(site.push.max_pushed_bytes_per_response))
                })
                .clone();
            let promise = Promise {
                site: self.scope.index,
                authority: target.authority.clone(),
                path: promised_path,
                headers: push::promised_headers(
                    self.request_headers,
                    &site.forward_headers,
                    destination.as_deref(),
                ),
                budget,
            };
            match client.promise(promise) {
                Ok(()) => {
                    worker.metrics.push_promised();
                    self.pushed.push(path);
                }
                Err(reason) => refused.push((line, element, reason)),
            }
        }
        if !refused.is_empty() {
            let mut throwaway = Diary::new(0);
            let mut diary = client.memory().and_then(|m| m.diary.lock().ok());
            let diary = diary.as_deref_mut().unwrap_or(&mut throwaway);
            for (line, element, reason) in refused {
                plan.downgrade(line, element, reason, diary, &mut self.state);
            }
        }
        worker.metrics.push_decisions(&plan);
        Some(plan)
    }
}

/// A request body with nothing in it (boxing it allocates nothing).
fn empty_body() -> OriginBody {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Remember the validator of a successful GET response, for cache digests.
fn record_validator(site: &Site, target: &Target, head: &http::response::Parts) {
    let Some(validators) = &site.validators else {
        return;
    };
    if target.method != Method::GET || !matches!(head.status.as_u16(), 200 | 304) {
        return;
    }
    if let Some(validator) = digest::validator(&head.headers) {
        validators.record(
            target.authority.as_str(),
            target.path_and_query.as_str(),
            validator,
        );
    }
}

/// A promised resource, fetched whole and ready to send.
pub struct Pushed {
    pub head: http::response::Parts,
    pub body: Bytes,
}

/// Fetch a promised resource from the origin. `None` when the push must be
/// cancelled instead (why is in `record`). The whole body is read, within
/// the parent's byte budget, before anything is sent: the push hands its
/// origin connection back at once, however slowly the client takes it.
pub async fn fetch_push(
    worker: &Worker,
    ctx: &ConnContext,
    memory: &ConnMemory,
    promise: &Promise,
    record: &mut Record,
    mut gone: impl FnMut(&mut Context<'_>) -> Poll<()>,
) -> Option<Pushed> {
    let target = Target {
        method: Method::GET,
        authority: promise.authority.clone(),
        path_and_query: promise.path.clone(),
        content_length: None,
        upgrade: None,
    };
    let mut parts = Request::new(()).into_parts().0;
    parts.headers = promise.headers.clone();
    let body = empty_body();
    let metrics = &worker.metrics;
    let scope = match Scope::in_site(worker, promise.site, target.path_and_query.path()) {
        Ok(scope) => scope,
        Err(error) => {
            record.fail(error.chain());
            return None;
        }
    };
    let site = scope.site;
    let request = match http_rules::origin_request(&parts, &target, body, true, ctx, &worker.config)
    {
        Ok(request) => request,
        Err(error) => {
            record.fail(error.chain());
            return None;
        }
    };
    let started = Instant::now();
    let call = scope.upstream.send(request, &ctx.share, None);
    tokio::pin!(call);
    let outcome = poll_fn(|cx| {
        if let Poll::Ready(result) = call.as_mut().poll(cx) {
            return Poll::Ready(Some(result));
        }
        gone(cx).map(|()| None)
    })
    .await;
    let Some((result, address)) = outcome else {
        metrics.push_cancelled();
        record.status = 499;
        record.fail("client reset the pushed stream");
        return None;
    };
    record.origin_time = Some(started.elapsed());
    record.upstream = address;
    let (mut head, body) = match result {
        Ok(response) => response.into_parts(),
        Err(error) => {
            metrics.push_cancelled();
            record.status = error.status().as_u16();
            record.fail(error.chain());
            return None;
        }
    };
    record.status = head.status.as_u16();
    let checked = push::check_pushed_response(
        head.status.as_u16(),
        &head.headers,
        site.push.cancel_uncacheable,
    )
    .map_err(push::Cancel::describe)
    .and_then(|()| http_rules::clean_response(&mut head).map_err(|_| "invalid origin response"));
    if let Err(reason) = checked {
        metrics.push_cancelled();
        record.fail(reason);
        return None;
    }
    let collected = {
        let collect = collect_within(body, &promise.budget, worker.config.timeouts.origin_read);
        tokio::pin!(collect);
        poll_fn(|cx| {
            if let Poll::Ready(collected) = collect.as_mut().poll(cx) {
                return Poll::Ready(collected);
            }
            gone(cx).map(|()| Err("client reset the pushed stream".into()))
        })
        .await
    };
    let data = match collected {
        Ok(data) => data,
        Err(why) => {
            metrics.push_cancelled();
            record.fail(why);
            return None;
        }
    };
    record_validator(site, &target, &head);
    if site.push.cache_digest {
        if let Some(cookie) = digest_cookie(site, &target, &head.headers, memory) {
            head.headers.append(header::SET_COOKIE, cookie);
        } else if digest::validator(&head.headers).is_some() {
            // The browser holds exactly this version already.
            metrics.push_cancelled();
            record.fail("client holds it (cache digest)");
            return None;
        }
    }
    head.headers
        .insert("x-http2-push", HeaderValue::from_static("1"));
    Some(Pushed { head, body: data })
}

/// Read a pushed response's body whole, taking each chunk from `budget`.
async fn collect_within(
    mut body: ResponseBody,
    budget: &Budget,
    origin_read: Duration,
) -> Result<Bytes, std::borrow::Cow<'static, str>> {
    if let Some(length) = body.size_hint().exact() {
        if length > budget.left() {
            return Err("push byte budget exhausted".into());
        }
    }
    let mut chunks: Vec<Bytes> = Vec::new();
    loop {
        let frame = match tokio::time::timeout(origin_read, body.frame()).await {
            Err(_) => return Err("origin body stalled".into()),
            Ok(None) => break,
            Ok(Some(Err(error))) => return Err(format!("origin body failed: {error}").into()),
            Ok(Some(Ok(frame))) => frame,
        };
        // Origin trailers are not forwarded.
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if !budget.take(data.len() as u64) {
            return Err("push byte budget exhausted".into());
        }
        chunks.push(data);
    }
    Ok(match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.swap_remove(0),
        _ => Bytes::from(chunks.concat()),
    })
}

/// Add a pushed response to the connection's cache digest and return the
/// `Set-Cookie` value that hands the grown digest to the browser; `None`
/// when the response has no validator or the digest already holds it.
fn digest_cookie(
    site: &Site,
    target: &Target,
    headers: &HeaderMap,
    memory: &ConnMemory,
) -> Option<HeaderValue> {
    let validator = digest::validator(headers)?;
    let key = digest::key(
        target.authority.as_str(),
        target.path_and_query.as_str(),
        validator,
    );
    let mut held = memory.digest.lock().ok()?;
    if !held.insert(key) {
        return None;
    }
    let cookie = digest::set_cookie(&site.push.cache_digest_cookie, &held);
    HeaderValue::from_str(&cookie).ok()
}
