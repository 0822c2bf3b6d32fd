//! Encoding Redis commands (RESP) straight into a reused buffer.
//!
//! redis-rs's `Cmd` allocates its argument list and then a second buffer for
//! the encoded command on every call. The hot path here (one write per `put`)
//! instead writes the command into the transport's one reused buffer, from
//! the record table's values (Paho's scatter buffers are joined once, into a
//! recycled buffer, when `put` records them): encoding allocates nothing.
//! Over TCP, replies are parsed by redis-rs, whose parser allocates once per
//! reply; over the Unix socket, `frame` finds where each reply ends and only
//! error replies reach redis-rs (`tests/allocations.rs` counts both).

use bytes::{BufMut, BytesMut};

/// Starts a command of `argc` arguments (the command name counts as one).
pub(crate) fn begin(buf: &mut BytesMut, argc: usize) {
    header(buf, b'*', argc);
}

/// `*N\r\n` or `$N\r\n`. Formatted by itoa: `write!` through `core::fmt`
/// took more instructions than the rest of a command's encoding.
fn header(buf: &mut BytesMut, kind: u8, n: usize) {
    buf.put_u8(kind);
    buf.put_slice(itoa::Buffer::new().format(n).as_bytes());
    buf.put_slice(b"\r\n");
}

/// Appends one argument.
pub(crate) fn arg(buf: &mut BytesMut, bytes: &[u8]) {
    arg_from_parts(buf, bytes.len(), [bytes]);
}

/// Appends one argument: a number in decimal, formatted on the stack.
pub(crate) fn arg_number(buf: &mut BytesMut, number: u64) {
    arg(buf, itoa::Buffer::new().format(number).as_bytes());
}

/// Appends one argument of `len` bytes made of `parts` joined, without
/// joining them first.
pub(crate) fn arg_from_parts<'a>(buf: &mut BytesMut, len: usize, parts: impl IntoIterator<Item = &'a [u8]>) {
    buf.reserve(len.saturating_add(16));
    header(buf, b'$', len);
    for part in parts {
        buf.put_slice(part);
    }
    buf.put_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Appends a whole command.
    fn command(buf: &mut BytesMut, args: &[&[u8]]) {
        begin(buf, args.len());
        for argument in args {
            arg(buf, argument);
        }
    }

    #[test]
    fn encodes_a_command_with_a_joined_argument() {
        let mut buf = BytesMut::new();
        begin(&mut buf, 4);
        arg(&mut buf, b"HSET");
        arg(&mut buf, b"h");
        arg(&mut buf, b"s-1");
        arg_from_parts(&mut buf, 3, [&b"ab"[..], b"", b"c"]);
        assert_eq!(&buf[..], b"*4\r\n$4\r\nHSET\r\n$1\r\nh\r\n$3\r\ns-1\r\n$3\r\nabc\r\n");
    }

    #[test]
    fn encodes_numbers_in_decimal() {
        let mut buf = BytesMut::new();
        arg_number(&mut buf, 0);
        arg_number(&mut buf, u64::MAX);
        assert_eq!(&buf[..], b"$1\r\n0\r\n$20\r\n18446744073709551615\r\n");
    }

    #[test]
    fn encodes_empty_and_binary_arguments() {
        let mut buf = BytesMut::new();
        command(&mut buf, &[b"HDEL", b"", b"\0\r\n"]);
        assert_eq!(&buf[..], b"*3\r\n$4\r\nHDEL\r\n$0\r\n\r\n$3\r\n\0\r\n\r\n");
    }

    #[test]
    fn redis_rs_encodes_the_same_bytes() {
        let mut buf = BytesMut::new();
        command(&mut buf, &[b"HSET", b"hash", b"c-17", &[0, 1, 2, 255]]);
        let theirs =
            redis::cmd("HSET").arg("hash").arg("c-17").arg(&[0u8, 1, 2, 255][..]).get_packed_command();
        assert_eq!(&buf[..], &theirs[..]);
    }
}
