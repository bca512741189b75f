//! In-process tests: ranks as threads, misbehaving peers as raw sockets speaking (or
//! not speaking) the wire format. The multi-process tests are in `tests/processes.rs`.

use super::*;
use crate::wire::{read_frame, write_bytes, Frame, Hello, HEADER_LEN, MAGIC, VERSION};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::thread::JoinHandle;

const TOKEN: &str = "test-job";

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local address").port()
}

fn config(rank: usize, n: usize, port: u16, join_s: f64, op_s: f64) -> RendezvousConfig {
    let mut c = RendezvousConfig::new(rank, n, Some(Endpoint::new("127.0.0.1", port)), TOKEN);
    c.timeouts = Timeouts {
        join: Duration::from_secs_f64(join_s),
        op: Duration::from_secs_f64(op_s),
    };
    c.label = format!("test rank {rank}");
    c.log_rejections = false;
    c
}

fn spawn_join(c: RendezvousConfig) -> JoinHandle<Result<Rendezvous, RendezvousError>> {
    thread::spawn(move || Rendezvous::join(c))
}

fn joined(h: JoinHandle<Result<Rendezvous, RendezvousError>>) -> Rendezvous {
    match h.join() {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => panic!("join failed: {e}"),
        Err(_) => panic!("join thread panicked"),
    }
}

fn failed<T: std::fmt::Debug>(r: Result<T, RendezvousError>) -> RendezvousError {
    match r {
        Err(e) => e,
        Ok(v) => panic!("expected an error, got {v:?}"),
    }
}

/// Connects to rank 0, retrying while it is not listening yet.
fn raw_connect(port: u16) -> TcpStream {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => {
                s.set_read_timeout(Some(Duration::from_secs(10)))
                    .expect("timeout");
                return s;
            }
            Err(e) if Instant::now() < until => {
                let _ = e;
                thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("rank 0 never listened on {port}: {e}"),
        }
    }
}

fn hello(rank: u32, world_size: u32, token: &str, build: &str) -> Vec<u8> {
    Frame::Hello(Hello {
        rank,
        world_size,
        token: token.into(),
        build: build.into(),
        label: format!("raw {rank}"),
    })
    .encode()
}

/// Sends `bytes` on a fresh connection and returns rank 0's answer.
fn answer_to(port: u16, bytes: &[u8]) -> Frame {
    let mut s = raw_connect(port);
    s.write_all(bytes).expect("write");
    read_frame(&mut s, 1 << 20).expect("an answer")
}

fn rejection(frame: Frame) -> (bool, String) {
    match frame {
        Frame::Reject { fatal, reason } => (fatal, reason),
        other => panic!("expected a rejection, got {other:?}"),
    }
}

/// Waits until `f` returns `Some`, for at most `within`.
fn eventually<T>(within: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let until = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= until {
            return None;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

const BUILD: &str = env!("CARGO_PKG_VERSION");

/// What a non-zero rank saw: the broadcast, its gather result, rank 0's label.
type PeerView = (Vec<u8>, Option<Vec<Vec<u8>>>, Option<String>);

#[test]
fn three_ranks_broadcast_gather_barrier() {
    let port = free_port();
    let peers: Vec<_> = (1..3)
        .map(|rank| {
            let c = config(rank, 3, port, 20.0, 20.0);
            thread::spawn(move || -> Result<PeerView, RendezvousError> {
                let mut r = Rendezvous::join(c)?;
                let id = r.broadcast(&[])?;
                let parts = r.gather(&vec![rank as u8; rank * 1000])?;
                r.barrier()?;
                Ok((id, parts, r.label_of(0)))
            })
        })
        .collect();
    let mut root = Rendezvous::join(config(0, 3, port, 20.0, 20.0)).expect("rank 0 joins");
    assert!(root.is_root());
    assert_eq!(root.world_size(), 3);
    let id: Vec<u8> = (0..128u8).collect();
    assert_eq!(root.broadcast(&id).expect("broadcast"), id);
    let parts = root
        .gather(b"zero")
        .expect("gather")
        .expect("rank 0 gets the parts");
    assert_eq!(parts[0], b"zero");
    assert_eq!(parts[1], vec![1u8; 1000]);
    assert_eq!(parts[2], vec![2u8; 2000]);
    root.barrier().expect("barrier");
    assert_eq!(root.label_of(2).as_deref(), Some("test rank 2"));
    for p in peers {
        let (got, parts, root_label) = p.join().expect("thread").expect("peer ok");
        assert_eq!(got, id);
        assert_eq!(parts, None);
        assert_eq!(root_label.as_deref(), Some("test rank 0"));
    }
    assert_eq!(root.poll_failure(), None);
    root.close();
}

#[test]
fn a_single_process_needs_no_network() {
    let mut r = Rendezvous::join(RendezvousConfig::new(0, 1, None, "t")).expect("single");
    assert_eq!(r.broadcast(b"id").expect("broadcast"), b"id");
    assert_eq!(r.gather(b"x").expect("gather"), Some(vec![b"x".to_vec()]));
    r.barrier().expect("barrier");
    assert!(r.failure_watch().failure().is_none());
}

#[test]
fn bad_configurations_are_refused_before_any_network() {
    let e = failed(Rendezvous::join(RendezvousConfig::new(2, 2, None, "t")));
    assert_eq!(e.kind(), FailureKind::Config);
    let e = failed(Rendezvous::join(RendezvousConfig::new(0, 2, None, "t")));
    assert!(e.to_string().contains("set MASTER_ADDR"), "{e}");
    let e = failed(Rendezvous::join(RendezvousConfig::new(0, 0, None, "t")));
    assert_eq!(e.kind(), FailureKind::Config);
}

#[test]
fn rank_0_turns_strangers_away_and_keeps_waiting() {
    let port = free_port();
    let root = spawn_join(config(0, 3, port, 20.0, 20.0));

    // A stranger that connects and says nothing must not hold up anyone.
    let _silent = raw_connect(port);

    let (fatal, why) = rejection(answer_to(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
    assert!(
        fatal && why.contains("not the solbench rendezvous protocol"),
        "{why}"
    );

    let mut oversize = Frame::Ready.encode();
    oversize[5] = 1; // a hello...
    oversize[8..12].copy_from_slice(&(1u32 << 20).to_be_bytes()); // ...of 1 MiB
    let (fatal, why) = rejection(answer_to(port, &oversize));
    assert!(fatal && why.contains("over the 4096-byte limit"), "{why}");

    let mut v9 = hello(1, 3, TOKEN, BUILD);
    v9[4] = 9;
    let (fatal, why) = rejection(answer_to(port, &v9));
    assert!(fatal && why.contains("protocol version 9"), "{why}");

    let (fatal, why) = rejection(answer_to(port, &hello(1, 3, "another-job", BUILD)));
    assert!(!fatal && why.contains("belongs to another job"), "{why}");

    let (fatal, why) = rejection(answer_to(port, &hello(1, 5, TOKEN, BUILD)));
    assert!(
        fatal && why.contains("says the job has 5 ranks but rank 0 says 3"),
        "{why}"
    );

    let (fatal, why) = rejection(answer_to(port, &hello(1, 3, TOKEN, "0.0.0-stale")));
    assert!(fatal && why.contains("runs build '0.0.0-stale'"), "{why}");

    let (fatal, why) = rejection(answer_to(port, &hello(0, 3, TOKEN, BUILD)));
    assert!(
        fatal && why.contains("two processes think they are rank 0"),
        "{why}"
    );

    let (fatal, why) = rejection(answer_to(port, &hello(7, 3, TOKEN, BUILD)));
    assert!(fatal && why.contains("out of range"), "{why}");

    let (_, why) = rejection(answer_to(port, &Frame::Ready.encode()));
    assert!(why.contains("expected a hello"), "{why}");

    // A legitimate rank 1, by hand.
    let mut rank1 = raw_connect(port);
    rank1.write_all(&hello(1, 3, TOKEN, BUILD)).expect("write");
    match read_frame(&mut rank1, 4096).expect("welcome") {
        Frame::Welcome { label } => assert_eq!(label, "test rank 0"),
        other => panic!("expected a welcome, got {other:?}"),
    }
    // A second rank 1 is refused.
    let (fatal, why) = rejection(answer_to(port, &hello(1, 3, TOKEN, BUILD)));
    assert!(
        fatal && why.contains("rank 1 has already joined from raw 1"),
        "{why}"
    );

    // The real rank 2 completes the job.
    let rank2 = joined(spawn_join(config(2, 3, port, 20.0, 20.0)));
    let root = joined(root);
    assert_eq!(read_frame(&mut rank1, 4096).expect("ready"), Frame::Ready);
    assert_eq!(root.poll_failure(), None);

    // Now rank 1 "crashes": rank 0 notices at once, and tells rank 2.
    drop(rank1);
    let seen = eventually(Duration::from_secs(10), || root.poll_failure()).expect("rank 0 notices");
    assert_eq!(seen.kind(), FailureKind::PeerExited);
    assert_eq!(seen.ranks(), &[1]);
    assert_eq!(
        seen.to_string(),
        "rank 1 (raw 1) closed its connection (it exited or crashed) after joining"
    );
    let mut rank2 = rank2;
    let e = failed(rank2.barrier());
    assert_eq!(e.kind(), FailureKind::PeerExited);
    assert_eq!(
        e.to_string(),
        "rank 0 reports: rank 1 (raw 1) closed its connection (it exited or crashed) after joining"
    );
}

#[test]
fn a_missing_rank_is_named_and_the_others_are_told() {
    let port = free_port();
    let root = spawn_join(config(0, 4, port, 1.0, 5.0));
    let peers: Vec<_> = [1, 3]
        .into_iter()
        .map(|r| spawn_join(config(r, 4, port, 1.0, 5.0)))
        .collect();
    let started = Instant::now();
    let e = failed(root.join().expect("thread"));
    assert_eq!(e.kind(), FailureKind::NeverJoined);
    assert_eq!(e.ranks(), &[2]);
    assert_eq!(e.to_string(), "rank 2 never joined within 1 s");
    for p in peers {
        let e = failed(p.join().expect("thread"));
        assert_eq!(
            e.to_string(),
            "rank 0 reports: rank 2 never joined within 1 s"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn never_joined_mentions_what_rank_0_turned_away() {
    let port = free_port();
    let root = spawn_join(config(0, 2, port, 1.0, 5.0));
    let (_, _) = rejection(answer_to(port, &hello(1, 8, TOKEN, BUILD)));
    let e = failed(root.join().expect("thread"));
    assert!(
        e.to_string().starts_with(
            "rank 1 never joined within 1 s (rank 0 turned away a connection from 127.0.0.1:"
        ),
        "{e}"
    );
    assert!(
        e.to_string()
            .contains("claiming rank 1): rank 1 says the job has 8 ranks but rank 0 says 2)"),
        "{e}"
    );
}

#[test]
fn without_rank_0_the_others_give_up_at_the_join_deadline() {
    let port = free_port();
    let started = Instant::now();
    let e = failed(Rendezvous::join(config(1, 2, port, 0.5, 5.0)));
    assert_eq!(e.kind(), FailureKind::NeverJoined);
    assert_eq!(e.ranks(), &[0]);
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!("rank 0 never joined: nothing at 127.0.0.1:{port} admitted rank 1 within 0.5 s (last attempt: ")),
        "{msg}"
    );
    assert!(msg.to_lowercase().contains("refused"), "{msg}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[test]
fn another_jobs_rank_0_is_retried_then_reported() {
    let port = free_port();
    let mut other = config(0, 2, port, 20.0, 5.0);
    other.job_token = "the-other-job".into();
    let other_root = spawn_join(other);
    let e = failed(Rendezvous::join(config(1, 2, port, 0.6, 5.0)));
    assert_eq!(e.kind(), FailureKind::Rejected);
    assert!(e.to_string().contains("belonged to another job"), "{e}");
    // The other job is undisturbed: its own rank 1 still joins it.
    let mut theirs = config(1, 2, port, 20.0, 5.0);
    theirs.job_token = "the-other-job".into();
    let theirs = joined(spawn_join(theirs));
    joined(other_root);
    drop(theirs);
}

#[test]
fn a_foreign_server_is_not_taken_for_rank_0() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    // Answers every connection like a web server would (detached: it ends with the
    // test process).
    thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            let mut buf = [0u8; 256];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
        }
    });
    let e = failed(Rendezvous::join(config(1, 2, port, 0.5, 5.0)));
    assert_eq!(e.kind(), FailureKind::NeverJoined);
    assert!(
        e.to_string().contains("is not a solbench rendezvous"),
        "{e}"
    );
}

#[test]
fn abort_reaches_every_rank() {
    let port = free_port();
    let p1 = spawn_join(config(1, 3, port, 20.0, 20.0));
    let p2 = spawn_join(config(2, 3, port, 20.0, 20.0));
    let mut root = Rendezvous::join(config(0, 3, port, 20.0, 20.0)).expect("join");
    let (mut r1, mut r2) = (joined(p1), joined(p2));
    let waiting = thread::spawn(move || failed(r1.barrier()));
    let reason = r2.abort("NCCL all_reduce returned ncclSystemError");
    assert_eq!(
        reason.to_string(),
        "rank 2 aborted the job: NCCL all_reduce returned ncclSystemError"
    );
    let e = failed(root.barrier());
    assert_eq!(e.kind(), FailureKind::Aborted);
    assert_eq!(e.ranks(), &[2]);
    assert_eq!(
        e.to_string(),
        "rank 2 aborted the job: NCCL all_reduce returned ncclSystemError"
    );
    let e = waiting.join().expect("thread");
    assert_eq!(
        e.to_string(),
        "rank 0 reports: rank 2 aborted the job: NCCL all_reduce returned ncclSystemError"
    );
    // Every later operation repeats the cause.
    assert_eq!(failed(root.gather(b"x")).kind(), FailureKind::Aborted);
}

#[test]
fn rank_0_abort_reaches_every_rank() {
    let port = free_port();
    let p1 = spawn_join(config(1, 2, port, 20.0, 20.0));
    let mut root = Rendezvous::join(config(0, 2, port, 20.0, 20.0)).expect("join");
    let mut r1 = joined(p1);
    let watch = r1.failure_watch();
    root.abort("out of GPU memory");
    let e = eventually(Duration::from_secs(10), || watch.failure()).expect("rank 1 learns");
    assert_eq!(e.to_string(), "rank 0 aborted the job: out of GPU memory");
    assert_eq!(
        failed(r1.broadcast(&[])).to_string(),
        "rank 0 aborted the job: out of GPU memory"
    );
}

#[test]
fn ranks_calling_different_operations_are_told() {
    let port = free_port();
    let p1 = spawn_join(config(1, 2, port, 20.0, 20.0));
    let mut root = Rendezvous::join(config(0, 2, port, 20.0, 20.0)).expect("join");
    let mut r1 = joined(p1);
    let peer = thread::spawn(move || failed(r1.gather(b"numbers")));
    let e = failed(root.barrier());
    assert_eq!(e.kind(), FailureKind::Protocol);
    assert_eq!(
        e.to_string(),
        "rank 1 is in gather #1 while rank 0 is in barrier #1: the ranks called different operations"
    );
    let e = peer.join().expect("thread");
    assert_eq!(e.kind(), FailureKind::Protocol);
}

#[test]
fn a_hung_rank_is_named_after_the_operation_timeout() {
    let port = free_port();
    let p1 = spawn_join(config(1, 3, port, 20.0, 0.3));
    let p2 = spawn_join(config(2, 3, port, 20.0, 0.3));
    let mut root = Rendezvous::join(config(0, 3, port, 20.0, 0.3)).expect("join");
    let (mut r1, r2) = (joined(p1), joined(p2));
    // Rank 1 gathers; rank 2 "hangs" (never calls).
    let peer = thread::spawn(move || failed(r1.gather(b"1")));
    let started = Instant::now();
    let e = failed(root.gather(b"0"));
    assert_eq!(e.kind(), FailureKind::Timeout);
    assert_eq!(e.ranks(), &[2]);
    assert_eq!(
        e.to_string(),
        "rank 2 sent nothing for gather #1 within 0.3 s (hung, or far behind the other ranks)"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    let e = peer.join().expect("thread");
    assert!(
        e.to_string()
            .starts_with("rank 0 reports: rank 2 sent nothing for gather #1"),
        "{e}"
    );
    // The hung rank learns too, when it next looks.
    let seen = eventually(Duration::from_secs(5), || r2.poll_failure()).expect("rank 2 is told");
    assert_eq!(seen.ranks(), &[2]);
}

#[test]
fn a_peer_waiting_for_a_silent_rank_0_times_out() {
    let port = free_port();
    let p1 = spawn_join(config(1, 2, port, 20.0, 0.2));
    let _root = Rendezvous::join(config(0, 2, port, 20.0, 0.2)).expect("join");
    let mut r1 = joined(p1);
    let e = failed(r1.broadcast(&[]));
    assert_eq!(e.kind(), FailureKind::Timeout);
    assert_eq!(e.to_string(), "rank 0 sent no broadcast #1 within 1.2 s");
}

#[test]
fn a_rank_that_finished_is_not_a_crash_but_an_extra_operation_is_an_error() {
    let port = free_port();
    let p1 = spawn_join(config(1, 2, port, 20.0, 20.0));
    let mut root = Rendezvous::join(config(0, 2, port, 20.0, 20.0)).expect("join");
    let mut r1 = joined(p1);
    let peer = thread::spawn(move || {
        r1.barrier().expect("barrier");
        r1.close();
    });
    root.barrier().expect("barrier");
    peer.join().expect("thread");
    thread::sleep(Duration::from_millis(100));
    assert_eq!(root.poll_failure(), None, "a goodbye is not a failure");
    let e = failed(root.barrier());
    assert_eq!(e.kind(), FailureKind::Protocol);
    assert_eq!(
        e.to_string(),
        "rank 1 (test rank 1) closed its rendezvous (it finished) before barrier #2: the ranks called different operations"
    );
}

#[test]
fn rank_0_crashing_is_seen_by_end_of_file() {
    // A hand-made rank 0 that admits rank 1, sends Ready, then dies without a goodbye.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let fake_root = thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        assert!(matches!(read_frame(&mut s, 4096), Ok(Frame::Hello(_))));
        write_bytes(
            &mut s,
            &Frame::Welcome {
                label: "fake root".into(),
            }
            .encode(),
        )
        .expect("welcome");
        write_bytes(&mut s, &Frame::Ready.encode()).expect("ready");
        s
    });
    let mut r1 = Rendezvous::join(config(1, 2, port, 5.0, 20.0)).expect("join");
    let stream = fake_root.join().expect("thread");
    drop(stream);
    let e = failed(r1.barrier());
    assert_eq!(e.kind(), FailureKind::PeerExited);
    assert_eq!(e.ranks(), &[0]);
    let msg = e.to_string();
    assert!(
        msg == "rank 0 (fake root) closed its connection (it exited or crashed) during barrier #1"
            || msg
                == "rank 0 (fake root) closed its connection (it exited or crashed) after joining",
        "{msg}"
    );
}

/// A job of two whose rank 1 is a raw socket, admitted and past the join.
fn job_with_raw_rank_1() -> (Rendezvous, TcpStream) {
    let port = free_port();
    let root = spawn_join(config(0, 2, port, 20.0, 20.0));
    let mut rank1 = raw_connect(port);
    rank1.write_all(&hello(1, 2, TOKEN, BUILD)).expect("write");
    assert!(matches!(
        read_frame(&mut rank1, 4096),
        Ok(Frame::Welcome { .. })
    ));
    let root = joined(root);
    assert_eq!(read_frame(&mut rank1, 4096).expect("ready"), Frame::Ready);
    (root, rank1)
}

#[test]
fn garbage_from_an_admitted_rank_fails_the_job() {
    let (root, mut rank1) = job_with_raw_rank_1();
    rank1.write_all(b"\x00\x01garbage").expect("write");
    let e = eventually(Duration::from_secs(5), || root.poll_failure()).expect("noticed");
    assert_eq!(e.kind(), FailureKind::Protocol);
    assert_eq!(
        e.to_string(),
        "rank 1 (raw 1) broke the rendezvous protocol after joining: it sent bytes that are not the solbench rendezvous protocol (they begin \"\\0\\u{1}ga\")"
    );
}

#[test]
fn an_oversize_frame_from_an_admitted_rank_fails_the_job() {
    let (root, mut rank1) = job_with_raw_rank_1();
    let mut header = Vec::new();
    header.extend_from_slice(&MAGIC);
    header.extend_from_slice(&[VERSION, 6, 0, 0]);
    header.extend_from_slice(&u32::MAX.to_be_bytes());
    assert_eq!(header.len(), HEADER_LEN);
    rank1.write_all(&header).expect("write");
    let e = eventually(Duration::from_secs(5), || root.poll_failure()).expect("noticed");
    assert_eq!(e.kind(), FailureKind::Protocol);
    assert!(
        e.to_string()
            .contains("it sent a 4294967295-byte frame, over the 67108928-byte limit"),
        "{e}"
    );
}

#[test]
fn oversize_data_fails_the_job_for_everyone() {
    let port = free_port();
    let p1 = spawn_join(config(1, 2, port, 20.0, 20.0));
    let mut root = Rendezvous::join(config(0, 2, port, 20.0, 20.0)).expect("join");
    let mut r1 = joined(p1);
    let peer = thread::spawn(move || failed(r1.gather(&[])));
    let big = vec![0u8; MAX_DATA_BYTES + 1];
    let e = failed(root.broadcast(&big));
    assert_eq!(e.kind(), FailureKind::Config);
    assert!(e.to_string().contains("over the 64 MiB limit"), "{e}");
    assert_eq!(peer.join().expect("thread").kind(), FailureKind::Config);
}

#[test]
fn rank_0_waits_for_a_busy_port() {
    let port = free_port();
    let blocker = TcpListener::bind(("0.0.0.0", port)).expect("hold the port");
    let root = spawn_join(config(0, 2, port, 10.0, 10.0));
    thread::sleep(Duration::from_millis(200));
    drop(blocker);
    let peer = joined(spawn_join(config(1, 2, port, 10.0, 10.0)));
    let root = joined(root);
    drop((peer, root));
}

#[test]
fn a_port_busy_until_the_deadline_is_an_error() {
    let port = free_port();
    let _blocker = TcpListener::bind(("0.0.0.0", port)).expect("hold the port");
    let e = failed(Rendezvous::join(config(0, 2, port, 0.4, 10.0)));
    assert_eq!(e.kind(), FailureKind::Io);
    assert!(
        e.to_string().starts_with(&format!(
            "port {port} on rank 0's host stayed in use for 0.4 s"
        )),
        "{e}"
    );
}

#[test]
fn a_master_address_of_another_host_fails_rank_0_at_once() {
    let mut c = config(0, 2, free_port(), 30.0, 10.0);
    c.master = Some(Endpoint::new(
        "192.0.2.1",
        c.master.as_ref().map_or(1, |m| m.port),
    ));
    let started = Instant::now();
    let e = failed(Rendezvous::join(c));
    assert_eq!(e.kind(), FailureKind::Config);
    assert!(
        e.to_string()
            .contains("192.0.2.1 (192.0.2.1) is not an address of it"),
        "{e}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn handles_cross_threads_as_callers_need() {
    // The CLI boxes the rendezvous and may move it to a worker thread; a watchdog polls
    // a FailureWatch from another thread while the owner is inside a GPU collective.
    fn send<T: Send>() {}
    fn send_sync<T: Send + Sync>() {}
    send::<Rendezvous>();
    send_sync::<FailureWatch>();
    send_sync::<RendezvousError>();
}
