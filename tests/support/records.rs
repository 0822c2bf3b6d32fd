//! Records as Paho C writes them, for tests that store records themselves
//! and read them back after a reopen: `open` sets aside what no restore of
//! the client could take (`paho::restore`), so such tests need valid ones.

/// A valid record of Paho key `key` carrying `payload`: by its prefix, a
/// QoS 1 PUBLISH (`s-`), a QoS 2 PUBLISH (`r-`), a PUBREL (`sc-`, which
/// carries no payload), a QoS 1 publish command (`c-`) or an inbound queue
/// entry (`q-`), each with the key's number as its message id, and in the
/// MQTT 5 form for the `5` prefixes; `payload` itself for any other key.
pub fn valid(key: &str, payload: &[u8]) -> Vec<u8> {
    let Some((prefix, number)) = key.rsplit_once('-') else { return payload.to_vec() };
    let Ok(number) = number.parse::<u16>() else { return payload.to_vec() };
    let v5 = prefix.ends_with('5');
    match prefix.trim_end_matches('5') {
        "s" => publish_packet(number, 1, v5, payload),
        "r" => publish_packet(number, 2, v5, payload),
        "sc" => vec![0x62, 0x02, (number >> 8) as u8, number as u8],
        "c" => publish_command(number, v5, payload),
        "q" => queue_entry(number, v5, payload),
        _ => payload.to_vec(),
    }
}

/// An MQTT PUBLISH packet on topic `t` (`MQTTPersistence_putPacket` stores the packet whole).
fn publish_packet(id: u16, qos: u8, v5: bool, payload: &[u8]) -> Vec<u8> {
    let mut body = vec![0x00, 0x01, b't'];
    body.extend_from_slice(&id.to_be_bytes());
    if v5 {
        body.push(0); // no properties
    }
    body.extend_from_slice(payload);
    let mut packet = vec![0x30 | (qos << 1)];
    let mut length = body.len();
    loop {
        let byte = (length % 128) as u8;
        length /= 128;
        packet.push(if length > 0 { byte | 0x80 } else { byte });
        if length == 0 {
            break;
        }
    }
    packet.extend_from_slice(&body);
    packet
}

/// A QoS 1 PUBLISH command on topic `t` as `MQTTAsync_persistCommand`
/// writes it (native byte order), with `token` as its message id.
fn publish_command(token: u16, v5: bool, payload: &[u8]) -> Vec<u8> {
    let mut record = 3i32.to_ne_bytes().to_vec(); // PUBLISH
    record.extend_from_slice(&i32::from(token).to_ne_bytes());
    record.extend_from_slice(b"t\0");
    record.extend_from_slice(&(payload.len() as i32).to_ne_bytes());
    record.extend_from_slice(payload);
    record.extend_from_slice(&1i32.to_ne_bytes()); // QoS
    record.extend_from_slice(&0i32.to_ne_bytes()); // retained
    if v5 {
        record.push(0); // no properties
    }
    record
}

/// An inbound message on topic `t` as `MQTTPersistence_persistQueueEntry` writes it.
fn queue_entry(id: u16, v5: bool, payload: &[u8]) -> Vec<u8> {
    let mut record = (payload.len() as i32).to_ne_bytes().to_vec();
    record.extend_from_slice(payload);
    for field in [1, 0, 0, i32::from(id)] {
        record.extend_from_slice(&field.to_ne_bytes()); // QoS, retained, dup, message id
    }
    record.extend_from_slice(b"t\0");
    record.extend_from_slice(&0i32.to_ne_bytes()); // topicLen: 0 when it is the topic's strlen
    if v5 {
        record.push(0); // no properties
    }
    record
}
