//! The process census: what `ps aux | grep | wc -l` was for, done right.
//!
//! It counts the supervisors of this configuration, the workers they own,
//! and the **strays**: processes that run a configured worker command (or
//! carry one of our session directories in their environment) but that no
//! supervisor owns, such as a `node index.js` started by hand. Strays cause
//! 440 conflict loops.
//!
//! # How it reads the process table
//!
//! `wa-ctl status` runs a census every time, so [`take`] reads as little as
//! it can, in two passes:
//!
//! 1. `/proc/<pid>/stat` of every process: its kernel name (`comm`), parent,
//!    state and start time. One open, one read and one close each; the line
//!    is parsed by the `procfs` crate.
//! 2. The command line, environment and owner of the **candidates** only:
//!    - processes whose kernel name is a configured worker program's file
//!      name (the kernel keeps its first 15 bytes), unless a supervisor
//!      runs them: those are never strays, and a machine may run many;
//!    - processes named `wa-ctl` or `wa-ctl-supervis` (the kernel's 15 bytes
//!      of `wa-ctl-supervisor`), which may be supervisors;
//!    - every descendant of a candidate worker that no supervisor owns
//!      (what a stray forked carries its session directory too).
//!
//! Pass 2 reads through a `/proc/<pid>` handle (`procfs::process::Process`)
//! after checking that the pid still names the process of pass 1 (same
//! start time). The owner comes from that directory's metadata: one
//! `fstat`, and no attempt to open another user's environment, which we
//! could not read.
//!
//! `procfs` rather than `sysinfo`, which this used before: sysinfo can
//! refresh a chosen set of pids, but it reads the owner from
//! `/proc/<pid>/status` (a second file per process, where an `fstat` will
//! do) and keeps every process's `stat` open between refreshes; a full read
//! of command lines and environments through it was most of the time of
//! `wa-ctl status`. Pass 1 reads `stat` itself instead of through
//! `Process::stat`, which costs twice the system calls (a directory handle,
//! and the size probe of `read_to_end`: `statx` and `lseek`).
//!
//! # What [`take`] does not see
//!
//! [`take_exhaustive`] reads the command line of every process and the
//! environment of every process of this user, as the census always did
//! (but for worker programs that a supervisor runs: never strays); it is
//! what `stop --all` uses, which must not leave a stray running. The
//! cheaper [`take`] misses:
//!
//! - a process under another name that carries one of our session
//!   directories in its environment, unless it descends from a candidate
//!   worker: for example what a worker forked, once that worker is gone and
//!   the process was reparented to init. [`crate::leftovers`] reads every
//!   environment of this user, and `wa-ctl start` and `wa-ctl stop` end
//!   such processes;
//! - a process whose kernel name is not the file name of its `argv[0]`:
//!   one started with `exec -a`, a script run by path through its `#!`
//!   line (the kernel names it after the script, `argv[0]` is the
//!   interpreter), or one that renamed itself (`prctl(PR_SET_NAME)`);
//! - a supervisor whose kernel name is neither (a renamed binary).

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use procfs::FromRead;
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::leftovers::{Leftover, end_leftovers};
use crate::protocol::ENV_SESSION_DIR;

/// How long a stray may take to die after SIGKILL.
const KILL_TIMEOUT: Duration = Duration::from_secs(5);

/// The kernel keeps the first 15 bytes of a program's file name as its name.
const COMM_LEN: usize = 15;

/// `PF_KTHREAD` in `stat`'s flags: a kernel thread, which runs no command.
const PF_KTHREAD: u32 = 0x0020_0000;

/// The `argv[0]` of a supervisor, whichever binary runs it.
const SUPERVISOR_NAME: &str = crate::process::SUPERVISOR_ARGV0;

/// The kernel names a supervisor may have: `wa-ctl` when it runs in the CLI's
/// process, the first 15 bytes of `wa-ctl-supervisor` when that binary runs.
fn is_supervisor_name(comm: &str) -> bool {
    comm == SUPERVISOR_NAME || comm == kernel_name(crate::process::SUPERVISOR_PROGRAM)
}

/// One process, as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessInfo {
    pub pid: u32,
    pub cmdline: String,
    /// Whether it runs as this user (only those may be signalled).
    #[serde(skip)]
    pub same_user: bool,
    /// When it started, in clock ticks after boot: with the pid, what tells
    /// it from a later process that reuses the pid.
    #[serde(skip)]
    pub start_time: u64,
}

/// The counts `wa-ctl status --json` reports under `"processes"`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Census {
    pub supervisors: usize,
    pub workers: usize,
    pub strays: Vec<ProcessInfo>,
}

/// What the census needs to know about the running supervisor.
#[derive(Debug, Clone, Default)]
pub struct Owned {
    /// The supervisor's pid, from its lock.
    pub supervisor: Option<u32>,
    /// The pids (and process groups) of the workers it reports.
    pub workers: Vec<u32>,
}

/// Whether `argv` runs `command`, exactly: the same arguments, and the same
/// program by path or by name. A process that does not match exactly is
/// never called a stray, so it is never signalled.
pub fn matches_command(argv: &[String], command: &[String]) -> bool {
    if argv.len() != command.len() || argv.is_empty() {
        return false;
    }
    let name = |p: &str| Path::new(p).file_name().map(|n| n.to_os_string());
    let program_ok =
        argv[0] == command[0] || (name(&argv[0]).is_some() && name(&argv[0]) == name(&command[0]));
    program_ok && argv[1..] == command[1..]
}

/// The value of `--config`/`-c` in a wa-ctl command line, if any.
fn config_arg(argv: &[String]) -> Option<&str> {
    let mut it = argv.iter();
    while let Some(arg) = it.next() {
        if arg == "--config" || arg == "-c" {
            return it.next().map(String::as_str);
        }
        if let Some(v) = arg.strip_prefix("--config=") {
            return Some(v);
        }
    }
    None
}

fn is_supervisor(argv: &[String]) -> bool {
    argv.first().is_some_and(|a| {
        Path::new(a)
            .file_name()
            .is_some_and(|n| n == SUPERVISOR_NAME)
    }) && argv.iter().any(|a| a == "--foreground")
}

/// The kernel name a process running `program` gets: the first 15 bytes of
/// its file name.
fn kernel_name(program: &str) -> String {
    let name = Path::new(program)
        .file_name()
        .map_or(&[][..], std::os::unix::ffi::OsStrExt::as_bytes);
    String::from_utf8_lossy(&name[..name.len().min(COMM_LEN)]).into_owned()
}

/// How far a census reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
    /// Command lines and environments of the candidates only.
    Candidates,
    /// The command line of every process, and the environment of every
    /// process of this user.
    Everything,
}

/// What pass 1 makes of a process's kernel name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Named `wa-ctl`: maybe a supervisor.
    Supervisor,
    /// Named like a configured worker program.
    Worker,
    /// Anything else.
    Other,
}

/// What pass 2 reads of a candidate.
#[derive(Debug, Clone, Default)]
struct Details {
    /// Empty if unreadable (a command line that is not UTF-8 matches no
    /// configured command).
    argv: Vec<String>,
    /// `argv` joined, or the kernel name in brackets.
    cmdline: String,
    same_user: bool,
    has_our_session_dir: bool,
}

/// One process of the table.
#[derive(Debug, Clone)]
struct Row {
    pid: u32,
    ppid: u32,
    start_time: u64,
    /// Neither a kernel thread nor a zombie: something that runs a command.
    live: bool,
    kind: Kind,
    details: Option<Details>,
}

/// Counts the processes of this configuration, reading the command line
/// and environment of candidates only (see the module documentation for
/// what that misses). What `status` uses.
pub fn take(config: &Config, owned: &Owned) -> Census {
    census(config, owned, Reach::Candidates)
}

/// Counts the processes of this configuration, reading the command line of
/// every process and the environment of every process of this user. What
/// `stop --all` uses: it must not leave a stray running.
pub fn take_exhaustive(config: &Config, owned: &Owned) -> Census {
    census(config, owned, Reach::Everything)
}

/// What a census looks for, from the configuration.
#[derive(Debug, Clone)]
struct Targets {
    /// The configuration file, absolute, as a supervisor's `--config`
    /// names it.
    config_path: Option<PathBuf>,
    /// The configured worker commands.
    commands: Vec<Vec<String>>,
    /// The kernel names of their programs.
    worker_names: Vec<String>,
}

impl Targets {
    fn new(config_path: Option<PathBuf>, commands: Vec<Vec<String>>) -> Self {
        let worker_names = commands
            .iter()
            .filter_map(|c| c.first())
            .map(|program| kernel_name(program))
            .collect();
        Targets {
            config_path,
            commands,
            worker_names,
        }
    }

    fn of(config: &Config) -> Self {
        Targets::new(
            config
                .source
                .path()
                .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())),
            config.sessions.iter().map(|s| s.command.clone()).collect(),
        )
    }

    /// What a process's kernel name makes it for pass 2.
    fn kind(&self, comm: &str) -> Kind {
        if is_supervisor_name(comm) {
            Kind::Supervisor
        } else if self.worker_names.iter().any(|name| name == comm) {
            Kind::Worker
        } else {
            Kind::Other
        }
    }
}

fn census(config: &Config, owned: &Owned, reach: Reach) -> Census {
    let targets = Targets::of(config);
    let reader = DetailsReader {
        uid: nix::unistd::geteuid().as_raw(),
        sessions_root: config.supervisor.state_dir.join("sessions"),
    };
    // The running supervisor named its workers: a pid it named that the
    // process table lists is counted without reading its `stat` (with
    // 1,000 sessions that is most of the table). `stop --all` reads them.
    let named: std::collections::HashSet<u32> = match reach {
        Reach::Candidates => owned.workers.iter().copied().collect(),
        Reach::Everything => Default::default(),
    };
    let rows = read_table(
        |comm| targets.kind(comm),
        |pid| named.contains(&pid).then(|| owned.supervisor.unwrap_or(0)),
    );
    count(
        &targets,
        owned,
        reach,
        std::process::id(),
        rows,
        |row: &Row| reader.read(row),
    )
}

/// Pass 2 and the count, over the rows of pass 1: `read` reads what the
/// census needs of a candidate. Pure but for `read`.
fn count(
    targets: &Targets,
    owned: &Owned,
    reach: Reach,
    me: u32,
    mut rows: Vec<Row>,
    read: impl Fn(&Row) -> Option<Details>,
) -> Census {
    let index: HashMap<u32, usize> = rows.iter().enumerate().map(|(i, r)| (r.pid, i)).collect();
    let workers: std::collections::HashSet<u32> = owned.workers.iter().copied().collect();
    let owned_process = |row: &Row| Some(row.pid) == owned.supervisor || workers.contains(&row.pid);
    let wanted = |row: &Row| {
        row.live
            && row.pid != me
            && match reach {
                Reach::Everything => true,
                Reach::Candidates => row.kind != Kind::Other && !owned_process(row),
            }
    };

    // Supervisors first: whether a worker is supervised depends on them.
    for row in rows.iter_mut() {
        if row.kind != Kind::Worker && wanted(row) {
            row.details = read(row);
        }
    }
    let supervisor_at = |rows: &[Row], i: usize| {
        Some(rows[i].pid) == owned.supervisor
            || rows[i]
                .details
                .as_ref()
                .is_some_and(|d| is_supervisor(&d.argv))
    };
    // Whether some ancestor is a wa-ctl supervisor (this one or another
    // configuration's): its workers and their children are not strays.
    let supervised = |rows: &[Row], i: usize| {
        let mut ppid = rows[i].ppid;
        for _ in 0..64 {
            let Some(&parent) = index.get(&ppid) else {
                return false;
            };
            if supervisor_at(rows, parent) {
                return true;
            }
            ppid = rows[parent].ppid;
        }
        false
    };
    // A supervised process is never a stray: nothing more to read of the
    // workers of other supervisors, however many there are.
    let mut roots = Vec::new();
    for i in 0..rows.len() {
        if rows[i].kind == Kind::Worker && wanted(&rows[i]) && !supervised(&rows, i) {
            rows[i].details = read(&rows[i]);
            roots.push(i);
        }
    }
    // What an unsupervised candidate forked may carry our session directory.
    if reach == Reach::Candidates && !roots.is_empty() {
        let mut children: HashMap<u32, Vec<usize>> = HashMap::new();
        for (i, row) in rows.iter().enumerate() {
            children.entry(row.ppid).or_default().push(i);
        }
        // Guards against a cycle that pid reuse during the scan could make.
        let mut seen = vec![false; rows.len()];
        let mut queue = roots;
        while let Some(i) = queue.pop() {
            for &child in children.get(&rows[i].pid).map_or(&[][..], Vec::as_slice) {
                if std::mem::replace(&mut seen[child], true) {
                    continue;
                }
                let row = &rows[child];
                if row.live && row.pid != me && row.details.is_none() {
                    rows[child].details = read(&rows[child]);
                }
                queue.push(child);
            }
        }
    }

    let mut census = Census::default();
    for (i, row) in rows.iter().enumerate() {
        if !row.live || row.pid == me {
            continue;
        }
        if Some(row.pid) == owned.supervisor {
            census.supervisors += 1;
            continue;
        }
        let details = row.details.as_ref();
        if let Some(d) = details.filter(|d| is_supervisor(&d.argv)) {
            // Any other supervisor started with this configuration by this
            // user (it cannot hold the lock, but it is one more process all
            // the same).
            let theirs = config_arg(&d.argv)
                .map(|c| std::path::absolute(c).unwrap_or_else(|_| PathBuf::from(c)));
            if d.same_user && theirs == targets.config_path {
                census.supervisors += 1;
            }
            continue;
        }
        if workers.contains(&row.pid) {
            census.workers += 1;
            continue;
        }
        let Some(d) = details else { continue };
        let runs_worker_command = targets
            .commands
            .iter()
            .any(|command| matches_command(&d.argv, command));
        if (runs_worker_command || d.has_our_session_dir) && !supervised(&rows, i) {
            census.strays.push(ProcessInfo {
                pid: row.pid,
                cmdline: d.cmdline.clone(),
                same_user: d.same_user,
                start_time: row.start_time,
            });
        }
    }
    census.strays.sort_by_key(|s| s.pid);
    census
}

/// Pass 1: `stat` of every process, with `kind` made of its kernel name.
fn read_table(kind: impl Fn(&str) -> Kind, named_worker: impl Fn(u32) -> Option<u32>) -> Vec<Row> {
    let (Ok(proc_dir), Ok(entries)) = (File::open("/proc"), std::fs::read_dir("/proc")) else {
        return Vec::new();
    };
    let mut rows = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        // A worker the supervisor named: its parent is that supervisor.
        if let Some(ppid) = named_worker(pid) {
            rows.push(Row {
                pid,
                ppid,
                start_time: 0,
                live: true,
                kind: Kind::Worker,
                details: None,
            });
            continue;
        }
        // Gone since the directory was listed: not counted.
        let Some(stat) = read_stat(&proc_dir, pid) else {
            continue;
        };
        rows.push(Row {
            pid,
            ppid: u32::try_from(stat.ppid).unwrap_or(0),
            start_time: stat.starttime,
            live: stat.flags & PF_KTHREAD == 0 && !matches!(stat.state, 'Z' | 'X'),
            kind: kind(&stat.comm),
            details: None,
        });
    }
    rows
}

/// `/proc/<pid>/stat`, in one read: the kernel writes the whole line at
/// once, and its newline saves the read that would find the end of file.
fn read_stat(proc_dir: &File, pid: u32) -> Option<procfs::process::Stat> {
    let fd = nix::fcntl::openat(
        proc_dir,
        format!("{pid}/stat").as_str(),
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .ok()?;
    let mut file = File::from(fd);
    // The line is about 300 bytes; 52 fields of at most 20 digits fit.
    let mut buf = [0u8; 2048];
    let mut len = 0;
    while len < buf.len() {
        match file.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => {
                len += n;
                if buf[len - 1] == b'\n' {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    procfs::process::Stat::from_read(&buf[..len]).ok()
}

/// Pass 2: reads what the census needs of one candidate.
struct DetailsReader {
    uid: u32,
    sessions_root: PathBuf,
}

impl DetailsReader {
    /// `None` if the process is gone, or its pid names another process now.
    fn read(&self, row: &Row) -> Option<Details> {
        let process = procfs::process::Process::new(row.pid as i32).ok()?;
        let stat = process.stat().ok()?;
        if stat.starttime != row.start_time {
            return None;
        }
        let same_user = process.uid().ok() == Some(self.uid);
        let argv = process.cmdline().unwrap_or_default();
        let cmdline = if argv.is_empty() {
            format!("[{}]", stat.comm)
        } else {
            argv.join(" ")
        };
        // Another user's environment is not readable: not even tried. A
        // supervisor's is not looked at: a supervisor is never a stray.
        let has_our_session_dir = same_user
            && !is_supervisor(&argv)
            && process.environ().is_ok_and(|mut environ| {
                environ
                    .remove(std::ffi::OsStr::new(ENV_SESSION_DIR))
                    .is_some_and(|dir| {
                        let dir = Path::new(&dir);
                        dir.starts_with(&self.sessions_root) && dir != self.sessions_root
                    })
            });
        Some(Details {
            argv,
            cmdline,
            same_user,
            has_our_session_dir,
        })
    }
}

/// Ends strays of this user: SIGTERM, up to `grace` for them to exit, then
/// SIGKILL, all through pidfds (see [`end_leftovers`]). Returns those it
/// was asked to end. Processes of other users are left alone (and could not
/// be signalled anyway).
pub fn end_strays(strays: &[ProcessInfo], grace: Duration) -> std::io::Result<Vec<ProcessInfo>> {
    let mine: Vec<ProcessInfo> = strays.iter().filter(|s| s.same_user).cloned().collect();
    let targets: Vec<Leftover> = mine
        .iter()
        .map(|s| Leftover {
            pid: s.pid,
            cmdline: s.cmdline.clone(),
            start_time: s.start_time,
        })
        .collect();
    end_leftovers(&targets, grace, KILL_TIMEOUT)?;
    Ok(mine)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn exact_command_match() {
        let cmd = v(&["node", "index.js"]);
        assert!(matches_command(&v(&["node", "index.js"]), &cmd));
        assert!(matches_command(&v(&["/usr/bin/node", "index.js"]), &cmd));
        assert!(!matches_command(&v(&["node", "index.js", "--x"]), &cmd));
        assert!(!matches_command(&v(&["node", "other.js"]), &cmd));
        assert!(!matches_command(&v(&["nodejs", "index.js"]), &cmd));
        assert!(!matches_command(&v(&["vim", "index.js"]), &cmd));
        assert!(!matches_command(&[], &cmd));
        let abs = v(&["/opt/wa/wa-worker"]);
        assert!(matches_command(&v(&["/opt/wa/wa-worker"]), &abs));
        assert!(matches_command(&v(&["wa-worker"]), &abs));
    }

    #[test]
    fn config_argument() {
        assert_eq!(
            config_arg(&v(&[
                "wa-ctl",
                "--config",
                "/x.toml",
                "start",
                "--foreground"
            ])),
            Some("/x.toml")
        );
        assert_eq!(config_arg(&v(&["wa-ctl", "-c", "y", "start"])), Some("y"));
        assert_eq!(
            config_arg(&v(&["wa-ctl", "--config=/z", "start"])),
            Some("/z")
        );
        assert_eq!(config_arg(&v(&["wa-ctl", "start"])), None);
    }

    #[test]
    fn kernel_names_are_the_first_15_bytes_of_the_file_name() {
        assert_eq!(kernel_name("node"), "node");
        assert_eq!(kernel_name("/opt/wa/wa-worker"), "wa-worker");
        assert_eq!(kernel_name("./a-very-long-worker-name"), "a-very-long-wor");
    }

    const CONFIG: &str = "/etc/wa-ctl/wa-ctl.toml";

    fn targets() -> Targets {
        Targets::new(
            Some(PathBuf::from(CONFIG)),
            vec![v(&["/opt/wa/wa-worker", "--connect"])],
        )
    }

    fn row(pid: u32, ppid: u32, kind: Kind) -> Row {
        Row {
            pid,
            ppid,
            start_time: u64::from(pid) * 10,
            live: true,
            kind,
            details: None,
        }
    }

    fn details(argv: &[&str], has_our_session_dir: bool) -> Details {
        Details {
            argv: v(argv),
            cmdline: argv.join(" "),
            same_user: true,
            has_our_session_dir,
        }
    }

    /// What /proc would say of each pid, and which pids pass 2 read.
    struct FakeProc {
        details: HashMap<u32, (Vec<String>, bool)>,
        read: std::cell::RefCell<Vec<u32>>,
    }

    impl FakeProc {
        fn new(entries: &[(u32, &[&str], bool)]) -> Self {
            FakeProc {
                details: entries
                    .iter()
                    .map(|(pid, argv, marker)| (*pid, (v(argv), *marker)))
                    .collect(),
                read: Default::default(),
            }
        }

        fn read(&self, row: &Row) -> Option<Details> {
            self.read.borrow_mut().push(row.pid);
            let (argv, marker) = self.details.get(&row.pid)?;
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            Some(details(&argv, *marker))
        }

        fn read_pids(&self) -> Vec<u32> {
            let mut pids = self.read.borrow().clone();
            pids.sort_unstable();
            pids
        }
    }

    const ME: u32 = 999;

    /// init, sshd, our supervisor (100) with its worker (101), a shell
    /// (200) and, started from it by hand, the worker command (300).
    fn table() -> Vec<Row> {
        vec![
            row(1, 0, Kind::Other),
            row(50, 1, Kind::Other),
            row(100, 1, Kind::Supervisor),
            row(101, 100, Kind::Worker),
            row(200, 1, Kind::Other),
            row(300, 200, Kind::Worker),
            row(ME, 200, Kind::Supervisor),
        ]
    }

    fn owned() -> Owned {
        Owned {
            supervisor: Some(100),
            workers: vec![101],
        }
    }

    #[test]
    fn status_reads_only_the_candidates() {
        let proc = FakeProc::new(&[(300, &["wa-worker", "--connect"], false)]);
        let census = count(&targets(), &owned(), Reach::Candidates, ME, table(), |r| {
            proc.read(r)
        });
        assert_eq!((census.supervisors, census.workers), (1, 1));
        let strays: Vec<u32> = census.strays.iter().map(|s| s.pid).collect();
        assert_eq!(strays, [300]);
        assert_eq!(census.strays[0].start_time, 3000);
        // Neither the owned processes, nor other names, nor itself.
        assert_eq!(proc.read_pids(), [300]);
    }

    #[test]
    fn the_exhaustive_census_reads_everything_and_counts_the_same() {
        let proc = FakeProc::new(&[
            (1, &["init"], false),
            (50, &["sshd"], false),
            (
                100,
                &["wa-ctl", "--config", CONFIG, "start", "--foreground"],
                false,
            ),
            (101, &["/opt/wa/wa-worker", "--connect"], true),
            (200, &["bash"], false),
            (300, &["wa-worker", "--connect"], false),
        ]);
        let census = count(&targets(), &owned(), Reach::Everything, ME, table(), |r| {
            proc.read(r)
        });
        assert_eq!((census.supervisors, census.workers), (1, 1));
        assert_eq!(census.strays.len(), 1);
        // All but itself and what a supervisor runs (never a stray).
        assert_eq!(proc.read_pids(), [1, 50, 100, 200, 300]);
    }

    #[test]
    fn what_a_stray_forked_with_our_session_dir_is_a_stray() {
        let mut rows = table();
        rows.push(row(301, 300, Kind::Other));
        rows.push(row(302, 301, Kind::Other));
        let proc = FakeProc::new(&[
            // Not the configured command (other arguments), but it has our
            // session directory, and so has what it forked.
            (300, &["wa-worker", "--other"], true),
            (301, &["chrome"], true),
            (302, &["chrome", "--type=renderer"], false),
        ]);
        let census = count(&targets(), &owned(), Reach::Candidates, ME, rows, |r| {
            proc.read(r)
        });
        let strays: Vec<u32> = census.strays.iter().map(|s| s.pid).collect();
        assert_eq!(strays, [300, 301]);
        assert_eq!(proc.read_pids(), [300, 301, 302]);
    }

    #[test]
    fn an_orphan_under_another_name_is_seen_only_by_the_exhaustive_census() {
        let mut rows = table();
        rows.push(row(400, 1, Kind::Other));
        let proc = FakeProc::new(&[(400, &["chrome"], true)]);
        let census = count(
            &targets(),
            &owned(),
            Reach::Candidates,
            ME,
            rows.clone(),
            |r| proc.read(r),
        );
        assert!(census.strays.is_empty());
        let census = count(&targets(), &owned(), Reach::Everything, ME, rows, |r| {
            proc.read(r)
        });
        let strays: Vec<u32> = census.strays.iter().map(|s| s.pid).collect();
        assert_eq!(strays, [400]);
    }

    #[test]
    fn workers_of_other_supervisors_are_not_strays() {
        let mut rows = table();
        // Another configuration's supervisor and its worker, and a second
        // supervisor of ours that could not take the lock.
        rows.push(row(500, 1, Kind::Supervisor));
        rows.push(row(501, 500, Kind::Worker));
        rows.push(row(600, 1, Kind::Supervisor));
        let proc = FakeProc::new(&[
            (300, &["bash"], false),
            (
                500,
                &[
                    "/usr/bin/wa-ctl",
                    "-c",
                    "/other.toml",
                    "start",
                    "--foreground",
                ],
                false,
            ),
            (501, &["wa-worker", "--connect"], true),
            (
                600,
                &[
                    "wa-ctl",
                    &format!("--config={CONFIG}"),
                    "start",
                    "--foreground",
                ],
                false,
            ),
        ]);
        let census = count(&targets(), &owned(), Reach::Candidates, ME, rows, |r| {
            proc.read(r)
        });
        assert_eq!(census.supervisors, 2);
        assert!(census.strays.is_empty(), "{:?}", census.strays);
        // Nothing is read of a supervised process.
        assert_eq!(proc.read_pids(), [300, 500, 600]);
    }

    #[test]
    fn zombies_and_kernel_threads_are_not_counted() {
        let mut rows = table();
        rows[3].live = false;
        rows[5].live = false;
        let proc = FakeProc::new(&[(300, &["wa-worker", "--connect"], false)]);
        let census = count(&targets(), &owned(), Reach::Candidates, ME, rows, |r| {
            proc.read(r)
        });
        assert_eq!((census.supervisors, census.workers), (1, 0));
        assert!(census.strays.is_empty());
        assert!(proc.read_pids().is_empty());
    }
}
