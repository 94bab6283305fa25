//! `attend serve`: a local web app — a text box and a model picker — answering each text with
//! the viewer page (`attend-viz`) of what the model computed.
//!
//! Bounded by construction: a request body of at most [`MAX_BODY`] bytes (a larger
//! `Content-Length` is 413 before any byte is read), a text of at most `--max-chars`
//! characters, one model run at a time per model with at most `--queue` waiting (503 past
//! that), and a deadline per request (504). A bad request is a 4xx with a JSON
//! `{"error": …}`; a handler never panics on what a client sends.
//!
//! Hostile clients cannot hold it: headers must arrive within [`HEADER_TIMEOUT`], a connection
//! lives at most the deadline plus [`HEADER_TIMEOUT`], at most `--max-connections` are open
//! (past that the oldest idle one is closed to make room, or the newcomer is answered 503), a
//! run whose client has gone is skipped if it has not started and stopped at its next layer
//! or token if it has, and Ctrl-C or SIGTERM stops it within [`SHUTDOWN_GRACE`].
//!
//! Other sites cannot drive it: a request's `Host` must be a loopback name (`localhost`,
//! `127.0.0.1`, `[::1]`), the bound address, or a name given with `--allow-host` (DNS
//! rebinding); an `Origin`, when sent, must be such a host too (another site's form or
//! script); `POST /api/view` takes `application/json` only (a plain form post cannot send
//! it). Loopback by default; the address and port are checked before any model loads.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use attend_models::generate::{generate, CausalLm, GenToken, Sampler, SamplerConfig};
use attend_models::models::Model;
use attend_models::{registry, SentenceEncoder};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::json;

/// The largest request body accepted (a JSON object holding one text).
pub const MAX_BODY: usize = 256 << 10;
/// Time a client has to send a request's line and headers (on a new or an idle connection).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Time the server gives open connections and runs to finish once it is told to stop.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Arguments of `attend serve`.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Port to listen on (0: any free port; the address is printed).
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// Address to bind: loopback by default; anything else is reachable from other machines.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// A model to offer (repeatable) [default: every known model already in the cache, and
    /// the models attend trained].
    #[arg(long = "model")]
    models: Vec<String>,
    /// Longest text accepted, in characters.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    max_chars: u64,
    /// Tokens a causal model generates per request.
    #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(u64).range(1..=512))]
    max_tokens: u64,
    /// Requests that may wait for a busy model; more are answered 503.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(0..=1024))]
    queue: u64,
    /// Seconds a request may take before it is answered 504.
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=3600))]
    timeout: u64,
    /// Connections open at once; past that the oldest idle one is closed to make room (or
    /// the new one is answered 503 when none is idle).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=4096))]
    max_connections: u64,
    /// A host name (besides loopback names and the bound address) that requests may name in
    /// `Host` and `Origin` (repeatable): for a server reached through a DNS name.
    #[arg(long = "allow-host")]
    allow_hosts: Vec<String>,
}

/// A loaded model.
enum Loaded {
    Encoder(Box<SentenceEncoder>),
    /// A GGUF decoder or a model attend trained: explained, or continued.
    Causal(Box<dyn CausalLm>),
}

/// What a request asks of a causal model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// The attention over the text (every layer × head × query × key).
    Explain,
    /// A greedy continuation of up to this many tokens, and the rows that predicted each.
    Generate(usize),
}

/// One model offered, with its gate: one run at a time, a bounded number waiting.
struct Entry {
    name: String,
    kind: &'static str,
    model: Loaded,
    gate: Mutex<()>,
    waiting: AtomicUsize,
    /// The request whose run holds the gate (0: none); read and written under its lock, with
    /// the interrupt flag, so that a late client's leaving never stops the next run.
    running: Mutex<u64>,
    /// The model's flag that stops its running pass at the next layer.
    interrupt: Option<Arc<AtomicBool>>,
}

struct App {
    models: Vec<Entry>,
    max_chars: usize,
    max_tokens: usize,
    queue: usize,
    timeout: Duration,
    max_connections: usize,
    hosts: Hosts,
    next_request: AtomicU64,
    /// Set when the server is told to stop: queued runs are skipped.
    stopping: AtomicBool,
    pool: rayon::ThreadPool,
}

/// A client error or a failure, answered as `{"error": …}` with its status.
struct Failure(StatusCode, String);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (
            self.0,
            [(header::CONTENT_TYPE, "application/json")],
            json!({"error": self.1, "status": self.0.as_u16()}).to_string(),
        )
            .into_response()
    }
}

fn load(name: &str) -> Result<(&'static str, Loaded)> {
    Ok(match crate::input::open(name)? {
        Model::Toy(m) => ("toy", Loaded::Causal(m)),
        Model::Encoder(e) => ("encoder", Loaded::Encoder(e)),
        Model::Causal(m) => ("causal", Loaded::Causal(m)),
    })
}

/// The names offered when none is given: cached known models, then the trained ones.
fn default_models() -> Vec<String> {
    let mut v: Vec<String> = registry::KNOWN
        .iter()
        .filter(|m| registry::is_cached(m))
        .map(|m| m.name.to_string())
        .collect();
    v.extend(
        attend_models::models::embedded::NAMES
            .iter()
            .map(|s| s.to_string()),
    );
    v
}

/// Runs `attend serve` until Ctrl-C or SIGTERM.
pub fn run(args: &ServeArgs, threads: usize) -> Result<()> {
    // the address first: a bad --host or a port in use is said before any model loads
    let ip: IpAddr = args.host.parse().map_err(|_| {
        crate::usage!(
            "--host {} is not an IP address (give 127.0.0.1, ::1 or 0.0.0.0)",
            args.host
        )
    })?;
    let listener = std::net::TcpListener::bind((ip, args.port))
        .with_context(|| format!("listening on {ip} port {}", args.port))?;
    listener.set_nonblocking(true)?;
    let hosts = Hosts {
        bound: ip,
        extra: args
            .allow_hosts
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect(),
    };
    let names = if args.models.is_empty() {
        default_models()
    } else {
        args.models.clone()
    };
    let mut models = Vec::new();
    for name in &names {
        if models.iter().any(|e: &Entry| &e.name == name) {
            continue;
        }
        let (kind, model) = load(name)?;
        eprintln!("attend serve: model `{name}` ({kind}) loaded");
        let interrupt = match &model {
            Loaded::Causal(lm) => lm.interrupt(),
            Loaded::Encoder(_) => None,
        };
        models.push(Entry {
            name: name.clone(),
            kind,
            model,
            gate: Mutex::new(()),
            waiting: AtomicUsize::new(0),
            running: Mutex::new(0),
            interrupt,
        });
    }
    let app = Arc::new(App {
        models,
        max_chars: args.max_chars as usize,
        max_tokens: args.max_tokens as usize,
        queue: args.queue as usize,
        timeout: Duration::from_secs(args.timeout),
        max_connections: args.max_connections as usize,
        hosts,
        next_request: AtomicU64::new(1),
        stopping: AtomicBool::new(false),
        pool: rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .context("starting the model threads")?,
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(64)
        .enable_all()
        .build()
        .context("starting the server")?;
    let done = runtime.block_on(serve(app, listener));
    // runs still going past the grace are dropped with the process, not waited for
    runtime.shutdown_timeout(SHUTDOWN_GRACE);
    done
}

/// Which `Host` and `Origin` values a request may carry.
struct Hosts {
    bound: IpAddr,
    extra: Vec<String>,
}

impl Hosts {
    /// `host` (a `Host` header's value, a port allowed) names this server: a loopback name or
    /// address, the bound address (any address literal when bound to all), or an allowed
    /// name. Any other name is a page of another site reaching in through DNS rebinding.
    fn allows(&self, host: &str) -> bool {
        let host = host.trim().to_ascii_lowercase();
        let name = match host.strip_prefix('[') {
            // [v6] or [v6]:port
            Some(rest) => match rest.split_once(']') {
                Some((v6, port))
                    if port.is_empty() || is_port(&port[1..]) && port.starts_with(':') =>
                {
                    v6.to_string()
                }
                _ => return false,
            },
            None => match host.rsplit_once(':') {
                Some((name, port)) if is_port(port) => name.to_string(),
                Some(_) => return false,
                None => host.clone(),
            },
        };
        if name.is_empty() {
            return false;
        }
        if name == "localhost" || name.ends_with(".localhost") {
            return true;
        }
        if let Ok(ip) = name.parse::<IpAddr>() {
            return ip.is_loopback() || self.bound.is_unspecified() || ip == self.bound;
        }
        self.extra.contains(&name)
    }

    /// An `Origin` header's value (`scheme://host[:port]`) is this server's.
    fn allows_origin(&self, origin: &str) -> bool {
        match origin.split_once("://") {
            Some(("http" | "https", rest)) if !rest.contains('/') => self.allows(rest),
            _ => false,
        }
    }
}

fn is_port(s: &str) -> bool {
    !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit())
}

/// Refuses what no page of this server sends: another `Host` (DNS rebinding), another
/// `Origin` (a cross-site form or script).
async fn guard(
    State(app): State<Arc<App>>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()));
    match host {
        None => {
            return Failure(StatusCode::BAD_REQUEST, "a Host header is required".into())
                .into_response()
        }
        Some(h) if !app.hosts.allows(&h) => {
            return Failure(
                StatusCode::FORBIDDEN,
                format!(
                    "Host `{h}` is not this server's name: requests must name a loopback \
                     address, the address it listens on, or a name given with --allow-host"
                ),
            )
            .into_response()
        }
        Some(_) => {}
    }
    if let Some(origin) = req.headers().get(header::ORIGIN) {
        let o = origin.to_str().unwrap_or("");
        if !app.hosts.allows_origin(o) {
            return Failure(
                StatusCode::FORBIDDEN,
                format!("requests from other sites are refused (Origin `{o}`)"),
            )
            .into_response();
        }
    }
    next.run(req).await
}

/// The connections open, oldest first: each with its count of requests in progress and the
/// signal that closes it.
#[derive(Default)]
struct Conns {
    open: Mutex<VecDeque<(u64, Arc<Conn>)>>,
    next: AtomicU64,
}

#[derive(Default)]
struct Conn {
    busy: AtomicUsize,
    close: tokio::sync::Notify,
}

impl Conns {
    fn len(&self) -> usize {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Closes the oldest connection with no request in progress; whether there was one.
    fn evict_idle(&self) -> bool {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        match open
            .iter()
            .position(|(_, c)| c.busy.load(Ordering::SeqCst) == 0)
        {
            Some(i) => {
                if let Some((_, c)) = open.remove(i) {
                    c.close.notify_one();
                }
                true
            }
            None => false,
        }
    }

    fn add(&self) -> (u64, Arc<Conn>) {
        let id = self.next.fetch_add(1, Ordering::SeqCst);
        let c = Arc::new(Conn::default());
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back((id, c.clone()));
        (id, c)
    }

    fn remove(&self, id: u64) {
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(i, _)| *i != id);
    }
}

/// Counts a request in progress on its connection while it lives.
struct Busy(Arc<Conn>);

impl Busy {
    fn new(c: &Arc<Conn>) -> Busy {
        c.busy.fetch_add(1, Ordering::SeqCst);
        Busy(c.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn serve(app: Arc<App>, listener: std::net::TcpListener) -> Result<()> {
    let listener = tokio::net::TcpListener::from_std(listener).context("listening")?;
    let bound = listener.local_addr()?;
    if !bound.ip().is_loopback() {
        eprintln!(
            "attend serve: warning: bound to {} — anyone who can reach this machine can use it \
             (use --host 127.0.0.1 to keep it local)",
            bound.ip()
        );
    }
    let router = Router::new()
        .route("/", get(index))
        .route("/api/models", get(list_models))
        .route("/api/view", post(view))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(app.clone(), guard))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(app.clone());
    eprintln!("attend serve: listening on http://{bound}/ (Ctrl-C stops it)");
    let conns = Arc::new(Conns::default());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let lifetime = app.timeout + HEADER_TIMEOUT;
    let stop = shutdown();
    tokio::pin!(stop);
    loop {
        let stream = tokio::select! {
            _ = &mut stop => break,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(_) => {
                    // out of descriptors, say: make room, and take a breath
                    conns.evict_idle();
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        if conns.len() >= app.max_connections && !conns.evict_idle() {
            tokio::spawn(refuse_busy(stream));
            continue;
        }
        let (id, conn) = conns.add();
        let router = router.clone();
        let conns = conns.clone();
        let mut stop_rx = stop_rx.clone();
        tokio::spawn(async move {
            let svc_conn = conn.clone();
            let svc =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let busy = Busy::new(&svc_conn);
                    let mut router = router.clone();
                    async move {
                        let r = tower_service::Service::call(&mut router, req).await;
                        drop(busy);
                        r
                    }
                });
            let http = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
            tokio::pin!(http);
            let end = tokio::time::sleep(lifetime);
            tokio::pin!(end);
            let mut stopping = false;
            let mut extended = false;
            loop {
                tokio::select! {
                    _ = http.as_mut() => break,
                    // past its lifetime: an idle connection is dropped; one with a request in
                    // progress (a keep-alive connection reused late) finishes that request,
                    // within one more deadline, and closes
                    _ = &mut end => {
                        if extended || conn.busy.load(Ordering::SeqCst) == 0 {
                            break;
                        }
                        extended = true;
                        http.as_mut().graceful_shutdown();
                        end.as_mut().reset(tokio::time::Instant::now() + lifetime);
                    }
                    // closed to make room
                    _ = conn.close.notified() => break,
                    _ = stop_rx.changed(), if !stopping => {
                        stopping = true;
                        http.as_mut().graceful_shutdown();
                    }
                }
            }
            conns.remove(id);
        });
    }
    // stopping: no new connections; open ones finish their request or are dropped after the
    // grace, and every model's running pass stops at its next layer
    let _ = stop_tx.send(true);
    app.stopping.store(true, Ordering::SeqCst);
    for e in &app.models {
        if let Some(f) = &e.interrupt {
            f.store(true, Ordering::SeqCst);
        }
    }
    let t0 = std::time::Instant::now();
    while conns.len() > 0 && t0.elapsed() < SHUTDOWN_GRACE {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("attend serve: stopped");
    Ok(())
}

/// The answer to a connection past `--max-connections` when none can be closed for it.
async fn refuse_busy(mut stream: tokio::net::TcpStream) {
    use tokio::io::AsyncWriteExt;
    let body = json!({
        "error": "the server has too many connections open; try again shortly",
        "status": 503
    })
    .to_string();
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(answer.as_bytes())).await;
}

async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

async fn not_found() -> Failure {
    Failure(
        StatusCode::NOT_FOUND,
        "no such page: GET /, GET /api/models, POST /api/view".into(),
    )
}

async fn list_models(State(app): State<Arc<App>>) -> Response {
    let v: Vec<_> = app
        .models
        .iter()
        .map(|e| json!({"name": e.name, "kind": e.kind}))
        .collect();
    (
        [(header::CONTENT_TYPE, "application/json")],
        json!({"models": v, "max_chars": app.max_chars}).to_string(),
    )
        .into_response()
}

async fn index(State(app): State<Arc<App>>) -> Response {
    let options: String = app
        .models
        .iter()
        .map(|e| {
            let n = attend_viz::escape_html(&e.name);
            format!(
                "<option value=\"{n}\" data-kind=\"{}\">{n} ({})</option>",
                e.kind, e.kind
            )
        })
        .collect();
    let page = attend_viz::fill_template(
        INDEX,
        &[
            ("OPTIONS", &options),
            ("MAX", &app.max_chars.to_string()),
            ("MAXTOK", &app.max_tokens.to_string()),
            ("DEFTOK", &app.max_tokens.min(24).to_string()),
        ],
    );
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            // no other site may frame the app (clicks steered through an invisible frame)
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::CONTENT_SECURITY_POLICY, "frame-ancestors 'none'"),
        ],
        page,
    )
        .into_response()
}

/// `POST /api/view` with `{"model": NAME, "text": TEXT}`: the viewer page. The whole
/// request — reading the body included — has the deadline.
async fn view(State(app): State<Arc<App>>, req: Request) -> Response {
    let deadline = app.timeout;
    // JSON only: a form on another site can post text/plain or a form encoding, not this
    let json_body = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json_body {
        return Failure(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "POST /api/view takes a JSON body with `Content-Type: application/json`".into(),
        )
        .into_response();
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        // answered at once; what the client already sent (a little) is read first, so that
        // closing does not reset the connection before the client reads the answer
        let drain = axum::body::to_bytes(req.into_body(), 1 << 20);
        let _ = tokio::time::timeout(Duration::from_millis(300), drain).await;
        let mut r = Failure(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is over {} KiB", MAX_BODY >> 10),
        )
        .into_response();
        r.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
        return r;
    }
    let work = async move {
        // the body has the headers' time limit: a trickling body holds no connection long
        let read = axum::body::to_bytes(req.into_body(), MAX_BODY);
        let body = match tokio::time::timeout(HEADER_TIMEOUT, read).await {
            Ok(Ok(b)) => b,
            Ok(Err(_)) => {
                return Err(Failure(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the request body is over {} KiB, or broken", MAX_BODY >> 10),
                ))
            }
            Err(_) => {
                return Err(Failure(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "the request body did not arrive within {} s",
                        HEADER_TIMEOUT.as_secs()
                    ),
                ))
            }
        };
        view_page(app, body).await
    };
    let answer = match tokio::time::timeout(deadline, work).await {
        Ok(r) => r,
        Err(_) => Err(Failure(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "the request took longer than {} s; try a shorter text",
                deadline.as_secs()
            ),
        )),
    };
    match answer {
        Ok(html) => (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            html,
        )
            .into_response(),
        Err(f) => f.into_response(),
    }
}

async fn view_page(app: Arc<App>, body: Bytes) -> Result<String, Failure> {
    let bad = |m: String| Failure(StatusCode::BAD_REQUEST, m);
    let v: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| bad(format!("the body is not JSON: {e}")))?;
    let text = v
        .get("text")
        .and_then(|t| t.as_str())
        .ok_or_else(|| bad("give {\"model\": NAME, \"text\": TEXT}: `text` is missing".into()))?
        .to_string();
    let model = match v.get("model") {
        None => app
            .models
            .first()
            .map(|e| e.name.clone())
            .ok_or_else(|| Failure(StatusCode::NOT_FOUND, "no model is offered".into()))?,
        Some(m) => m
            .as_str()
            .ok_or_else(|| bad("`model` must be a string".into()))?
            .to_string(),
    };
    let mode = match v.get("mode").map(|m| m.as_str()) {
        None | Some(Some("explain")) => Mode::Explain,
        Some(Some("generate")) => {
            let n = match v.get("max_tokens") {
                None => app.max_tokens as u64,
                Some(n) => n.as_u64().filter(|&n| n >= 1).ok_or_else(|| {
                    bad("`max_tokens` must be a whole number of at least 1".into())
                })?,
            };
            if n > app.max_tokens as u64 {
                return Err(bad(format!(
                    "`max_tokens` is {n}; this server generates at most {} (--max-tokens)",
                    app.max_tokens
                )));
            }
            Mode::Generate(n as usize)
        }
        _ => {
            return Err(bad(
                "`mode` must be \"explain\" (the default) or \"generate\"".into(),
            ))
        }
    };
    let chars = text.chars().count();
    if chars > app.max_chars {
        return Err(Failure(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the text has {chars} characters; at most {} are accepted",
                app.max_chars
            ),
        ));
    }
    if text.trim().is_empty() {
        return Err(bad("the text is empty".into()));
    }
    let index = app
        .models
        .iter()
        .position(|e| e.name == model)
        .ok_or_else(|| {
            let names: Vec<&str> = app.models.iter().map(|e| e.name.as_str()).collect();
            Failure(
                StatusCode::NOT_FOUND,
                format!(
                    "no model `{model}` here; this server offers {}",
                    names.join(", ")
                ),
            )
        })?;
    // the queue: this request plus those already waiting or running
    let entry = &app.models[index];
    if entry.waiting.fetch_add(1, Ordering::SeqCst) > app.queue {
        entry.waiting.fetch_sub(1, Ordering::SeqCst);
        return Err(Failure(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("model `{model}` is busy; try again shortly"),
        ));
    }
    // dropped with this future (the client went away, or the deadline passed): the run is
    // skipped if it has not started, and stopped at its next layer or token if it has
    let abandon = Abandon {
        app: app.clone(),
        index,
        id: app.next_request.fetch_add(1, Ordering::SeqCst),
        gone: Arc::new(AtomicBool::new(false)),
    };
    let (id, gone) = (abandon.id, abandon.gone.clone());
    let worker = app.clone();
    let job = tokio::task::spawn_blocking(move || {
        let e = &worker.models[index];
        let out = {
            let _one = e.gate.lock().unwrap_or_else(|p| p.into_inner());
            {
                let mut running = e.running.lock().unwrap_or_else(|p| p.into_inner());
                *running = id;
                if let Some(f) = &e.interrupt {
                    f.store(false, Ordering::SeqCst);
                }
            }
            let out = if gone.load(Ordering::SeqCst) || worker.stopping.load(Ordering::SeqCst) {
                Ok(Err(Failure(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the client went away (or the server is stopping) before the run began".into(),
                )))
            } else {
                let run = std::panic::AssertUnwindSafe(|| page_of(e, &text, mode, &gone));
                worker.pool.install(|| std::panic::catch_unwind(run))
            };
            *e.running.lock().unwrap_or_else(|p| p.into_inner()) = 0;
            out
        };
        e.waiting.fetch_sub(1, Ordering::SeqCst);
        match out {
            Ok(r) => r,
            Err(_) => Err(Failure(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the model run failed unexpectedly".into(),
            )),
        }
    });
    let answer = job.await;
    drop(abandon);
    match answer {
        Ok(r) => r,
        Err(_) => Err(Failure(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the model run was lost".into(),
        )),
    }
}

/// Marks a request's run abandoned when its handler is dropped: the run checks the mark before
/// it begins and between tokens, and the model's interrupt stops a pass at its next layer.
struct Abandon {
    app: Arc<App>,
    index: usize,
    id: u64,
    gone: Arc<AtomicBool>,
}

impl Drop for Abandon {
    fn drop(&mut self) {
        self.gone.store(true, Ordering::SeqCst);
        let e = &self.app.models[self.index];
        let running = e.running.lock().unwrap_or_else(|p| p.into_inner());
        if *running == self.id {
            if let Some(f) = &e.interrupt {
                f.store(true, Ordering::SeqCst);
            }
        }
    }
}

/// The page for `text` in one model (runs on the model's pool, one at a time); `gone` stops a
/// generation between tokens.
fn page_of(e: &Entry, text: &str, mode: Mode, gone: &AtomicBool) -> Result<String, Failure> {
    let user = |m: String| Failure(StatusCode::UNPROCESSABLE_ENTITY, m);
    let fail = |m: String| Failure(StatusCode::INTERNAL_SERVER_ERROR, m);
    let viz = |r: attend_viz::Result<String>| r.map_err(|err| fail(err.to_string()));
    let mut opts = attend_viz::Options::new(&e.name);
    match (&e.model, mode) {
        (Loaded::Encoder(enc), _) => {
            let (trace, _) = enc.trace(text).map_err(|err| user(err.to_string()))?;
            viz(attend_viz::trace_page(&trace, &opts))
        }
        (Loaded::Causal(lm), Mode::Explain) => {
            let (trace, next) =
                attend_models::models::causal::explain_text(lm.as_ref(), text, 3, false)
                    .map_err(|err| user(err.to_string()))?;
            let top: Vec<String> = next
                .iter()
                .map(|(t, p)| format!("{} {p:.3}", crate::explain::shown(t)))
                .collect();
            opts.subtitle = Some(format!("next token (causal model): {}", top.join(" · ")));
            viz(attend_viz::trace_page(&trace, &opts))
        }
        (Loaded::Causal(lm), Mode::Generate(n)) => generation(n, lm.as_ref(), text, opts, gone),
    }
}

fn generation(
    max_tokens: usize,
    lm: &dyn CausalLm,
    text: &str,
    mut opts: attend_viz::Options,
    gone: &AtomicBool,
) -> Result<String, Failure> {
    let user = |m: String| Failure(StatusCode::UNPROCESSABLE_ENTITY, m);
    let fail = |m: String| Failure(StatusCode::INTERNAL_SERVER_ERROR, m);
    let tok = lm.tokenizer();
    let prompt = tok.encode(text).map_err(|e| user(e.to_string()))?;
    let ids: Vec<u32> = prompt.iter().map(|t| t.id).collect();
    let mut sampler = Sampler::new(SamplerConfig {
        temperature: 0.0,
        top_k: 0,
        top_p: 1.0,
        seed: 0,
    })
    .map_err(|e| fail(e.to_string()))?;
    let mut kept: Vec<GenToken> = Vec::new();
    let mut on_token = |g: &GenToken| {
        kept.push(g.clone());
        !gone.load(Ordering::SeqCst)
    };
    generate(lm, &ids, max_tokens, &mut sampler, true, &mut on_token)
        .map_err(|e| user(e.to_string()))?;
    if kept.is_empty() {
        return Err(user("the model ended the text at once".into()));
    }
    let gen = attend_models::generate::generation_trace(lm, prompt, &kept)
        .map_err(|e| fail(e.to_string()))?;
    let generated: String = gen.tokens[gen.prompt_len..]
        .iter()
        .map(|t| t.text.as_str())
        .collect();
    let logprobs: Vec<f32> = kept.iter().map(|g| g.logprob).collect();
    opts.subtitle = Some(format!("prompt: {text} · generated: {generated}"));
    attend_viz::generation_page(&gen, &logprobs, &opts).map_err(|e| fail(e.to_string()))
}

/// The app: a form, and the viewer of the answer in a frame of its own.
const INDEX: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>attend serve</title>
<link rel="icon" href="data:,">
<style>
body { font: 14px system-ui, sans-serif; margin: 0; }
header { padding: 8px 10px 0; }
h1 { font-size: 16px; margin: 0 0 2px; }
header p { margin: 0; color: #555; }
form { display: flex; gap: 8px; padding: 8px 10px; background: #f3f5f8; align-items: flex-start; flex-wrap: wrap; }
textarea { width: min(760px, 90vw); height: 3.4em; font: inherit; }
#status { padding: 4px 10px; color: #8a4b00; min-height: 1.2em; }
iframe { border: 0; width: 100%; height: calc(100vh - 150px); }
</style></head>
<body>
<header><h1>attend — which tokens does each token listen to?</h1>
<p>Type a text and pick a model. <b>explain</b> shows every layer and head's attention over the
text (for a causal model, also what it predicts next); <b>continue</b> lets a causal model
generate and shows, for each new token, the row of the position that predicted it.</p></header>
<form id="f">
  <textarea id="text" maxlength="{{MAX}}" placeholder="a text (at most {{MAX}} characters)">The animal didn't cross the road because it was tired</textarea>
  <select id="model">{{OPTIONS}}</select>
  <select id="mode" title="what to do with a causal model's text"><option value="explain">explain the text</option><option value="generate">continue it</option></select>
  <label>tokens <input id="n" type="number" min="1" max="{{MAXTOK}}" value="{{DEFTOK}}" style="width:4.5em"></label>
  <button type="submit" id="go">explain</button>
</form>
<div id="status" role="status"></div>
<iframe id="out" title="attention" sandbox="allow-scripts"></iframe>
<script>
var kinds = {};
Array.prototype.forEach.call(document.getElementById('model').options, function (o) { kinds[o.value] = o.dataset.kind; });
function sync() {
  var enc = kinds[document.getElementById('model').value] === 'encoder';
  document.getElementById('mode').disabled = enc;
  var gen = !enc && document.getElementById('mode').value === 'generate';
  document.getElementById('n').disabled = !gen;
  document.getElementById('go').textContent = gen ? 'continue' : 'explain';
}
document.getElementById('model').onchange = sync;
document.getElementById('mode').onchange = sync;
sync();
document.getElementById('f').onsubmit = async function (e) {
  e.preventDefault();
  var st = document.getElementById('status'), t0 = Date.now(), go = document.getElementById('go');
  var tick = setInterval(function () { st.textContent = 'running… ' + Math.round((Date.now() - t0) / 1000) + ' s'; }, 500);
  st.textContent = 'running…'; go.disabled = true;
  var req = { model: document.getElementById('model').value, text: document.getElementById('text').value };
  if (!document.getElementById('mode').disabled && document.getElementById('mode').value === 'generate') {
    req.mode = 'generate'; req.max_tokens = Number(document.getElementById('n').value);
  }
  try {
    var r = await fetch('/api/view', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(req) });
    var body = await r.text();
    if (!r.ok) { st.textContent = 'error ' + r.status + ': ' + JSON.parse(body).error; return; }
    st.textContent = '';
    document.getElementById('out').srcdoc = body;
  } catch (err) { st.textContent = 'error: ' + err.message; }
  finally { clearInterval(tick); go.disabled = false; }
};
</script>
</body></html>
"#;
