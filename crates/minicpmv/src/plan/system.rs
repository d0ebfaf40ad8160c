//! Facts about the machine this process runs on: performance cores, memory available now
//! (cgroup limits included), this process's resident memory. Read from /proc and /sys on
//! Linux; conservative fallbacks elsewhere.

use std::path::Path;

/// Physical performance cores this process may use: on hybrid CPUs the big cores only
/// (Intel `cpu_core` PMU list, or the highest `cpu_capacity` on ARM big.LITTLE), one per
/// physical core (SMT siblings counted once), restricted to the CPUs this process may run on
/// and to its cgroup CPU quota. At least 1.
pub fn performance_cores() -> usize {
    let available = std::thread::available_parallelism().map_or(1, |n| n.get());
    let physical = linux_performance_cores().or_else(macos_performance_cores);
    physical.map_or(available, |p| p.clamp(1, available))
}

fn linux_performance_cores() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let allowed = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .and_then(|l| parse_cpu_list(l.trim()))?;
    let sys = Path::new("/sys/devices/system/cpu");
    let read = |cpu: usize, file: &str| -> Option<String> {
        std::fs::read_to_string(sys.join(format!("cpu{cpu}/{file}")))
            .ok()
            .map(|s| s.trim().to_string())
    };
    let cpus: Vec<CpuFacts> = allowed
        .into_iter()
        .map(|cpu| CpuFacts {
            cpu,
            core: read(cpu, "topology/core_id").and_then(|s| s.parse().ok()),
            package: read(cpu, "topology/physical_package_id").and_then(|s| s.parse().ok()),
            capacity: read(cpu, "cpu_capacity").and_then(|s| s.parse().ok()),
        })
        .collect();
    let intel_p_cores = std::fs::read_to_string("/sys/devices/cpu_core/cpus")
        .ok()
        .and_then(|s| parse_cpu_list(s.trim()));
    Some(count_performance_cores(&cpus, intel_p_cores.as_deref()))
}

fn macos_performance_cores() -> Option<usize> {
    if !cfg!(target_os = "macos") {
        return None;
    }
    let out = std::process::Command::new("sysctl")
        .args(["-n", "hw.perflevel0.physicalcpu"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// One logical CPU's topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CpuFacts {
    cpu: usize,
    core: Option<u32>,
    package: Option<u32>,
    capacity: Option<u32>,
}

/// Physical performance cores among `cpus`: keep Intel P-cores when the list is known, else
/// the CPUs of the highest capacity, then count distinct (package, core) pairs.
fn count_performance_cores(cpus: &[CpuFacts], intel_p_cores: Option<&[usize]>) -> usize {
    let max_capacity = cpus.iter().filter_map(|c| c.capacity).max();
    let mut cores: Vec<(Option<u32>, Option<u32>, usize)> = cpus
        .iter()
        .filter(|c| intel_p_cores.is_none_or(|p| p.contains(&c.cpu)))
        .filter(|c| max_capacity.is_none() || c.capacity == max_capacity)
        // A CPU without topology counts as its own core.
        .map(|c| (c.package, c.core, if c.core.is_some() { 0 } else { c.cpu }))
        .collect();
    cores.sort_unstable();
    cores.dedup();
    cores.len().max(1)
}

/// Parses a kernel CPU list such as `0-3,8,10-11`.
fn parse_cpu_list(s: &str) -> Option<Vec<usize>> {
    let mut out = Vec::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => out.extend(a.trim().parse::<usize>().ok()?..=b.trim().parse().ok()?),
            None => out.push(part.trim().parse().ok()?),
        }
    }
    Some(out)
}

/// Memory this process can still use, in bytes, and where the figure comes from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AvailableMemory {
    /// Bytes this process can still make resident without swapping.
    pub bytes: u64,
    /// `MemAvailable` of /proc/meminfo, or a cgroup limit when that is tighter.
    pub source: String,
}

/// Memory available now (`MINICPMV_FAKE_AVAILABLE_BYTES` overrides it, for tests): the kernel's `MemAvailable` (free memory plus what it can reclaim
/// without swapping), lowered to the headroom left under this process's cgroup memory limit
/// (v2 `memory.max - memory.current`, v1 `limit_in_bytes - usage_in_bytes`) when there is one.
pub fn available_memory() -> Option<AvailableMemory> {
    // For tests of the planner's verdicts; never set in normal use.
    if let Some(bytes) = std::env::var("MINICPMV_FAKE_AVAILABLE_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return Some(AvailableMemory {
            bytes,
            source: "MINICPMV_FAKE_AVAILABLE_BYTES".into(),
        });
    }
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let mem_available = meminfo_field(&meminfo, "MemAvailable")?;
    let mut best = AvailableMemory {
        bytes: mem_available,
        source: "MemAvailable (/proc/meminfo)".into(),
    };
    if let Some((headroom, source)) = cgroup_headroom() {
        if headroom < best.bytes {
            best = AvailableMemory {
                bytes: headroom,
                source,
            };
        }
    }
    Some(best)
}

/// A `Key:  1234 kB` field of /proc/meminfo or /proc/self/status, in bytes.
fn meminfo_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(key)?.strip_prefix(':')?;
        let kb: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kb * 1024)
    })
}

fn cgroup_headroom() -> Option<(u64, String)> {
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    // cgroup v2: "0::/path"; the limit may sit on any ancestor.
    if let Some(path) = cgroup.lines().find_map(|l| l.strip_prefix("0::")) {
        let mut dir = Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/'));
        let mut best: Option<(u64, String)> = None;
        loop {
            let max = std::fs::read_to_string(dir.join("memory.max")).ok();
            let cur = std::fs::read_to_string(dir.join("memory.current")).ok();
            if let (Some(max), Some(cur)) = (max, cur) {
                if let (Ok(max), Ok(cur)) = (max.trim().parse::<u64>(), cur.trim().parse::<u64>()) {
                    let headroom = max.saturating_sub(cur);
                    if best.as_ref().is_none_or(|(b, _)| headroom < *b) {
                        best = Some((headroom, format!("cgroup limit ({})", dir.display())));
                    }
                }
            }
            if dir == Path::new("/sys/fs/cgroup") || !dir.pop() {
                break;
            }
        }
        if best.is_some() {
            return best;
        }
    }
    // cgroup v1.
    let v1 = Path::new("/sys/fs/cgroup/memory");
    let limit: u64 = std::fs::read_to_string(v1.join("memory.limit_in_bytes"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let usage: u64 = std::fs::read_to_string(v1.join("memory.usage_in_bytes"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    // "No limit" is reported as a huge number.
    (limit < (1 << 60)).then(|| (limit.saturating_sub(usage), "cgroup v1 limit".to_string()))
}

/// This process's resident memory now and at its peak (`VmRSS`, `VmHWM`), in bytes.
pub fn process_rss() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    Some((
        meminfo_field(&status, "VmRSS")?,
        meminfo_field(&status, "VmHWM")?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu(cpu: usize, core: u32, capacity: Option<u32>) -> CpuFacts {
        CpuFacts {
            cpu,
            core: Some(core),
            package: Some(0),
            capacity,
        }
    }

    #[test]
    fn cpu_lists_parse() {
        assert_eq!(
            parse_cpu_list("0-3,8,10-11"),
            Some(vec![0, 1, 2, 3, 8, 10, 11])
        );
        assert_eq!(parse_cpu_list("5"), Some(vec![5]));
        assert_eq!(parse_cpu_list("x"), None);
    }

    #[test]
    fn smt_siblings_count_once() {
        // 4 logical CPUs, 2 physical cores with 2 threads each.
        let cpus = [
            cpu(0, 0, None),
            cpu(1, 1, None),
            cpu(2, 0, None),
            cpu(3, 1, None),
        ];
        assert_eq!(count_performance_cores(&cpus, None), 2);
    }

    #[test]
    fn big_little_keeps_the_big_cores() {
        // A Raspberry-Pi-like uniform quad core, and a 4 little + 2 big ARM SoC.
        let pi: Vec<_> = (0..4).map(|i| cpu(i, i as u32, Some(1024))).collect();
        assert_eq!(count_performance_cores(&pi, None), 4);
        let mut soc: Vec<_> = (0..4).map(|i| cpu(i, i as u32, Some(446))).collect();
        soc.extend((4..6).map(|i| cpu(i, i as u32, Some(1024))));
        assert_eq!(count_performance_cores(&soc, None), 2);
    }

    #[test]
    fn intel_hybrid_keeps_p_cores() {
        // 2 P-cores with SMT (cpus 0-3) and 4 E-cores (cpus 4-7).
        let cpus: Vec<_> = [0, 0, 1, 1, 2, 3, 4, 5]
            .iter()
            .enumerate()
            .map(|(i, &core)| cpu(i, core, None))
            .collect();
        assert_eq!(count_performance_cores(&cpus, Some(&[0, 1, 2, 3])), 2);
    }

    #[test]
    fn meminfo_fields_are_bytes() {
        let text = "MemTotal:       24000000 kB\nMemAvailable:   12345 kB\n";
        assert_eq!(meminfo_field(text, "MemAvailable"), Some(12345 * 1024));
        assert_eq!(meminfo_field(text, "MemFree"), None);
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn this_machine_reports_memory_and_cores() {
        let avail = available_memory().expect("MemAvailable");
        assert!(avail.bytes > 0);
        let (rss, peak) = process_rss().expect("VmRSS");
        assert!(rss > 0 && peak >= rss);
        assert!(performance_cores() >= 1);
    }
}
