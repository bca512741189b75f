//! The rendezvous wire format: framed messages over TCP.
//!
//! Every frame is a 12-byte header and a payload:
//!
//! ```text
//! offset  size  field
//!      0     4  magic "SBRV"
//!      4     1  protocol version (1)
//!      5     1  kind (below)
//!      6     2  reserved, zero
//!      8     4  payload length, big-endian, at most the receiver's limit
//!     12     n  payload
//! ```
//!
//! Payload fields are big-endian integers; a string or byte string is a length (u16 for
//! strings, u32 for data) and the bytes. A payload with bytes left over, or a string that
//! is not UTF-8, is malformed.
//!
//! | kind | frame            | payload                                                  |
//! |------|------------------|----------------------------------------------------------|
//! | 1    | `Hello`          | rank u32, world size u32, token str, build str, label str |
//! | 2    | `Welcome`        | rank 0's label str                                        |
//! | 3    | `Reject`         | fatal u8, reason str                                      |
//! | 4    | `Ready`          | -                                                         |
//! | 5    | `Broadcast`      | seq u64, data                                             |
//! | 6    | `GatherPart`     | seq u64, data                                             |
//! | 7    | `GatherDone`     | seq u64                                                   |
//! | 8    | `BarrierEnter`   | seq u64                                                   |
//! | 9    | `BarrierRelease` | seq u64                                                   |
//! | 10   | `Abort`          | kind u8, rank count u32, ranks u32..., message str        |
//! | 11   | `Bye`            | -                                                         |
//!
//! The magic on every frame (not only the first) means a stream that lost its framing
//! is caught at the next header instead of being read as a length.

use std::io::{self, Read, Write};

use crate::error::FailureKind;

pub(crate) const MAGIC: [u8; 4] = *b"SBRV";
pub(crate) const VERSION: u8 = 1;
pub(crate) const HEADER_LEN: usize = 12;

/// Largest payload of a `Broadcast` or `GatherPart`: 64 MiB. A rank's numbers for a
/// whole sweep are kilobytes; the limit exists so a corrupt length cannot make rank 0
/// allocate gigabytes.
pub const MAX_DATA_BYTES: usize = 64 << 20;

/// Largest payload accepted once a peer is admitted: the data plus its framing.
pub(crate) const MAX_PAYLOAD: usize = MAX_DATA_BYTES + 64;

/// Largest payload accepted before a peer is admitted. A hello is a few hundred bytes;
/// a stranger must not make rank 0 allocate more than this.
pub(crate) const MAX_HELLO_PAYLOAD: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hello {
    pub rank: u32,
    pub world_size: u32,
    pub token: String,
    pub build: String,
    pub label: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Frame {
    Hello(Hello),
    Welcome {
        label: String,
    },
    Reject {
        fatal: bool,
        reason: String,
    },
    Ready,
    Broadcast {
        seq: u64,
        data: Vec<u8>,
    },
    GatherPart {
        seq: u64,
        data: Vec<u8>,
    },
    GatherDone {
        seq: u64,
    },
    BarrierEnter {
        seq: u64,
    },
    BarrierRelease {
        seq: u64,
    },
    Abort {
        kind: FailureKind,
        ranks: Vec<u32>,
        message: String,
    },
    Bye,
}

impl Frame {
    fn kind(&self) -> u8 {
        match self {
            Frame::Hello(_) => 1,
            Frame::Welcome { .. } => 2,
            Frame::Reject { .. } => 3,
            Frame::Ready => 4,
            Frame::Broadcast { .. } => 5,
            Frame::GatherPart { .. } => 6,
            Frame::GatherDone { .. } => 7,
            Frame::BarrierEnter { .. } => 8,
            Frame::BarrierRelease { .. } => 9,
            Frame::Abort { .. } => 10,
            Frame::Bye => 11,
        }
    }

    /// What the sender was doing, for "rank 2 is in gather #3" messages.
    pub(crate) fn describe(&self) -> String {
        match self {
            Frame::Hello(_) => "a hello".into(),
            Frame::Welcome { .. } => "a welcome".into(),
            Frame::Reject { .. } => "a rejection".into(),
            Frame::Ready => "the join".into(),
            Frame::Broadcast { seq, .. } => format!("broadcast #{seq}"),
            Frame::GatherPart { seq, .. } | Frame::GatherDone { seq } => format!("gather #{seq}"),
            Frame::BarrierEnter { seq } | Frame::BarrierRelease { seq } => {
                format!("barrier #{seq}")
            }
            Frame::Abort { .. } => "an abort".into(),
            Frame::Bye => "a goodbye".into(),
        }
    }

    /// The whole frame, header included, ready to write.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut p = Vec::new();
        match self {
            Frame::Hello(h) => {
                p.extend_from_slice(&h.rank.to_be_bytes());
                p.extend_from_slice(&h.world_size.to_be_bytes());
                put_str(&mut p, &h.token);
                put_str(&mut p, &h.build);
                put_str(&mut p, &h.label);
            }
            Frame::Welcome { label } => put_str(&mut p, label),
            Frame::Reject { fatal, reason } => {
                p.push(u8::from(*fatal));
                put_str(&mut p, reason);
            }
            Frame::Ready | Frame::Bye => {}
            Frame::Broadcast { seq, data } | Frame::GatherPart { seq, data } => {
                p.extend_from_slice(&seq.to_be_bytes());
                put_data(&mut p, data);
            }
            Frame::GatherDone { seq }
            | Frame::BarrierEnter { seq }
            | Frame::BarrierRelease { seq } => {
                p.extend_from_slice(&seq.to_be_bytes());
            }
            Frame::Abort {
                kind,
                ranks,
                message,
            } => {
                p.push(kind.code());
                // Callers never name more ranks than a job has (≤ 2^20).
                p.extend_from_slice(&(ranks.len().min(u32::MAX as usize) as u32).to_be_bytes());
                for r in ranks {
                    p.extend_from_slice(&r.to_be_bytes());
                }
                put_str(&mut p, message);
            }
        }
        let mut out = Vec::with_capacity(HEADER_LEN + p.len());
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.push(self.kind());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&(p.len().min(u32::MAX as usize) as u32).to_be_bytes());
        out.extend_from_slice(&p);
        out
    }
}

/// Strings are u16-length-prefixed; longer ones are cut at a character boundary (they
/// are labels and messages, and a cut message beats a failed abort).
fn put_str(p: &mut Vec<u8>, s: &str) {
    let mut end = s.len().min(u16::MAX as usize);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    p.extend_from_slice(&(end as u16).to_be_bytes());
    p.extend_from_slice(&s.as_bytes()[..end]);
}

fn put_data(p: &mut Vec<u8>, d: &[u8]) {
    // Callers check MAX_DATA_BYTES first, so the length fits.
    p.extend_from_slice(&(d.len().min(u32::MAX as usize) as u32).to_be_bytes());
    p.extend_from_slice(d);
}

/// Why a frame could not be read.
#[derive(Debug)]
pub(crate) enum WireError {
    /// The stream ended cleanly before a frame began.
    Eof,
    /// The stream ended inside a frame.
    Truncated,
    /// The first four bytes are not "SBRV": not this protocol.
    BadMagic([u8; 4]),
    /// This protocol, another version.
    BadVersion(u8),
    /// A payload longer than the receiver accepts.
    Oversize {
        len: usize,
        max: usize,
    },
    /// A known header with a payload that does not parse.
    Malformed(String),
    Io(io::Error),
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::Eof => write!(f, "the connection closed"),
            WireError::Truncated => write!(f, "the connection closed in the middle of a frame"),
            WireError::BadMagic(m) => write!(
                f,
                "it sent bytes that are not the solbench rendezvous protocol (they begin {:?})",
                String::from_utf8_lossy(m)
            ),
            WireError::BadVersion(v) => write!(
                f,
                "it speaks rendezvous protocol version {v} and this build speaks {VERSION} (different solbench releases?)"
            ),
            WireError::Oversize { len, max } => {
                write!(f, "it sent a {len}-byte frame, over the {max}-byte limit")
            }
            WireError::Malformed(why) => write!(f, "it sent a malformed frame ({why})"),
            WireError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl WireError {
    /// A read timeout (set with `set_read_timeout`) rather than a failure.
    pub(crate) fn is_timeout(&self) -> bool {
        matches!(self, WireError::Io(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut))
    }
}

/// Reads until `buf` is full. `Ok(false)`: the stream ended before the first byte.
fn fill<R: Read>(r: &mut R, buf: &mut [u8]) -> Result<bool, WireError> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(WireError::Truncated),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(WireError::Io(e)),
        }
    }
    Ok(true)
}

/// Reads one frame whose payload may be at most `max_payload` bytes. The header is
/// checked before the payload is allocated.
pub(crate) fn read_frame<R: Read>(r: &mut R, max_payload: usize) -> Result<Frame, WireError> {
    let mut header = [0u8; HEADER_LEN];
    // The magic is checked as soon as it arrives, so a stranger that sends four wrong
    // bytes is answered without waiting for eight more that may never come.
    if !fill(r, &mut header[..4])? {
        return Err(WireError::Eof);
    }
    let magic = [header[0], header[1], header[2], header[3]];
    if magic != MAGIC {
        return Err(WireError::BadMagic(magic));
    }
    if !fill(r, &mut header[4..])? {
        return Err(WireError::Truncated);
    }
    if header[4] != VERSION {
        return Err(WireError::BadVersion(header[4]));
    }
    let kind = header[5];
    if header[6] != 0 || header[7] != 0 {
        return Err(WireError::Malformed(
            "reserved header bytes are not zero".into(),
        ));
    }
    let len = u32::from_be_bytes([header[8], header[9], header[10], header[11]]) as usize;
    if len > max_payload {
        return Err(WireError::Oversize {
            len,
            max: max_payload,
        });
    }
    let mut payload = vec![0u8; len];
    if len > 0 && !fill(r, &mut payload)? {
        return Err(WireError::Truncated);
    }
    parse(kind, &payload)
}

/// Writes a whole encoded frame.
pub(crate) fn write_bytes<W: Write>(w: &mut W, bytes: &[u8]) -> io::Result<()> {
    w.write_all(bytes)?;
    w.flush()
}

fn parse(kind: u8, payload: &[u8]) -> Result<Frame, WireError> {
    let mut c = Cursor {
        buf: payload,
        at: 0,
    };
    let frame = match kind {
        1 => Frame::Hello(Hello {
            rank: c.u32()?,
            world_size: c.u32()?,
            token: c.str()?,
            build: c.str()?,
            label: c.str()?,
        }),
        2 => Frame::Welcome { label: c.str()? },
        3 => Frame::Reject {
            fatal: c.u8()? != 0,
            reason: c.str()?,
        },
        4 => Frame::Ready,
        5 => Frame::Broadcast {
            seq: c.u64()?,
            data: c.data()?,
        },
        6 => Frame::GatherPart {
            seq: c.u64()?,
            data: c.data()?,
        },
        7 => Frame::GatherDone { seq: c.u64()? },
        8 => Frame::BarrierEnter { seq: c.u64()? },
        9 => Frame::BarrierRelease { seq: c.u64()? },
        10 => {
            let code = c.u8()?;
            let kind = FailureKind::from_code(code)
                .ok_or_else(|| WireError::Malformed(format!("unknown failure kind {code}")))?;
            let n = c.u32()? as usize;
            // Each rank takes four bytes; check before allocating.
            if n > c.remaining() / 4 {
                return Err(WireError::Malformed(
                    "abort names more ranks than it carries".into(),
                ));
            }
            let mut ranks = Vec::with_capacity(n);
            for _ in 0..n {
                ranks.push(c.u32()?);
            }
            Frame::Abort {
                kind,
                ranks,
                message: c.str()?,
            }
        }
        11 => Frame::Bye,
        other => return Err(WireError::Malformed(format!("unknown frame kind {other}"))),
    };
    if c.remaining() != 0 {
        return Err(WireError::Malformed(format!(
            "{} bytes left over after {}",
            c.remaining(),
            frame.describe()
        )));
    }
    Ok(frame)
}

struct Cursor<'a> {
    buf: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.at
    }

    fn take(&mut self, n: usize) -> Result<&[u8], WireError> {
        if n > self.remaining() {
            return Err(WireError::Malformed(
                "payload shorter than its fields".into(),
            ));
        }
        let s = &self.buf[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, WireError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, WireError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, WireError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    fn str(&mut self) -> Result<String, WireError> {
        let n = self.u16()? as usize;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec())
            .map_err(|_| WireError::Malformed("a string is not UTF-8".into()))
    }

    fn data(&mut self) -> Result<Vec<u8>, WireError> {
        let n = self.u32()? as usize;
        Ok(self.take(n)?.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(frame: Frame) {
        let bytes = frame.encode();
        let back = read_frame(&mut &bytes[..], MAX_PAYLOAD).expect("decodes");
        assert_eq!(back, frame);
    }

    #[test]
    fn every_frame_round_trips() {
        round_trip(Frame::Hello(Hello {
            rank: 3,
            world_size: 8,
            token: "slurm:1.0".into(),
            build: "0.1.0".into(),
            label: "node3 pid 42".into(),
        }));
        round_trip(Frame::Welcome {
            label: "node0 pid 1".into(),
        });
        round_trip(Frame::Reject {
            fatal: true,
            reason: "no".into(),
        });
        round_trip(Frame::Reject {
            fatal: false,
            reason: String::new(),
        });
        round_trip(Frame::Ready);
        round_trip(Frame::Broadcast {
            seq: 1,
            data: vec![7; 128],
        });
        round_trip(Frame::GatherPart {
            seq: u64::MAX,
            data: Vec::new(),
        });
        round_trip(Frame::GatherDone { seq: 2 });
        round_trip(Frame::BarrierEnter { seq: 3 });
        round_trip(Frame::BarrierRelease { seq: 4 });
        round_trip(Frame::Abort {
            kind: FailureKind::PeerExited,
            ranks: vec![2, 5],
            message: "rank 2 closed its connection".into(),
        });
        round_trip(Frame::Bye);
    }

    #[test]
    fn header_layout_is_pinned() {
        let bytes = Frame::GatherDone { seq: 0x0102 }.encode();
        assert_eq!(&bytes[..12], b"SBRV\x01\x07\x00\x00\x00\x00\x00\x08");
        assert_eq!(&bytes[12..], &[0, 0, 0, 0, 0, 0, 1, 2]);
    }

    #[test]
    fn garbage_and_limits_are_refused_before_allocating() {
        let http = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        assert!(
            matches!(read_frame(&mut &http[..], 4096), Err(WireError::BadMagic(m)) if &m == b"GET ")
        );

        let mut v2 = Frame::Ready.encode();
        v2[4] = 2;
        assert!(matches!(
            read_frame(&mut &v2[..], 4096),
            Err(WireError::BadVersion(2))
        ));

        // A header announcing 4 GiB: refused from the header alone.
        let mut huge = Frame::Ready.encode();
        huge[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            read_frame(&mut &huge[..], MAX_HELLO_PAYLOAD),
            Err(WireError::Oversize { len, max }) if len == u32::MAX as usize && max == MAX_HELLO_PAYLOAD
        ));

        let mut reserved = Frame::Ready.encode();
        reserved[6] = 1;
        assert!(matches!(
            read_frame(&mut &reserved[..], 4096),
            Err(WireError::Malformed(_))
        ));

        let mut unknown = Frame::Ready.encode();
        unknown[5] = 99;
        assert!(matches!(
            read_frame(&mut &unknown[..], 4096),
            Err(WireError::Malformed(_))
        ));
    }

    #[test]
    fn short_and_overlong_payloads_are_malformed() {
        // GatherDone with 4 bytes instead of 8.
        let mut short = Frame::GatherDone { seq: 1 }.encode();
        short.truncate(HEADER_LEN + 4);
        short[11] = 4;
        assert!(matches!(
            read_frame(&mut &short[..], 4096),
            Err(WireError::Malformed(_))
        ));

        // Ready with a stray byte.
        let mut long = Frame::Ready.encode();
        long[11] = 1;
        long.push(0);
        assert!(matches!(
            read_frame(&mut &long[..], 4096),
            Err(WireError::Malformed(_))
        ));

        // An abort claiming a billion ranks in a tiny payload.
        let mut abort = Frame::Abort {
            kind: FailureKind::Aborted,
            ranks: vec![],
            message: String::new(),
        }
        .encode();
        abort[HEADER_LEN + 1..HEADER_LEN + 5].copy_from_slice(&1_000_000_000u32.to_be_bytes());
        assert!(matches!(
            read_frame(&mut &abort[..], 4096),
            Err(WireError::Malformed(_))
        ));

        // Non-UTF-8 string.
        let mut bad = Frame::Welcome { label: "ab".into() }.encode();
        bad[HEADER_LEN + 2] = 0xff;
        assert!(matches!(
            read_frame(&mut &bad[..], 4096),
            Err(WireError::Malformed(_))
        ));
    }

    #[test]
    fn end_of_stream_is_told_apart_from_truncation() {
        assert!(matches!(
            read_frame(&mut &b""[..], 4096),
            Err(WireError::Eof)
        ));
        let bytes = Frame::Broadcast {
            seq: 1,
            data: vec![1; 10],
        }
        .encode();
        for cut in [2, 4, 11, 12, bytes.len() - 1] {
            let r = read_frame(&mut &bytes[..cut], 4096);
            // Two bytes of the right magic, then nothing: truncated.
            assert!(
                matches!(r, Err(WireError::Truncated)),
                "cut at {cut}: {r:?}"
            );
        }
    }

    #[test]
    fn long_strings_are_cut_at_a_character_boundary() {
        let s = "é".repeat(40_000); // 80 000 bytes
        let bytes = Frame::Welcome { label: s }.encode();
        match read_frame(&mut &bytes[..], MAX_PAYLOAD) {
            Ok(Frame::Welcome { label }) => {
                assert!(label.len() <= u16::MAX as usize);
                assert!(label.chars().all(|c| c == 'é'));
            }
            other => panic!("{other:?}"),
        }
    }
}
