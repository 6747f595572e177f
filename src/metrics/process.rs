//! The standard Prometheus process metrics, read from `/proc/self` at each
//! scrape. Where `/proc` is missing or reads differently from Linux's
//! (other systems, a sandbox without it), the metrics that cannot be read
//! are left out of the exposition: nothing here panics on file contents.
//!
//! The parsers are pure functions over the files' text, so they are tested
//! on fixed samples; [`read`] is the only part that does I/O.

use std::time::{SystemTime, UNIX_EPOCH};

use super::Exposition;

/// Clock ticks per second in `/proc/*/stat` times. The kernel reports these
/// in `USER_HZ`, which is 100 on every architecture Rust's Linux targets
/// run on (it is fixed by the ABI, unlike the kernel's internal `HZ`); the
/// Prometheus Go client assumes the same.
const TICKS_PER_SECOND: f64 = 100.0;

/// What one scrape read; `None` where a file was missing or unreadable.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Process {
    cpu_seconds: Option<f64>,
    resident_bytes: Option<u64>,
    virtual_bytes: Option<u64>,
    open_fds: Option<u64>,
    max_fds: Option<u64>,
    start_time_seconds: Option<f64>,
}

/// The fields of `/proc/self/stat` used here.
#[derive(Debug, PartialEq)]
struct Stat {
    /// User plus system CPU time, in ticks.
    cpu_ticks: u64,
    /// Start time after boot, in ticks.
    start_ticks: u64,
}

/// Read this process's figures. `None` when `/proc/self` is not there at
/// all, so the exposition is not cluttered on systems without it.
pub(super) fn read() -> Option<Process> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok();
    let status = std::fs::read_to_string("/proc/self/status").ok();
    if stat.is_none() && status.is_none() {
        return None;
    }
    let stat = stat.as_deref().and_then(parse_stat);
    let status = status.as_deref().unwrap_or("");
    let boot_time = std::fs::read_to_string("/proc/stat")
        .ok()
        .as_deref()
        .and_then(parse_boot_time);
    Some(Process {
        cpu_seconds: stat.as_ref().map(|s| s.cpu_ticks as f64 / TICKS_PER_SECOND),
        resident_bytes: status_kib(status, "VmRSS:").map(|kib| kib * 1024),
        virtual_bytes: status_kib(status, "VmSize:").map(|kib| kib * 1024),
        open_fds: std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|entries| entries.count() as u64),
        max_fds: std::fs::read_to_string("/proc/self/limits")
            .ok()
            .as_deref()
            .and_then(parse_max_open_files),
        start_time_seconds: match (&stat, boot_time) {
            (Some(stat), Some(boot)) => {
                Some(boot as f64 + stat.start_ticks as f64 / TICKS_PER_SECOND)
            }
            // Without /proc/stat, fall back to nothing rather than guess.
            _ => None,
        },
    })
}

impl Process {
    pub(super) fn render(&self, out: &mut Exposition) {
        if let Some(seconds) = self.cpu_seconds {
            out.family(
                "process_cpu_seconds_total",
                "counter",
                "Total user and system CPU time spent in seconds.",
            );
            out.sample_f64("process_cpu_seconds_total", seconds);
        }
        for (name, help, value) in [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                self.resident_bytes,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                self.virtual_bytes,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors.",
                self.open_fds,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors.",
                self.max_fds,
            ),
        ] {
            if let Some(value) = value {
                out.family(name, "gauge", help);
                out.sample(name, "", value);
            }
        }
        if let Some(seconds) = self.start_time_seconds {
            out.family(
                "process_start_time_seconds",
                "gauge",
                "Start time of the process since unix epoch in seconds.",
            );
            out.sample_f64("process_start_time_seconds", seconds);
        }
    }
}

/// CPU and start times from `/proc/self/stat`. The second field (the
/// command name) is in parentheses and may itself hold spaces and
/// parentheses, so the fields are counted from its last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let (_, rest) = text.rsplit_once(')')?;
    // rest starts at field 3 (state); utime and stime are fields 14 and 15,
    // starttime is field 22.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        cpu_ticks: field(14)?.checked_add(field(15)?)?,
        start_ticks: field(22)?,
    })
}

/// A `kB` figure of `/proc/self/status`, such as `VmRSS:`.
fn status_kib(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|line| line.starts_with(key))?;
    let mut words = line[key.len()..].split_whitespace();
    let value = words.next()?.parse::<u64>().ok()?;
    (words.next() == Some("kB")).then_some(value)
}

/// The soft limit on open files from `/proc/self/limits`; `None` when it
/// is `unlimited`.
fn parse_max_open_files(text: &str) -> Option<u64> {
    let line = text
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The boot time (`btime`, seconds since the epoch) from `/proc/stat`,
/// checked against the clock so a garbled file cannot claim the future.
fn parse_boot_time(text: &str) -> Option<u64> {
    let line = text.lines().find(|line| line.starts_with("btime "))?;
    let boot = line["btime ".len()..].trim().parse::<u64>().ok()?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
    (boot <= now).then_some(boot)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let cases: &[(&str, Option<Stat>)] = &[
            (
                "4242 (linkpush) S 1 4242 4242 0 -1 4194560 1200 0 0 0 150 25 0 0 20 0 9 0 5000 123456789 2000 18446744073709551615",
                Some(Stat { cpu_ticks: 175, start_ticks: 5000 }),
            ),
            // A command name with spaces and a closing parenthesis.
            (
                "7 (a) b (c)) R 1 7 7 0 -1 0 0 0 0 0 3 4 0 0 20 0 1 0 99 1 1 1",
                Some(Stat { cpu_ticks: 7, start_ticks: 99 }),
            ),
            ("7 (short) R 1 2 3", None),
            ("no parenthesis at all", None),
            ("1 (x) S 1 1 1 0 -1 0 0 0 0 0 ten 4 0 0 20 0 1 0 99", None),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(&parse_stat(text), want, "{text}");
        }
    }

    #[test]
    fn status_figures_must_be_in_kilobytes() {
        let status = "Name:\tlinkpush\nVmSize:\t  123456 kB\nVmRSS:\t    2048 kB\nVmOdd:\t 12 MB\nVmBad:\t x kB\n";
        assert_eq!(status_kib(status, "VmRSS:"), Some(2048));
        assert_eq!(status_kib(status, "VmSize:"), Some(123456));
        assert_eq!(status_kib(status, "VmOdd:"), None);
        assert_eq!(status_kib(status, "VmBad:"), None);
        assert_eq!(status_kib(status, "VmSwap:"), None);
    }

    #[test]
    fn open_files_limit_is_the_soft_limit() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \nMax processes             63445                63445                processes \nMax open files            1024                 524288               files     \n";
        assert_eq!(parse_max_open_files(limits), Some(1024));
        let unlimited =
            "Max open files            unlimited            unlimited            files     \n";
        assert_eq!(parse_max_open_files(unlimited), None);
        assert_eq!(parse_max_open_files(""), None);
    }

    #[test]
    fn boot_time_in_the_future_is_refused() {
        assert_eq!(
            parse_boot_time("cpu  1 2 3\nbtime 1700000000\nprocesses 5\n"),
            Some(1_700_000_000)
        );
        assert_eq!(parse_boot_time("btime 99999999999\n"), None);
        assert_eq!(parse_boot_time("btime soon\n"), None);
        assert_eq!(parse_boot_time("cpu 1 2 3\n"), None);
    }

    #[test]
    fn only_figures_that_were_read_are_exposed() {
        let process = Process {
            resident_bytes: Some(4096),
            ..Process::default()
        };
        let mut out = Exposition(String::new());
        process.render(&mut out);
        assert_eq!(
            out.0,
            "# HELP process_resident_memory_bytes Resident memory size in bytes.\n\
             # TYPE process_resident_memory_bytes gauge\n\
             process_resident_memory_bytes 4096\n"
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_reads_on_linux() {
        let process = read().expect("/proc/self on Linux");
        assert!(process.resident_bytes.unwrap_or(0) > 0, "{process:?}");
        assert!(process.virtual_bytes.unwrap_or(0) > 0, "{process:?}");
        assert!(process.open_fds.unwrap_or(0) > 0, "{process:?}");
        assert!(process.cpu_seconds.is_some(), "{process:?}");
        let start = process.start_time_seconds.expect("start time");
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs_f64();
        // Started within the last day, and not in the future (with a
        // second's slack for tick rounding).
        assert!(
            start <= now + 1.0 && start > now - 86_400.0,
            "{start} vs {now}"
        );
    }
}
