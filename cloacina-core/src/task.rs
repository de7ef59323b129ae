//! Tasks: the unit of work, its error type, and helpers that turn async
//! closures into tasks.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::Duration;

use async_trait::async_trait;

use crate::context::{Context, ContextError};
use crate::ids::ExecutionId;

/// A boxed error that can cross threads; the `source` of task and storage
/// errors.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// How a failure should be treated by a [`RetryPolicy`](crate::RetryPolicy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Likely to go away by itself (network blip, timeout): retried by the
    /// `transient` and `all` conditions.
    Transient,
    /// Not expected to go away, but a retry is allowed if the policy says
    /// `all` errors (or a message pattern matches).
    Permanent,
    /// Never retried, whatever the policy.
    Fatal,
}

/// Why a task attempt failed. The variant carries the retry decision: see
/// [`TaskError::class`]. Causes are kept as `source`, not flattened.
///
/// ```
/// use cloacina_core::{TaskError, ErrorClass};
/// use std::time::Duration;
/// let e = TaskError::transient("connection reset");
/// assert_eq!(e.class(), ErrorClass::Transient);
/// let e = TaskError::retry_after(Duration::from_secs(30), "rate limited");
/// assert_eq!(e.requested_delay(), Some(Duration::from_secs(30)));
/// assert_eq!(TaskError::fatal("bad input").class(), ErrorClass::Fatal);
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TaskError {
    /// A failure expected to go away by itself.
    #[error("transient failure: {message}")]
    Transient {
        /// What happened.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
    /// A failure not expected to go away by itself.
    #[error("{message}")]
    Permanent {
        /// What happened.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
    /// A failure that must never be retried.
    #[error("fatal failure (never retried): {message}")]
    Fatal {
        /// What happened.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
    /// A transient failure that asks for a specific delay before the next
    /// attempt (overrides the policy's backoff, still capped by it).
    #[error("failure, retry requested after {}: {message}", humantime::format_duration(*.delay))]
    RetryAfter {
        /// Requested delay.
        delay: Duration,
        /// What happened.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
    /// The attempt exceeded its timeout. Transient.
    #[error("timed out after {}", humantime::format_duration(*.after))]
    Timeout {
        /// The timeout that expired.
        after: Duration,
    },
    /// The task body panicked. Permanent.
    #[error("task panicked: {message}")]
    Panicked {
        /// The panic payload, when it was a string.
        message: String,
    },
    /// The execution was cancelled while the task ran. Fatal.
    #[error("cancelled")]
    Cancelled,
    /// A context operation failed inside the task. Permanent.
    #[error(transparent)]
    Context(#[from] ContextError),
    /// The output context is larger than the runner's limit. Permanent.
    #[error("output context is {size} bytes, over the limit of {limit} bytes")]
    ContextTooLarge {
        /// Serialized size of the output.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
}

impl TaskError {
    /// A transient failure.
    pub fn transient(message: impl Into<String>) -> Self {
        Self::Transient { message: message.into(), source: None }
    }
    /// A permanent failure.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self::Permanent { message: message.into(), source: None }
    }
    /// A failure that is never retried.
    pub fn fatal(message: impl Into<String>) -> Self {
        Self::Fatal { message: message.into(), source: None }
    }
    /// A failure that asks to be retried after `delay`.
    pub fn retry_after(delay: Duration, message: impl Into<String>) -> Self {
        Self::RetryAfter { delay, message: message.into(), source: None }
    }
    /// Attaches the underlying error (for the variants that carry one).
    pub fn with_source(mut self, err: impl Into<BoxError>) -> Self {
        match &mut self {
            Self::Transient { source, .. }
            | Self::Permanent { source, .. }
            | Self::Fatal { source, .. }
            | Self::RetryAfter { source, .. } => *source = Some(err.into()),
            _ => {}
        }
        self
    }

    /// The retry class of this failure.
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::Transient { .. } | Self::RetryAfter { .. } | Self::Timeout { .. } => ErrorClass::Transient,
            Self::Fatal { .. } | Self::Cancelled => ErrorClass::Fatal,
            Self::Permanent { .. } | Self::Panicked { .. } | Self::Context(_) | Self::ContextTooLarge { .. } => {
                ErrorClass::Permanent
            }
        }
    }

    /// The delay the task asked for, if any.
    pub fn requested_delay(&self) -> Option<Duration> {
        match self {
            Self::RetryAfter { delay, .. } => Some(*delay),
            _ => None,
        }
    }

    /// The message and its chain of sources, `a: b: c`, as stored.
    pub fn chain_message(&self) -> String {
        let mut out = self.to_string();
        let mut cur = self.source();
        while let Some(e) = cur {
            out.push_str(": ");
            out.push_str(&e.to_string());
            cur = e.source();
        }
        out
    }
}

/// Converts any `Result` into a task result of a chosen class, keeping the
/// error as the source.
///
/// ```
/// use cloacina_core::{TaskError, TaskResultExt};
/// fn fetch() -> Result<u32, std::io::Error> { Err(std::io::Error::other("reset")) }
/// fn body() -> Result<u32, TaskError> { fetch().transient() }
/// assert!(matches!(body(), Err(TaskError::Transient { .. })));
/// ```
pub trait TaskResultExt<T> {
    /// Maps the error to [`TaskError::Transient`].
    fn transient(self) -> Result<T, TaskError>;
    /// Maps the error to [`TaskError::Permanent`].
    fn permanent(self) -> Result<T, TaskError>;
    /// Maps the error to [`TaskError::Fatal`].
    fn fatal(self) -> Result<T, TaskError>;
}

impl<T, E: Into<BoxError>> TaskResultExt<T> for Result<T, E> {
    fn transient(self) -> Result<T, TaskError> {
        self.map_err(|e| {
            let e = e.into();
            TaskError::Transient { message: e.to_string(), source: Some(e) }
        })
    }
    fn permanent(self) -> Result<T, TaskError> {
        self.map_err(|e| {
            let e = e.into();
            TaskError::Permanent { message: e.to_string(), source: Some(e) }
        })
    }
    fn fatal(self) -> Result<T, TaskError> {
        self.map_err(|e| {
            let e = e.into();
            TaskError::Fatal { message: e.to_string(), source: Some(e) }
        })
    }
}

/// A cooperative cancellation signal handed to running tasks.
///
/// Tasks that run for a long time should check
/// [`is_cancelled`](Self::is_cancelled) or `select!` on
/// [`cancelled`](Self::cancelled); a task that ignores it is dropped after
/// the runner's grace period.
#[derive(Clone, Default)]
pub struct Cancellation {
    inner: Arc<CancelInner>,
}

#[derive(Default)]
struct CancelInner {
    flag: AtomicBool,
    wakers: Mutex<Vec<Waker>>,
}

impl Cancellation {
    /// A signal that has not fired.
    pub fn new() -> Self {
        Self::default()
    }

    /// Fires the signal; wakes every waiter. Idempotent.
    pub fn cancel(&self) {
        if !self.inner.flag.swap(true, Ordering::SeqCst) {
            let wakers = std::mem::take(&mut *self.inner.wakers.lock().unwrap_or_else(|p| p.into_inner()));
            for w in wakers {
                w.wake();
            }
        }
    }

    /// Whether the signal has fired.
    pub fn is_cancelled(&self) -> bool {
        self.inner.flag.load(Ordering::SeqCst)
    }

    /// Resolves once the signal fires.
    pub fn cancelled(&self) -> impl Future<Output = ()> + Send + 'static {
        let inner = Arc::clone(&self.inner);
        std::future::poll_fn(move |cx| {
            if inner.flag.load(Ordering::SeqCst) {
                return Poll::Ready(());
            }
            let mut wakers = inner.wakers.lock().unwrap_or_else(|p| p.into_inner());
            if inner.flag.load(Ordering::SeqCst) {
                return Poll::Ready(());
            }
            if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
                wakers.push(cx.waker().clone());
            }
            Poll::Pending
        })
    }
}

impl fmt::Debug for Cancellation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cancellation").field("cancelled", &self.is_cancelled()).finish()
    }
}

/// What a task knows about the attempt it is running.
#[derive(Debug, Clone)]
pub struct TaskRun {
    /// The execution this task belongs to.
    pub execution_id: ExecutionId,
    /// The task's id within its workflow.
    pub task_id: String,
    /// The attempt number, starting at 1 (recoveries do not count).
    pub attempt: u32,
    /// Fires when the execution is cancelled or the runner shuts down.
    pub cancellation: Cancellation,
}

/// A unit of work. Implement it directly, or build one from an async
/// closure with [`task_fn`] / [`task_fn_with_run`].
///
/// The body receives its input context (see [`crate::context`]) mutably;
/// what it leaves there is its output. Returning `Err` makes the attempt a
/// failure that the task's [`RetryPolicy`](crate::RetryPolicy) judges.
#[async_trait]
pub trait Task: Send + Sync + 'static {
    /// Runs one attempt.
    async fn execute(&self, ctx: &mut Context, run: &TaskRun) -> Result<(), TaskError>;
}

type BoxFut = Pin<Box<dyn Future<Output = Result<Context, TaskError>> + Send + 'static>>;

struct FnTask {
    f: Box<dyn Fn(Context, TaskRun) -> BoxFut + Send + Sync>,
}

#[async_trait]
impl Task for FnTask {
    async fn execute(&self, ctx: &mut Context, run: &TaskRun) -> Result<(), TaskError> {
        let input = std::mem::take(ctx);
        let out = (self.f)(input, run.clone()).await?;
        *ctx = out;
        Ok(())
    }
}

/// A task from an async closure that takes the context by value and returns
/// it (its output).
///
/// ```
/// use cloacina_core::{task_fn, Context, TaskError};
/// let t = task_fn(|mut ctx: Context| async move {
///     ctx.set("greeting", "hello")?;
///     Ok::<_, TaskError>(ctx)
/// });
/// # let _ = t;
/// ```
pub fn task_fn<F, Fut>(f: F) -> Arc<dyn Task>
where
    F: Fn(Context) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Context, TaskError>> + Send + 'static,
{
    Arc::new(FnTask { f: Box::new(move |ctx, _run| Box::pin(f(ctx))) })
}

/// Like [`task_fn`], with the attempt's [`TaskRun`] (attempt number,
/// cancellation signal) as a second argument.
pub fn task_fn_with_run<F, Fut>(f: F) -> Arc<dyn Task>
where
    F: Fn(Context, TaskRun) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Context, TaskError>> + Send + 'static,
{
    Arc::new(FnTask { f: Box::new(move |ctx, run| Box::pin(f(ctx, run))) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run() -> TaskRun {
        TaskRun { execution_id: ExecutionId::new(), task_id: "t".into(), attempt: 1, cancellation: Cancellation::new() }
    }

    #[test]
    fn closure_tasks_return_their_context() {
        let t = task_fn(|mut ctx: Context| async move {
            let n: i64 = ctx.get_as("n")?;
            ctx.set("n", n + 1)?;
            Ok(ctx)
        });
        let mut ctx = Context::new();
        ctx.set("n", 1).unwrap();
        futures::executor::block_on(t.execute(&mut ctx, &run())).unwrap();
        assert_eq!(ctx.get_as::<i64>("n").unwrap(), 2);
    }

    #[test]
    fn context_errors_become_permanent_failures() {
        let t = task_fn(|ctx: Context| async move {
            let _: i64 = ctx.get_as("missing")?;
            Ok(ctx)
        });
        let mut ctx = Context::new();
        let err = futures::executor::block_on(t.execute(&mut ctx, &run())).unwrap_err();
        assert!(matches!(err, TaskError::Context(ContextError::KeyNotFound { .. })));
        assert_eq!(err.class(), ErrorClass::Permanent);
    }

    /// A waker that counts its wake-ups.
    struct CountingWaker(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn cancellation_wakes_waiters() {
        let c = Cancellation::new();
        let counter = Arc::new(CountingWaker(std::sync::atomic::AtomicUsize::new(0)));
        let waker = Waker::from(counter.clone());
        let mut cx = std::task::Context::from_waker(&waker);
        let mut waiting = std::pin::pin!(c.clone().cancelled());
        assert!(waiting.as_mut().poll(&mut cx).is_pending(), "not cancelled yet");
        assert!(!c.is_cancelled());
        assert_eq!(counter.0.load(Ordering::SeqCst), 0, "no wake-up before the signal");
        c.cancel();
        assert!(c.is_cancelled());
        assert_eq!(counter.0.load(Ordering::SeqCst), 1, "cancel wakes the registered waiter once");
        assert!(waiting.as_mut().poll(&mut cx).is_ready(), "woken, the waiter sees the signal");
        c.cancel();
        assert_eq!(counter.0.load(Ordering::SeqCst), 1, "cancelling again wakes nobody");
    }

    #[test]
    fn chain_message_includes_sources() {
        let e = TaskError::permanent("load failed").with_source(std::io::Error::other("disk gone"));
        assert_eq!(e.chain_message(), "load failed: disk gone");
    }
}
