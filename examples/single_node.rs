//! Creates a pool in a temporary directory, writes to a VDI, snapshots it and reads it back.
//!
//! Run with `cargo run -p sheep-examples --example single_node`.

use anyhow::Context;
use sheep_objects::{DiskStore, ObjectStore};
use sheep_vdi::{CreateOpts, Pool, PoolConfig};
use std::sync::Arc;

fn main() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("sheep-example-{}", std::process::id()));
    let store: Arc<dyn ObjectStore> = Arc::new(DiskStore::open(&dir).context("open store")?);
    let pool = Pool::open(store, PoolConfig::default()).context("open pool")?;
    let vm = pool.create("vm0", 1 << 30, CreateOpts::default())?;
    pool.write(vm.ino, 4 << 20, b"hello sheep")?;
    pool.snapshot("vm0", "first")?;
    pool.write(vm.ino, 4 << 20, b"HELLO SHEEP")?;
    let snap = pool.lookup("vm0@first")?;
    let mut buf = [0u8; 11];
    pool.read(snap.ino, 4 << 20, &mut buf)?;
    println!("snapshot reads {:?}", String::from_utf8_lossy(&buf));
    pool.read(vm.ino, 4 << 20, &mut buf)?;
    println!("vm0 reads {:?}", String::from_utf8_lossy(&buf));
    for v in pool.list() {
        println!(
            "{:20} {:>12} bytes, {:>10} allocated",
            v.name, v.size, v.allocated
        );
    }
    std::fs::remove_dir_all(&dir).context("clean up")?;
    Ok(())
}
