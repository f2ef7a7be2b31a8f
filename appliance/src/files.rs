//! Reading inputs and writing outputs the way coreutils do: `-` or no name is stdin/stdout.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{Context, Result, bail};

/// The largest key, signature or slip file read whole (keys and signatures are < 1 KiB; slips
/// carry a signature image and stay well under this).
pub(crate) const SMALL_FILE_MAX: u64 = 64 << 20;

/// Opens `name` for reading (`-` is stdin); refuses directories with a clear message.
pub(crate) fn open_input(name: &str) -> Result<Box<dyn Read>> {
    if name == "-" {
        return Ok(Box::new(io::stdin().lock()));
    }
    let file = File::open(name).with_context(|| name.to_string())?;
    if file.metadata().with_context(|| name.to_string())?.is_dir() {
        bail!("{name}: Is a directory");
    }
    Ok(Box::new(file))
}

/// Reads all of `name` (`-` is stdin), up to `max` bytes.
pub(crate) fn read_all(name: &str, max: u64) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    open_input(name)?.take(max + 1).read_to_end(&mut buf).with_context(|| name.to_string())?;
    if buf.len() as u64 > max {
        bail!("{name}: larger than {max} bytes");
    }
    Ok(buf)
}

/// Reads a PEM file as text.
pub(crate) fn read_pem(name: &str) -> Result<String> {
    let bytes = read_all(name, 1 << 20)?;
    String::from_utf8(bytes).with_context(|| format!("{name}: not a PEM text file"))
}

/// Writes `data` to `path` (or stdout for `-`/`None`). With `secret`, the file is created with
/// mode 0600 and never overwritten: a private key must not land in a file others can read, nor
/// silently replace another key.
pub(crate) fn write_output(path: Option<&Path>, data: &[u8], secret: bool) -> Result<()> {
    match path {
        None => write_stdout(data),
        Some(p) if p == Path::new("-") => write_stdout(data),
        Some(p) => {
            let mut opts = OpenOptions::new();
            opts.write(true);
            if secret {
                opts.create_new(true).mode(0o600);
            } else {
                opts.create(true).truncate(true).mode(0o644);
            }
            let mut f = opts.open(p).with_context(|| format!("{}", p.display()))?;
            f.write_all(data).with_context(|| format!("{}", p.display()))?;
            f.sync_all().with_context(|| format!("{}", p.display()))
        }
    }
}

fn write_stdout(data: &[u8]) -> Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(data)?;
    out.flush()?;
    Ok(())
}
