//! A private PostgreSQL cluster a test may stop and start (the shared one is never touched).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::time::timeout;

use super::{free_port, send_signal};

/// Whether the tests run as root (effective uid 0): PostgreSQL refuses to, so its tools then
/// run as the `postgres` OS user (via `runuser`) and the files they need must belong to it.
pub fn is_root() -> bool {
    // From /proc rather than geteuid(2): the package forbids `unsafe` code.
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let uids = status.lines().find_map(|l| l.strip_prefix("Uid:")).expect("a Uid: line in /proc/self/status");
    uids.split_whitespace().nth(1) == Some("0")
}

/// The uid and gid of the OS user `name`, from /etc/passwd.
fn os_user_ids(name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() > 3 && f[0] == name {
            Some((f[2].parse().ok()?, f[3].parse().ok()?))
        } else {
            None
        }
    })
}

/// Makes the `postgres` OS user the owner of `path` (for a cluster run through `runuser`).
pub fn chown_to_postgres(path: &Path) {
    let (uid, gid) = os_user_ids("postgres").expect("running as root but there is no `postgres` OS user");
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
}

/// A private PostgreSQL cluster in a temp dir, on a random loopback port. Only for tests that
/// stop/start PostgreSQL: the shared test cluster is never touched. As root, every PostgreSQL
/// command runs as the `postgres` OS user via `runuser`.
pub struct PrivatePg {
    dir: tempfile::TempDir,
    pub port: u16,
    bin: PathBuf,
    running: bool,
}

impl PrivatePg {
    pub fn pg_bin() -> PathBuf {
        if let Ok(d) = std::env::var("LIVECHAT_TEST_PG_BIN") {
            return d.into();
        }
        for d in ["/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin", "/usr/local/bin", "/usr/bin"] {
            let p = Path::new(d);
            if p.join("initdb").exists() && p.join("pg_ctl").exists() {
                return p.to_path_buf();
            }
        }
        panic!("no PostgreSQL binaries: set LIVECHAT_TEST_PG_BIN");
    }

    /// The command that runs the PostgreSQL tool `tool` (as `postgres` when root).
    fn tool_command(&self, tool: &str) -> std::process::Command {
        let exe = self.bin.join(tool);
        if is_root() {
            let mut c = std::process::Command::new("runuser");
            c.arg("-u").arg("postgres").arg("--").arg(&exe);
            c
        } else {
            std::process::Command::new(&exe)
        }
    }

    /// Run a PostgreSQL tool (as `postgres` when root), bounded; panics if it cannot be run.
    async fn run(&self, tool: &str, args: &[&str]) -> std::process::Output {
        let mut cmd = tokio::process::Command::from(self.tool_command(tool));
        cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
        // pg_ctl start leaves the postmaster holding our pipes unless it logs to a file (-l).
        timeout(Duration::from_secs(60), cmd.output())
            .await
            .unwrap_or_else(|_| panic!("{tool} timed out"))
            .unwrap_or_else(|e| panic!("spawn {tool}: {e}"))
    }

    pub async fn start_new() -> PrivatePg {
        let dir = tempfile::Builder::new().prefix("lc-pg-").tempdir().expect("tempdir");
        if is_root() {
            chown_to_postgres(dir.path());
        }
        let mut pg = PrivatePg { dir, port: free_port(), bin: Self::pg_bin(), running: false };
        let data = pg.data_dir();
        let out = pg.run("initdb", &["-D", &data, "-U", "postgres", "-A", "trust", "--no-sync"]).await;
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        pg.start().await;
        pg
    }

    fn data_dir(&self) -> String {
        self.dir.path().join("data").to_str().unwrap().to_string()
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`
    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub async fn start(&mut self) {
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("pg.log").to_str().unwrap().to_string();
        let data = self.data_dir();
        let out = self.run("pg_ctl", &["-D", &data, "-l", &log, "-o", &opts, "-w", "-t", "30", "start"]).await;
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}\n{}\nlog:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        self.running = true;
    }

    /// Stop (fast mode: disconnects clients), waiting until it is down.
    pub async fn stop(&mut self) {
        let data = self.data_dir();
        let out = self.run("pg_ctl", &["-D", &data, "-m", "fast", "-w", "-t", "30", "stop"]).await;
        assert!(out.status.success(), "pg_ctl stop failed: {}", String::from_utf8_lossy(&out.stderr));
        self.running = false;
    }
}

/// PostgreSQL's processes stopped with SIGSTOP (packets unanswered, no RST: a server that
/// vanished without a trace); SIGCONT when dropped, whatever the test did.
pub struct Frozen {
    pids: Vec<i32>,
}

impl Drop for Frozen {
    fn drop(&mut self) {
        for &pid in &self.pids {
            send_signal(pid, "CONT");
        }
    }
}

impl PrivatePg {
    /// The postmaster (first line of `postmaster.pid`) and every process it started.
    fn pids(&self) -> Vec<i32> {
        let pidfile = self.dir.path().join("data/postmaster.pid");
        let text = std::fs::read_to_string(&pidfile).expect("postmaster.pid");
        let master: i32 = text.lines().next().and_then(|l| l.trim().parse().ok()).expect("postmaster pid");
        let mut pids = vec![master];
        for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            // `pid (comm) state ppid ...`; comm may contain spaces, so split after its `)`.
            let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<i32>().ok());
            if ppid == Some(master) {
                pids.push(pid);
            }
        }
        pids
    }

    /// Stops every PostgreSQL process with SIGSTOP until the guard is dropped.
    pub fn freeze(&self) -> Frozen {
        let pids = self.pids();
        for &pid in &pids {
            assert!(send_signal(pid, "STOP"), "SIGSTOP {pid}");
        }
        Frozen { pids }
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        if self.running {
            let data = self.data_dir();
            let _ = self
                .tool_command("pg_ctl")
                .args(["-D", &data, "-m", "immediate", "-w", "-t", "20", "stop"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}
