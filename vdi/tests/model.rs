//! Reference-model property test: random sequences of VDI operations against a plain
//! in-memory model where every VDI is a `Vec<u8>`.
#![allow(clippy::cast_possible_truncation)] // Test sizes are small.

use proptest::prelude::*;
use sheep_objects::{MemStore, ObjectStore};
use sheep_vdi::{CreateOpts, Pool, PoolConfig, SetAttr};
use std::collections::BTreeMap;
use std::sync::Arc;

const OBJ: u64 = 4 << 20;
const MAX: u64 = 3 * OBJ;

#[derive(Debug, Clone)]
enum Op {
    Read {
        v: usize,
        off: u64,
        len: u64,
    },
    Write {
        v: usize,
        off: u64,
        len: u64,
        byte: u8,
    },
    Discard {
        v: usize,
        off: u64,
        len: u64,
    },
    Snapshot {
        v: usize,
        tag: u8,
    },
    Clone {
        v: usize,
    },
    CopyWhole {
        v: usize,
    },
    CopyRange {
        s: usize,
        d: usize,
        soff: u64,
        doff: u64,
        len: u64,
    },
    Rollback {
        v: usize,
        s: usize,
    },
    Delete {
        v: usize,
    },
    Resize {
        v: usize,
        size: u64,
    },
    Flush {
        v: usize,
    },
    Reclaim,
    Reopen,
}

fn offset() -> impl Strategy<Value = u64> {
    prop_oneof![
        0..MAX,
        (0..3u64).prop_map(|i| i * OBJ),
        (1..3u64, 0..64u64).prop_map(|(i, d)| i * OBJ - d),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let v = 0..8usize;
    prop_oneof![
        6 => (v.clone(), offset(), 1..(OBJ + 9000), any::<u8>()).prop_map(|(v, off, len, byte)| Op::Write { v, off, len, byte }),
        2 => (v.clone(), offset(), 1..(2 * OBJ)).prop_map(|(v, off, len)| Op::Discard { v, off, len }),
        2 => (v.clone(), 0..4u8).prop_map(|(v, tag)| Op::Snapshot { v, tag }),
        1 => v.clone().prop_map(|v| Op::Clone { v }),
        1 => v.clone().prop_map(|v| Op::CopyWhole { v }),
        1 => (v.clone(), v.clone(), offset(), offset(), 1..(2 * OBJ)).prop_map(|(s, d, soff, doff, len)| Op::CopyRange { s, d, soff, doff, len }),
        1 => (v.clone(), v.clone()).prop_map(|(v, s)| Op::Rollback { v, s }),
        1 => v.clone().prop_map(|v| Op::Delete { v }),
        1 => (v.clone(), 0..MAX).prop_map(|(v, size)| Op::Resize { v, size }),
        1 => v.clone().prop_map(|v| Op::Flush { v }),
        3 => (v.clone(), offset(), 1..(OBJ + 9000)).prop_map(|(v, off, len)| Op::Read { v, off, len }),
        1 => Just(Op::Reclaim),
        1 => Just(Op::Reopen),
    ]
}

#[derive(Default)]
struct Model {
    vdis: BTreeMap<String, Vec<u8>>,
    next: u32,
}

impl Model {
    fn pick(&self, i: usize, snapshots: bool) -> Option<String> {
        let names: Vec<&String> = self
            .vdis
            .keys()
            .filter(|n| snapshots || !n.contains('@'))
            .collect();
        (!names.is_empty()).then(|| names[i % names.len()].clone())
    }
}

fn u(x: u64) -> usize {
    usize::try_from(x).unwrap()
}

fn apply(pool: &mut Pool, store: &Arc<MemStore>, m: &mut Model, op: &Op) {
    match op {
        Op::Write { v, off, len, byte } => {
            let Some(name) = m.pick(*v, false) else {
                return;
            };
            let end = (off + len).min(MAX);
            if end <= *off {
                return;
            }
            let ino = pool.lookup(&name).unwrap().ino;
            let data = vec![*byte; u(end - off)];
            assert_eq!(pool.write(ino, *off, &data).unwrap(), data.len());
            let d = m.vdis.get_mut(&name).unwrap();
            if d.len() < u(end) {
                d.resize(u(end), 0);
            }
            d[u(*off)..u(end)].fill(*byte);
        }
        Op::Discard { v, off, len } => {
            let Some(name) = m.pick(*v, false) else {
                return;
            };
            let ino = pool.lookup(&name).unwrap().ino;
            pool.discard(ino, *off, *len).unwrap();
            let d = m.vdis.get_mut(&name).unwrap();
            let end = u((off + len).min(d.len() as u64));
            if u(*off) < end {
                d[u(*off)..end].fill(0);
            }
        }
        Op::Snapshot { v, tag } => {
            let Some(name) = m.pick(*v, false) else {
                return;
            };
            let full = format!("{name}@t{tag}");
            let r = pool.snapshot(&name, &format!("t{tag}"));
            if m.vdis.contains_key(&full) {
                assert!(r.is_err());
            } else {
                r.unwrap();
                let d = m.vdis[&name].clone();
                m.vdis.insert(full, d);
            }
        }
        Op::Clone { v } => {
            let Some(src) = m.pick(*v, true) else { return };
            m.next += 1;
            let dst = format!("c{}", m.next);
            pool.clone_vdi(&src, &dst).unwrap();
            let d = m.vdis[&src].clone();
            m.vdis.insert(dst, d);
        }
        Op::CopyWhole { v } => {
            let Some(src) = m.pick(*v, true) else { return };
            m.next += 1;
            let dst = format!("k{}", m.next);
            let s = pool.lookup(&src).unwrap();
            let d = pool.create(&dst, 0, CreateOpts::default()).unwrap();
            assert_eq!(pool.copy_range(s.ino, 0, d.ino, 0, s.size).unwrap(), s.size);
            let data = m.vdis[&src].clone();
            m.vdis.insert(dst, data);
        }
        Op::CopyRange {
            s,
            d,
            soff,
            doff,
            len,
        } => {
            let (Some(src), Some(dst)) = (m.pick(*s, true), m.pick(*d, false)) else {
                return;
            };
            let sdata = m.vdis[&src].clone();
            let len = (*len)
                .min((sdata.len() as u64).saturating_sub(*soff))
                .min(MAX - doff);
            let si = pool.lookup(&src).unwrap().ino;
            let di = pool.lookup(&dst).unwrap().ino;
            if si == di && *soff < doff + len && *doff < soff + len {
                assert!(pool.copy_range(si, *soff, di, *doff, len).is_err());
                return;
            }
            assert_eq!(pool.copy_range(si, *soff, di, *doff, len).unwrap(), len);
            if len == 0 {
                return;
            }
            let dd = m.vdis.get_mut(&dst).unwrap();
            if dd.len() < u(doff + len) {
                dd.resize(u(doff + len), 0);
            }
            dd[u(*doff)..u(doff + len)].copy_from_slice(&sdata[u(*soff)..u(soff + len)]);
        }
        Op::Rollback { v, s } => {
            let Some(name) = m.pick(*v, false) else {
                return;
            };
            let snaps: Vec<String> = m
                .vdis
                .keys()
                .filter(|k| k.starts_with(&format!("{name}@")))
                .cloned()
                .collect();
            if snaps.is_empty() {
                return;
            }
            let snap = &snaps[s % snaps.len()];
            let tag = snap.split_once('@').unwrap().1;
            pool.rollback(&name, tag).unwrap();
            let d = m.vdis[snap].clone();
            m.vdis.insert(name, d);
        }
        Op::Delete { v } => {
            let Some(name) = m.pick(*v, true) else { return };
            pool.unlink(&name).unwrap();
            m.vdis.remove(&name);
        }
        Op::Resize { v, size } => {
            let Some(name) = m.pick(*v, false) else {
                return;
            };
            let ino = pool.lookup(&name).unwrap().ino;
            pool.setattr(
                ino,
                SetAttr {
                    size: Some(*size),
                    ..Default::default()
                },
            )
            .unwrap();
            m.vdis.get_mut(&name).unwrap().resize(u(*size), 0);
        }
        Op::Flush { v } => {
            let Some(name) = m.pick(*v, true) else { return };
            pool.flush(pool.lookup(&name).unwrap().ino).unwrap();
        }
        Op::Read { v, off, len } => {
            let Some(name) = m.pick(*v, true) else { return };
            let d = &m.vdis[&name];
            let ino = pool.lookup(&name).unwrap().ino;
            let mut buf = vec![0xeeu8; u(*len)];
            let n = pool.read(ino, *off, &mut buf).unwrap();
            let want = &d[u((*off).min(d.len() as u64))..u((off + len).min(d.len() as u64))];
            assert_eq!(n, want.len(), "read length of {name} at {off}");
            assert!(buf[..n] == *want, "read of {name} at {off}+{len} differs");
        }
        Op::Reclaim => {
            pool.reclaim().unwrap();
        }
        Op::Reopen => {
            pool.flush_all().unwrap();
            *pool = Pool::open(store.clone(), PoolConfig::default()).unwrap();
        }
    }
}

fn must_match(pool: &Pool, m: &Model) {
    let names: Vec<String> = pool.list().into_iter().map(|a| a.name).collect();
    let want: Vec<String> = m.vdis.keys().cloned().collect();
    assert_eq!(names, want);
    for (name, data) in &m.vdis {
        let a = pool.lookup(name).unwrap();
        assert_eq!(a.size, data.len() as u64, "size of {name}");
        let mut buf = vec![0xeeu8; data.len()];
        assert_eq!(pool.read(a.ino, 0, &mut buf).unwrap(), data.len());
        if &buf != data {
            let at = buf
                .iter()
                .zip(data.iter())
                .position(|(a, b)| a != b)
                .unwrap();
            panic!("{name} differs at {at}: got {} want {}", buf[at], data[at]);
        }
    }
}

/// Once reclaimed, every data object in the store is referenced by some table.
fn must_hold_no_garbage(pool: &Pool) {
    pool.reclaim().unwrap();
    assert_eq!(pool.unreferenced_objects().unwrap(), vec![]);
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(24),
        max_shrink_iters: 200,
        ..ProptestConfig::default()
    })]

    #[test]
    fn pool_behaves_like_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        let store = Arc::new(MemStore::new());
        let mut pool = Pool::open(store.clone(), PoolConfig::default()).unwrap();
        let mut m = Model::default();
        for (i, name) in ["a", "b"].iter().enumerate() {
            pool.create(name, (i as u64 + 1) * OBJ + 4096, CreateOpts::default()).unwrap();
            m.vdis.insert((*name).to_owned(), vec![0; u((i as u64 + 1) * OBJ + 4096)]);
        }
        for op in &ops {
            apply(&mut pool, &store, &mut m, op);
        }
        must_match(&pool, &m);
        must_hold_no_garbage(&pool);
        pool.flush_all().unwrap();
        let pool = Pool::open(store.clone(), PoolConfig::default()).unwrap();
        must_match(&pool, &m);
        for a in pool.list() {
            pool.unlink(&a.name).unwrap();
        }
        pool.reclaim().unwrap();
        let left: Vec<_> = store.list().unwrap().into_iter().filter(|o| o.kind() == sheep_objects::ObjectKind::Data).collect();
        prop_assert!(left.is_empty(), "objects left after deleting every VDI: {:?}", left);
    }
}
