//! Where each of Redis's replies ends in the bytes read so far.
//!
//! The pipelined transport reads whatever has arrived without waiting, so its
//! buffer may end inside a reply. redis-rs's parser reads from a `Read` and
//! loses what it had parsed when a reply is cut short (`redis::Parser` keeps
//! no state a second call could resume from), so this scanner finds the end
//! of each complete reply first and only complete replies are given to
//! redis-rs (`redis::parse_redis_value`), which builds values and errors as
//! everywhere else. Written by hand because it is small: the connection
//! speaks RESP2 (the handshake sends no `HELLO 3`), whose replies are
//! `+` `-` `:` lines, `$` bulk strings and `*` arrays; anything else is
//! unreadable and ends the connection. The scan keeps its place between
//! reads, so a large reply arriving piecemeal is scanned once.

/// A complete reply at the start of the bytes scanned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Frame {
    /// Its length in bytes.
    pub(super) len: usize,
    /// It is an error reply, or an array holding one (an `EXEC` whose
    /// command failed): it needs redis-rs to be read.
    pub(super) error: bool,
    /// It is a null array (`*-1`: an `EXEC` that ran nothing).
    pub(super) null_array: bool,
}

/// What a scan found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scanned {
    /// A complete reply.
    Complete(Frame),
    /// The reply goes on beyond the bytes read: scan again once more arrived.
    Partial,
    /// Not RESP2: the connection cannot be read in step any more.
    Invalid,
}

/// Where the scan of the next reply stands, kept between reads.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Scan {
    /// Where the next element's header starts, from the reply's start.
    at: usize,
    /// Elements still to scan; 0 before a reply is started.
    due: usize,
    error: bool,
    null_array: bool,
}

/// Scans `input`, which starts where the reply does, from where `scan` stood.
/// On `Complete` the scan is reset for the next reply.
pub(super) fn scan(input: &[u8], scan: &mut Scan) -> Scanned {
    if scan.due == 0 {
        *scan = Scan { due: 1, ..Scan::default() };
    }
    while scan.due > 0 {
        let rest = input.get(scan.at..).unwrap_or_default();
        let Some((&kind, _)) = rest.split_first() else { return Scanned::Partial };
        let line_end = match rest.iter().position(|&byte| byte == b'\r') {
            None => return Scanned::Partial,
            Some(at) => at,
        };
        match rest.get(line_end.saturating_add(1)) {
            None => return Scanned::Partial,
            Some(b'\n') => {}
            Some(_) => return Scanned::Invalid,
        }
        let header = line_end.saturating_add(2);
        let body = rest.get(1..line_end).unwrap_or_default();
        let top = scan.at == 0;
        let advance = match kind {
            b'+' | b':' => header,
            b'-' => {
                scan.error = true;
                header
            }
            b'$' => match length(body) {
                Some(Length::Null) => header,
                Some(Length::Of(len)) => {
                    let Some(end) = header.checked_add(len) else { return Scanned::Invalid };
                    match rest.get(end..end.saturating_add(2)) {
                        Some(b"\r\n") => end.saturating_add(2),
                        Some(_) => return Scanned::Invalid,
                        None if rest.len() < end.saturating_add(2) => return Scanned::Partial,
                        None => return Scanned::Invalid,
                    }
                }
                None => return Scanned::Invalid,
            },
            b'*' => match length(body) {
                Some(Length::Null) => {
                    scan.null_array |= top;
                    header
                }
                Some(Length::Of(elements)) => {
                    let Some(due) = scan.due.checked_add(elements) else { return Scanned::Invalid };
                    scan.due = due;
                    header
                }
                None => return Scanned::Invalid,
            },
            _ => return Scanned::Invalid,
        };
        scan.at = scan.at.saturating_add(advance);
        scan.due = scan.due.saturating_sub(1);
    }
    let frame = Frame { len: scan.at, error: scan.error, null_array: scan.null_array };
    *scan = Scan::default();
    Scanned::Complete(frame)
}

enum Length {
    Null,
    Of(usize),
}

/// A `$` or `*` header's length: `-1` is null, anything else negative or
/// not a number is unreadable.
fn length(digits: &[u8]) -> Option<Length> {
    if digits == b"-1" {
        return Some(Length::Null);
    }
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    digits
        .iter()
        .try_fold(0usize, |sum, &digit| {
            digit.is_ascii_digit().then_some(())?;
            sum.checked_mul(10)?.checked_add(usize::from(digit - b'0'))
        })
        .map(Length::Of)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(input: &[u8]) -> Frame {
        match scan(input, &mut Scan::default()) {
            Scanned::Complete(frame) => frame,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(input)),
        }
    }

    #[test]
    fn finds_the_end_of_each_kind_of_reply() {
        for reply in [
            &b"+OK\r\n"[..],
            b":42\r\n",
            b"$5\r\nhe\r\no\r\n",
            b"$0\r\n\r\n",
            b"$-1\r\n",
            b"*0\r\n",
            b"*2\r\n$1\r\na\r\n:1\r\n",
            b"*2\r\n*2\r\n+a\r\n+b\r\n*1\r\n$2\r\n\r\n\r\n",
        ] {
            let mut followed = reply.to_vec();
            followed.extend_from_slice(b":7\r\n");
            let frame = complete(&followed);
            assert_eq!(frame.len, reply.len(), "{:?}", String::from_utf8_lossy(reply));
            assert!(!frame.error && !frame.null_array);
        }
    }

    #[test]
    fn flags_errors_anywhere_in_a_reply_and_a_null_array() {
        assert!(complete(b"-ERR no\r\n").error);
        assert!(complete(b"*3\r\n:1\r\n-WRONGTYPE x\r\n:0\r\n").error);
        assert!(complete(b"*-1\r\n").null_array);
        assert!(!complete(b"*1\r\n*-1\r\n").null_array, "only the reply itself counts");
    }

    /// Cut anywhere, a reply is partial; fed the rest, the scan resumes and
    /// finds the same end.
    #[test]
    fn a_reply_cut_anywhere_is_partial_and_resumes() {
        let reply = b"*3\r\n$3\r\nabc\r\n*2\r\n:1\r\n-ERR x\r\n$-1\r\n";
        for cut in 0..reply.len() {
            let mut state = Scan::default();
            assert_eq!(scan(&reply[..cut], &mut state), Scanned::Partial, "cut at {cut}");
            let frame = match scan(reply, &mut state) {
                Scanned::Complete(frame) => frame,
                other => panic!("cut at {cut}: {other:?}"),
            };
            assert_eq!(frame, Frame { len: reply.len(), error: true, null_array: false }, "cut at {cut}");
        }
    }

    #[test]
    fn rejects_what_is_not_resp2() {
        for input in [
            &b"%1\r\n+a\r\n+b\r\n"[..],
            b"$3\r\nabcd\r\n",
            b"$x\r\n",
            b"*-2\r\n",
            b"+OK\rX",
            b"$99999999999999999999\r\n",
            b"*18446744073709551615\r\n*18446744073709551615\r\n",
        ] {
            assert_eq!(
                scan(input, &mut Scan::default()),
                Scanned::Invalid,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }
}
