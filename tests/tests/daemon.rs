//! Properties of the running daemon itself.

use sheep_tests::{require, Node};

/// The nice value and name of every thread of process `pid`.
fn threads(pid: u32) -> Vec<(String, i64)> {
    let dir = format!("/proc/{pid}/task");
    let mut out = Vec::new();
    for t in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir}: {e}")) {
        let path = t.expect("task entry").path();
        let Ok(stat) = std::fs::read_to_string(path.join("stat")) else {
            continue; // the thread ended meanwhile
        };
        // pid (comm) state ppid ... : comm may hold spaces, so split after the last ')'.
        let (head, rest) = stat.rsplit_once(')').expect("stat has a comm");
        let comm = head.split_once('(').expect("stat has a comm").1.to_owned();
        // Fields after the comm start at field 3 (state); nice is field 19.
        let nice: i64 = rest
            .split_whitespace()
            .nth(19 - 3)
            .and_then(|v| v.parse().ok())
            .expect("nice field");
        out.push((comm, nice));
    }
    out
}

#[test]
fn the_cluster_threads_run_ahead_of_the_io_threads() {
    if !require(&[]) {
        return;
    }
    let node = Node::start();
    let all = threads(node.pid());
    let net: Vec<_> = all.iter().filter(|(c, _)| c == "sheep-net").collect();
    assert!(!net.is_empty(), "no sheep-net thread: {all:?}");
    for (comm, nice) in &net {
        assert_eq!(*nice, -10, "{comm} runs at nice {nice}: {all:?}");
    }
    let fuse: Vec<_> = all.iter().filter(|(c, _)| c.starts_with("fuser")).collect();
    assert!(!fuse.is_empty(), "no FUSE thread: {all:?}");
    for (comm, nice) in &fuse {
        assert_eq!(*nice, 0, "{comm} runs at nice {nice}");
    }
    node.stop();
}
