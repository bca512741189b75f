//! The TCP rendezvous: rank 0 listens, the other ranks connect; then broadcast, gather,
//! barrier and abort over those connections, every wait bounded.
//!
//! # Joining
//!
//! Rank 0 listens on the master port (on `0.0.0.0`, or `[::]` when the master address is
//! IPv6 only) and admits connections until every rank has joined or the join timeout
//! passes. If the port is busy (the previous job's rank 0 has not exited yet) it retries
//! until the join deadline. It first checks that the master address is one of its own,
//! so a wrong `MASTER_ADDR` fails at once instead of after the timeout.
//!
//! Every other rank connects with retry and backoff until its join deadline: rank 0 may
//! start later than the others. On connection it sends a `Hello` (job token, rank, world
//! size, build id, a label "host pid N"). Rank 0 answers `Welcome`, or `Reject` with the
//! reason and closes the connection, for:
//!
//! * bytes that are not the protocol (wrong magic), another protocol version, a frame over
//!   the 4 KiB hello limit, or no hello within 10 s;
//! * another job's token: *not* fatal for the client, which keeps retrying until its
//!   deadline, because a previous job's rank 0 may still hold the port for a moment;
//! * another build, another world size, rank 0 or an out-of-range rank, a rank that has
//!   already joined: fatal, these are this job's configuration errors.
//!
//! A rejection is logged by rank 0 (stderr, unless `log_rejections` is off) and does not
//! disturb the job: rank 0 goes on waiting for the legitimate ranks. When every rank has
//! joined, rank 0 sends `Ready` to all and stops listening; `join` returns on every rank
//! at that point. If the join deadline passes first, rank 0 fails with "rank 3 never
//! joined within 120 s" (with the first rejection, if any, as a hint) and sends that to
//! every rank that did join.
//!
//! # Operations
//!
//! All ranks call the same operations in the same order; each has a sequence number, so
//! ranks that call different ones are told so ("rank 1 is in gather #3 while rank 0 is in
//! barrier #3") instead of hanging.
//!
//! * [`Rendezvous::broadcast`]: rank 0 sends its bytes to every rank (the 128-byte NCCL
//!   unique id).
//! * [`Rendezvous::gather`]: every rank sends its bytes to rank 0; rank 0 gets them all,
//!   in rank order, and answers `GatherDone`, so the call returns on every rank only once
//!   rank 0 holds every part.
//! * [`Rendezvous::barrier`]: returns on every rank once all have entered it.
//!
//! # Failure model
//!
//! A reader thread per connection reads every frame as it arrives, so a failure is
//! noticed when it happens, not at the next operation:
//!
//! * a connection that closes without a `Bye` means that rank exited or crashed: "rank 2
//!   (node3 pid 4242) closed its connection (it exited or crashed) during gather #3";
//! * an operation whose deadline passes names the ranks that are late: "rank 2 sent
//!   nothing for gather #3 within 300 s";
//! * [`Rendezvous::abort`] fails the job on purpose with a reason.
//!
//! The first failure is the cause: it is recorded, and sent as an `Abort` frame to every
//! rank still connected (rank 0 relays what a rank reports), so every process exits with
//! the same sentence; ranks that learn it from rank 0 prefix it with "rank 0 reports: "
//! when it is about another rank. After that, every operation returns that error at once. Non-zero
//! ranks notice rank 0's death by end of file. A rank stuck outside the rendezvous (in a
//! GPU collective, say) can poll [`Rendezvous::poll_failure`] or a [`FailureWatch`] from
//! another thread to learn of it and abort its collective.
//!
//! Non-zero ranks wait a little longer than the timeouts (10 % plus 1 s, at most 30 s)
//! so that rank 0's verdict, which names the culprit, usually arrives before their own.
//!
//! Dropping a [`Rendezvous`] (or [`Rendezvous::close`]) sends `Bye`: a rank that
//! finished is not mistaken for one that crashed. A host that vanishes without closing
//! its sockets (power loss, a cable) is only caught by the operation deadlines.
//!
//! Not a security boundary: the job token keeps jobs apart, it does not authenticate.

use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use crate::error::{name_ranks, seconds, FailureKind, RendezvousError};
use crate::launch::{Endpoint, Launch, Timeouts, MAX_TOKEN_BYTES, MAX_WORLD_SIZE};
use crate::wire::{self, Frame, Hello, WireError, MAX_DATA_BYTES, MAX_HELLO_PAYLOAD, MAX_PAYLOAD};

/// How long rank 0 waits for a new connection's hello. A real rank sends it right after
/// connecting; this only bounds a stranger that connects and says nothing.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Replies to a hello (welcome, reject) are small; anything longer is not rank 0.
const MAX_REPLY_PAYLOAD: usize = 64 * 1024;

/// How often rank 0's join loop looks for new connections while no event arrives.
const ACCEPT_POLL: Duration = Duration::from_millis(5);

/// Longest wait between connection attempts of a non-zero rank.
const MAX_BACKOFF: Duration = Duration::from_millis(500);

/// A bound on writes that are only courtesy (goodbye, abort): a peer that stopped
/// reading must not hold up an exit.
const COURTESY_WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long closing after a failure waits for the other ranks to hang up, so the abort
/// frame is not destroyed by a reset (see `Rendezvous::shutdown`).
const LINGER: Duration = Duration::from_secs(2);

/// Stack of the per-connection threads: they only read frames.
const THREAD_STACK: usize = 256 * 1024;

/// Everything [`Rendezvous::join`] needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RendezvousConfig {
    /// This process's rank.
    pub rank: usize,
    /// Number of processes in the job.
    pub world_size: usize,
    /// Where rank 0 listens; required when `world_size > 1`.
    pub master: Option<Endpoint>,
    /// Identity of the job (see [`crate::launch`]); every rank must present the same.
    pub job_token: String,
    /// Join and per-operation deadlines.
    pub timeouts: Timeouts,
    /// Identity of the software; rank 0 refuses ranks that run a different one. Default:
    /// this crate's version. The CLI should put solbench's version and git revision here,
    /// so a node with a stale binary is refused with a sentence, not mixed in.
    pub build_id: String,
    /// How this process is named in other ranks' messages. Default: "host pid N".
    pub label: String,
    /// Whether rank 0 prints each rejected connection to stderr. Default: true.
    pub log_rejections: bool,
}

impl RendezvousConfig {
    /// A configuration with the default timeouts, build id and label.
    pub fn new(
        rank: usize,
        world_size: usize,
        master: Option<Endpoint>,
        job_token: impl Into<String>,
    ) -> Self {
        Self {
            rank,
            world_size,
            master,
            job_token: job_token.into(),
            timeouts: Timeouts::default(),
            build_id: env!("CARGO_PKG_VERSION").to_string(),
            label: default_label(),
            log_rejections: true,
        }
    }

    /// The configuration for what the launcher said, with these timeouts.
    pub fn from_launch(launch: &Launch, timeouts: Timeouts) -> Self {
        let mut config = Self::new(
            launch.rank,
            launch.world_size,
            launch.master.clone(),
            launch.job_token.clone(),
        );
        config.timeouts = timeouts;
        config
    }
}

/// "host pid N", naming this process in other ranks' messages.
pub fn default_label() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| "unknown-host".to_string());
    format!("{host} pid {}", std::process::id())
}

/// A joined job: this process's connections to the others (rank 0) or to rank 0
/// (other ranks). See the module docs for the protocol and the failure model.
///
/// Operations are collective: every rank calls the same ones in the same order.
pub struct Rendezvous {
    rank: usize,
    world_size: usize,
    timeouts: Timeouts,
    seq: u64,
    closed: bool,
    /// `None` for a single process: every operation is local.
    link: Option<Link>,
}

struct Link {
    shared: Arc<Shared>,
    events: Receiver<Event>,
    /// Kept so the channel never reports "disconnected" while the rendezvous lives.
    _keep: Sender<Event>,
}

/// A handle that says whether the job has failed, usable from another thread (a
/// watchdog around a GPU collective that may hang). Cheap to clone.
#[derive(Clone)]
pub struct FailureWatch {
    shared: Option<Arc<Shared>>,
}

impl FailureWatch {
    /// The job's failure, if any: a rank exited, aborted or timed out.
    pub fn failure(&self) -> Option<RendezvousError> {
        self.shared.as_ref().and_then(|s| s.failure())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Join,
    Broadcast,
    Gather,
    Barrier,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Join => "join",
            Op::Broadcast => "broadcast",
            Op::Gather => "gather",
            Op::Barrier => "barrier",
        }
    }
}

/// Where the job is, for messages written by the reader threads.
#[derive(Debug, Clone, Copy)]
struct Phase {
    op: Op,
    seq: u64,
    active: bool,
}

impl Phase {
    fn describe(self) -> String {
        match (self.op, self.active) {
            (Op::Join, true) => "during the join".to_string(),
            (Op::Join, false) => "after joining".to_string(),
            (op, true) => format!("during {} #{}", op.name(), self.seq),
            (op, false) => format!("after {} #{}", op.name(), self.seq),
        }
    }
}

/// What the reader and handshake threads tell the thread that owns the rendezvous.
enum Event {
    /// Rank 0: a rank was admitted (its writer and label are in `Shared`).
    Joined,
    /// Rank 0: a connection was turned away, and why.
    Rejected(String),
    /// A frame from a rank.
    Frame { from: usize, frame: Frame },
    /// A rank said goodbye.
    Departed { from: usize },
    /// The job failed; the failure is in `Shared`.
    Failed,
}

/// State shared with the reader and handshake threads.
struct Shared {
    rank: usize,
    world_size: usize,
    /// Write halves, by peer rank (rank 0 holds every other rank's; the others only
    /// index 0). One lock per connection, so a slow peer delays only its own writes.
    writers: Vec<Mutex<Option<TcpStream>>>,
    /// Labels by rank; on rank 0 a `Some` also means "this rank has joined".
    labels: Mutex<Vec<Option<String>>>,
    failure: Mutex<Option<RendezvousError>>,
    phase: Mutex<Phase>,
    /// Set while this process closes, so its own shutdown is not read as a failure.
    closing: AtomicBool,
    /// Peers that said goodbye, by rank.
    departed: Vec<AtomicBool>,
    /// Reader threads of admitted connections still running (they end at end of file).
    live_readers: AtomicUsize,
    op_timeout: Duration,
}

/// Locks, ignoring poisoning: the data behind these locks stays consistent (plain
/// values and sockets), and a panicking thread must not turn into a second failure.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    fn new(rank: usize, world_size: usize, op_timeout: Duration) -> Self {
        Self {
            rank,
            world_size,
            writers: (0..world_size).map(|_| Mutex::new(None)).collect(),
            labels: Mutex::new(vec![None; world_size]),
            failure: Mutex::new(None),
            phase: Mutex::new(Phase {
                op: Op::Join,
                seq: 0,
                active: true,
            }),
            closing: AtomicBool::new(false),
            departed: (0..world_size).map(|_| AtomicBool::new(false)).collect(),
            live_readers: AtomicUsize::new(0),
            op_timeout,
        }
    }

    fn failure(&self) -> Option<RendezvousError> {
        lock(&self.failure).clone()
    }

    fn phase(&self) -> String {
        lock(&self.phase).describe()
    }

    fn set_phase(&self, op: Op, seq: u64, active: bool) {
        *lock(&self.phase) = Phase { op, seq, active };
    }

    /// "rank 2 (node3 pid 4242)".
    fn who(&self, rank: usize) -> String {
        match lock(&self.labels).get(rank).cloned().flatten() {
            Some(label) => format!("rank {rank} ({label})"),
            None => format!("rank {rank}"),
        }
    }

    /// Records the job's failure (the first one wins: later ones are consequences) and
    /// tells every connected rank except `skip` (the one that reported it, or a dead
    /// one). Rank 0 tells every rank; the others tell rank 0, which relays. Returns the
    /// recorded failure.
    ///
    /// The others are told *before* the failure becomes visible in this process: the
    /// thread that sees it may exit the process at once, and an abort frame not yet
    /// written would die with it. The write sides are then half-closed, so the abort is
    /// followed by end of file and nothing else is ever sent.
    fn fail(&self, err: RendezvousError, skip: Option<usize>) -> RendezvousError {
        // Held across the writes, so a second failure waits and then returns the first.
        let mut slot = lock(&self.failure);
        if let Some(first) = slot.as_ref() {
            return first.clone();
        }
        let bytes = abort_frame(&err).encode();
        for peer in self.peers() {
            if Some(peer) != skip {
                self.courtesy_write(peer, &bytes);
            }
            self.close_write(peer);
        }
        *slot = Some(err.clone());
        err
    }

    /// The ranks this process has connections to.
    fn peers(&self) -> Vec<usize> {
        if self.rank == 0 {
            (1..self.world_size).collect()
        } else {
            vec![0]
        }
    }

    /// Sends end of file to `peer` (after whatever was written), keeping the read side
    /// open so the reader thread still drains what the peer sends.
    fn close_write(&self, peer: usize) {
        if let Some(stream) = lock(&self.writers[peer]).as_ref() {
            let _ = stream.shutdown(std::net::Shutdown::Write);
        }
    }

    /// A write whose failure changes nothing (the peer is told of a failure, or
    /// goodbye), bounded so a peer that stopped reading cannot hold this process.
    fn courtesy_write(&self, peer: usize, bytes: &[u8]) {
        if self.departed[peer].load(Ordering::SeqCst) {
            return;
        }
        let mut guard = lock(&self.writers[peer]);
        if let Some(stream) = guard.as_mut() {
            let _ = stream.set_write_timeout(Some(COURTESY_WRITE_TIMEOUT));
            let _ = wire::write_bytes(stream, bytes);
        }
    }

    fn write_to(&self, peer: usize, bytes: &[u8]) -> io::Result<()> {
        let mut guard = lock(&self.writers[peer]);
        match guard.as_mut() {
            Some(stream) => wire::write_bytes(stream, bytes),
            None => Err(io::Error::new(io::ErrorKind::NotConnected, "no connection")),
        }
    }

    /// Installs an admitted rank's write half. A failure recorded just before would have
    /// missed this rank, so it is told here.
    fn install(&self, peer: usize, stream: TcpStream) {
        *lock(&self.writers[peer]) = Some(stream);
        if let Some(err) = self.failure() {
            self.courtesy_write(peer, &abort_frame(&err).encode());
            self.close_write(peer);
        }
    }

    /// The failure for a write to `peer` that did not go through.
    fn write_failure(&self, peer: usize, e: &io::Error) -> RendezvousError {
        let who = self.who(peer);
        let phase = self.phase();
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => RendezvousError::new(
                FailureKind::Timeout,
                vec![peer],
                format!(
                    "{who} stopped reading: a write to it stayed blocked for {} {phase}",
                    seconds(self.op_timeout)
                ),
            ),
            io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::NotConnected
            | io::ErrorKind::UnexpectedEof => RendezvousError::new(
                FailureKind::PeerExited,
                vec![peer],
                format!("{who} closed its connection (it exited or crashed) {phase}"),
            ),
            _ => RendezvousError::new(
                FailureKind::Io,
                vec![peer],
                format!("the connection to {who} failed {phase}: {e}"),
            ),
        }
    }
}

fn abort_frame(err: &RendezvousError) -> Frame {
    Frame::Abort {
        kind: err.kind(),
        ranks: err
            .ranks()
            .iter()
            .map(|&r| r.min(u32::MAX as usize) as u32)
            .collect(),
        message: err.message().to_string(),
    }
}

/// Extra wait of non-zero ranks beyond a timeout, so rank 0's verdict (which names the
/// culprit) arrives before their own, less precise, one.
fn grace(d: Duration) -> Duration {
    (d / 10 + Duration::from_secs(1)).min(Duration::from_secs(30))
}

fn config_error(message: impl Into<String>) -> RendezvousError {
    RendezvousError::new(FailureKind::Config, Vec::new(), message)
}

impl Rendezvous {
    /// A job of one process: every operation is local and cannot fail.
    pub fn single() -> Self {
        Self {
            rank: 0,
            world_size: 1,
            timeouts: Timeouts::default(),
            seq: 0,
            closed: false,
            link: None,
        }
    }

    /// Forms the job: rank 0 listens and admits, the others connect. Returns on every
    /// rank once all have joined, or fails within the join timeout (plus a short grace
    /// on non-zero ranks) with a sentence naming the missing or offending ranks.
    pub fn join(config: RendezvousConfig) -> Result<Self, RendezvousError> {
        let start = Instant::now();
        let n = config.world_size;
        if n == 0 || n > MAX_WORLD_SIZE {
            return Err(config_error(format!(
                "a world size of {n} is not between 1 and {MAX_WORLD_SIZE}"
            )));
        }
        if config.rank >= n {
            return Err(config_error(format!(
                "rank {} is not below the world size {n}",
                config.rank
            )));
        }
        if config.job_token.len() > MAX_TOKEN_BYTES {
            return Err(config_error(format!(
                "the job token is longer than {MAX_TOKEN_BYTES} bytes"
            )));
        }
        if n == 1 {
            return Ok(Self::single());
        }
        let Some(master) = config.master.clone() else {
            return Err(config_error(format!(
                "a job of {n} processes needs a rendezvous address: set MASTER_ADDR and MASTER_PORT"
            )));
        };
        let (tx, rx) = mpsc::channel();
        let shared = if config.rank == 0 {
            join_root(&config, &master, start, &tx, &rx)?
        } else {
            join_peer(&config, &master, start, &tx, &rx)?
        };
        shared.set_phase(Op::Join, 0, false);
        Ok(Self {
            rank: config.rank,
            world_size: n,
            timeouts: config.timeouts,
            seq: 0,
            closed: false,
            link: Some(Link {
                shared,
                events: rx,
                _keep: tx,
            }),
        })
    }

    /// This process's rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Number of processes in the job.
    pub fn world_size(&self) -> usize {
        self.world_size
    }

    /// Whether this is rank 0 (the one that writes the result file).
    pub fn is_root(&self) -> bool {
        self.rank == 0
    }

    /// The label ("host pid N") of `rank`, as far as this process knows: rank 0 knows
    /// every rank's, the others know their own and rank 0's.
    pub fn label_of(&self, rank: usize) -> Option<String> {
        match &self.link {
            Some(link) => lock(&link.shared.labels).get(rank).cloned().flatten(),
            None => (rank == 0).then(default_label),
        }
    }

    /// The job's failure, if one happened, without waiting. For a loop around something
    /// that may hang (a GPU collective): when it returns `Some`, abort that work.
    pub fn poll_failure(&self) -> Option<RendezvousError> {
        self.link.as_ref().and_then(|l| l.shared.failure())
    }

    /// A handle for [`Rendezvous::poll_failure`] from another thread.
    pub fn failure_watch(&self) -> FailureWatch {
        FailureWatch {
            shared: self.link.as_ref().map(|l| Arc::clone(&l.shared)),
        }
    }

    /// Rank 0's `data` to every rank; returns it on every rank. The other ranks' `data`
    /// is ignored (pass `&[]`). At most [`MAX_DATA_BYTES`].
    ///
    /// Rank 0 returns once the bytes are sent; the others once they arrive, or fail
    /// after the operation timeout: "rank 0 sent no broadcast #1 within 300 s".
    pub fn broadcast(&mut self, data: &[u8]) -> Result<Vec<u8>, RendezvousError> {
        let Some(seq) = self.begin(Op::Broadcast)? else {
            return Ok(data.to_vec());
        };
        if self.rank == 0 {
            self.check_size(data, Op::Broadcast)?;
            let bytes = Frame::Broadcast {
                seq,
                data: data.to_vec(),
            }
            .encode();
            self.root_send_all(&bytes)?;
            self.end(Op::Broadcast, seq);
            Ok(data.to_vec())
        } else {
            let got = self.peer_wait(Op::Broadcast, seq)?;
            self.end(Op::Broadcast, seq);
            Ok(got)
        }
    }

    /// Every rank's `data` to rank 0. Rank 0 gets `Some(parts)`, indexed by rank (its
    /// own at 0); the others get `None`. Returns on every rank only once rank 0 holds
    /// every part, so a rank that returns `Ok` knows its numbers are safe. At most
    /// [`MAX_DATA_BYTES`] per rank.
    pub fn gather(&mut self, data: &[u8]) -> Result<Option<Vec<Vec<u8>>>, RendezvousError> {
        let Some(seq) = self.begin(Op::Gather)? else {
            return Ok(Some(vec![data.to_vec()]));
        };
        self.check_size(data, Op::Gather)?;
        if self.rank == 0 {
            let mut parts = self.root_collect(Op::Gather, seq)?;
            parts[0] = data.to_vec();
            self.root_send_all(&Frame::GatherDone { seq }.encode())?;
            self.end(Op::Gather, seq);
            Ok(Some(parts))
        } else {
            self.peer_send(
                &Frame::GatherPart {
                    seq,
                    data: data.to_vec(),
                }
                .encode(),
            )?;
            self.peer_wait(Op::Gather, seq)?;
            self.end(Op::Gather, seq);
            Ok(None)
        }
    }

    /// Returns on every rank once every rank has called it.
    pub fn barrier(&mut self) -> Result<(), RendezvousError> {
        let Some(seq) = self.begin(Op::Barrier)? else {
            return Ok(());
        };
        if self.rank == 0 {
            self.root_collect(Op::Barrier, seq)?;
            self.root_send_all(&Frame::BarrierRelease { seq }.encode())?;
        } else {
            self.peer_send(&Frame::BarrierEnter { seq }.encode())?;
            self.peer_wait(Op::Barrier, seq)?;
        }
        self.end(Op::Barrier, seq);
        Ok(())
    }

    /// Fails the job on purpose, for every rank: "rank 2 aborted the job: `reason`".
    /// Call it when this rank cannot go on (its collective failed), then exit; the others
    /// get the sentence at their next operation or [`Rendezvous::poll_failure`]. Returns
    /// the job's failure (an earlier one, if the job had already failed).
    pub fn abort(&mut self, reason: &str) -> RendezvousError {
        let err = RendezvousError::new(
            FailureKind::Aborted,
            vec![self.rank],
            format!("rank {} aborted the job: {reason}", self.rank),
        );
        let Some(link) = &self.link else {
            return err;
        };
        // `fail` sends the frame and then end of file, so the others see it at once.
        link.shared.fail(err, None)
    }

    /// Says goodbye to the other ranks and closes the connections. Dropping does the
    /// same; `close` only makes the moment explicit.
    pub fn close(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        let Some(link) = &self.link else { return };
        let shared = &link.shared;
        shared.closing.store(true, Ordering::SeqCst);
        let failed = shared.failure().is_some();
        // After a failure the others were already told why (and the write sides are
        // closed); a goodbye would only blur it.
        if !failed {
            let bye = Frame::Bye.encode();
            for peer in shared.peers() {
                shared.courtesy_write(peer, &bye);
                // Write side only: the reader threads keep draining what the peers
                // still send, so closing never resets a connection with unread data.
                shared.close_write(peer);
            }
            return;
        }
        // After a failure, linger until the others have closed their ends (they exit on
        // reading the abort) or LINGER passes. Closing a socket with unread data sends
        // a reset, and a reset can destroy the abort frame before the peer reads it.
        let until = Instant::now() + LINGER;
        while shared.live_readers.load(Ordering::SeqCst) > 0 && Instant::now() < until {
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Starts operation `op`: `Ok(None)` for a single process, else its sequence number.
    fn begin(&mut self, op: Op) -> Result<Option<u64>, RendezvousError> {
        if self.closed {
            return Err(config_error(format!(
                "{} called on a closed rendezvous",
                op.name()
            )));
        }
        let Some(link) = &self.link else {
            return Ok(None);
        };
        if let Some(err) = link.shared.failure() {
            return Err(err);
        }
        self.seq += 1;
        link.shared.set_phase(op, self.seq, true);
        Ok(Some(self.seq))
    }

    fn end(&self, op: Op, seq: u64) {
        if let Some(link) = &self.link {
            link.shared.set_phase(op, seq, false);
        }
    }

    fn shared(&self) -> Result<&Arc<Shared>, RendezvousError> {
        self.link
            .as_ref()
            .map(|l| &l.shared)
            .ok_or_else(|| config_error("no connections in a single-process rendezvous"))
    }

    fn fail(&self, err: RendezvousError) -> RendezvousError {
        match &self.link {
            Some(link) => link.shared.fail(err, None),
            None => err,
        }
    }

    fn check_size(&self, data: &[u8], op: Op) -> Result<(), RendezvousError> {
        if data.len() <= MAX_DATA_BYTES {
            return Ok(());
        }
        // The others are waiting for this rank's part: fail the job, not just the call.
        Err(self.fail(RendezvousError::new(
            FailureKind::Config,
            vec![self.rank],
            format!(
                "rank {} passed {} bytes to {} #{}, over the {} MiB limit",
                self.rank,
                data.len(),
                op.name(),
                self.seq,
                MAX_DATA_BYTES >> 20
            ),
        )))
    }

    fn next_event(&self, deadline: Instant) -> Option<Event> {
        let link = self.link.as_ref()?;
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        link.events.recv_timeout(deadline - now).ok()
    }

    fn root_send_all(&self, bytes: &[u8]) -> Result<(), RendezvousError> {
        let shared = self.shared()?;
        for peer in 1..self.world_size {
            if let Err(e) = shared.write_to(peer, bytes) {
                return Err(shared.fail(shared.write_failure(peer, &e), Some(peer)));
            }
        }
        Ok(())
    }

    fn peer_send(&self, bytes: &[u8]) -> Result<(), RendezvousError> {
        let shared = self.shared()?;
        shared
            .write_to(0, bytes)
            .map_err(|e| shared.fail(shared.write_failure(0, &e), Some(0)))
    }

    /// Rank 0: waits for every rank's part of `op` #`seq` (data for a gather, nothing for
    /// a barrier), within the operation timeout.
    fn root_collect(&self, op: Op, seq: u64) -> Result<Vec<Vec<u8>>, RendezvousError> {
        let shared = Arc::clone(self.shared()?);
        let n = self.world_size;
        let mut parts: Vec<Option<Vec<u8>>> = vec![None; n];
        parts[0] = Some(Vec::new());
        let mut missing = n - 1;
        let deadline = Instant::now() + self.timeouts.op;
        while missing > 0 {
            match self.next_event(deadline) {
                Some(Event::Frame { from, frame }) => {
                    let data = match (op, frame) {
                        (Op::Gather, Frame::GatherPart { seq: s, data }) if s == seq => data,
                        (Op::Barrier, Frame::BarrierEnter { seq: s }) if s == seq => Vec::new(),
                        (_, frame) => {
                            return Err(shared.fail(
                                RendezvousError::new(
                                    FailureKind::Protocol,
                                    vec![from],
                                    format!(
                                        "rank {from} is in {} while rank 0 is in {} #{seq}: the ranks called different operations",
                                        frame.describe(),
                                        op.name()
                                    ),
                                ),
                                None,
                            ))
                        }
                    };
                    if from < n && parts[from].is_none() {
                        parts[from] = Some(data);
                        missing -= 1;
                    }
                }
                Some(Event::Departed { from }) => {
                    return Err(shared.fail(departed_early(&shared, from, op, seq), Some(from)))
                }
                Some(Event::Failed) => return Err(self.recorded_failure(&shared)),
                Some(Event::Joined | Event::Rejected(_)) => {}
                None => {
                    let late: Vec<usize> = (1..n).filter(|&r| parts[r].is_none()).collect();
                    return Err(shared.fail(
                        RendezvousError::new(
                            FailureKind::Timeout,
                            late.clone(),
                            format!(
                                "{} sent nothing for {} #{seq} within {} (hung, or far behind the other ranks)",
                                name_ranks(&late),
                                op.name(),
                                seconds(self.timeouts.op)
                            ),
                        ),
                        None,
                    ));
                }
            }
        }
        Ok(parts.into_iter().map(Option::unwrap_or_default).collect())
    }

    /// A non-zero rank: waits for rank 0's frame completing `op` #`seq` (the data of a
    /// broadcast; nothing for the others).
    fn peer_wait(&self, op: Op, seq: u64) -> Result<Vec<u8>, RendezvousError> {
        let shared = Arc::clone(self.shared()?);
        let wait = self.timeouts.op + grace(self.timeouts.op);
        let deadline = Instant::now() + wait;
        loop {
            match self.next_event(deadline) {
                Some(Event::Frame { frame, .. }) => match (op, frame) {
                    (Op::Broadcast, Frame::Broadcast { seq: s, data }) if s == seq => return Ok(data),
                    (Op::Gather, Frame::GatherDone { seq: s }) if s == seq => return Ok(Vec::new()),
                    (Op::Barrier, Frame::BarrierRelease { seq: s }) if s == seq => return Ok(Vec::new()),
                    (_, frame) => {
                        return Err(shared.fail(
                            RendezvousError::new(
                                FailureKind::Protocol,
                                vec![0, self.rank],
                                format!(
                                    "rank 0 is in {} while rank {} is in {} #{seq}: the ranks called different operations",
                                    frame.describe(),
                                    self.rank,
                                    op.name()
                                ),
                            ),
                            None,
                        ))
                    }
                },
                Some(Event::Departed { from }) => return Err(shared.fail(departed_early(&shared, from, op, seq), Some(from))),
                Some(Event::Failed) => return Err(self.recorded_failure(&shared)),
                Some(Event::Joined | Event::Rejected(_)) => {}
                None => {
                    let what = match op {
                        Op::Broadcast => format!("rank 0 sent no broadcast #{seq} within {}", seconds(wait)),
                        _ => format!(
                            "rank 0 did not complete {} #{seq} within {} (rank 0, or a rank it waits for, is hung or far behind)",
                            op.name(),
                            seconds(wait)
                        ),
                    };
                    return Err(shared.fail(RendezvousError::new(FailureKind::Timeout, vec![0], what), None));
                }
            }
        }
    }

    fn recorded_failure(&self, shared: &Shared) -> RendezvousError {
        shared.failure().unwrap_or_else(|| {
            RendezvousError::new(
                FailureKind::Protocol,
                Vec::new(),
                "the job failed without a recorded reason",
            )
        })
    }
}

fn departed_early(shared: &Shared, from: usize, op: Op, seq: u64) -> RendezvousError {
    RendezvousError::new(
        FailureKind::Protocol,
        vec![from],
        format!(
            "{} closed its rendezvous (it finished) before {} #{seq}: the ranks called different operations",
            shared.who(from),
            op.name()
        ),
    )
}

impl Drop for Rendezvous {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl std::fmt::Debug for Rendezvous {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rendezvous")
            .field("rank", &self.rank)
            .field("world_size", &self.world_size)
            .field("seq", &self.seq)
            .field("failed", &self.poll_failure().map(|e| e.to_string()))
            .finish()
    }
}

// ---------------------------------------------------------------------------------------
// Rank 0

/// What rank 0 admits; shared with the handshake threads.
struct Admission {
    token: String,
    build: String,
    world_size: usize,
    own_label: String,
    hello_deadline: Instant,
}

fn join_root(
    config: &RendezvousConfig,
    master: &Endpoint,
    start: Instant,
    tx: &Sender<Event>,
    rx: &Receiver<Event>,
) -> Result<Arc<Shared>, RendezvousError> {
    let n = config.world_size;
    let deadline = start + config.timeouts.join;
    let listener = bind_listener(master, deadline, config.timeouts.join)?;
    listener.set_nonblocking(true).map_err(|e| {
        RendezvousError::new(
            FailureKind::Io,
            vec![],
            format!("rank 0 could not configure its listening socket: {e}"),
        )
    })?;
    let shared = Arc::new(Shared::new(0, n, config.timeouts.op));
    lock(&shared.labels)[0] = Some(config.label.clone());
    let admission = Arc::new(Admission {
        token: config.job_token.clone(),
        build: config.build_id.clone(),
        world_size: n,
        own_label: config.label.clone(),
        hello_deadline: deadline,
    });
    let mut joined = 1usize;
    let mut rejections: Vec<String> = Vec::new();
    while joined < n {
        accept_pending(
            &listener,
            &shared,
            &admission,
            tx,
            &mut rejections,
            config.log_rejections,
        );
        let now = Instant::now();
        if now >= deadline {
            let missing: Vec<usize> = {
                let labels = lock(&shared.labels);
                (1..n).filter(|&r| labels[r].is_none()).collect()
            };
            let mut message = format!(
                "{} never joined within {}",
                name_ranks(&missing),
                seconds(config.timeouts.join)
            );
            if let Some(first) = rejections.first() {
                let more = match rejections.len() {
                    1 => String::new(),
                    k => format!(" and {} more", k - 1),
                };
                message.push_str(&format!(" (rank 0 turned away {first}{more})"));
            }
            return Err(shared.fail(
                RendezvousError::new(FailureKind::NeverJoined, missing, message),
                None,
            ));
        }
        match rx.recv_timeout((deadline - now).min(ACCEPT_POLL)) {
            Ok(Event::Joined) => joined += 1,
            Ok(Event::Rejected(why)) => {
                if config.log_rejections {
                    eprintln!("solbench rendezvous: rank 0 turned away {why}");
                }
                rejections.push(why);
            }
            Ok(Event::Failed) => {
                return Err(shared.failure().unwrap_or_else(|| {
                    RendezvousError::new(
                        FailureKind::Protocol,
                        vec![],
                        "the join failed without a recorded reason",
                    )
                }))
            }
            Ok(Event::Departed { from }) => {
                let who = shared.who(from);
                return Err(shared.fail(
                    RendezvousError::new(
                        FailureKind::Protocol,
                        vec![from],
                        format!("{who} left during the join"),
                    ),
                    Some(from),
                ));
            }
            Ok(Event::Frame { from, frame }) => {
                return Err(shared.fail(
                    RendezvousError::new(
                        FailureKind::Protocol,
                        vec![from],
                        format!(
                            "rank {from} sent {} before the job was formed",
                            frame.describe()
                        ),
                    ),
                    None,
                ))
            }
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {}
        }
    }
    // Everyone is in: stop admitting (late strangers now get "connection refused").
    drop(listener);
    let ready = Frame::Ready.encode();
    for peer in 1..n {
        if let Err(e) = shared.write_to(peer, &ready) {
            return Err(shared.fail(shared.write_failure(peer, &e), Some(peer)));
        }
    }
    // A rank that crashed after its hello was noticed by its reader, not by these
    // writes: the job is not formed.
    match shared.failure() {
        Some(err) => Err(err),
        None => Ok(shared),
    }
}

fn accept_pending(
    listener: &TcpListener,
    shared: &Arc<Shared>,
    admission: &Arc<Admission>,
    tx: &Sender<Event>,
    rejections: &mut Vec<String>,
    log: bool,
) {
    loop {
        match listener.accept() {
            Ok((stream, addr)) => {
                let (shared, admission, events) =
                    (Arc::clone(shared), Arc::clone(admission), tx.clone());
                let spawned = thread::Builder::new()
                    .name(format!("rendezvous-hello-{addr}"))
                    .stack_size(THREAD_STACK)
                    .spawn(move || handshake(stream, addr, &shared, &admission, &events));
                if let Err(e) = spawned {
                    // The connection is dropped; a real rank retries.
                    let why = format!(
                        "a connection from {addr}: rank 0 could not start a thread for it ({e})"
                    );
                    if log {
                        eprintln!("solbench rendezvous: rank 0 turned away {why}");
                    }
                    rejections.push(why);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // WouldBlock: nothing pending. Anything else (out of file descriptors) is
            // transient from here: the join deadline bounds it.
            Err(_) => return,
        }
    }
}

/// Rank 0's side of one connection: read the hello, admit or reject, then read frames.
fn handshake(
    mut stream: TcpStream,
    addr: SocketAddr,
    shared: &Arc<Shared>,
    admission: &Admission,
    tx: &Sender<Event>,
) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_nodelay(true);
    let wait = admission
        .hello_deadline
        .saturating_duration_since(Instant::now())
        .min(HELLO_TIMEOUT)
        .max(Duration::from_millis(100));
    let _ = stream.set_read_timeout(Some(wait));
    let _ = stream.set_write_timeout(Some(COURTESY_WRITE_TIMEOUT));

    let reject = |mut stream: TcpStream, fatal: bool, to_peer: String, to_log: String| {
        let _ = wire::write_bytes(
            &mut stream,
            &Frame::Reject {
                fatal,
                reason: to_peer,
            }
            .encode(),
        );
        linger_close(stream);
        let _ = tx.send(Event::Rejected(to_log));
    };

    let hello = match wire::read_frame(&mut stream, MAX_HELLO_PAYLOAD) {
        Ok(Frame::Hello(hello)) => hello,
        Ok(other) => {
            let why = format!("expected a hello, got {}", other.describe());
            return reject(
                stream,
                true,
                why.clone(),
                format!("a connection from {addr}: {why}"),
            );
        }
        Err(e) if e.is_timeout() => {
            let _ = tx.send(Event::Rejected(format!(
                "a connection from {addr}: it sent no hello within {}",
                seconds(wait)
            )));
            return;
        }
        Err(WireError::Eof | WireError::Truncated) => {
            let _ = tx.send(Event::Rejected(format!(
                "a connection from {addr}: it closed before finishing its hello"
            )));
            return;
        }
        Err(e) => {
            let why = format!("{e}");
            return reject(
                stream,
                true,
                format!("this is a solbench rendezvous and {why}"),
                format!("a connection from {addr}: {why}"),
            );
        }
    };

    let Hello {
        rank,
        world_size,
        token,
        build,
        label,
    } = hello;
    let rank = rank as usize;
    let n = admission.world_size;
    let claim = format!("a connection from {addr} ({label}, claiming rank {rank})");
    if token != admission.token {
        let why = "its job token is not this job's: the rendezvous at this address belongs to another job".to_string();
        return reject(
            stream,
            false,
            why,
            format!("{claim}: job token '{token}' is not this job's"),
        );
    }
    let fatal_reason = if build != admission.build {
        Some(format!(
            "rank {rank} runs build '{build}' but rank 0 runs '{}': use the same solbench on every node",
            admission.build
        ))
    } else if world_size as usize != n {
        Some(format!(
            "rank {rank} says the job has {world_size} ranks but rank 0 says {n}"
        ))
    } else if rank == 0 {
        Some("rank 0 is already running here: two processes think they are rank 0".to_string())
    } else if rank >= n {
        Some(format!(
            "rank {rank} is out of range for a job of {n} ranks"
        ))
    } else {
        shared
            .failure()
            .map(|f| format!("the job has already failed: {f}"))
    };
    if let Some(why) = fatal_reason {
        return reject(stream, true, why.clone(), format!("{claim}: {why}"));
    }
    {
        let mut labels = lock(&shared.labels);
        if let Some(existing) = labels[rank].clone() {
            drop(labels);
            let why = format!(
                "rank {rank} has already joined from {existing}: two processes claim rank {rank}"
            );
            return reject(stream, true, why.clone(), format!("{claim}: {why}"));
        }
        labels[rank] = Some(label);
    }

    // Admitted.
    let _ = stream.set_read_timeout(None);
    let _ = stream.set_write_timeout(Some(shared.op_timeout));
    let writer = match stream.try_clone() {
        Ok(w) => w,
        Err(e) => {
            shared.fail(
                RendezvousError::new(
                    FailureKind::Io,
                    vec![],
                    format!("rank 0 could not duplicate a socket: {e}"),
                ),
                None,
            );
            let _ = tx.send(Event::Failed);
            return;
        }
    };
    let welcome = Frame::Welcome {
        label: admission.own_label.clone(),
    }
    .encode();
    if let Err(e) = wire::write_bytes(&mut stream, &welcome) {
        shared.fail(shared.write_failure(rank, &e), Some(rank));
        let _ = tx.send(Event::Failed);
        return;
    }
    shared.install(rank, writer);
    let _ = tx.send(Event::Joined);
    read_frames(stream, rank, shared, tx);
}

/// Closes a rejected connection so the rejection survives: end of file after it, then
/// a bounded drain of what the stranger sent (an HTTP request, say) before closing,
/// because closing with unread data resets the connection, and a reset can destroy
/// the rejection before the other side reads it.
fn linger_close(mut stream: TcpStream) {
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut sink = [0u8; 4096];
    let mut drained = 0usize;
    while drained < 64 * 1024 {
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
}

/// Picks the listening address and binds, retrying while the port is in use (the
/// previous job's rank 0 may still be exiting) until the join deadline.
fn bind_listener(
    master: &Endpoint,
    deadline: Instant,
    join: Duration,
) -> Result<TcpListener, RendezvousError> {
    let resolved: Vec<SocketAddr> = (master.host.as_str(), master.port)
        .to_socket_addrs()
        .map(|a| a.collect())
        .unwrap_or_default();
    // The others will connect to the master address: if it is not one of this host's,
    // they will never reach rank 0. Binding it (port 0, then let go) asks the kernel.
    if !resolved.is_empty() {
        let local = resolved
            .iter()
            .any(|a| TcpListener::bind(SocketAddr::new(a.ip(), 0)).is_ok());
        if !local {
            let ips: Vec<String> = resolved.iter().map(|a| a.ip().to_string()).collect();
            return Err(config_error(format!(
                "rank 0 runs on this host, but the rendezvous host {} ({}) is not an address of it: set MASTER_ADDR to the host of rank 0",
                master.host,
                ips.join(", ")
            )));
        }
    }
    let ip: IpAddr = if !resolved.is_empty() && resolved.iter().all(SocketAddr::is_ipv6) {
        Ipv6Addr::UNSPECIFIED.into()
    } else {
        Ipv4Addr::UNSPECIFIED.into()
    };
    let mut backoff = Duration::from_millis(50);
    loop {
        match TcpListener::bind((ip, master.port)) {
            Ok(listener) => return Ok(listener),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                let now = Instant::now();
                if now + backoff >= deadline {
                    return Err(RendezvousError::new(
                        FailureKind::Io,
                        vec![],
                        format!(
                            "port {} on rank 0's host stayed in use for {} (another job's rendezvous, or another service): set MASTER_PORT (or SOLBENCH_MASTER_PORT) to a free port",
                            master.port,
                            seconds(join)
                        ),
                    ));
                }
                thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            Err(e) => {
                return Err(RendezvousError::new(
                    FailureKind::Io,
                    vec![],
                    format!("rank 0 could not listen on port {}: {e}", master.port),
                ))
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Other ranks

fn join_peer(
    config: &RendezvousConfig,
    master: &Endpoint,
    start: Instant,
    tx: &Sender<Event>,
    rx: &Receiver<Event>,
) -> Result<Arc<Shared>, RendezvousError> {
    let deadline = start + config.timeouts.join;
    let (stream, root_label) = connect(config, master, deadline)?;
    let shared = Arc::new(Shared::new(
        config.rank,
        config.world_size,
        config.timeouts.op,
    ));
    {
        let mut labels = lock(&shared.labels);
        labels[0] = Some(root_label);
        labels[config.rank] = Some(config.label.clone());
    }
    let _ = stream.set_read_timeout(None);
    let _ = stream.set_write_timeout(Some(config.timeouts.op));
    let writer = stream.try_clone().map_err(|e| {
        RendezvousError::new(
            FailureKind::Io,
            vec![],
            format!("rank {} could not duplicate a socket: {e}", config.rank),
        )
    })?;
    shared.install(0, writer);
    {
        let (shared, events) = (Arc::clone(&shared), tx.clone());
        thread::Builder::new()
            .name("rendezvous-rank0".into())
            .stack_size(THREAD_STACK)
            .spawn(move || read_frames(stream, 0, &shared, &events))
            .map_err(|e| {
                RendezvousError::new(
                    FailureKind::Io,
                    vec![],
                    format!("rank {} could not start a thread: {e}", config.rank),
                )
            })?;
    }
    // Rank 0 admitted this rank, so its own join deadline ends within one join timeout
    // from now; it then sends Ready, or the reason it gave up.
    let wait = config.timeouts.join + grace(config.timeouts.join);
    let ready_deadline = Instant::now() + wait;
    loop {
        let now = Instant::now();
        let event = if now >= ready_deadline {
            None
        } else {
            rx.recv_timeout(ready_deadline - now).ok()
        };
        match event {
            Some(Event::Frame {
                frame: Frame::Ready,
                ..
            }) => return Ok(shared),
            Some(Event::Frame { frame, .. }) => {
                return Err(shared.fail(
                    RendezvousError::new(
                        FailureKind::Protocol,
                        vec![0],
                        format!("rank 0 sent {} before the job was formed", frame.describe()),
                    ),
                    None,
                ))
            }
            Some(Event::Failed) => {
                return Err(shared.failure().unwrap_or_else(|| {
                    RendezvousError::new(
                        FailureKind::Protocol,
                        vec![],
                        "the join failed without a recorded reason",
                    )
                }))
            }
            Some(Event::Departed { .. }) => {
                return Err(shared.fail(
                    RendezvousError::new(
                        FailureKind::Protocol,
                        vec![0],
                        "rank 0 left before the job was formed",
                    ),
                    Some(0),
                ))
            }
            Some(Event::Joined | Event::Rejected(_)) => {}
            None => {
                return Err(shared.fail(
                    RendezvousError::new(
                        FailureKind::Timeout,
                        vec![0],
                        format!(
                            "rank 0 admitted rank {} but did not complete the join within {}",
                            config.rank,
                            seconds(wait)
                        ),
                    ),
                    None,
                ))
            }
        }
    }
}

/// Why one connection attempt did not produce a welcome.
enum Attempt {
    /// Try again (rank 0 not up yet, another job's rank 0, a non-solbench server).
    Retry { why: String, rejected: bool },
    /// This job's rank 0 refused this process: retrying cannot help.
    Fatal(RendezvousError),
    /// The deadline passed before anything was tried.
    OutOfTime,
}

fn connect(
    config: &RendezvousConfig,
    master: &Endpoint,
    deadline: Instant,
) -> Result<(TcpStream, String), RendezvousError> {
    // Spread the retries of many ranks apart (a deterministic jitter, no RNG needed).
    let jitter = 1.0 + (config.rank % 7) as f64 / 10.0;
    let mut backoff = Duration::from_millis(20);
    let mut last = String::from("no connection attempt finished in time");
    let mut last_rejected = false;
    loop {
        match attempt(config, master, deadline) {
            Ok(joined) => return Ok(joined),
            Err(Attempt::Fatal(err)) => return Err(err),
            Err(Attempt::Retry { why, rejected }) => {
                last = why;
                last_rejected = rejected;
            }
            // Keep the previous attempt's reason: it says more than "time is up".
            Err(Attempt::OutOfTime) => {}
        }
        let now = Instant::now();
        if now >= deadline {
            let (kind, message) = if last_rejected {
                (
                    FailureKind::Rejected,
                    format!(
                        "rank {} could not join: for {} the rendezvous at {master} belonged to another job (last answer: {last})",
                        config.rank,
                        seconds(config.timeouts.join)
                    ),
                )
            } else {
                (
                    FailureKind::NeverJoined,
                    format!(
                        "rank 0 never joined: nothing at {master} admitted rank {} within {} (last attempt: {last})",
                        config.rank,
                        seconds(config.timeouts.join)
                    ),
                )
            };
            return Err(RendezvousError::new(kind, vec![0], message));
        }
        thread::sleep(backoff.mul_f64(jitter).min(deadline - now));
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

fn attempt(
    config: &RendezvousConfig,
    master: &Endpoint,
    deadline: Instant,
) -> Result<(TcpStream, String), Attempt> {
    let retry = |why: String| Attempt::Retry {
        why,
        rejected: false,
    };
    let addrs: Vec<SocketAddr> = (master.host.as_str(), master.port)
        .to_socket_addrs()
        .map_err(|e| retry(format!("cannot resolve {}: {e}", master.host)))?
        .collect();
    let mut last_error = format!("{} resolves to no address", master.host);
    let mut connected = None;
    for (i, addr) in addrs.iter().enumerate() {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            if i == 0 {
                return Err(Attempt::OutOfTime);
            }
            break;
        }
        match TcpStream::connect_timeout(addr, remaining.min(Duration::from_secs(3))) {
            Ok(stream) => {
                connected = Some(stream);
                break;
            }
            Err(e) => last_error = e.to_string(),
        }
    }
    let mut stream = connected.ok_or_else(|| retry(last_error))?;
    let _ = stream.set_nodelay(true);
    let hello = Frame::Hello(Hello {
        rank: config.rank as u32,
        world_size: config.world_size as u32,
        token: config.job_token.clone(),
        build: config.build_id.clone(),
        label: config.label.clone(),
    });
    let _ = stream.set_write_timeout(Some(COURTESY_WRITE_TIMEOUT));
    wire::write_bytes(&mut stream, &hello.encode())
        .map_err(|e| retry(format!("sending the hello failed: {e}")))?;
    // Wait for the answer as long as the join allows: rank 0 may be slow to answer on a
    // loaded host, and giving up early would orphan an admission it already recorded.
    let remaining = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1));
    let _ = stream.set_read_timeout(Some(remaining));
    match wire::read_frame(&mut stream, MAX_REPLY_PAYLOAD) {
        Ok(Frame::Welcome { label }) => Ok((stream, label)),
        Ok(Frame::Reject {
            fatal: true,
            reason,
        }) => Err(Attempt::Fatal(RendezvousError::new(
            FailureKind::Rejected,
            vec![config.rank],
            format!(
                "rank 0 at {master} turned rank {} away: {reason}",
                config.rank
            ),
        ))),
        Ok(Frame::Reject {
            fatal: false,
            reason,
        }) => Err(Attempt::Retry {
            why: format!("rank 0 at {master} turned it away: {reason}"),
            rejected: true,
        }),
        Ok(other) => Err(retry(format!(
            "the server at {master} answered with {}",
            other.describe()
        ))),
        Err(e) if e.is_timeout() => Err(retry(format!(
            "the server at {master} accepted the connection but never answered"
        ))),
        Err(WireError::Eof | WireError::Truncated) => Err(retry(format!(
            "the server at {master} closed the connection without answering"
        ))),
        Err(e) => Err(retry(format!(
            "the server at {master} is not a solbench rendezvous: {e}"
        ))),
    }
}

// ---------------------------------------------------------------------------------------
// Both

/// Reads `from`'s frames until the connection ends, turning the end, an abort or a
/// protocol error into the job's failure. After a failure (or once nobody listens any
/// more) it keeps reading and discarding until end of file: a socket closed with unread
/// data is reset, and the reset can destroy frames still on their way to the peer.
fn read_frames(mut stream: TcpStream, from: usize, shared: &Arc<Shared>, tx: &Sender<Event>) {
    shared.live_readers.fetch_add(1, Ordering::SeqCst);
    let _running = LiveReader(shared);
    let mut forward = true;
    loop {
        match wire::read_frame(&mut stream, MAX_PAYLOAD) {
            Ok(Frame::Bye) => {
                shared.departed[from].store(true, Ordering::SeqCst);
                let _ = tx.send(Event::Departed { from });
            }
            Ok(Frame::Abort {
                kind,
                ranks,
                message,
            }) => {
                let ranks: Vec<usize> = ranks.into_iter().map(|r| r as usize).collect();
                // A verdict relayed by rank 0 about someone else: say who saw it.
                let message = if shared.rank != 0 && !ranks.contains(&0) {
                    format!("rank 0 reports: {message}")
                } else {
                    message
                };
                shared.fail(RendezvousError::new(kind, ranks, message), Some(from));
                let _ = tx.send(Event::Failed);
                break;
            }
            Ok(frame) => {
                // A send fails once the rendezvous is dropped: keep reading, discard.
                forward = forward && tx.send(Event::Frame { from, frame }).is_ok();
            }
            Err(e) => {
                let quiet = shared.closing.load(Ordering::SeqCst)
                    || shared.departed[from].load(Ordering::SeqCst)
                    || shared.failure().is_some();
                let ended = matches!(e, WireError::Eof | WireError::Truncated | WireError::Io(_));
                if !quiet {
                    let who = shared.who(from);
                    let phase = shared.phase();
                    let err = match &e {
                        WireError::Eof | WireError::Truncated => RendezvousError::new(
                            FailureKind::PeerExited,
                            vec![from],
                            format!("{who} closed its connection (it exited or crashed) {phase}"),
                        ),
                        WireError::Io(io_err) => shared.write_failure(from, io_err),
                        _ => RendezvousError::new(
                            FailureKind::Protocol,
                            vec![from],
                            format!("{who} broke the rendezvous protocol {phase}: {e}"),
                        ),
                    };
                    shared.fail(err, Some(from));
                    let _ = tx.send(Event::Failed);
                }
                if ended {
                    return;
                }
                break;
            }
        }
    }
    // Frames can no longer be trusted (or matter): discard bytes until end of file.
    let mut sink = [0u8; 8192];
    loop {
        match stream.read(&mut sink) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// Counts a reader thread as running until it ends, however it ends.
struct LiveReader<'a>(&'a Shared);

impl Drop for LiveReader<'_> {
    fn drop(&mut self) {
        self.0.live_readers.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests;
