//! The rendezvous with real processes: copies of `solbench-launch-peer`, each reading
//! its rank from `SOLBENCH_*` variables the way `solbench collectives` will. Ports are
//! ephemeral (bound to :0 by the test, then handed over), so parallel tests and other
//! software do not collide. Failure cases use short join and operation timeouts; every
//! wait below has a generous upper bound, so a loaded machine slows the tests down
//! rather than failing them.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const PEER: &str = env!("CARGO_BIN_EXE_solbench-launch-peer");

/// Upper bound for any process to finish: far above what the tests need, far below a
/// hang.
const LIMIT: Duration = Duration::from_secs(25);

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local address").port()
}

#[derive(Clone)]
struct Job {
    port: u16,
    token: String,
    world_size: usize,
    join_s: &'static str,
    op_s: &'static str,
}

impl Job {
    fn new(token: &str, world_size: usize) -> Self {
        Self {
            port: free_port(),
            token: token.to_string(),
            world_size,
            join_s: "20",
            op_s: "20",
        }
    }

    fn spawn(&self, rank: usize, scenario: &str) -> Child {
        Command::new(PEER)
            .arg(scenario)
            // Nothing of the test runner's environment (a CI under Slurm or torchrun)
            // may leak into the ranks.
            .env_clear()
            .env("SOLBENCH_RANK", rank.to_string())
            .env("SOLBENCH_WORLD_SIZE", self.world_size.to_string())
            .env("SOLBENCH_MASTER_ADDR", "127.0.0.1")
            .env("SOLBENCH_MASTER_PORT", self.port.to_string())
            .env("SOLBENCH_JOB_TOKEN", &self.token)
            .env("SOLBENCH_RENDEZVOUS_TIMEOUT_S", self.join_s)
            .env("SOLBENCH_RENDEZVOUS_OP_TIMEOUT_S", self.op_s)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start solbench-launch-peer")
    }
}

#[derive(Debug)]
struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Waits for `child` for at most `limit`; a child still running then is killed and the
/// test fails (that is a hang, which is what these tests exist to rule out).
fn finish(mut child: Child, limit: Duration) -> Outcome {
    let until = Instant::now() + limit;
    let status = loop {
        match child.try_wait().expect("wait") {
            Some(status) => break status,
            None if Instant::now() >= until => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("a rank was still running after {limit:?}");
            }
            None => thread::sleep(Duration::from_millis(10)),
        }
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_string(&mut stdout);
    }
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_string(&mut stderr);
    }
    Outcome {
        code: status.code(),
        stdout,
        stderr,
    }
}

fn finish_all(children: Vec<Child>) -> Vec<Outcome> {
    children.into_iter().map(|c| finish(c, LIMIT)).collect()
}

fn assert_failed_with(o: &Outcome, needles: &[&str]) {
    assert_eq!(o.code, Some(1), "{o:?}");
    for needle in needles {
        assert!(o.stderr.contains(needle), "missing {needle:?} in {o:?}");
    }
}

fn ids(outcomes: &[Outcome]) -> Vec<String> {
    outcomes
        .iter()
        .map(|o| {
            o.stdout
                .lines()
                .find_map(|l| l.split(" id ").nth(1).map(str::to_string))
                .unwrap_or_else(|| panic!("no id in {o:?}"))
        })
        .collect()
}

fn assert_job_succeeded(outcomes: &[Outcome]) {
    for o in outcomes {
        assert_eq!(o.code, Some(0), "{o:?}");
        assert!(o.stdout.contains(" done"), "{o:?}");
    }
    let ids = ids(outcomes);
    assert_eq!(ids[0].len(), 256, "a 128-byte id in hex");
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "every rank got rank 0's id: {ids:?}"
    );
    let n = outcomes.len();
    assert!(
        outcomes[0]
            .stdout
            .contains(&format!("rank 0 gathered {n} parts ok")),
        "{:?}",
        outcomes[0]
    );
}

/// (a) The whole life of a job: 4 ranks join (the non-zero ones first, so they retry
/// until rank 0 listens), share a 128-byte id, rank 0 gathers and checks every rank's
/// payload (up to ~900 KB), and all meet at a barrier.
#[test]
fn four_ranks_broadcast_gather_and_barrier() {
    let job = Job::new("job-a", 4);
    let mut children: Vec<Child> = (1..4).rev().map(|r| job.spawn(r, "job")).collect();
    thread::sleep(Duration::from_millis(100));
    children.insert(0, job.spawn(0, "job"));
    // Rank order: the rank 0 child is first.
    let mut outcomes = finish_all(children);
    let rank0 = outcomes.remove(0);
    outcomes.reverse(); // ranks 1, 2, 3
    outcomes.insert(0, rank0);
    assert_job_succeeded(&outcomes);
}

/// (b) One rank never starts: the others exit with a sentence naming it, soon after the
/// join timeout.
#[test]
fn a_rank_that_never_starts_is_named_by_everyone() {
    let mut job = Job::new("job-b", 4);
    job.join_s = "2";
    let started = Instant::now();
    let outcomes = finish_all((0..3).map(|r| job.spawn(r, "job")).collect());
    assert_failed_with(
        &outcomes[0],
        &["rank 0 error [never_joined]: rank 3 never joined within 2 s"],
    );
    for o in &outcomes[1..] {
        assert_failed_with(
            o,
            &["error [never_joined]: rank 0 reports: rank 3 never joined within 2 s"],
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
}

/// (b') Rank 0 never starts: the others give up at their join deadline, saying so.
#[test]
fn without_rank_0_every_rank_gives_up_at_the_deadline() {
    let mut job = Job::new("job-b0", 3);
    job.join_s = "1.5";
    let outcomes = finish_all((1..3).map(|r| job.spawn(r, "job")).collect());
    for o in &outcomes {
        assert_failed_with(
            o,
            &[
                "[never_joined]: rank 0 never joined: nothing at 127.0.0.1:",
                "within 1.5 s",
            ],
        );
    }
}

/// Connects to rank 0 as a stranger, retrying until it listens; sends `bytes` and
/// returns what comes back before rank 0 closes the connection.
fn stranger(port: u16, bytes: &[u8]) -> Vec<u8> {
    let until = Instant::now() + LIMIT;
    let mut s = loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => break s,
            Err(e) if Instant::now() >= until => panic!("rank 0 never listened: {e}"),
            Err(_) => thread::sleep(Duration::from_millis(10)),
        }
    };
    s.set_read_timeout(Some(LIMIT)).expect("timeout");
    s.write_all(bytes).expect("send");
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    answer
}

/// (c) Strangers connect while the job assembles: garbage, an oversize frame, another
/// job's rank. Rank 0 answers each with a reason, closes it, logs it, and the real job
/// completes.
#[test]
fn strangers_are_turned_away_and_the_real_job_completes() {
    let job = Job::new("job-c", 4);
    let root = job.spawn(0, "job");

    let answer = stranger(job.port, b"GET / HTTP/1.1\r\nHost: example\r\n\r\n");
    assert!(
        answer.starts_with(b"SBRV"),
        "a protocol frame back: {answer:?}"
    );
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.contains("not the solbench rendezvous protocol"),
        "{text}"
    );

    // A well-formed header announcing a 16 MiB hello.
    let mut oversize = b"SBRV\x01\x01\x00\x00".to_vec();
    oversize.extend_from_slice(&(16u32 << 20).to_be_bytes());
    let text = String::from_utf8_lossy(&stranger(job.port, &oversize)).into_owned();
    assert!(text.contains("over the 4096-byte limit"), "{text}");

    // Another job's rank 1: turned away, it retries until its own deadline, then says
    // why it could not join.
    let mut intruder = job.clone();
    intruder.token = "another-job".into();
    intruder.join_s = "1";
    let o = finish(intruder.spawn(1, "job"), LIMIT);
    assert_failed_with(
        &o,
        &[
            "rank 1 error [rejected]: rank 1 could not join",
            "belonged to another job",
        ],
    );

    let rest: Vec<Child> = (1..4).map(|r| job.spawn(r, "job")).collect();
    let mut outcomes = vec![finish(root, LIMIT)];
    outcomes.extend(finish_all(rest));
    assert_job_succeeded(&outcomes);
    let log = &outcomes[0].stderr;
    assert!(
        log.contains("rank 0 turned away a connection from 127.0.0.1:"),
        "{log}"
    );
    assert!(
        log.contains("job token 'another-job' is not this job's"),
        "{log}"
    );
}

/// (d) A rank dies right after joining: every other rank fails with a sentence naming
/// it, long before any timeout (the operation timeout here is 20 s).
#[test]
fn a_rank_that_dies_after_joining_is_named_by_everyone() {
    let job = Job::new("job-d", 4);
    let started = Instant::now();
    let mut children: Vec<Child> = (0..3).map(|r| job.spawn(r, "job")).collect();
    children.push(job.spawn(3, "die-after-join"));
    let outcomes = finish_all(children);
    assert_eq!(outcomes[3].code, Some(17), "{:?}", outcomes[3]);
    for o in &outcomes[..3] {
        assert_failed_with(
            o,
            &[
                "[peer_exited]",
                "rank 3 (",
                "closed its connection (it exited or crashed)",
            ],
        );
    }
    assert!(
        outcomes[1]
            .stderr
            .contains("[peer_exited]: rank 0 reports: rank 3 ("),
        "{:?}",
        outcomes[1]
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
}

/// (d') A rank hangs after joining: the others fail at the operation timeout, naming it.
#[test]
fn a_rank_that_hangs_is_named_after_the_operation_timeout() {
    let mut job = Job::new("job-h", 3);
    job.op_s = "1";
    let hung = job.spawn(2, "stall");
    let outcomes = finish_all((0..2).map(|r| job.spawn(r, "job")).collect());
    for o in &outcomes {
        assert_failed_with(
            o,
            &["[timeout]", "rank 2 sent nothing for gather #2 within 1 s"],
        );
    }
    let mut hung = hung;
    let _ = hung.kill();
    let _ = hung.wait();
}

/// (d'') A rank whose collective failed aborts: every rank reports its reason.
#[test]
fn an_abort_reaches_every_rank() {
    let job = Job::new("job-x", 3);
    let mut children: Vec<Child> = (0..2).map(|r| job.spawn(r, "job")).collect();
    children.push(job.spawn(2, "abort"));
    let outcomes = finish_all(children);
    for o in &outcomes {
        assert_failed_with(
            o,
            &[
                "[aborted]",
                "rank 2 aborted the job: simulated NCCL failure",
            ],
        );
    }
}

/// (e) Two jobs at once on two ports, and then a third reusing a port right after the
/// first ended, with another token: no interference.
#[test]
fn jobs_side_by_side_and_one_after_another_do_not_mix() {
    let first = Job::new("job-e1", 2);
    let second = Job::new("job-e2", 2);
    let mut children: Vec<Child> = (0..2).map(|r| first.spawn(r, "job")).collect();
    children.extend((0..2).map(|r| second.spawn(r, "job")));
    let outcomes = finish_all(children);
    assert_job_succeeded(&outcomes[..2]);
    assert_job_succeeded(&outcomes[2..]);
    assert_ne!(ids(&outcomes[..2])[0], ids(&outcomes[2..])[0]);

    let mut third = first.clone();
    third.token = "job-e3".into();
    let outcomes = finish_all((0..2).map(|r| third.spawn(r, "job")).collect());
    assert_job_succeeded(&outcomes);
}
