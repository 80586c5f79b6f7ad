//! Mapping worker processes: evaluations run outside the proxy's process.
//!
//! jq (jaq) has no limits of its own: a recursive filter overflows the stack, which aborts a
//! process and cannot be caught; an endless one cannot be interrupted inside a thread. So every
//! evaluation runs in a worker process (`shadowdiff mapping-worker`, the same binary), on a
//! thread with a large stack, inside `catch_unwind`, with the engine's own budgets (JSONata:
//! time, stack depth, sequence length). The caller waits up to the time budget (plus a grace
//! for the round trip): past it the worker is killed and a fresh one takes its place on the
//! next call; a worker that died (stack overflow, abort) is replaced the same way. Either way
//! the exchange gets `mapping_error`, and the proxy never stalls or crashes.
//!
//! Protocol (one JSON text per line): the request is a header line
//! `{"levels": [{"lang": "jq", "source": "..."}], "timeout_ms": 200}` then the input document;
//! the answer is `{"ok": true}` then the output document, or `{"ok": false, "kind": "...",
//! "message": "..."}`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Chain, Lang, Level, Limits, MappingError};

/// Extra time the caller gives a worker beyond the evaluation budget (the process round trip,
/// and a loaded machine).
const GRACE: Duration = Duration::from_secs(1);
/// Stack of the evaluating thread in a worker.
const WORKER_STACK: usize = 256 << 20;

#[derive(Serialize, Deserialize)]
struct Request {
    levels: Vec<LevelSpec>,
    timeout_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_stack: Option<usize>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    undefined_input: bool,
}

/// Evaluation settings beyond the time budget (the conformance suite's `depth` and undefined
/// inputs).
#[derive(Debug, Clone, Copy, Default)]
pub struct Extra {
    pub max_stack: Option<usize>,
    pub undefined_input: bool,
}

#[derive(Serialize, Deserialize, Clone)]
struct LevelSpec {
    lang: Lang,
    source: String,
    name: String,
    origin: String,
}

#[derive(Serialize, Deserialize)]
struct Answer {
    ok: bool,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    message: String,
}

struct Worker {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<std::io::Result<String>>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A pool of mapping worker processes.
pub struct Runner {
    exe: PathBuf,
    max: usize,
    idle: Mutex<Vec<Worker>>,
    busy: Mutex<usize>,
    freed: Condvar,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("exe", &self.exe)
            .field("max", &self.max)
            .finish()
    }
}

impl Runner {
    /// A pool of at most `workers` processes of `exe` (the shadowdiff binary). Processes start
    /// on first use.
    pub fn new(exe: PathBuf, workers: usize) -> Arc<Self> {
        Arc::new(Self {
            exe,
            max: workers.max(1),
            idle: Mutex::new(Vec::new()),
            busy: Mutex::new(0),
            freed: Condvar::new(),
        })
    }

    /// Starts the worker processes now, so that the first exchanges do not wait for them.
    pub fn warm(&self) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while idle.len() < self.max {
            match self.spawn() {
                Ok(w) => idle.push(w),
                Err(e) => {
                    tracing::warn!(error = %e, "mapping worker did not start");
                    return;
                }
            }
        }
    }

    /// The pool for this binary (`std::env::current_exe`).
    pub fn for_this_binary(workers: usize) -> Result<Arc<Self>, MappingError> {
        let exe = std::env::current_exe()
            .map_err(|e| MappingError::Unavailable(format!("finding this binary: {e}")))?;
        Ok(Self::new(exe, workers))
    }

    /// Applies `chain` to `input` in a worker, within `timeout`. Blocks the calling thread:
    /// call it from a blocking context.
    pub fn run(
        &self,
        chain: &Chain,
        input: &Value,
        timeout: Duration,
    ) -> Result<Value, MappingError> {
        self.run_with(chain, input, timeout, Extra::default())
    }

    /// [`run`](Self::run) with extra settings.
    pub fn run_with(
        &self,
        chain: &Chain,
        input: &Value,
        timeout: Duration,
        extra: Extra,
    ) -> Result<Value, MappingError> {
        // A free slot, waiting at most one budget (plus grace) for it.
        {
            let wait_until = Instant::now() + timeout + GRACE;
            let mut busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
            while *busy >= self.max {
                let left = wait_until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(MappingError::Unavailable(format!(
                        "all {} mapping workers stayed busy for {timeout:?}",
                        self.max
                    )));
                }
                busy = self
                    .freed
                    .wait_timeout(busy, left)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            *busy += 1;
        }
        let result = self.run_in_slot(chain, input, timeout, extra);
        *self.busy.lock().unwrap_or_else(|p| p.into_inner()) -= 1;
        self.freed.notify_one();
        result
    }

    fn run_in_slot(
        &self,
        chain: &Chain,
        input: &Value,
        timeout: Duration,
        extra: Extra,
    ) -> Result<Value, MappingError> {
        let worker = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut worker = match worker {
            Some(w) => w,
            None => self.spawn()?,
        };
        // The budget starts once a worker is ready (starting one is not the mapping's time).
        let deadline = Instant::now() + timeout + GRACE;
        let req = Request {
            levels: chain
                .levels
                .iter()
                .map(|l| LevelSpec {
                    lang: l.mapping.lang(),
                    source: l.mapping.source().to_owned(),
                    name: l.name.clone(),
                    origin: l.origin.clone(),
                })
                .collect(),
            timeout_ms: timeout.as_millis() as u64,
            max_stack: extra.max_stack,
            undefined_input: extra.undefined_input,
        };
        let mut msg = serde_json::to_string(&req).expect("a request serialises");
        msg.push('\n');
        msg.push_str(&input.to_string());
        msg.push('\n');
        if let Err(e) = worker
            .stdin
            .write_all(msg.as_bytes())
            .and_then(|()| worker.stdin.flush())
        {
            return Err(self.died(worker, &format!("writing to it: {e}")));
        }
        let line = || -> Result<String, MappingError> {
            match worker
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(Ok(l)) => Ok(l),
                Ok(Err(e)) => Err(MappingError::Crash(format!("reading its answer: {e}"))),
                Err(RecvTimeoutError::Timeout) => Err(MappingError::Timeout(timeout)),
                Err(RecvTimeoutError::Disconnected) => Err(MappingError::Crash(String::new())),
            }
        };
        let head = line().and_then(|h| {
            serde_json::from_str::<Answer>(&h)
                .map_err(|e| MappingError::Crash(format!("unreadable answer: {e}")))
        });
        let head = match head {
            Ok(h) => h,
            Err(MappingError::Crash(m)) => return Err(self.died(worker, &m)),
            // Timed out: the worker is killed (dropped) and replaced on next use.
            Err(e) => return Err(e),
        };
        if !head.ok {
            self.idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(worker);
            return Err(error_of(&head.kind, head.message, timeout));
        }
        let body = match line() {
            Ok(b) => b,
            Err(MappingError::Crash(m)) => return Err(self.died(worker, &m)),
            Err(e) => return Err(e),
        };
        self.idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(worker);
        crate::diff::parse_json(body.as_bytes())
            .map_err(|e| MappingError::Output(format!("mapping output: {e}")))
    }

    /// The error for a worker that stopped answering; the worker is reaped.
    fn died(&self, mut w: Worker, detail: &str) -> MappingError {
        let _ = w.child.kill();
        let status = w.child.wait().ok();
        let how = match status {
            Some(s) => describe_exit(s),
            None => "it died".into(),
        };
        let sep = if detail.is_empty() { "" } else { "; " };
        MappingError::Crash(format!("{how}{sep}{detail}"))
    }

    fn spawn(&self) -> Result<Worker, MappingError> {
        let mut child = Command::new(&self.exe)
            .arg("mapping-worker")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| {
                MappingError::Unavailable(format!("starting {}: {e}", self.exe.display()))
            })?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("mapping-reader".into())
            .spawn(move || {
                for l in BufReader::new(stdout).lines() {
                    if tx.send(l).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| MappingError::Unavailable(format!("reader thread: {e}")))?;
        Ok(Worker {
            child,
            stdin,
            lines: rx,
        })
    }
}

fn describe_exit(s: std::process::ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = s.signal() {
            let name = match sig {
                6 => " (abort: a stack overflow, or out of memory)",
                9 => " (killed)",
                11 => " (segmentation fault)",
                _ => "",
            };
            return format!("the worker process died of signal {sig}{name}");
        }
    }
    format!("the worker process exited ({s})")
}

fn kind_of(e: &MappingError) -> &'static str {
    match e {
        MappingError::Compile(_) => "compile",
        MappingError::Eval(_) => "eval",
        MappingError::Nothing => "nothing",
        MappingError::Timeout(_) => "timeout",
        MappingError::Crash(_) => "crash",
        MappingError::Output(_) => "output",
        MappingError::Unavailable(_) => "unavailable",
    }
}

fn error_of(kind: &str, message: String, timeout: Duration) -> MappingError {
    match kind {
        "compile" => MappingError::Compile(message),
        "nothing" => MappingError::Nothing,
        "timeout" => MappingError::Timeout(timeout),
        "crash" => MappingError::Crash(message),
        "output" => MappingError::Output(message),
        _ => MappingError::Eval(message),
    }
}

/// The worker process: answers requests on stdin until it closes. Returns the exit code.
pub fn worker_main() -> i32 {
    // Panics are answered as errors; their default report would only repeat them.
    std::panic::set_hook(Box::new(|_| {}));
    let worker = std::thread::Builder::new()
        .name("mapping-worker".into())
        .stack_size(WORKER_STACK)
        .spawn(serve_stdin);
    match worker.map(std::thread::JoinHandle::join) {
        Ok(Ok(())) => 0,
        _ => 3,
    }
}

fn serve_stdin() {
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut cache: HashMap<u64, Arc<Chain>> = HashMap::new();
    let mut head = String::new();
    let mut doc = String::new();
    loop {
        head.clear();
        doc.clear();
        match (input.read_line(&mut head), input.read_line(&mut doc)) {
            (Ok(0), _) | (_, Ok(0)) | (Err(_), _) | (_, Err(_)) => return,
            _ => {}
        }
        let answer = guarded(|| evaluate(&head, &doc, &mut cache));
        let text = match answer {
            Ok(v) => format!("{{\"ok\":true}}\n{v}\n"),
            Err(e) => {
                let a = Answer {
                    ok: false,
                    kind: kind_of(&e).into(),
                    message: e.to_string(),
                };
                format!("{}\n", serde_json::to_string(&a).expect("serialises"))
            }
        };
        if out
            .write_all(text.as_bytes())
            .and_then(|()| out.flush())
            .is_err()
        {
            return;
        }
    }
}

/// Runs an evaluation; a panic becomes an error (the worker goes on serving).
fn guarded(f: impl FnOnce() -> Result<Value, MappingError>) -> Result<Value, MappingError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|p| {
        let msg = p
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".into());
        Err(MappingError::Crash(format!("the engine panicked: {msg}")))
    })
}

fn evaluate(
    head: &str,
    doc: &str,
    cache: &mut HashMap<u64, Arc<Chain>>,
) -> Result<Value, MappingError> {
    let req: Request =
        serde_json::from_str(head).map_err(|e| MappingError::Eval(format!("bad request: {e}")))?;
    let input = crate::diff::parse_json(doc.as_bytes())
        .map_err(|e| MappingError::Eval(format!("input: {e}")))?;
    let key = {
        let mut h = xxhash_rust::xxh3::Xxh3Default::new();
        for l in &req.levels {
            h.update(l.lang.as_str().as_bytes());
            h.update(&[0]);
            h.update(l.source.as_bytes());
            h.update(&[0]);
            h.update(l.name.as_bytes());
            h.update(&[0]);
            h.update(l.origin.as_bytes());
            h.update(&[0]);
        }
        h.digest()
    };
    let chain = match cache.get(&key) {
        Some(c) => c.clone(),
        None => {
            let mut levels = Vec::with_capacity(req.levels.len());
            for l in &req.levels {
                levels.push(Level {
                    name: l.name.clone(),
                    origin: l.origin.clone(),
                    mapping: super::compile(l.lang, &l.source)?,
                });
            }
            let c = Arc::new(Chain::new(levels));
            if cache.len() >= 256 {
                cache.clear();
            }
            cache.insert(key, c.clone());
            c
        }
    };
    let mut limits = Limits::new(Duration::from_millis(req.timeout_ms));
    if let Some(d) = req.max_stack {
        limits.max_stack = d;
    }
    limits.undefined_input = req.undefined_input;
    chain.apply(&input, &limits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_evaluation_is_an_error_not_a_dead_worker() {
        let e = guarded(|| panic!("engine bug")).unwrap_err();
        assert_eq!(
            e,
            MappingError::Crash("the engine panicked: engine bug".into())
        );
        assert_eq!(guarded(|| Ok(Value::Null)), Ok(Value::Null));
    }

    #[test]
    fn a_worker_that_cannot_start_is_unavailable() {
        let r = Runner::new("/nonexistent/shadowdiff".into(), 1);
        let chain = Chain::new(vec![]);
        let e = r
            .run(&chain, &Value::Null, Duration::from_millis(100))
            .unwrap_err();
        assert!(matches!(e, MappingError::Unavailable(_)), "{e}");
    }
}
