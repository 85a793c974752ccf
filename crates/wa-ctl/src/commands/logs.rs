//! `wa-ctl logs [-f] [-n N]`: the background supervisor's log file, or a
//! pointer to the journal when it runs under systemd.
//!
//! Workers write their stdout and stderr to the same file, so it may hold
//! anything: control characters are shown escaped (newlines and tabs kept),
//! never sent to the terminal raw (issue #9).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use anyhow::{Context as _, bail};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use wa_ctl_core::config::Config;
use wa_ctl_core::lock::Probe;
use wa_ctl_core::text::escape_lines;

use super::{out, probe};
use crate::exit;

pub(super) fn logs(config: &Config, follow: bool, lines: usize) -> anyhow::Result<u8> {
    let under_journal = matches!(probe(config)?, Probe::Running { .. })
        && super::status::live_record(config, None).is_ok_and(|r| r.journal);
    if under_journal {
        out(
            "wa-ctl runs under systemd and logs to the journal: use `journalctl -u wa-ctl` (add -f to follow)\n",
        )?;
        return Ok(exit::SUCCESS);
    }
    let path = config.log_path();
    let mut file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!(
                "no log at {}: the supervisor has not run in the background with this configuration",
                path.display()
            )
        }
        Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
    };
    // Watch before reading, so that no line written in between is missed.
    let inotify = if follow {
        let inotify = Inotify::init(InitFlags::IN_CLOEXEC).context("starting inotify")?;
        inotify
            .add_watch(&path, AddWatchFlags::IN_MODIFY | AddWatchFlags::IN_ATTRIB)
            .with_context(|| format!("watching {}", path.display()))?;
        Some(inotify)
    } else {
        None
    };
    let start = tail_offset(&mut file, lines)?;
    file.seek(SeekFrom::Start(start))?;
    let mut position = start + copy_out(&mut file)?;
    // Follow with inotify: woken by the kernel when the file changes.
    let Some(inotify) = inotify else {
        return Ok(exit::SUCCESS);
    };
    loop {
        inotify.read_events().context("reading inotify events")?;
        let len = file.metadata()?.len();
        if len < position {
            // Truncated: start over from the top.
            file.seek(SeekFrom::Start(0))?;
            position = 0;
        }
        position += copy_out(&mut file)?;
    }
}

/// Copies the rest of `file` to stdout, escaped; returns how many bytes.
fn copy_out(file: &mut File) -> anyhow::Result<u64> {
    let mut buf = Vec::new();
    file.read_to_end(&mut buf)?;
    out(&escape_lines(&String::from_utf8_lossy(&buf)))?;
    Ok(buf.len() as u64)
}

/// The offset where the last `lines` lines of `file` begin.
fn tail_offset(file: &mut File, lines: usize) -> anyhow::Result<u64> {
    let len = file.metadata()?.len();
    if lines == 0 || len == 0 {
        return Ok(if lines == 0 { len } else { 0 });
    }
    // A final newline ends the last line; it does not start a new one.
    let mut last = [0u8; 1];
    file.seek(SeekFrom::Start(len - 1))?;
    file.read_exact(&mut last)?;
    let mut end = if last[0] == b'\n' { len - 1 } else { len };
    let mut seen = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    while end > 0 {
        let chunk = (end as usize).min(buf.len());
        let start = end - chunk as u64;
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut buf[..chunk])?;
        for i in (0..chunk).rev() {
            if buf[i] == b'\n' {
                seen += 1;
                if seen == lines {
                    return Ok(start + i as u64 + 1);
                }
            }
        }
        end = start;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offset(text: &str, n: usize) -> usize {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(tmp.path(), text).unwrap();
        let mut f = File::open(tmp.path()).unwrap();
        tail_offset(&mut f, n).unwrap() as usize
    }

    #[test]
    fn tail() {
        assert_eq!(offset("a\nb\nc\n", 2), 2);
        assert_eq!(offset("a\nb\nc\n", 1), 4);
        assert_eq!(offset("a\nb\nc\n", 5), 0);
        assert_eq!(offset("a\nb\nc", 1), 4);
        assert_eq!(offset("a\nb\nc\n", 0), 6);
        assert_eq!(offset("", 3), 0);
    }
}
