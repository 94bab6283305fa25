//! Writing a command's output: to standard output, or through the one writer of attend's
//! outputs ([`attend_models::formats::output`]), which looks at what is at the path first.

use std::io::Write;
use std::path::Path;

use anyhow::Result;

/// Writes `bytes` to `path` (`-` is standard output; a regular file is replaced whole or not
/// at all, keeping its mode; a link is written through; a device or FIFO in place), or to
/// standard output when there is no path.
pub fn write(path: Option<&Path>, bytes: &[u8]) -> Result<()> {
    match path {
        Some(p) => write_file(p, bytes),
        None => {
            let mut so = std::io::stdout().lock();
            so.write_all(bytes)?;
            so.flush()?;
            Ok(())
        }
    }
}

/// [`write`] to a path.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    Ok(attend_models::formats::output::write_output(path, bytes)?)
}
