//! CPU time, read from `/proc`, and the open-file limit.
//!
//! The kernel counts each thread's CPU time in `/proc/PID/task/TID/stat`
//! (fields 14 and 15, `utime` and `stime`, in clock ticks, usually 10 ms)
//! and each process's in `/proc/PID/stat`. Sampling before and after a run
//! and dividing by the deliveries gives the CPU cost of one delivery:
//!
//! * for the default in-process server, the threads whose names start
//!   with `tickcast-` are the server's (the acceptor, the broadcaster, one
//!   session per connection) and every other thread is the bench's own;
//! * for a server in another process (`--server-pid`), its whole process;
//!   for several (the nodes of a cluster, and Redis), their sum.
//!
//! A clock tick is coarse: a run should last a few seconds for the figure
//! to mean much (the report says how many ticks it is made of).

use std::fs;
use std::io;
use std::time::Duration;

/// The CPU time used so far.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    /// By the server, when the bench can see it.
    pub server: Option<u64>,
    /// By the bench itself (its threads that are not the server's).
    pub bench: u64,
}

/// Where the server's CPU time is to be read.
#[derive(Debug, Clone)]
pub enum ServerCpu {
    /// In this process, threads named `tickcast-*`.
    InProcess,
    /// Other processes, added up.
    Pids(Vec<u32>),
    /// Nowhere: the report says "unknown".
    Unknown,
}

/// Reads the CPU time (in clock ticks) of `which` and of the bench.
pub fn sample(which: &ServerCpu) -> io::Result<Sample> {
    let mut s = Sample::default();
    let mut in_process = 0;
    for entry in fs::read_dir("/proc/self/task")? {
        // A thread may end between listing and reading: skip it.
        let Ok(stat) = fs::read_to_string(entry?.path().join("stat")) else {
            continue;
        };
        let Some((name, ticks)) = parse_stat(&stat) else {
            continue;
        };
        if matches!(which, ServerCpu::InProcess) && name.starts_with("tickcast-") {
            in_process += ticks;
        } else {
            s.bench += ticks;
        }
    }
    s.server = match which {
        ServerCpu::InProcess => Some(in_process),
        ServerCpu::Pids(pids) => {
            let mut sum = 0;
            for pid in pids {
                let path = format!("/proc/{pid}/stat");
                let stat = fs::read_to_string(&path)
                    .map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))?;
                let (_, ticks) = parse_stat(&stat)
                    .ok_or_else(|| io::Error::other(format!("cannot read {path}")))?;
                sum += ticks;
            }
            Some(sum)
        }
        ServerCpu::Unknown => None,
    };
    Ok(s)
}

/// The thread or process name (`comm`) and `utime + stime` of a `stat`
/// file. The name is in parentheses and may itself hold spaces and
/// parentheses, so the fields are counted from the last `)`.
fn parse_stat(stat: &str) -> Option<(&str, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?;
    // After ")": state (field 3), ppid (4)… utime is field 14, stime 15.
    let mut fields = stat[close + 1..].split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((name, utime + stime))
}

/// How long one clock tick is.
pub fn tick() -> Duration {
    use nix::unistd::{SysconfVar, sysconf};
    let hz = sysconf(SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|&hz| hz > 0)
        .unwrap_or(100);
    Duration::from_secs(1) / hz as u32
}

/// Raises the soft limit on open files to the hard limit, and checks that
/// `needed` descriptors fit under it.
pub fn ensure_files(needed: u64) -> Result<(), String> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(|e| e.to_string())?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(|e| e.to_string())?;
    }
    if needed > hard {
        return Err(format!(
            "this run needs about {needed} open files but the limit is {hard} \
             (raise the hard limit; the bench needs one per subscriber, and \
             an in-process server two more: `tickcast serve` in another process \
             and --target leave the bench only its own)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_count_from_the_last_parenthesis() {
        let stat = "123 (tickcast-sess) x) S 1 2 3 4 5 6 7 8 9 10 250 40 0 0 20 0";
        assert_eq!(parse_stat(stat), Some(("tickcast-sess) x", 290)));
    }

    #[test]
    fn this_process_can_be_sampled() {
        let me = std::process::id();
        let s = sample(&ServerCpu::Pids(vec![me])).unwrap();
        assert!(s.server.is_some());
        let twice = sample(&ServerCpu::Pids(vec![me, me])).unwrap();
        assert!(twice.server >= s.server.map(|t| 2 * t), "the sum of both");
        assert!(tick() > Duration::ZERO);
    }
}
