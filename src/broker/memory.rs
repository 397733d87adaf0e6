//! The in-memory broker: one process, positions assigned by the channels themselves.

use std::time::Instant;

use super::Appended;
use crate::hub::registry::Registry;
use crate::hub::{Publication, PublishError, Settings};

/// Orders events inside this process. Epochs are random per channel, so a restarted process
/// is told apart from the one before it.
#[derive(Debug, Default)]
pub struct MemoryBroker;

impl MemoryBroker {
    pub fn publish(
        &self,
        registry: &Registry,
        batch: &[Publication],
        settings: &Settings,
    ) -> Result<Vec<Appended>, PublishError> {
        let mut names: Vec<&str> = batch.iter().map(|p| p.channel.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        loop {
            let channels = names
                .iter()
                .map(|name| registry.get_or_create(name))
                .collect::<Result<Vec<_>, _>>()?;
            // Locked in name order, so concurrent batches cannot deadlock.
            let mut logs: Vec<_> = channels.iter().map(|c| c.log_mut()).collect();
            if logs.iter().any(|log| log.is_removed()) {
                continue;
            }
            let index = |name: &str| names.binary_search(&name).unwrap_or_default();
            let mut closing = vec![false; names.len()];
            for publication in batch {
                let i = index(&publication.channel);
                if closing[i] || logs[i].check_open().is_err() {
                    return Err(PublishError::Closed(publication.channel.clone()));
                }
                closing[i] = publication.fields.close;
            }
            let now = Instant::now();
            return Ok(batch
                .iter()
                .map(|publication| {
                    let i = index(&publication.channel);
                    let event = logs[i].append(&publication.fields, now, settings.history);
                    (channels[i].clone(), event)
                })
                .collect());
        }
    }
}
