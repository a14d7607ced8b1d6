//! Writes that wait to be made together (PostgreSQL).
//!
//! A caller's write is queued and the caller waits for its answer. When no writer runs, the
//! caller starts one; the writer takes what has queued meanwhile into one transaction (or one
//! statement), then what queued during that one, and so on until nothing waits. Alone, a write
//! is made at once, as it would be without the queue; under load each transaction carries
//! several, and their `BEGIN`, `COMMIT`, flush of the log and per-statement work are shared.
//! One writer at a time: two split the same writes into smaller transactions (seen with task
//! results: 1.4 per transaction against 2 to 3) and gained nothing.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use futures::future::BoxFuture;
use tokio::sync::oneshot;

use super::{Result, Store, StoreError};

type Reply<A> = oneshot::Sender<Result<A>>;

/// A queue of writes of one kind and whether its writer runs.
pub(super) struct Batcher<T, A> {
    state: Mutex<State<T, A>>,
    /// Most writes one batch carries.
    most: usize,
    /// What the writes are, for errors and `Debug`.
    what: &'static str,
    /// Batches written, and the writes they carried.
    written: [AtomicU64; 2],
}

struct State<T, A> {
    queue: VecDeque<(T, Reply<A>)>,
    running: bool,
}

impl<T, A> std::fmt::Debug for Batcher<T, A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("Batcher")
            .field("what", &self.what)
            .field("waiting", &state.queue.len())
            .field("running", &state.running)
            .finish()
    }
}

impl<T, A> Batcher<T, A> {
    /// A queue of `what`, written `most` at a time at most.
    pub(super) fn new(what: &'static str, most: usize) -> Self {
        Self {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                running: false,
            }),
            most: most.max(1),
            what,
            written: [AtomicU64::new(0), AtomicU64::new(0)],
        }
    }

    /// Batches written so far, and the writes they carried (a batch written again a write at a
    /// time after it failed counts as the batches of one that succeeded).
    pub(super) fn written(&self) -> (u64, u64) {
        (
            self.written[0].load(Ordering::Relaxed),
            self.written[1].load(Ordering::Relaxed),
        )
    }

    fn count(&self, writes: usize) {
        self.written[0].fetch_add(1, Ordering::Relaxed);
        self.written[1].fetch_add(writes as u64, Ordering::Relaxed);
    }

    fn lock(&self) -> MutexGuard<'_, State<T, A>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `item` and waits for its answer. When no writer runs, `start` is called first: it
    /// must start one (a task that runs [`Batcher::drain`]).
    pub(super) async fn submit(&self, item: T, start: impl FnOnce()) -> Result<A> {
        let (reply, answer) = oneshot::channel();
        let lead = {
            let mut state = self.lock();
            state.queue.push_back((item, reply));
            !std::mem::replace(&mut state.running, true)
        };
        if lead {
            start();
        }
        answer.await.unwrap_or_else(|_| {
            Err(StoreError::Database(sqlx::Error::Protocol(format!(
                "the writer of {} stopped before writing this one",
                self.what
            ))))
        })
    }

    /// The next batch: the first write that waits and those after it that `fits` admits (it
    /// sees the first too, and every write in order), up to the most; `None`, and the writer
    /// counted as stopped, when none waits.
    fn take(&self, mut fits: impl FnMut(&T) -> bool) -> Option<Vec<(T, Reply<A>)>> {
        let mut state = self.lock();
        let Some(first) = state.queue.pop_front() else {
            state.running = false;
            return None;
        };
        fits(&first.0);
        let mut batch = vec![first];
        let mut kept = VecDeque::new();
        while let Some(waiting) = state.queue.pop_front() {
            if batch.len() < self.most && fits(&waiting.0) {
                batch.push(waiting);
            } else {
                kept.push_back(waiting);
            }
        }
        state.queue = kept;
        Some(batch)
    }

    /// The writer: writes what waits, a batch at a time, until nothing does. `fits_for` makes,
    /// per batch, the test of which writes may join it; `write` answers each write of a batch,
    /// in order. A batch of several that fails is written again a write at a time, so that one
    /// write the database refuses does not cost the others theirs; a batch of one answers its
    /// own error.
    pub(super) async fn drain<F>(
        &self,
        mut fits_for: impl FnMut() -> F,
        write: impl for<'a> Fn(&'a [T]) -> BoxFuture<'a, Result<Vec<A>>>,
    ) where
        F: FnMut(&T) -> bool,
    {
        // Should this writer panic, the writes that wait are answered with an error (their
        // senders dropped) and the next caller starts a writer again.
        let guard = Stopped(self);
        while let Some(batch) = self.take(fits_for()) {
            let (items, replies): (Vec<T>, Vec<Reply<A>>) = batch.into_iter().unzip();
            match write(&items).await {
                Ok(answers) if answers.len() == items.len() => {
                    self.count(items.len());
                    for (reply, answer) in replies.into_iter().zip(answers) {
                        let _ = reply.send(Ok(answer));
                    }
                }
                Ok(answers) => {
                    let error = format!(
                        "a batch of {} {} was answered {} times",
                        items.len(),
                        self.what,
                        answers.len()
                    );
                    for reply in replies {
                        let _ = reply.send(Err(StoreError::Corrupt(error.clone())));
                    }
                }
                Err(_) if items.len() > 1 => {
                    for (item, reply) in items.iter().zip(replies) {
                        let answer = write(std::slice::from_ref(item)).await.and_then(|mut a| {
                            self.count(1);
                            a.pop().ok_or_else(|| {
                                StoreError::Corrupt(format!(
                                    "one of {} was not answered",
                                    self.what
                                ))
                            })
                        });
                        let _ = reply.send(answer);
                    }
                }
                Err(error) => {
                    if let Some(reply) = replies.into_iter().next() {
                        let _ = reply.send(Err(error));
                    }
                }
            }
        }
        std::mem::forget(guard);
    }
}

/// How a batch of `T` is written: an answer per write, in order.
pub(super) type WriteBatch<T, A> = for<'a> fn(Store, &'a [T]) -> BoxFuture<'a, Result<Vec<A>>>;

impl Store {
    /// Queues `item` on the batcher `of` picks and waits for its answer; when no writer runs, a
    /// task is started that writes batches with `write`, admitting to each what `fits_for`'s
    /// test admits.
    pub(super) async fn batched<T, A, F>(
        &self,
        of: fn(&Store) -> &Batcher<T, A>,
        item: T,
        fits_for: fn() -> F,
        write: WriteBatch<T, A>,
    ) -> Result<A>
    where
        T: Send + Sync + 'static,
        A: Send + 'static,
        F: FnMut(&T) -> bool + Send + 'static,
    {
        of(self)
            .submit(item, || {
                let store = self.clone();
                tokio::spawn(async move {
                    let writer = store.clone();
                    of(&store)
                        .drain(fits_for, move |batch| write(writer.clone(), batch))
                        .await;
                });
            })
            .await
    }
}

/// Dropped only when a writer unwinds: fails what waits and lets the next caller start anew.
struct Stopped<'b, T, A>(&'b Batcher<T, A>);

impl<T, A> Drop for Stopped<'_, T, A> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.queue.clear();
        state.running = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Writes that queue while one batch is written go together into the next; a batch that
    /// fails is written again a write at a time; `fits` keeps writes out of a batch.
    #[tokio::test]
    async fn batches_what_waits_and_retries_a_failed_batch_one_by_one() {
        let batcher: Arc<Batcher<i64, i64>> = Arc::new(Batcher::new("numbers", 3));
        let batches: Arc<Mutex<Vec<Vec<i64>>>> = Arc::default();
        let entered = Arc::new(tokio::sync::Semaphore::new(0));
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let start = |b: &Arc<Batcher<i64, i64>>| {
            let (b, batches) = (b.clone(), batches.clone());
            let (entered, gate) = (entered.clone(), gate.clone());
            move || {
                tokio::spawn(async move {
                    b.drain(
                        // Odd and even numbers are never written together.
                        || {
                            let mut parity = None;
                            move |n: &i64| *parity.get_or_insert(n % 2) == n % 2
                        },
                        move |items: &[i64]| {
                            let (batches, entered, gate) =
                                (batches.clone(), entered.clone(), gate.clone());
                            let items = items.to_vec();
                            Box::pin(async move {
                                entered.add_permits(1);
                                gate.acquire().await.map_err(|_| StoreError::Lost)?.forget();
                                batches.lock().unwrap().push(items.clone());
                                if items.len() > 1 && items.contains(&13) {
                                    return Err(StoreError::Lost);
                                }
                                if items == [13] {
                                    return Err(StoreError::Corrupt("13".into()));
                                }
                                Ok(items.iter().map(|n| n * 10).collect())
                            })
                        },
                    )
                    .await
                });
            }
        };
        let submit = |n: i64| {
            let (b, start) = (batcher.clone(), start(&batcher));
            tokio::spawn(async move { (n, b.submit(n, start).await) })
        };
        // The first is written alone, at once; the rest queue while it is.
        let mut answers = vec![submit(1)];
        entered.acquire().await.unwrap().forget();
        for n in [2, 3, 5, 7, 9, 11, 13, 15, 4] {
            answers.push(submit(n));
        }
        while batcher.lock().queue.len() < 9 {
            tokio::task::yield_now().await;
        }
        gate.add_permits(100);
        for answer in answers {
            let (n, answer) = answer.await.unwrap();
            match n {
                13 => assert!(matches!(answer, Err(StoreError::Corrupt(m)) if m == "13")),
                n => assert_eq!(answer.unwrap(), n * 10),
            }
        }
        let batches = batches.lock().unwrap().clone();
        assert_eq!(
            batches,
            vec![
                vec![1],
                vec![2, 4],
                vec![3, 5, 7],
                vec![9, 11, 13],
                vec![9],
                vec![11],
                vec![13],
                vec![15],
            ]
        );
        assert!(!batcher.lock().running);
        // The failed batch is not counted; its writes written alone that succeeded are.
        assert_eq!(batcher.written(), (6, 9));
    }
}
