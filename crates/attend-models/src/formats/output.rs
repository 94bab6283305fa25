//! The one writer of attend's outputs (the CLI's `-o`, pages saved from Python, training's
//! checkpoints and pictures). It looks at what is at the path before it writes:
//!
//! - `-`, `/dev/stdout`, `/dev/fd/1`, `/proc/self/fd/1`: standard output (`…/2`, `/dev/stderr`:
//!   standard error), written to the open descriptor, so `>>` appends as the shell asked;
//! - nothing: a new file, created with mode `0666 & ~umask` like any program's output;
//! - a regular file: replaced whole or not at all (a temporary file in the same folder,
//!   created exclusively, given the old file's mode, renamed into place), so a failure leaves
//!   the old content and a reader never sees half a file;
//! - a symbolic link: written through to its target by the same rules (the link stays a link);
//! - a device, FIFO or terminal: written in place, as `>` would (never replaced by a file);
//! - a folder or a socket: an error naming the path, nothing touched.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::error::{io, Error, Result};

/// Writes `bytes` to `path` by the rules of this module.
pub fn write_output(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(fd) = standard_stream(path) {
        return write_stream(fd, bytes).map_err(io(path));
    }
    let own = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return replace(path, None, bytes).map_err(io(path));
        }
        Err(e) => return Err(io(path)(e)),
    };
    if !own.file_type().is_symlink() {
        return write_kind(path, &own, bytes);
    }
    // A link: the kernel follows it (its loop limit, and its protection against links
    // planted in shared folders such as /tmp, `fs.protected_symlinks`), opening it as `>`
    // would — which also creates a dangling link's target — before the target is replaced.
    if in_descriptor_folder(path) {
        // /dev/fd/N, /proc/self/fd/N: an open descriptor (a pipe, a file opened with `>>`):
        // written through it, appending, never replaced
        let mut f = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(io(path))?;
        return f
            .write_all(bytes)
            .and_then(|()| f.flush())
            .map_err(io(path));
    }
    let followed = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
                .map_err(io(path))?;
            fs::metadata(path).map_err(io(path))?
        }
        Err(e) => return Err(io(path)(e)),
    };
    if !followed.is_file() {
        return write_kind(path, &followed, bytes);
    }
    OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io(path))?;
    let target = fs::canonicalize(path).map_err(io(path))?;
    replace(&target, Some(&followed), bytes).map_err(io(&target))
}

/// Writes to what `path` is (`meta`, links followed): a regular file replaced, a folder or a
/// socket refused, anything else (a device, a FIFO, a terminal) written in place.
fn write_kind(path: &Path, meta: &fs::Metadata, bytes: &[u8]) -> Result<()> {
    let kind = meta.file_type();
    if kind.is_file() {
        return replace(path, Some(meta), bytes).map_err(io(path));
    }
    if kind.is_dir() {
        return Err(refused(path, "is a folder; name a file inside it"));
    }
    if is_socket(&kind) {
        return Err(refused(
            path,
            "is a socket; attend writes files, devices and FIFOs",
        ));
    }
    let mut f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io(path))?;
    f.write_all(bytes)
        .and_then(|()| f.flush())
        .map_err(io(path))
}

/// Whether `path` names an open descriptor (`/dev/fd/N`, `/proc/self/fd/N`, `/proc/PID/fd/N`).
fn in_descriptor_folder(path: &Path) -> bool {
    let s = path.to_string_lossy();
    s.starts_with("/dev/fd/") || (s.starts_with("/proc/") && s.contains("/fd/"))
}

fn refused(path: &Path, what: &str) -> Error {
    Error::Format {
        path: path.to_path_buf(),
        what: format!("cannot write there: {what}"),
    }
}

/// The standard stream a path names: 1 for `-` and standard output's names, 2 for standard
/// error's.
fn standard_stream(path: &Path) -> Option<i32> {
    match path.to_str()? {
        "-" | "/dev/stdout" | "/dev/fd/1" | "/proc/self/fd/1" => Some(1),
        "/dev/stderr" | "/dev/fd/2" | "/proc/self/fd/2" => Some(2),
        _ => None,
    }
}

fn write_stream(fd: i32, bytes: &[u8]) -> io::Result<()> {
    if fd == 2 {
        let mut e = io::stderr().lock();
        e.write_all(bytes)?;
        e.flush()
    } else {
        let mut o = io::stdout().lock();
        o.write_all(bytes)?;
        o.flush()
    }
}

#[cfg(unix)]
fn is_socket(kind: &fs::FileType) -> bool {
    use std::os::unix::fs::FileTypeExt;
    kind.is_socket()
}

#[cfg(not(unix))]
fn is_socket(_: &fs::FileType) -> bool {
    false
}

/// Writes a temporary file beside `path` (created exclusively: never an existing file or a
/// link someone planted), gives it the old file's mode (and owner, where allowed), and renames
/// it over `path`; removes it on any failure.
fn replace(path: &Path, old: Option<&fs::Metadata>, bytes: &[u8]) -> io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file name"))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let (tmp, mut file) = temporary(&dir, name)?;
    let done = (|| {
        // the old mode first: a private file's new content is never readable by others
        if let Some(old) = old {
            keep_mode_and_owner(&file, old)?;
        }
        file.write_all(bytes)?;
        // on disk before it takes the name: a crash leaves the old file or the new, whole
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)
    })();
    if done.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    done
}

fn temporary(dir: &Path, name: &std::ffi::OsStr) -> io::Result<(PathBuf, fs::File)> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    for _ in 0..100 {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".partial-{}-{nanos:x}-{n}", std::process::id()));
        let tmp = dir.join(tmp_name);
        // `create_new` is O_CREAT|O_EXCL: it neither follows a link nor reuses a file; the
        // mode is 0666 before the umask, as for any program's new file.
        match OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "no free temporary name beside it",
    ))
}

#[cfg(unix)]
fn keep_mode_and_owner(file: &fs::File, old: &fs::Metadata) -> io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let now = file.metadata()?;
    if now.uid() != old.uid() || now.gid() != old.gid() {
        // Only root may give a file away; anyone else keeps their own file, as `cp` does.
        let _ = std::os::unix::fs::fchown(file, Some(old.uid()), Some(old.gid()));
    }
    file.set_permissions(fs::Permissions::from_mode(old.mode() & 0o7777))
}

#[cfg(not(unix))]
fn keep_mode_and_owner(file: &fs::File, old: &fs::Metadata) -> io::Result<()> {
    file.set_permissions(old.permissions())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("attend-out-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn leftovers(d: &Path) -> Vec<String> {
        fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".partial"))
            .collect()
    }

    /// The process's umask, from /proc (no call reads it without changing it).
    fn umask() -> Option<u32> {
        let status = fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with("Umask:"))?;
        u32::from_str_radix(line.split_whitespace().nth(1)?, 8).ok()
    }

    #[test]
    fn a_regular_file_is_replaced_keeping_its_mode() {
        let d = dir("mode");
        let p = d.join("page.html");
        fs::write(&p, "old").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        write_output(&p, b"new").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"new");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o644
        );
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        write_output(&p, b"newer").unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(leftovers(&d).is_empty());
    }

    #[test]
    fn a_new_file_gets_0666_less_the_umask() {
        let d = dir("new");
        let p = d.join("fresh.json");
        write_output(&p, b"{}").unwrap();
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        match umask() {
            Some(u) => assert_eq!(mode, 0o666 & !u, "mode {mode:o}, umask {u:o}"),
            None => assert_eq!(mode & 0o600, 0o600),
        }
    }

    #[test]
    fn a_symlink_is_written_through_and_stays_a_link() {
        let d = dir("link");
        let target = d.join("real.svg");
        fs::write(&target, "old").unwrap();
        fs::set_permissions(&target, fs::Permissions::from_mode(0o640)).unwrap();
        let link = d.join("link.svg");
        symlink("real.svg", &link).unwrap();
        write_output(&link, b"new").unwrap();
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read(&target).unwrap(), b"new");
        assert_eq!(
            fs::metadata(&target).unwrap().permissions().mode() & 0o777,
            0o640
        );
        // a link to a link, relative through a folder
        fs::create_dir_all(d.join("sub")).unwrap();
        symlink("../link.svg", d.join("sub/again.svg")).unwrap();
        write_output(&d.join("sub/again.svg"), b"newer").unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"newer");
        // a dangling link creates its target
        let dangling = d.join("dangling.svg");
        symlink("later.svg", &dangling).unwrap();
        write_output(&dangling, b"made").unwrap();
        assert_eq!(fs::read(d.join("later.svg")).unwrap(), b"made");
        assert!(fs::symlink_metadata(&dangling)
            .unwrap()
            .file_type()
            .is_symlink());
        // a loop is an error, not a hang
        symlink("loop-b", d.join("loop-a")).unwrap();
        symlink("loop-a", d.join("loop-b")).unwrap();
        assert!(write_output(&d.join("loop-a"), b"x").is_err());
        assert!(leftovers(&d).is_empty());
    }

    #[test]
    fn a_device_is_written_in_place_and_a_folder_refused() {
        write_output(Path::new("/dev/null"), b"gone").unwrap();
        let m = fs::metadata("/dev/null").unwrap();
        assert!(!m.is_file(), "/dev/null must stay a device");
        let d = dir("folder");
        let e = write_output(&d, b"x").unwrap_err().to_string();
        assert!(e.contains("is a folder"), "{e}");
        assert!(leftovers(&d).is_empty());
    }

    /// An open descriptor named by /dev/fd/N or /proc/self/fd/N is written through, appending
    /// (a file opened with `>>` keeps what it had), never replaced.
    #[test]
    fn an_open_descriptor_is_appended_to() {
        use std::os::fd::AsRawFd;
        let d = dir("fd");
        let p = d.join("log.txt");
        fs::write(&p, "kept ").unwrap();
        let f = OpenOptions::new().append(true).open(&p).unwrap();
        let named = PathBuf::from(format!("/proc/self/fd/{}", f.as_raw_fd()));
        write_output(&named, b"added").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"kept added");
        assert!(leftovers(&d).is_empty());
    }

    #[test]
    fn a_fifo_gets_the_bytes() {
        let d = dir("fifo");
        let f = d.join("pipe");
        let status = std::process::Command::new("mkfifo").arg(&f).status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!("skipped: mkfifo is not available here");
            return;
        }
        let reader = {
            let f = f.clone();
            std::thread::spawn(move || fs::read(f).unwrap())
        };
        write_output(&f, b"through the pipe").unwrap();
        assert_eq!(reader.join().unwrap(), b"through the pipe");
        assert!(!fs::metadata(&f).unwrap().is_file());
    }

    #[test]
    fn a_missing_folder_is_an_error_that_leaves_nothing() {
        let d = dir("fail");
        let p = d.join("missing-folder").join("x.json");
        assert!(write_output(&p, b"x").is_err());
        assert!(leftovers(&d).is_empty());
    }

    /// A link another user planted in a shared, sticky folder (as in /tmp) is not followed
    /// where the kernel would not follow it (`fs.protected_symlinks`): the file it points at
    /// keeps its content. The planted link is made by giving it to `nobody` (root only).
    #[test]
    fn a_planted_link_in_a_sticky_folder_is_not_followed_past_the_kernel() {
        let protected =
            fs::read_to_string("/proc/sys/fs/protected_symlinks").is_ok_and(|v| v.trim() == "1");
        let ours = dir("planted");
        let victim = ours.join("victim");
        fs::write(&victim, "precious").unwrap();
        let link = Path::new("/tmp").join(format!("attend-planted-{}", std::process::id()));
        let _ = fs::remove_file(&link);
        symlink(&victim, &link).unwrap();
        // our own link in /tmp is followed (the kernel allows a link's owner)
        write_output(&link, b"ours").unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"ours");
        let planted = std::os::unix::fs::lchown(&link, Some(65534), Some(65534)).is_ok();
        if protected && planted {
            let e = write_output(&link, b"attack").unwrap_err().to_string();
            assert_eq!(fs::read(&victim).unwrap(), b"ours", "{e}");
        } else {
            eprintln!("skipped the planted case: not root, or fs.protected_symlinks is off");
        }
        let _ = fs::remove_file(&link);
    }
}
