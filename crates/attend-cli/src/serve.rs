//! `attend serve`: a local web app — a text box and a model picker — answering each text with
//! the viewer page (`attend-viz`) of what the model computed.
//!
//! Bounded by construction: a request body of at most [`MAX_BODY`] bytes, a text of at most
//! `--max-chars` characters, one model run at a time per model with at most `--queue` waiting
//! (503 past that), and a deadline per request (504). A bad request is a 4xx with a JSON
//! `{"error": …}`; a handler never panics on what a client sends. Loopback by default.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
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
}

struct App {
    models: Vec<Entry>,
    max_chars: usize,
    max_tokens: usize,
    queue: usize,
    timeout: Duration,
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
        models.push(Entry {
            name: name.clone(),
            kind,
            model,
            gate: Mutex::new(()),
            waiting: AtomicUsize::new(0),
        });
    }
    let ip: std::net::IpAddr = args.host.parse().map_err(|_| {
        crate::usage!(
            "--host {} is not an IP address (give 127.0.0.1, ::1 or 0.0.0.0)",
            args.host
        )
    })?;
    let app = Arc::new(App {
        models,
        max_chars: args.max_chars as usize,
        max_tokens: args.max_tokens as usize,
        queue: args.queue as usize,
        timeout: Duration::from_secs(args.timeout),
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
    runtime.block_on(serve(app, SocketAddr::new(ip, args.port)))
}

async fn serve(app: Arc<App>, addr: SocketAddr) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
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
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(app);
    eprintln!("attend serve: listening on http://{bound}/ (Ctrl-C stops it)");
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown())
        .await
        .context("serving")?;
    eprintln!("attend serve: stopped");
    Ok(())
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
        ],
        page,
    )
        .into_response()
}

/// `POST /api/view` with `{"model": NAME, "text": TEXT}`: the viewer page. The whole
/// request — reading the body included — has the deadline.
async fn view(State(app): State<Arc<App>>, req: Request) -> Response {
    let deadline = app.timeout;
    let work = async move {
        let body = axum::body::to_bytes(req.into_body(), MAX_BODY)
            .await
            .map_err(|_| {
                Failure(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the request body is over {} KiB, or broken", MAX_BODY >> 10),
                )
            })?;
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
    let worker = app.clone();
    let job = tokio::task::spawn_blocking(move || {
        let e = &worker.models[index];
        let out = {
            let _one = e.gate.lock().unwrap_or_else(|p| p.into_inner());
            let run = std::panic::AssertUnwindSafe(|| page_of(e, &text, mode));
            worker.pool.install(|| std::panic::catch_unwind(run))
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
    // on the deadline this future is dropped; the run finishes in the background and frees
    // its place in the queue then
    match job.await {
        Ok(r) => r,
        Err(_) => Err(Failure(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the model run was lost".into(),
        )),
    }
}

/// The page for `text` in one model (runs on the model's pool, one at a time).
fn page_of(e: &Entry, text: &str, mode: Mode) -> Result<String, Failure> {
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
        (Loaded::Causal(lm), Mode::Generate(n)) => generation(n, lm.as_ref(), text, opts),
    }
}

fn generation(
    max_tokens: usize,
    lm: &dyn CausalLm,
    text: &str,
    mut opts: attend_viz::Options,
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
        true
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
<iframe id="out" title="attention"></iframe>
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
