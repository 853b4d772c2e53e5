//! Many callers' one-row queries, run as one statement per batch.
//!
//! Under load, Postgres spends its time on per-statement and per-commit overhead, not on rows:
//! sixty-four jobs that each read one ticket cost far more as sixty-four statements than as one.
//! A batcher takes whatever requests are queued when its previous batch ends, so a lone request
//! waits for nothing and a burst shares one round trip (and one commit).

use std::future::Future;

use tokio::sync::{mpsc, oneshot};

type Request<I, O> = (I, oneshot::Sender<Option<O>>);

/// Sends requests of type `I` to one batch loop that answers each with an `O`.
pub struct Batcher<I, O> {
    tx: mpsc::UnboundedSender<Request<I, O>>,
}

impl<I, O> Clone for Batcher<I, O> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
        }
    }
}

impl<I: Send + 'static, O: Send + 'static> Batcher<I, O> {
    /// Starts the loop on the current runtime. `run` gets up to `max` requests and returns one
    /// answer per request, in order. The loop ends when every `Batcher` clone is dropped.
    pub fn start<F, Fut, E>(max: usize, run: F) -> Self
    where
        F: Fn(Vec<I>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Vec<O>, E>> + Send,
        E: std::fmt::Display,
    {
        let (tx, mut rx) = mpsc::unbounded_channel::<Request<I, O>>();
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                while batch.len() < max.max(1) {
                    match rx.try_recv() {
                        Ok(r) => batch.push(r),
                        Err(_) => break,
                    }
                }
                let (inputs, replies): (Vec<I>, Vec<_>) = batch.into_iter().unzip();
                let n = inputs.len();
                match run(inputs).await {
                    Ok(answers) if answers.len() == n => {
                        for (reply, answer) in replies.into_iter().zip(answers) {
                            let _ = reply.send(Some(answer));
                        }
                    }
                    Ok(answers) => {
                        tracing::error!(
                            asked = n,
                            answered = answers.len(),
                            "batch answered the wrong number of requests"
                        );
                    }
                    // Dropping the replies tells each caller to run its own query, which then
                    // reports its own error.
                    Err(e) => tracing::warn!(error = %e, requests = n, "batched query failed"),
                }
            }
        });
        Self { tx }
    }

    /// The answer to `input`, or `None` if its batch failed (the caller then runs the query
    /// alone, so that it gets an error of its own).
    pub async fn submit(&self, input: I) -> Option<O> {
        let (tx, rx) = oneshot::channel();
        self.tx.send((input, tx)).ok()?;
        rx.await.ok().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn a_burst_shares_batches_and_each_caller_gets_its_own_answer() {
        let batches = Arc::new(AtomicUsize::new(0));
        let seen = batches.clone();
        let b = Batcher::start(16, move |xs: Vec<u32>| {
            seen.fetch_add(1, Ordering::SeqCst);
            async move {
                tokio::task::yield_now().await;
                Ok::<_, String>(xs.iter().map(|x| x * 10).collect())
            }
        });
        let answers = futures_join(b.clone(), (0..100).collect()).await;
        assert_eq!(answers, (0..100).map(|x| Some(x * 10)).collect::<Vec<_>>());
        let n = batches.load(Ordering::SeqCst);
        assert!((100 / 16..100).contains(&n), "{n} batches");
    }

    #[tokio::test]
    async fn a_failed_batch_answers_none() {
        let b = Batcher::start(8, |_: Vec<u32>| async { Err::<Vec<u32>, _>("down") });
        assert_eq!(b.submit(1).await, None);
        let short = Batcher::start(8, |_: Vec<u32>| async { Ok::<Vec<u32>, String>(vec![]) });
        assert_eq!(short.submit(1).await, None);
    }

    async fn futures_join(b: Batcher<u32, u32>, xs: Vec<u32>) -> Vec<Option<u32>> {
        let handles: Vec<_> = xs
            .into_iter()
            .map(|x| {
                let b = b.clone();
                tokio::spawn(async move { b.submit(x).await })
            })
            .collect();
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await.unwrap());
        }
        out
    }
}
