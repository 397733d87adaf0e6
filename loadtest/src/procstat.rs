//! What `/proc` says about the server and the tool: CPU seconds and resident memory of every
//! process of the server (nginx has a master and workers), and this process's open-file limit.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;

use serde::{Deserialize, Serialize};

/// Clock ticks per second of `/proc/<pid>/stat` times (`USER_HZ`, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// Bounds the scan of `/proc`, so a huge process table cannot stall a run.
const MAX_PROCESSES: usize = 100_000;

/// Which processes make up the server.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Selector {
    /// These processes and all their descendants.
    pub pids: Vec<u32>,
    /// Every process whose `/proc/<pid>/comm` equals this name.
    pub name: Option<String>,
}

impl Selector {
    /// True when no server process was named (server figures are then not reported).
    pub fn is_empty(&self) -> bool {
        self.pids.is_empty() && self.name.is_none()
    }

    /// The server's processes now.
    pub fn resolve(&self) -> Vec<u32> {
        let table = process_table();
        let mut chosen = BTreeSet::new();
        let mut frontier: Vec<u32> = self.pids.clone();
        while let Some(pid) = frontier.pop() {
            if chosen.insert(pid) {
                frontier.extend(
                    table
                        .iter()
                        .filter(|(_, info)| info.ppid == pid)
                        .map(|(child, _)| *child),
                );
            }
        }
        if let Some(name) = &self.name {
            chosen.extend(
                table
                    .iter()
                    .filter(|(_, info)| &info.comm == name)
                    .map(|(pid, _)| *pid),
            );
        }
        chosen.into_iter().collect()
    }

    /// Samples CPU and RSS of every server process.
    pub fn sample(&self) -> Sample {
        Sample::of(&self.resolve())
    }
}

/// One process as `/proc` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Process {
    pub pid: u32,
    pub comm: String,
    /// User plus system CPU seconds since the process started.
    pub cpu_s: f64,
    /// Resident set size in KiB.
    pub rss_kib: u64,
}

/// CPU and memory of a set of processes at one moment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub processes: Vec<Process>,
}

impl Sample {
    /// Reads `pids` now; processes that are gone are left out.
    pub fn of(pids: &[u32]) -> Sample {
        Sample {
            processes: pids.iter().filter_map(|&pid| read_process(pid)).collect(),
        }
    }

    /// Total resident memory in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.processes.iter().map(|p| p.rss_kib).sum()
    }

    /// Total CPU seconds.
    pub fn cpu_s(&self) -> f64 {
        self.processes.iter().map(|p| p.cpu_s).sum()
    }

    /// CPU seconds spent between `earlier` and this sample, per process (a process that
    /// appeared meanwhile counts from zero).
    pub fn cpu_since(&self, earlier: &Sample) -> Vec<(Process, f64)> {
        self.processes
            .iter()
            .map(|now| {
                let before = earlier
                    .processes
                    .iter()
                    .find(|p| p.pid == now.pid)
                    .map_or(0.0, |p| p.cpu_s);
                (now.clone(), (now.cpu_s - before).max(0.0))
            })
            .collect()
    }
}

/// This process (the load tool itself).
pub fn own() -> Sample {
    Sample::of(&[std::process::id()])
}

struct Info {
    ppid: u32,
    comm: String,
}

fn process_table() -> BTreeMap<u32, Info> {
    let mut table = BTreeMap::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return table;
    };
    for entry in entries.flatten().take(MAX_PROCESSES) {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        if let Some((comm, fields)) = read_stat(pid) {
            let ppid = fields.get(1).and_then(|f| f.parse().ok()).unwrap_or(0);
            table.insert(pid, Info { ppid, comm });
        }
    }
    table
}

/// The command name and the fields after it (state first) of `/proc/<pid>/stat`.
fn read_stat(pid: u32) -> Option<(String, Vec<String>)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_string();
    let fields = stat
        .get(close + 1..)?
        .split_whitespace()
        .map(str::to_string)
        .collect();
    Some((comm, fields))
}

fn read_process(pid: u32) -> Option<Process> {
    let (comm, fields) = read_stat(pid)?;
    // Fields 14 and 15 of stat (utime, stime) are 11 and 12 after the command name.
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<u64>().ok()))
        .sum();
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0);
    Some(Process {
        pid,
        comm,
        cpu_s: ticks as f64 / TICKS_PER_SECOND,
        rss_kib,
    })
}

/// The soft limit on open files of this process (`ulimit -n`), if `/proc` tells it.
pub fn open_files_limit() -> Option<u64> {
    let limits = fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Open files this process holds now.
pub fn open_files() -> usize {
    fs::read_dir("/proc/self/fd").map_or(0, |dir| dir.count())
}

/// Fails with a clear message when `sockets` more connections would not fit under the open-file
/// limit, instead of failing halfway through a run with `EMFILE`.
pub fn check_open_files(sockets: usize) -> Result<(), String> {
    let Some(limit) = open_files_limit() else {
        return Ok(());
    };
    let needed = sockets as u64 + open_files() as u64 + 32;
    if needed > limit {
        return Err(format!(
            "{sockets} connections need about {needed} open files, over this process's limit of \
             {limit} (ulimit -n); use fewer subscribers per process, or run several processes"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_has_cpu_and_memory() {
        let sample = own();
        assert_eq!(sample.processes.len(), 1);
        assert!(sample.rss_kib() > 0);
        let by_pid = Selector {
            pids: vec![std::process::id()],
            name: None,
        };
        assert!(by_pid.resolve().contains(&std::process::id()));
    }

    #[test]
    fn open_file_check_refuses_too_many() {
        if let Some(limit) = open_files_limit() {
            assert!(check_open_files(limit as usize).is_err());
            assert!(check_open_files(1).is_ok());
        }
    }
}
