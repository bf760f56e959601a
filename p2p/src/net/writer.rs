//! The log writer: a thread that appends delivered entries to the log file, fdatasyncs them
//! (one sync per batch that piled up meanwhile) and only then hands them to the application,
//! so the network task never waits for the disk.

use super::log::LogFile;
use super::{Delivery, Shared};
use crate::order::Entry;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;

/// What the driver asks of the writer, in order.
pub(crate) enum Job {
    /// Store and hand over.
    Entry(Entry),
    /// Empty the log and tell the application to reset.
    Reset,
}

/// Starts the writer thread. It ends when `jobs` is closed (after finishing what was queued),
/// closing the log file; a write error stops it and is recorded in `shared` (the driver stops).
pub(crate) fn spawn(
    mut log: LogFile<Entry>,
    jobs: Receiver<Job>,
    deliver: Sender<Delivery>,
    shared: Arc<Shared>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("sheep-log".into())
        .spawn(move || {
            if let Err(why) = run(&mut log, &jobs, &deliver) {
                tracing::error!("{why}");
                shared.update(|st| st.fatal = Some(why));
            }
        })
}

fn run(
    log: &mut LogFile<Entry>,
    jobs: &Receiver<Job>,
    deliver: &Sender<Delivery>,
) -> Result<(), String> {
    let path = log.path().display().to_string();
    let mut batch: Vec<Entry> = Vec::new();
    while let Ok(first) = jobs.recv() {
        let mut next = Some(first);
        while let Some(job) = next.take() {
            match job {
                Job::Entry(e) => {
                    log.append(&e)
                        .map_err(|err| format!("appending to {path}: {err}"))?;
                    batch.push(e);
                }
                Job::Reset => {
                    sync_and_hand_over(log, &mut batch, deliver, &path)?;
                    tracing::warn!("history diverged from the cluster's: log reset");
                    log.clear()
                        .map_err(|err| format!("clearing {path}: {err}"))?;
                    let _ = deliver.send(Delivery::Reset);
                }
            }
            next = jobs.try_recv().ok();
        }
        sync_and_hand_over(log, &mut batch, deliver, &path)?;
    }
    Ok(())
}

fn sync_and_hand_over(
    log: &mut LogFile<Entry>,
    batch: &mut Vec<Entry>,
    deliver: &Sender<Delivery>,
    path: &str,
) -> Result<(), String> {
    if batch.is_empty() {
        return Ok(());
    }
    log.sync().map_err(|err| format!("syncing {path}: {err}"))?;
    for e in batch.drain(..) {
        let _ = deliver.send(Delivery::Entry(e));
    }
    Ok(())
}
