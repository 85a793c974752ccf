//! Real etcd members on loopback for the tests: a temporary data dir, free
//! ports, a wait on "does it answer" with a deadline, and a kill and reap
//! on drop. One member, or a three-member cluster for the leader-loss case.

use std::fs::File;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use etcd_client::{Client, ConnectOptions};
use tokio::time::{Instant, timeout};

/// How long a cluster has to answer after its members started.
const START_DEADLINE: Duration = Duration::from_secs(30);

/// How often to start over with new ports when a member lost a port to
/// another process between our probe and its bind.
const START_ATTEMPTS: usize = 5;

/// Outside CI the skip is printed, never silent; with `CI=true` it is a
/// failure, because `.ci/run` installs etcd (as
/// crates/wa-ctl/tests/integration/harness.rs does).
pub fn skip(reason: &str) {
    use std::io::Write as _;
    if std::env::var("CI").is_ok_and(|ci| ci == "true") {
        panic!("CI=true, where no test may skip: {reason}");
    }
    let _ = writeln!(std::io::stderr(), "SKIPPED: {reason}");
}

/// The `etcd` binary on `$PATH`, or a skip.
pub fn etcd_binary() -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("etcd"))
        .find(|p| p.is_file());
    if found.is_none() {
        skip("etcd is not on PATH (Debian: apt-get install etcd-server)");
    }
    found
}

/// A port that was free a moment ago. Another process can take it before
/// etcd binds it: the start then fails and is retried with new ports.
fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a loopback port");
    listener.local_addr().expect("local address").port()
}

/// One etcd process, killed and reaped when dropped.
pub struct Member {
    pub name: String,
    pub client_url: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Member {
    /// The member's process id while it runs: tests freeze it with SIGSTOP
    /// and thaw it with SIGCONT (a SIGKILL on drop ends a frozen one too).
    // An allow, not an expect: wa-ctl's failover tests use it, and this
    // crate's own tests, which include the same file, do not.
    #[allow(dead_code, reason = "used by wa-ctl's failover tests only")]
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the member with SIGKILL and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn exited(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => !matches!(child.try_wait(), Ok(None)),
            None => true,
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One or more etcd members forming one cluster, each with its own data
/// dir under one temporary directory.
pub struct Cluster {
    pub members: Vec<Member>,
    // Dropped after the members (fields drop in order): the data dirs go
    // only once nothing writes to them.
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// A single member; `None` when the test is skipped.
    pub async fn one() -> Option<Cluster> {
        Cluster::start(1).await
    }

    /// Three members; `None` when the test is skipped.
    pub async fn three() -> Option<Cluster> {
        Cluster::start(3).await
    }

    /// Every member's client URL.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    async fn start(n_members: usize) -> Option<Cluster> {
        let etcd = etcd_binary()?;
        let mut last_failure = String::new();
        for _attempt in 0..START_ATTEMPTS {
            match Cluster::try_start(&etcd, n_members).await {
                Ok(cluster) => return Some(cluster),
                Err(failure) => last_failure = failure,
            }
        }
        panic!("etcd did not start in {START_ATTEMPTS} attempts; last: {last_failure}");
    }

    #[expect(clippy::disallowed_methods, reason = "the tests run a real etcd")]
    async fn try_start(etcd: &PathBuf, n_members: usize) -> Result<Cluster, String> {
        let dir = tempfile::tempdir().expect("temporary directory");
        let ports: Vec<(u16, u16)> = (0..n_members).map(|_| (free_port(), free_port())).collect();
        let name = |i: usize| format!("m{i}");
        let initial_cluster = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("{}=http://127.0.0.1:{peer}", name(i)))
            .collect::<Vec<_>>()
            .join(",");
        let mut members = Vec::new();
        for (i, (client_port, peer_port)) in ports.iter().enumerate() {
            let client_url = format!("http://127.0.0.1:{client_port}");
            let peer_url = format!("http://127.0.0.1:{peer_port}");
            let log = dir.path().join(format!("{}.log", name(i)));
            let log_file = File::create(&log).expect("member log");
            let mut cmd = Command::new(etcd);
            cmd.env_clear()
                .arg("--name")
                .arg(name(i))
                .arg("--data-dir")
                .arg(dir.path().join(name(i)))
                .args(["--listen-client-urls", &client_url])
                .args(["--advertise-client-urls", &client_url])
                .args(["--listen-peer-urls", &peer_url])
                .args(["--initial-advertise-peer-urls", &peer_url])
                .args(["--initial-cluster", &initial_cluster])
                .args(["--initial-cluster-state", "new"])
                .args(["--initial-cluster-token", "wa-ctl-test"])
                // Fast elections on loopback: the leader-loss test then
                // measures etcd's failover, not its WAN defaults.
                .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
                .args(["--logger", "zap", "--log-level", "warn"])
                .stdin(Stdio::null())
                .stdout(log_file.try_clone().expect("member log"))
                .stderr(log_file)
                // Its own group: a Ctrl-C in the terminal goes to the test
                // process, whose drop then reaps the member.
                .process_group(0);
            let child = cmd.spawn().map_err(|e| format!("spawn etcd: {e}"))?;
            members.push(Member {
                name: name(i),
                client_url,
                child: Some(child),
                log,
            });
        }
        let mut cluster = Cluster { members, _dir: dir };
        cluster.wait_until_answering().await.map(|()| cluster)
    }

    /// Polls every member's status until each answers, a member exits (a
    /// lost port race, most likely), or the deadline passes.
    async fn wait_until_answering(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_DEADLINE;
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        let mut answered = vec![false; self.members.len()];
        loop {
            tick.tick().await;
            for (i, member) in self.members.iter().enumerate() {
                if !answered[i] {
                    // Answering with a leader: before one is elected, a
                    // member answers status but not a lease grant.
                    answered[i] = status(&member.client_url)
                        .await
                        .is_some_and(|(_, leader)| leader != 0);
                }
            }
            if answered.iter().all(|a| *a) {
                return Ok(());
            }
            // An exited member most likely lost a port race: the caller
            // drops this cluster, which kills the others, and retries.
            if let Some(member) = self
                .members
                .iter_mut()
                .find_map(|m| m.exited().then_some(&*m))
            {
                return Err(format!("{} exited:\n{}", member.name, member.log_tail()));
            }
            if Instant::now() >= deadline {
                let logs: Vec<String> = self
                    .members
                    .iter()
                    .map(|m| format!("{}:\n{}", m.name, m.log_tail()))
                    .collect();
                return Err(format!(
                    "not answering after {START_DEADLINE:?}\n{}",
                    logs.join("\n")
                ));
            }
        }
    }

    /// Kills the member that is the leader now, and returns its index.
    pub async fn kill_leader(&mut self) -> usize {
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            for (i, member) in self.members.iter_mut().enumerate() {
                if member.exited() {
                    continue;
                }
                if let Some((member_id, leader)) = status(&member.client_url).await
                    && member_id == leader
                {
                    member.kill();
                    return i;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no leader within {START_DEADLINE:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A member's (own id, leader id), if it answers within a short deadline.
async fn status(client_url: &str) -> Option<(u64, u64)> {
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_millis(500))
        .with_timeout(Duration::from_secs(1));
    let attempt = async {
        let mut client = Client::connect([client_url], Some(options)).await.ok()?;
        let status = client.status().await.ok()?;
        let member_id = status.header()?.member_id();
        Some((member_id, status.leader()))
    };
    timeout(Duration::from_secs(2), attempt)
        .await
        .ok()
        .flatten()
}
