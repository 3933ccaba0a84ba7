//! /proc readings (server CPU, RSS, fds) and client CPU (getrusage).

use serde::{Deserialize, Serialize};

fn clk_tck() -> f64 {
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime+stime of a process in seconds.
pub fn proc_cpu_secs(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // fields after the ")" of comm: state(3) ... utime(14) stime(15)
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ut: f64 = f.get(11)?.parse().ok()?;
    let st: f64 = f.get(12)?.parse().ok()?;
    Some((ut + st) / clk_tck())
}

/// Resident set size of a process (VmRSS), KiB.
pub fn proc_rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    for l in s.lines() {
        if let Some(v) = l.strip_prefix("VmRSS:") {
            return v.trim().trim_end_matches("kB").trim().parse().ok();
        }
    }
    None
}

/// Open file descriptors of a process.
pub fn proc_fds(pid: u32) -> Option<u64> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64)
}

/// One reading of the server's /proc figures.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct ServerSample {
    /// utime+stime, seconds
    pub cpu_secs: f64,
    /// time the process's threads spent runnable but waiting for a CPU (schedstat), seconds
    pub runq_wait_secs: f64,
    /// resident set size, KiB
    pub rss_kib: u64,
    /// open file descriptors
    pub fds: u64,
}

/// The server processes' figures, summed (several `livechat serve` sharing a port with
/// `SO_REUSEPORT` count as one server). `None` without pids or when one has exited.
pub fn server_sample(pids: &[u32]) -> Option<ServerSample> {
    if pids.is_empty() {
        return None;
    }
    let mut total = ServerSample::default();
    for &pid in pids {
        total.cpu_secs += proc_cpu_secs(pid)?;
        total.runq_wait_secs += runq_wait_secs(pid);
        total.rss_kib += proc_rss_kib(pid).unwrap_or(0);
        total.fds += proc_fds(pid).unwrap_or(0);
    }
    Some(total)
}

/// CPU seconds (user+sys) of this process so far.
pub fn self_cpu_secs() -> f64 {
    rusage(libc::RUSAGE_SELF)
}

fn rusage(who: libc::c_int) -> f64 {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(who, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns the new soft limit.
pub fn raise_nofile() -> u64 {
    let mut r: libc::rlimit = unsafe { std::mem::zeroed() };
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        r.rlim_cur = r.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
    }
    r.rlim_cur as u64
}

/// Sum over a process's threads of the run-queue wait time from /proc/<pid>/task/*/schedstat.
pub fn runq_wait_secs(pid: u32) -> f64 {
    let mut tot = 0u64;
    if let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for e in rd.flatten() {
            if let Ok(s) = std::fs::read_to_string(e.path().join("schedstat")) {
                tot += s.split_whitespace().nth(1).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
            }
        }
    }
    tot as f64 / 1e9
}
