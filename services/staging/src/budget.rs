//! Memory for parsing dataset XML, shared by every request. A parse reads its XML as a stream
//! ([`crate::xml::parse_from`]): it never holds the text or a document tree, only what it keeps,
//! which grows with the number of resources the XML lists. Each parse first takes an estimate of
//! that (its file's size times [`PARSE_FACTOR`]) from one byte budget and gives it back when done,
//! so parses beyond the budget wait for each other (a wait is logged) and the process's memory
//! stays bounded whatever many large XMLs come at once. An XML larger than the whole budget allows
//! is parsed alone.
//!
//! (Twenty requests each with a 12 MB XML took over 2 GB when each parse built a document tree
//! over a copy of its text: several times the file's size, in large allocations the C allocator
//! kept after they were freed.)

use std::path::Path;
use std::sync::{Condvar, Mutex};
use std::time::Instant;

/// Bytes a parse keeps, at most, per byte of XML: a document of nothing but minimal resources
/// (`<ExternalResource ResourceId="a"/>`, 34 bytes, kept as a resource of about 180 bytes with its
/// allocations). Real dataset XML keeps far less (metadata is mostly skipped).
pub const PARSE_FACTOR: u64 = 6;

/// Default budget, in bytes.
pub const DEFAULT_BYTES: u64 = 160 * 1024 * 1024;

/// The shared budget.
#[derive(Debug)]
pub struct ParseBudget {
    total: u64,
    free: Mutex<u64>,
    freed: Condvar,
}

/// Bytes taken from the budget; given back when dropped.
#[derive(Debug)]
pub struct Taken<'a> {
    budget: &'a ParseBudget,
    bytes: u64,
}

impl ParseBudget {
    /// A budget of `total` bytes (at least one parse's worth of a tiny file).
    pub fn new(total: u64) -> Self {
        let total = total.max(1);
        Self {
            total,
            free: Mutex::new(total),
            freed: Condvar::new(),
        }
    }

    /// The budget's size.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Bytes not taken now.
    pub fn free(&self) -> u64 {
        *self.free.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes what parsing `size` bytes of XML at `path` needs (at most the whole budget), waiting
    /// (blocking the thread) while other parses hold it.
    pub fn take(&self, size: u64, path: &Path) -> Taken<'_> {
        let bytes = size.saturating_mul(PARSE_FACTOR).clamp(1, self.total);
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        if *free < bytes {
            let started = Instant::now();
            tracing::info!(
                xml = %path.display(),
                needs = bytes,
                free = *free,
                budget = self.total,
                "waiting for XML parsing memory (other large dataset XMLs are being parsed)"
            );
            while *free < bytes {
                free = self.freed.wait(free).unwrap_or_else(|e| e.into_inner());
            }
            tracing::info!(
                xml = %path.display(),
                waited_ms = started.elapsed().as_millis() as u64,
                "XML parsing memory granted"
            );
        }
        *free -= bytes;
        Taken {
            budget: self,
            bytes,
        }
    }
}

impl Default for ParseBudget {
    fn default() -> Self {
        Self::new(DEFAULT_BYTES)
    }
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        let mut free = self.budget.free.lock().unwrap_or_else(|e| e.into_inner());
        *free += self.bytes;
        self.budget.freed.notify_all();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_beyond_the_budget_wait_for_each_other() {
        let budget = std::sync::Arc::new(ParseBudget::new(100 * PARSE_FACTOR));
        let first = budget.take(60, Path::new("/a.xml"));
        assert_eq!(budget.free(), 40 * PARSE_FACTOR);
        let (tx, rx) = std::sync::mpsc::channel();
        let waiting = {
            let budget = budget.clone();
            std::thread::spawn(move || {
                let second = budget.take(50, Path::new("/b.xml"));
                tx.send(budget.free()).unwrap();
                drop(second);
            })
        };
        // The second parse cannot start while the first holds 60 of 100.
        assert!(
            rx.recv_timeout(std::time::Duration::from_millis(100))
                .is_err()
        );
        drop(first);
        assert_eq!(rx.recv().unwrap(), 50 * PARSE_FACTOR);
        waiting.join().unwrap();
        assert_eq!(budget.free(), budget.total());
        // A file larger than the whole budget allows takes all of it, and is parsed alone.
        let huge = budget.take(1_000_000, Path::new("/huge.xml"));
        assert_eq!(budget.free(), 0);
        drop(huge);
    }
}
