//! The channel that feeds one connection's task: from queues and the
//! store's durability callbacks to an MQTT connection, from the XMPP hub to
//! a session. Many senders, one receiver, and no allocation until a message
//! is sent.
//!
//! tokio's channels allocate a block of 32 slots when they are created,
//! about 3 KiB for an MQTT delivery or an XMPP stanza, which was a quarter
//! of an idle MQTT connection's memory; this one is a mutex-protected
//! `VecDeque` that is empty (and unallocated) while the connection idles,
//! and that the receiver can take in batches. Unbounded unless the sender
//! asks for a bound ([`UnboundedSender::try_send_bounded`]).

use parking_lot::Mutex;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Poll, Waker};

/// Queue capacity kept after a burst has been drained; more is given back.
const KEEP_CAPACITY: usize = 64;

struct State<T> {
    items: VecDeque<T>,
    /// Set by the receiver when it closes or goes: sends fail from then on.
    closed: bool,
    senders: usize,
    waker: Option<Waker>,
}

type Shared<T> = Arc<Mutex<State<T>>>;

/// A sending half; cloned for each producer.
pub struct UnboundedSender<T> {
    shared: Shared<T>,
}

/// The message a send could not deliver (the receiver has closed).
#[derive(Debug)]
pub struct SendError<T>(pub T);

/// The receiving half, owned by the connection's task.
pub struct Receiver<T> {
    shared: Shared<T>,
}

/// A new channel.
pub fn unbounded<T>() -> (UnboundedSender<T>, Receiver<T>) {
    let shared = Arc::new(Mutex::new(State {
        items: VecDeque::new(),
        closed: false,
        senders: 1,
        waker: None,
    }));
    (
        UnboundedSender {
            shared: shared.clone(),
        },
        Receiver { shared },
    )
}

impl<T> UnboundedSender<T> {
    /// Queues `item` for the receiver, or gives it back if the receiver has closed.
    pub fn send(&self, item: T) -> Result<(), SendError<T>> {
        self.push(item, usize::MAX)
    }

    /// Queues `item` unless `bound` messages wait already or the receiver
    /// has closed.
    pub fn try_send_bounded(&self, item: T, bound: usize) -> Result<(), SendError<T>> {
        self.push(item, bound)
    }

    fn push(&self, item: T, bound: usize) -> Result<(), SendError<T>> {
        let waker = {
            let mut st = self.shared.lock();
            if st.closed || st.items.len() >= bound {
                return Err(SendError(item));
            }
            st.items.push_back(item);
            st.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.shared.lock().items.len()
    }

    /// Whether the receiver has closed or gone.
    pub fn is_closed(&self) -> bool {
        self.shared.lock().closed
    }
}

impl<T> Clone for UnboundedSender<T> {
    fn clone(&self) -> Self {
        self.shared.lock().senders += 1;
        UnboundedSender {
            shared: self.shared.clone(),
        }
    }
}

impl<T> Drop for UnboundedSender<T> {
    fn drop(&mut self) {
        let waker = {
            let mut st = self.shared.lock();
            st.senders -= 1;
            if st.senders == 0 {
                st.waker.take()
            } else {
                None
            }
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> Receiver<T> {
    /// Waits until at least one message is queued and moves every queued
    /// message into `batch` (empty on entry); `false` once every sender is
    /// gone and nothing is left. Cancel-safe.
    pub async fn recv_many(&mut self, batch: &mut VecDeque<T>) -> bool {
        poll_fn(|cx| {
            let mut st = self.shared.lock();
            if st.items.is_empty() {
                if st.senders == 0 {
                    return Poll::Ready(false);
                }
                if !st.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    st.waker = Some(cx.waker().clone());
                }
                return Poll::Pending;
            }
            std::mem::swap(&mut st.items, batch);
            Poll::Ready(true)
        })
        .await
    }

    /// Waits for the next message; `None` once every sender is gone and
    /// nothing is left. Cancel-safe.
    pub async fn recv(&mut self) -> Option<T> {
        poll_fn(|cx| {
            let mut st = self.shared.lock();
            if let Some(item) = st.items.pop_front() {
                return Poll::Ready(Some(item));
            }
            if st.senders == 0 {
                return Poll::Ready(None);
            }
            if !st.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                st.waker = Some(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }

    /// Takes one queued message without waiting.
    pub fn try_recv(&mut self) -> Option<T> {
        let mut st = self.shared.lock();
        let item = st.items.pop_front();
        if st.items.is_empty() && st.items.capacity() > KEEP_CAPACITY {
            st.items = VecDeque::new();
        }
        item
    }

    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.shared.lock().items.len()
    }

    /// Refuses further sends; what is queued can still be taken.
    pub fn close(&mut self) {
        self.shared.lock().closed = true;
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let items = {
            let mut st = self.shared.lock();
            st.closed = true;
            st.waker = None;
            std::mem::take(&mut st.items)
        };
        // Dropped outside the lock: a message's drop may take other locks.
        drop(items);
    }
}

/// Gives back the memory of a drained batch beyond a little.
pub fn trim<T>(batch: &mut VecDeque<T>) {
    if batch.is_empty() && batch.capacity() > KEEP_CAPACITY {
        *batch = VecDeque::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn delivers_in_order_and_refuses_after_close() {
        let (tx, mut rx) = unbounded();
        let tx2 = tx.clone();
        tx.send(1).unwrap();
        tx2.send(2).unwrap();
        let mut batch = VecDeque::new();
        assert!(rx.recv_many(&mut batch).await);
        assert_eq!(batch.drain(..).collect::<Vec<_>>(), [1, 2]);
        tx.send(3).unwrap();
        rx.close();
        assert_eq!(tx.send(4).unwrap_err().0, 4);
        assert_eq!(rx.try_recv(), Some(3));
        assert_eq!(rx.try_recv(), None);
        drop((tx, tx2));
        assert!(!rx.recv_many(&mut batch).await);
    }

    #[tokio::test]
    async fn bounded_sends_refuse_past_the_bound() {
        let (tx, mut rx) = unbounded();
        tx.try_send_bounded(1, 2).unwrap();
        tx.try_send_bounded(2, 2).unwrap();
        assert_eq!(tx.try_send_bounded(3, 2).unwrap_err().0, 3);
        assert_eq!(tx.len(), 2);
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(rx.len(), 1);
        assert!(!tx.is_closed());
        drop(rx);
        assert!(tx.is_closed());
    }

    #[tokio::test]
    async fn wakes_the_receiver() {
        let (tx, mut rx) = unbounded();
        let task = tokio::spawn(async move {
            let mut batch = VecDeque::new();
            rx.recv_many(&mut batch).await;
            batch.pop_front()
        });
        tokio::task::yield_now().await;
        tx.send(7).unwrap();
        assert_eq!(task.await.unwrap(), Some(7));
    }

    #[test]
    fn sends_fail_once_the_receiver_is_gone() {
        let (tx, rx) = unbounded();
        drop(rx);
        assert!(tx.send(1).is_err());
    }
}
