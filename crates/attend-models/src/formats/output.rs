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

/// How many symbolic links [`write_output`] follows before it calls the path a loop (Linux's
/// own limit).
const MAX_LINKS: usize = 40;

/// Writes `bytes` to `path` by the rules of this module.
pub fn write_output(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(fd) = standard_stream(path) {
        return write_stream(fd, bytes).map_err(io(path));
    }
    let mut target = path.to_path_buf();
    for _ in 0..MAX_LINKS {
        let meta = match fs::symlink_metadata(&target) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return replace(&target, None, bytes).map_err(io(&target));
            }
            Err(e) => return Err(io(&target)(e)),
        };
        let kind = meta.file_type();
        if kind.is_symlink() {
            let link = fs::read_link(&target).map_err(io(&target))?;
            target = match target.parent() {
                Some(dir) if link.is_relative() => dir.join(link),
                _ => link,
            };
            continue;
        }
        if kind.is_file() {
            return replace(&target, Some(&meta), bytes).map_err(io(&target));
        }
        if kind.is_dir() {
            return Err(refused(&target, "is a folder; name a file inside it"));
        }
        if is_socket(&kind) {
            return Err(refused(
                &target,
                "is a socket; attend writes files, devices and FIFOs",
            ));
        }
        // A device, a FIFO or a terminal: written in place, never replaced.
        let mut f = OpenOptions::new()
            .write(true)
            .open(&target)
            .map_err(io(&target))?;
        return f
            .write_all(bytes)
            .and_then(|()| f.flush())
            .map_err(io(&target));
    }
    Err(refused(
        path,
        &format!("more than {MAX_LINKS} symbolic links (a loop?)"),
    ))
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
        file.write_all(bytes)?;
        if let Some(old) = old {
            keep_mode_and_owner(&file, old)?;
        }
        file.flush()?;
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
    fn a_new_file_gets_the_umask_mode_not_0600() {
        let d = dir("new");
        let p = d.join("fresh.json");
        write_output(&p, b"{}").unwrap();
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        // 0666 & ~umask: whatever the umask, the group/other read bits follow it, and a
        // usual umask (022, 002) leaves them readable.
        assert_eq!(mode & 0o600, 0o600);
        assert_ne!(
            mode, 0o600,
            "mode {mode:o}: the mkstemp 0600 would hide the file"
        );
    }

    #[test]
    fn a_symlink_is_written_through_and_stays_a_link() {
        let d = dir("link");
        let target = d.join("real.svg");
        fs::write(&target, "old").unwrap();
        let link = d.join("link.svg");
        symlink("real.svg", &link).unwrap();
        write_output(&link, b"new").unwrap();
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read(&target).unwrap(), b"new");
        // A dangling link creates its target.
        let dangling = d.join("dangling.svg");
        symlink("later.svg", &dangling).unwrap();
        write_output(&dangling, b"made").unwrap();
        assert_eq!(fs::read(d.join("later.svg")).unwrap(), b"made");
        assert!(fs::symlink_metadata(&dangling)
            .unwrap()
            .file_type()
            .is_symlink());
        // A loop is an error, not a hang.
        symlink("loop-b", d.join("loop-a")).unwrap();
        symlink("loop-a", d.join("loop-b")).unwrap();
        assert!(write_output(&d.join("loop-a"), b"x").is_err());
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
    fn a_failed_write_leaves_the_old_file() {
        let d = dir("fail");
        let p = d.join("missing-folder").join("x.json");
        assert!(write_output(&p, b"x").is_err());
        assert!(leftovers(&d).is_empty());
    }
}
