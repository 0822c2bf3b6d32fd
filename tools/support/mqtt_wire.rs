//! MQTT packets on the wire, for the fake brokers of the examples
//! record_traces and capture_fixtures (each includes this file with
//! `#[path = "support/mqtt_wire.rs"] mod mqtt_wire;`).

use std::io::Read;

/// A PUBLISH packet of `qos` (message id `id` unless QoS 0). `properties`:
/// `None` in MQTT 3.1.1, else the MQTT 5 property bytes (without their length).
pub fn publish_packet(qos: u8, id: u16, topic: &str, payload: &[u8], properties: Option<&[u8]>) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend(u16::try_from(topic.len()).unwrap_or(u16::MAX).to_be_bytes());
    body.extend(topic.as_bytes());
    if qos > 0 {
        body.extend(id.to_be_bytes());
    }
    if let Some(properties) = properties {
        push_length(&mut body, properties.len());
        body.extend(properties);
    }
    body.extend(payload);
    let mut packet = vec![0x30 | (qos << 1)];
    push_length(&mut packet, body.len());
    packet.extend(body);
    packet
}

/// Appends `len` as an MQTT variable byte integer.
fn push_length(out: &mut Vec<u8>, mut len: usize) {
    loop {
        let byte = (len % 128) as u8;
        len /= 128;
        out.push(if len > 0 { byte | 0x80 } else { byte });
        if len == 0 {
            break;
        }
    }
}

/// The next packet from `stream`: its first byte and its body; `None` once the stream ends.
pub fn read_packet(stream: &mut impl Read) -> Option<(u8, Vec<u8>)> {
    let mut byte = [0u8; 1];
    stream.read_exact(&mut byte).ok()?;
    let header = byte[0];
    let (mut len, mut shift) = (0usize, 0);
    loop {
        stream.read_exact(&mut byte).ok()?;
        len |= usize::from(byte[0] & 0x7f) << shift;
        shift += 7;
        if byte[0] & 0x80 == 0 {
            break;
        }
    }
    let mut body = vec![0; len];
    stream.read_exact(&mut body).ok()?;
    Some((header, body))
}
