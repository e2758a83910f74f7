//! Dynamic batching: the model runs on its own thread behind a bounded queue, and requests
//! that arrive close together are evaluated in one forward pass.
//!
//! A request first takes a [`Ticket`] (one of `queue_capacity` permits, else 429), decodes
//! its images, then queues a job. The model thread takes the oldest job and keeps adding
//! queued jobs until the batch holds `max_batch` images or `max_wait` has passed since that
//! oldest job was queued, whichever comes first. It waits only while other admitted requests
//! are still on their way (being read or decoded), so a lone client is answered at once; and
//! when the model was busy, the jobs that piled up meanwhile are taken without waiting. A job never splits: one that would
//! overflow the batch starts the next one, and a job bigger than `max_batch` runs alone.
//! Jobs whose client has gone are skipped. A panic inside the model fails that batch's
//! requests with a 500 and the thread carries on.
//!
//! This follows text-embeddings-inference's router (a permit per request, a queue drained
//! into batches by size, dropped requests skipped), with a time window added.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use super::error::ApiError;
use super::metrics::Metrics;

/// How requests are grouped into batches and how many may wait.
#[derive(Debug, Clone, Copy)]
pub struct BatchOptions {
    /// Most images evaluated in one forward pass (at least 1).
    pub max_batch: usize,
    /// Longest the oldest queued request waits for others before its batch runs.
    pub max_wait: Duration,
    /// Most requests admitted at once (being decoded, queued or evaluated); more get 429.
    pub queue_capacity: usize,
}

/// Class probabilities for each of a batch's images, in order (one `Vec` per image).
pub type Probabilities = Vec<Vec<f32>>;

/// What the model thread runs: CHW uint8 images, concatenated, to one probability row each.
pub type Model = Box<dyn FnMut(&[u8]) -> Probabilities + Send>;

/// A place in the queue, taken before a request does any work; given back when dropped.
#[derive(Debug)]
pub struct Ticket {
    _permit: OwnedSemaphorePermit,
}

struct Job {
    images: Vec<u8>,
    count: usize,
    queued: Instant,
    reply: oneshot::Sender<Result<Probabilities, String>>,
    // Held until the job is answered, so admission counts queued and running work.
    _ticket: Ticket,
}

/// The handle requests use to reach the model thread; cheap to share behind an `Arc`.
pub struct Batcher {
    /// Bytes in one image (CHW uint8 at the model's input size).
    image_bytes: usize,
    sender: SyncSender<Job>,
    tickets: Arc<Semaphore>,
    capacity: usize,
    running: Arc<AtomicBool>,
}

impl Batcher {
    /// Starts the model thread running `model` and returns the handle that feeds it. The
    /// thread ends once the `Batcher` is dropped and the queued jobs are answered.
    /// Starts the model thread for images of `image_bytes` bytes each.
    pub fn start(model: Model, image_bytes: usize, options: BatchOptions, metrics: Arc<Metrics>) -> Batcher {
        let capacity = options.queue_capacity;
        // One slot per ticket, so a ticket holder's send never finds the queue full.
        let (sender, receiver) = mpsc::sync_channel(capacity.max(1));
        let tickets = Arc::new(Semaphore::new(capacity));
        let running = Arc::new(AtomicBool::new(true));
        let flag = Arc::clone(&running);
        let admitted = Admitted { tickets: Arc::clone(&tickets), capacity };
        let spawned = std::thread::Builder::new().name("classify-model".into()).spawn(move || {
            crate::device::flush_subnormals();
            let _stopped = StopFlag(flag);
            run(model, &receiver, options, &admitted, &metrics);
        });
        if let Err(e) = spawned {
            tracing::error!("cannot start the model thread: {e}");
            running.store(false, Ordering::SeqCst);
        }
        Batcher { image_bytes: image_bytes.max(1), sender, tickets, capacity, running }
    }

    /// Whether the model thread is running, i.e. the server can answer predictions.
    pub fn is_ready(&self) -> bool {
        self.running.load(Ordering::SeqCst)
    }

    /// Requests admitted and not yet answered.
    pub fn in_flight(&self) -> usize {
        Admitted { tickets: Arc::clone(&self.tickets), capacity: self.capacity }.count()
    }

    /// Most requests admitted at once.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// A place in the queue, or [`ApiError::Overloaded`] when all are taken.
    pub fn admit(&self) -> Result<Ticket, ApiError> {
        if !self.is_ready() {
            return Err(ApiError::Unavailable);
        }
        Arc::clone(&self.tickets)
            .try_acquire_owned()
            .map(|permit| Ticket { _permit: permit })
            .map_err(|_| ApiError::Overloaded(self.capacity))
    }

    /// Class probabilities of `images` (CHW uint8, one image each `image_bytes`), once the model
    /// thread has evaluated them in some batch.
    pub async fn classify(&self, ticket: Ticket, images: Vec<u8>) -> Result<Probabilities, ApiError> {
        if images.len() < self.image_bytes {
            return Ok(Vec::new());
        }
        self.submit(ticket, images)?.wait().await
    }

    /// Queues `images` for the model thread without waiting for the answer.
    pub fn submit(&self, ticket: Ticket, images: Vec<u8>) -> Result<Answer, ApiError> {
        let count = images.len() / self.image_bytes;
        let (reply, answer) = oneshot::channel();
        let job = Job { images, count, queued: Instant::now(), reply, _ticket: ticket };
        self.sender.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) => ApiError::Overloaded(self.capacity),
            TrySendError::Disconnected(_) => ApiError::Unavailable,
        })?;
        Ok(Answer(answer))
    }
}

/// The model thread's answer to one queued job, to be awaited.
#[derive(Debug)]
pub struct Answer(oneshot::Receiver<Result<Probabilities, String>>);

impl Answer {
    /// The job's probabilities; [`ApiError::Internal`] if its batch failed.
    pub async fn wait(self) -> Result<Probabilities, ApiError> {
        match self.0.await {
            Ok(Ok(probs)) => Ok(probs),
            Ok(Err(reason)) => Err(ApiError::Internal(reason)),
            Err(_) => Err(ApiError::Unavailable),
        }
    }
}

/// Longest the model thread sleeps before checking again whether others are still coming.
const WAIT_SLICE: Duration = Duration::from_millis(1);

/// Counts the tickets out, as seen from the model thread.
struct Admitted {
    tickets: Arc<Semaphore>,
    capacity: usize,
}

impl Admitted {
    fn count(&self) -> usize {
        self.capacity.saturating_sub(self.tickets.available_permits())
    }
}

/// Clears the running flag when the model thread ends, however it ends.
struct StopFlag(Arc<AtomicBool>);

impl Drop for StopFlag {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// The model thread: gather a batch, evaluate it, answer its jobs; until the queue closes.
///
/// While gathering, it waits (until the deadline) only while some admitted request is not in
/// the batch yet, i.e. is still being read or decoded: a lone client never pays `max_wait`.
fn run(mut model: Model, receiver: &Receiver<Job>, options: BatchOptions, admitted: &Admitted, metrics: &Metrics) {
    let max_batch = options.max_batch.max(1);
    let mut carried: Option<Job> = None;
    loop {
        let first = match carried.take() {
            Some(job) => job,
            None => match receiver.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
        };
        if first.reply.is_closed() {
            continue;
        }
        let deadline = first.queued + options.max_wait;
        let mut images = first.count;
        let mut batch = vec![first];
        while images < max_batch {
            let others_coming = admitted.count() > batch.len();
            let left = deadline.saturating_duration_since(Instant::now());
            let next = if others_coming && !left.is_zero() {
                // In short slices, so a request that fails to decode (and never comes) stops
                // the wait soon after it gives its ticket back.
                match receiver.recv_timeout(left.min(WAIT_SLICE)) {
                    Err(RecvTimeoutError::Timeout) => continue,
                    other => other.ok(),
                }
            } else {
                receiver.try_recv().ok()
            };
            // Nothing more queued (or the queue closed): run what we have.
            let Some(job) = next else { break };
            if job.reply.is_closed() {
                continue;
            }
            if images + job.count > max_batch {
                carried = Some(job);
                break;
            }
            images += job.count;
            batch.push(job);
        }
        evaluate(&mut model, batch, images, metrics);
    }
}

/// Runs one batch through the model and sends each job its rows.
fn evaluate(model: &mut Model, batch: Vec<Job>, images: usize, metrics: &Metrics) {
    let started = Instant::now();
    let mut input = Vec::with_capacity(batch.iter().map(|job| job.images.len()).sum());
    for job in &batch {
        input.extend_from_slice(&job.images);
    }
    let result = catch_unwind(AssertUnwindSafe(|| model(&input)));
    metrics.observe_batch(images, started.elapsed());
    let mut rows = match result {
        Ok(rows) if rows.len() == images => rows.into_iter(),
        Ok(rows) => {
            let reason = format!("the model returned {} rows for {images} images", rows.len());
            return fail(batch, &reason);
        }
        Err(_) => return fail(batch, "the model panicked on this batch; see the server log"),
    };
    for Job { count, reply, _ticket, .. } in batch {
        let probs: Probabilities = rows.by_ref().take(count).collect();
        // The place in the queue is free before the client hears back, so a client that
        // sends its next request at once finds it free.
        drop(_ticket);
        // A client that has gone no longer needs its answer.
        let _ = reply.send(Ok(probs));
    }
}

fn fail(batch: Vec<Job>, reason: &str) {
    tracing::error!("batch of {} requests failed: {reason}", batch.len());
    for Job { reply, _ticket, .. } in batch {
        drop(_ticket);
        let _ = reply.send(Err(reason.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::IMAGE_BYTES;
    use std::sync::Mutex;

    /// A model that reports each batch's size, can be held on its first call, and answers
    /// each image with its first byte as the only probability.
    fn recording_model(sizes: Arc<Mutex<Vec<usize>>>, gate: Option<(mpsc::Sender<()>, mpsc::Receiver<()>)>) -> Model {
        let mut gate = gate;
        Box::new(move |images: &[u8]| {
            if let Some((started, release)) = gate.take() {
                let _ = started.send(());
                let _ = release.recv();
            }
            sizes.lock().unwrap().push(images.len() / IMAGE_BYTES);
            images.chunks(IMAGE_BYTES).map(|img| vec![f32::from(img[0])]).collect()
        })
    }

    fn images(values: &[u8]) -> Vec<u8> {
        values.iter().flat_map(|&v| vec![v; IMAGE_BYTES]).collect()
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    #[test]
    fn requests_queued_while_the_model_is_busy_share_a_batch_up_to_max_batch() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let (started_tx, started_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel();
        let options = BatchOptions { max_batch: 3, max_wait: Duration::ZERO, queue_capacity: 8 };
        let model = recording_model(Arc::clone(&sizes), Some((started_tx, release_rx)));
        let batcher = Batcher::start(model, IMAGE_BYTES, options, Arc::new(Metrics::default()));
        let submit = |values: &[u8]| batcher.submit(batcher.admit().unwrap(), images(values)).unwrap();
        let first = submit(&[1]);
        started_rx.recv().unwrap();
        // The model is now busy with the first job; these queue up behind it, in this order.
        let second = submit(&[2, 3]);
        let third = submit(&[4]);
        let fourth = submit(&[5, 6]);
        assert_eq!(batcher.in_flight(), 4);
        release_tx.send(()).unwrap();
        let answers = runtime().block_on(async {
            [
                first.wait().await.unwrap(),
                second.wait().await.unwrap(),
                third.wait().await.unwrap(),
                fourth.wait().await.unwrap(),
            ]
        });
        assert_eq!(answers[0], vec![vec![1.0]]);
        assert_eq!(answers[1], vec![vec![2.0], vec![3.0]]);
        assert_eq!(answers[2], vec![vec![4.0]]);
        assert_eq!(answers[3], vec![vec![5.0], vec![6.0]]);
        // [1] alone; [2,3] + [4] fill 3; [5,6] would overflow and starts the next batch.
        assert_eq!(*sizes.lock().unwrap(), vec![1, 3, 2]);
    }

    #[test]
    fn a_job_bigger_than_max_batch_runs_alone_and_whole() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let options = BatchOptions { max_batch: 2, max_wait: Duration::ZERO, queue_capacity: 4 };
        let batcher = Batcher::start(
            recording_model(Arc::clone(&sizes), None),
            IMAGE_BYTES,
            options,
            Arc::new(Metrics::default()),
        );
        let probs = runtime().block_on(async {
            let ticket = batcher.admit().unwrap();
            batcher.classify(ticket, images(&[7, 8, 9, 10, 11])).await.unwrap()
        });
        assert_eq!(probs.len(), 5);
        assert_eq!(probs[4], vec![11.0]);
        assert_eq!(*sizes.lock().unwrap(), vec![5]);
    }

    #[test]
    fn a_lone_request_does_not_wait_for_company_but_waits_for_admitted_ones() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        // A window far longer than any test: waiting it out would hang, not pass.
        let options = BatchOptions { max_batch: 8, max_wait: Duration::from_secs(3600), queue_capacity: 4 };
        let batcher = Batcher::start(
            recording_model(Arc::clone(&sizes), None),
            IMAGE_BYTES,
            options,
            Arc::new(Metrics::default()),
        );
        let rt = runtime();
        let guard = |answer: Answer| async move {
            tokio::time::timeout(Duration::from_secs(60), answer.wait()).await.expect("hang guard").unwrap()
        };
        let alone = batcher.submit(batcher.admit().unwrap(), images(&[1])).unwrap();
        assert_eq!(rt.block_on(guard(alone)), vec![vec![1.0]]);
        // A second admitted request is on its way: the first waits for it and they share a batch.
        let first_ticket = batcher.admit().unwrap();
        let second_ticket = batcher.admit().unwrap();
        let first = batcher.submit(first_ticket, images(&[2])).unwrap();
        let second = batcher.submit(second_ticket, images(&[3])).unwrap();
        assert_eq!(rt.block_on(guard(first)), vec![vec![2.0]]);
        assert_eq!(rt.block_on(guard(second)), vec![vec![3.0]]);
        assert_eq!(*sizes.lock().unwrap(), vec![1, 2]);
    }

    #[test]
    fn admission_stops_at_capacity_and_resumes_when_tickets_return() {
        let options = BatchOptions { max_batch: 1, max_wait: Duration::ZERO, queue_capacity: 2 };
        let batcher =
            Batcher::start(recording_model(Arc::default(), None), IMAGE_BYTES, options, Arc::new(Metrics::default()));
        let a = batcher.admit().unwrap();
        let _b = batcher.admit().unwrap();
        assert!(matches!(batcher.admit(), Err(ApiError::Overloaded(2))));
        assert_eq!(batcher.in_flight(), 2);
        drop(a);
        assert!(batcher.admit().is_ok());
    }

    #[test]
    fn a_panicking_model_fails_the_batch_and_keeps_serving() {
        let mut calls = 0;
        let model: Model = Box::new(move |images: &[u8]| {
            calls += 1;
            if calls == 1 {
                panic!("simulated model fault");
            }
            vec![vec![1.0]; images.len() / IMAGE_BYTES]
        });
        let options = BatchOptions { max_batch: 1, max_wait: Duration::ZERO, queue_capacity: 2 };
        let batcher = Batcher::start(model, IMAGE_BYTES, options, Arc::new(Metrics::default()));
        let rt = runtime();
        let first = rt.block_on(batcher.classify(batcher.admit().unwrap(), images(&[1])));
        assert!(matches!(first, Err(ApiError::Internal(_))), "{first:?}");
        let second = rt.block_on(batcher.classify(batcher.admit().unwrap(), images(&[1])));
        assert_eq!(second.unwrap(), vec![vec![1.0]]);
        assert!(batcher.is_ready());
    }
}
