//! The page's live feed: one task rereads the store every refresh interval while anyone watches
//! (never while nobody does) and renders the changing part of the page once for every viewer;
//! each open page follows it as server-sent events and swaps the part in. A stream sends what
//! was read after it opened, and then only what differs from what it sent last (the page's own
//! load may be older or newer than what the feed held when it opened). A viewer's stream ends
//! with their session, and at shutdown.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt as _;
use tokio::sync::{Notify, watch};
use tokio_stream::wrappers::WatchStream;
use tokio_util::sync::CancellationToken;

use super::Page;

/// What the feed publishes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Update {
    /// Nothing read yet.
    Nothing,
    /// The page's changing part, as HTML (event `status`).
    Status(Arc<str>),
    /// The store could not be read; the page keeps what it shows (event `trouble`).
    Trouble(Arc<str>),
}

/// One reading of the store, numbered.
#[derive(Clone, Debug)]
struct Reading {
    /// Readings so far.
    number: u64,
    /// What it found.
    update: Update,
}

/// The feed every open page follows.
#[derive(Clone, Debug)]
pub struct Feed {
    readings: Arc<watch::Sender<Reading>>,
    /// Wakes the producer: a viewer arrived, or something the page shows changed in-process.
    wake: Arc<Notify>,
}

impl Default for Feed {
    fn default() -> Self {
        Self {
            readings: Arc::new(watch::Sender::new(Reading {
                number: 0,
                update: Update::Nothing,
            })),
            wake: Arc::new(Notify::new()),
        }
    }
}

impl Feed {
    /// The updates read from now on, each one only when it differs from the one before; the
    /// producer reads at once.
    fn follow(&self) -> impl futures::Stream<Item = Update> + Send + 'static {
        let readings = self.readings.subscribe();
        let opened = readings.borrow().number;
        self.wake.notify_one();
        let mut last = Update::Nothing;
        WatchStream::new(readings).filter_map(move |reading| {
            let fresh = reading.number > opened && reading.update != last;
            if fresh {
                last = reading.update.clone();
            }
            std::future::ready(fresh.then_some(reading.update))
        })
    }

    /// Has the producer reread at once (a page resync started or ended).
    pub fn poke(&self) {
        self.wake.notify_one();
    }

    /// Publishes a reading (the same text is shared, not copied, while it does not change).
    fn publish(&self, update: Update) {
        self.readings.send_modify(|current| {
            current.number += 1;
            if current.update != update {
                current.update = update;
            }
        });
    }
}

/// Runs the producer until `cancel`.
pub fn spawn(
    page: Page,
    refresh: Duration,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let feed = page.feed.clone();
        loop {
            if feed.readings.receiver_count() > 0 {
                match page.fragment().await {
                    Ok(html) => feed.publish(Update::Status(html.into())),
                    Err(error) => {
                        tracing::warn!(%error, "status page: reading the store failed");
                        feed.publish(Update::Trouble(
                            "the coordinator's database did not answer; showing what it said last"
                                .into(),
                        ));
                    }
                }
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = feed.wake.notified() => {}
                    () = tokio::time::sleep(refresh) => {}
                }
            } else {
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = feed.wake.notified() => {}
                }
            }
        }
    })
}

/// `GET /events`: the feed as server-sent events, for a signed-in viewer.
pub async fn events(State(page): State<Page>, headers: HeaderMap) -> Response {
    let Some(signed) = page.gate.signed(&headers) else {
        return (StatusCode::UNAUTHORIZED, "sign in first").into_response();
    };
    let stream = page
        .feed
        .follow()
        .filter_map(|update| async move {
            match update {
                Update::Nothing => None,
                Update::Status(html) => Some(Event::default().event("status").data(&*html)),
                Update::Trouble(text) => Some(Event::default().event("trouble").data(&*text)),
            }
        })
        .map(Ok::<_, Infallible>)
        .take_until(page.cancel.clone().cancelled_owned())
        .take_until(tokio::time::sleep_until(signed.until));
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}
