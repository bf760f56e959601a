//! Human output of `dog`: tables, key-value details and dates.

use serde::Serialize;
use sheep_admin::{
    format_size, ClusterInfo, ForceInfo, MemberSummary, MemoryInfo, NodeInfo, RecoveryInfo, VdiInfo,
};
use std::fmt::Write;

/// What `dog node info` shows: the node, and its memory when the daemon reports it (a daemon
/// older than `dog` does not). In JSON, the node's fields and a `memory` object.
#[derive(Debug, Serialize)]
pub struct NodeView {
    /// The node.
    #[serde(flatten)]
    pub node: NodeInfo,
    /// Its memory.
    pub memory: Option<MemoryInfo>,
}

impl NodeView {
    /// The human text: the node's lines, then the memory's.
    pub fn render(&self) -> String {
        let mut out = node_info(&self.node);
        if let Some(m) = &self.memory {
            out.push_str(&memory_info(m));
        }
        out
    }
}

/// How a column is aligned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Align {
    Left,
    Right,
}

/// Columns of `dog vdi list`, as in Sheepdog.
const VDI_COLUMNS: [(&str, Align); 8] = [
    ("Name", Align::Left),
    ("Tag", Align::Left),
    ("Vid", Align::Right),
    ("Size", Align::Right),
    ("Used", Align::Right),
    ("Shared", Align::Right),
    ("Copies", Align::Right),
    ("Created", Align::Left),
];

/// The `dog vdi list` table, by name, each VDI's snapshots (oldest first) before it.
pub fn vdi_table(vdis: &[VdiInfo]) -> String {
    let mut sorted: Vec<&VdiInfo> = vdis.iter().collect();
    sorted.sort_by(|a, b| {
        (&a.name, !a.snapshot, a.created, a.vid).cmp(&(&b.name, !b.snapshot, b.created, b.vid))
    });
    let rows: Vec<Vec<String>> = sorted.iter().map(|v| vdi_row(v)).collect();
    table(&VDI_COLUMNS, &rows)
}

fn vdi_row(v: &VdiInfo) -> Vec<String> {
    vec![
        v.name.clone(),
        v.tag.clone().unwrap_or_default(),
        format!("{:06x}", v.vid),
        format_size(v.size),
        format_size(v.used),
        format_size(v.shared),
        v.copies.to_string(),
        format_time(v.created),
    ]
}

/// Lays `rows` out under `columns`, two spaces apart.
fn table(columns: &[(&str, Align)], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = columns.iter().map(|(h, _)| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let header: Vec<String> = columns.iter().map(|(h, _)| (*h).to_owned()).collect();
    let mut out = String::new();
    for row in std::iter::once(&header).chain(rows) {
        let cells = row.iter().zip(columns).zip(&widths);
        let line: Vec<String> = cells
            .map(|((cell, (_, align)), &w)| match align {
                Align::Left => format!("{cell:<w$}"),
                Align::Right => format!("{cell:>w$}"),
            })
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// `dog node info` as aligned key-value lines.
pub fn node_info(n: &NodeInfo) -> String {
    let percent = |part: u64| match n.capacity {
        0 => String::new(),
        cap => format!(" ({}%)", u128::from(part) * 100 / u128::from(cap)),
    };
    let mut out = String::new();
    field(&mut out, "Node id", &n.node_id);
    field(&mut out, "Store", &n.store);
    field(&mut out, "Mount", &n.mount);
    field(&mut out, "Capacity", &format_size(n.capacity));
    let used = format!("{}{}", format_size(n.used), percent(n.used));
    let free = format!("{}{}", format_size(n.free), percent(n.free));
    field(&mut out, "Used", &used);
    field(&mut out, "Free", &free);
    field(&mut out, "VDIs", &n.vdis.to_string());
    out
}

/// The memory lines of `dog node info`: how the cache size is spent, the I/O buffers, and
/// the resident memory of the daemon.
pub fn memory_info(m: &MemoryInfo) -> String {
    let mut out = String::new();
    let cache = format!(
        "{} = FUSE buffers {} ({} threads x {} requests) + I/O buffers {}",
        format_size(m.cache_size),
        format_size(m.fuse_buffers),
        m.fuse_threads,
        format_size(u64::from(m.max_write)),
        format_size(m.io_budget)
    );
    field(&mut out, "Cache size", &cache);
    let io = format!(
        "{} in use, {} kept, peak {} of {}",
        format_size(m.in_use),
        format_size(m.cached),
        format_size(m.peak),
        format_size(m.io_budget)
    );
    field(&mut out, "I/O buffers", &io);
    let waits = format!(
        "{} waited, {} over budget, {} alone (larger than it), {} refused",
        m.waits, m.overdrafts, m.oversized, m.refused
    );
    field(&mut out, "Requests", &waits);
    let rss = format!("{} (peak {})", format_size(m.vm_rss), format_size(m.vm_hwm));
    field(&mut out, "Resident", &rss);
    out
}

/// `dog cluster info` as aligned key-value lines, then the member nodes.
pub fn cluster_info(c: &ClusterInfo) -> String {
    let mut out = String::new();
    field(&mut out, "Cluster", &c.name);
    field(&mut out, "Status", &c.status);
    field(&mut out, "Epoch", &c.epoch.to_string());
    field(&mut out, "Default copies", &c.default_copies.to_string());
    field(&mut out, "Redundancy", &c.redundancy);
    let r = &c.rebalance;
    if r.epoch > 0 {
        let state = if r.complete {
            "complete"
        } else {
            "in progress"
        };
        let line = format!(
            "epoch {}: {} objects here, {} pushed ({}), {} fetched, {} dropped, {state}",
            r.epoch,
            r.objects,
            r.pushed,
            format_size(r.pushed_bytes),
            r.pulled,
            r.dropped
        );
        field(&mut out, "Rebalance", &line);
    }
    field(&mut out, "Nodes", &c.nodes.len().to_string());
    for node in &c.nodes {
        let _ = writeln!(out, "  {node}");
    }
    if !c.epochs.is_empty() {
        let _ = writeln!(out, "Epoch log:");
        for e in &c.epochs {
            let _ = writeln!(out, "  {:>6}  {}", e.epoch, e.nodes.join(" "));
        }
    }
    out
}

/// What `dog cluster recover force` set in motion.
pub fn forced(f: &ForceInfo) -> String {
    let mut out = String::new();
    let who = if f.local {
        format!("{} (this host)", f.resumer)
    } else {
        format!("{} (asked by this host)", f.resumer)
    };
    let _ = writeln!(
        out,
        "Forced recovery of epoch {}: the cluster resumes with {} of {} members.",
        f.epoch,
        f.present.len(),
        f.present.len() + f.removed.len()
    );
    field(&mut out, "Resumed by", &who);
    field(&mut out, "Members", &f.present.join(" "));
    let removed = if f.removed.is_empty() {
        "none".to_owned()
    } else {
        f.removed.join(" ")
    };
    field(&mut out, "Removed", &removed);
    let _ = writeln!(
        out,
        "Removed hosts rejoin (and catch up) when they start again; `dog cluster info` shows the new epoch."
    );
    out
}

/// `dog node recovery` as key-value lines.
pub fn recovery(r: &RecoveryInfo) -> String {
    let mut out = String::new();
    field(&mut out, "Epoch", &r.epoch.to_string());
    let state = if r.complete {
        "complete (every host finished)".to_owned()
    } else if r.done {
        "done here, waiting for other hosts".to_owned()
    } else {
        let pct = (r.checked * 100).checked_div(r.to_check).unwrap_or(100);
        format!(
            "in progress: {pct}% ({} of {} objects)",
            r.checked, r.to_check
        )
    };
    field(&mut out, "Status", &state);
    let objects = format!(
        "{} to check, {} checked, {} copied ({})",
        r.to_check,
        r.checked,
        r.copied,
        format_size(r.copied_bytes),
    );
    field(&mut out, "Objects", &objects);
    let traffic = format!(
        "sent {} ({}), received {} ({})",
        r.sent,
        format_size(r.sent_bytes),
        r.received,
        format_size(r.received_bytes)
    );
    field(&mut out, "Copies", &traffic);
    let catch_up = format!(
        "{} unverified left, {} kept as current ({})",
        r.unverified,
        r.kept,
        format_size(r.kept_bytes)
    );
    field(&mut out, "Catch-up", &catch_up);
    if r.patched > 0 {
        let delta = format!(
            "{} received by their changed blocks only ({} blocks, {} not copied)",
            r.patched,
            r.patched_blocks,
            format_size(r.saved_bytes)
        );
        field(&mut out, "Patched", &delta);
    }
    if r.repaired > 0 {
        field(
            &mut out,
            "Repaired",
            &format!("{} bad copies since start", r.repaired),
        );
    }
    if r.full {
        field(
            &mut out,
            "Store",
            "near full: takes no new objects nor copies",
        );
    }
    if r.skipped_full > 0 {
        field(
            &mut out,
            "Skipped",
            &format!("{} copies (target host near full)", r.skipped_full),
        );
    }
    field(&mut out, "Throttle", &rate(r.throttle));
    out
}

/// The line printed after `dog node recovery set-throttle`.
pub fn throttle(t: Option<u64>) -> String {
    format!("Recovery throttle of this host: {}\n", rate(t))
}

fn rate(t: Option<u64>) -> String {
    match t {
        Some(b) => format!("{}/s", format_size(b)),
        None => "off (unthrottled)".to_owned(),
    }
}

/// `dog node list` as a table.
pub fn node_list(members: &[MemberSummary]) -> String {
    let mut out = format!(
        "{:<4}{:<34}{:<24}{:>10}  {}\n",
        "", "Id", "Data address", "Capacity", "Role"
    );
    for (i, m) in members.iter().enumerate() {
        let mut role = Vec::new();
        if m.sequencer {
            role.push("sequencer");
        }
        if m.local {
            role.push("this host");
        }
        let _ = writeln!(
            out,
            "{:<4}{:<34}{:<24}{:>10}  {}",
            i,
            m.node_id,
            m.addr,
            format_size(m.capacity),
            role.join(", ")
        );
    }
    out
}

fn field(out: &mut String, key: &str, value: &str) {
    let _ = writeln!(out, "{:<16}{value}", format!("{key}:"));
}

/// Formats Unix seconds as `YYYY-MM-DD HH:MM` in UTC.
pub fn format_time(secs: u64) -> String {
    let days = secs / 86_400;
    let rest = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}",
        rest / 3600,
        rest % 3600 / 60
    )
}

/// Converts days since 1970-01-01 to a (year, month, day) date of the proleptic Gregorian
/// calendar (Howard Hinnant's `civil_from_days`, for non-negative days).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn vdi(name: &str, tag: Option<&str>, vid: u32, created: u64) -> VdiInfo {
        VdiInfo {
            name: name.into(),
            tag: tag.map(Into::into),
            vid,
            size: 10 << 30,
            used: 3 << 19,
            shared: 0,
            copies: 3,
            created,
            parent: None,
            snapshot: tag.is_some(),
        }
    }

    #[test]
    fn dates_are_formatted_in_utc() {
        assert_eq!(format_time(0), "1970-01-01 00:00");
        assert_eq!(format_time(951_782_400), "2000-02-29 00:00");
        assert_eq!(format_time(1_700_000_000), "2023-11-14 22:13");
    }

    #[test]
    fn the_vdi_table_has_sheepdog_columns_and_snapshots_first() {
        let vdis = [vdi("vm0", None, 2, 20), vdi("vm0", Some("base"), 1, 10)];
        let out = vdi_table(&vdis);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("Name  Tag   "));
        assert!(lines[0].ends_with("Copies  Created"));
        assert!(
            lines[1].starts_with("vm0   base  000001  10 GiB  1.5 MiB"),
            "{out}"
        );
        assert!(lines[2].starts_with("vm0         000002"));
    }

    #[test]
    fn node_info_shows_usage_in_percent() {
        let n = NodeInfo {
            node_id: "n1".into(),
            store: "/var/lib/sheepfs".into(),
            mount: "/mnt".into(),
            capacity: 100 << 30,
            used: 25 << 30,
            free: 75 << 30,
            vdis: 2,
        };
        let out = node_info(&n);
        assert!(out.contains("Used:           25 GiB (25%)"));
        assert!(out.contains("VDIs:           2"));
    }

    #[test]
    fn memory_info_shows_the_split_the_buffers_and_the_resident_memory() {
        let m = MemoryInfo {
            cache_size: 48 << 20,
            fuse_threads: 32,
            max_write: 1 << 20,
            fuse_buffers: 32 << 20,
            io_budget: 16 << 20,
            in_use: 1 << 20,
            cached: 2 << 20,
            peak: 15 << 20,
            waits: 7,
            vm_rss: 80 << 20,
            vm_hwm: 100 << 20,
            ..MemoryInfo::default()
        };
        let out = memory_info(&m);
        assert!(out.contains("Cache size:     48 MiB = FUSE buffers 32 MiB (32 threads x 1 MiB requests) + I/O buffers 16 MiB"), "{out}");
        assert!(
            out.contains("I/O buffers:    1 MiB in use, 2 MiB kept, peak 15 MiB of 16 MiB"),
            "{out}"
        );
        assert!(
            out.contains("Resident:       80 MiB (peak 100 MiB)"),
            "{out}"
        );
        assert!(out.contains("7 waited"), "{out}");
    }

    #[test]
    fn node_view_json_has_the_node_fields_and_a_memory_object() {
        let view = NodeView {
            node: NodeInfo {
                node_id: "n1".into(),
                store: "/s".into(),
                mount: "/m".into(),
                capacity: 1,
                used: 0,
                free: 1,
                vdis: 0,
            },
            memory: Some(MemoryInfo {
                io_budget: 9,
                ..MemoryInfo::default()
            }),
        };
        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(json["node_id"], "n1");
        assert_eq!(json["memory"]["io_budget"], 9);
        assert!(view.render().contains("Resident:"));
    }

    #[test]
    fn cluster_info_lists_the_nodes() {
        let c = ClusterInfo {
            name: "pool".into(),
            status: "running, single host".into(),
            epoch: 1,
            nodes: vec!["n1".into()],
            default_copies: 1,
            redundancy: "1 copy".into(),
            members: vec![],
            epochs: vec![],
            rebalance: Default::default(),
            waiting: None,
        };
        let out = cluster_info(&c);
        assert!(out.contains("Status:         running, single host"));
        assert!(out.ends_with("Nodes:          1\n  n1\n"));
    }

    #[test]
    fn recovery_and_throttle_read_well() {
        let r = RecoveryInfo {
            epoch: 4,
            to_check: 200,
            checked: 50,
            copied: 10,
            copied_bytes: 40 << 20,
            kept: 40,
            throttle: Some(100 << 20),
            done: false,
            complete: false,
            full: false,
            sent: 6,
            sent_bytes: 24 << 20,
            received: 4,
            received_bytes: 16 << 20,
            kept_bytes: 160 << 20,
            unverified: 3,
            ..RecoveryInfo::default()
        };
        let out = recovery(&r);
        assert!(
            out.contains("sent 6 (24 MiB), received 4 (16 MiB)"),
            "{out}"
        );
        assert!(
            out.contains("3 unverified left, 40 kept as current (160 MiB)"),
            "{out}"
        );
        assert!(
            out.contains("in progress: 25% (50 of 200 objects)"),
            "{out}"
        );
        assert!(out.contains("10 copied (40 MiB)"), "{out}");
        assert!(out.contains("Throttle:       100 MiB/s"), "{out}");
        assert!(!out.contains("Patched"), "{out}");
        let patched = recovery(&RecoveryInfo {
            patched: 3,
            patched_blocks: 12,
            saved_bytes: 12 << 20,
            ..r.clone()
        });
        assert!(
            patched.contains("Patched:        3 received by their changed blocks only (12 blocks, 12 MiB not copied)"),
            "{patched}"
        );
        assert_eq!(
            throttle(None),
            "Recovery throttle of this host: off (unthrottled)\n"
        );
        let f = ForceInfo {
            epoch: 7,
            resumer: "a".into(),
            local: false,
            present: vec!["a".into(), "b".into()],
            removed: vec!["c".into()],
        };
        let out = forced(&f);
        assert!(out.contains("resumes with 2 of 3 members"), "{out}");
        assert!(out.contains("Removed:        c"), "{out}");
    }
}
