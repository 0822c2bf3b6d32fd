//! What Paho C's restore can take: the check `open` runs on every record it
//! reads, before Paho sees any of them.
//!
//! Redis is shared, so a record is untrusted input to C code that reads it
//! with few bounds checks. Each rule below mirrors one Paho C 1.3.16 reader
//! and accepts what it accepts, except where that reader would read past the
//! record, crash, or take the record in a way that leaves it in the store
//! for ever or deletes it without a trace: those records are quarantined,
//! with a reason that names the Paho C function.
//!
//! A record of the other MQTT version than the client's is rewritten into
//! the client's version when nothing is lost (see [`convert`]), because Paho
//! looks up and removes records under its own version's keys.
//!
//! The `Restore` path allocates nothing and reads each byte at most a few
//! times: it runs on every record at every open.

use super::{parse_key, Kind, Version, PUBLISH_COMMAND, SUBSCRIBE_COMMAND, UNSUBSCRIBE_COMMAND};

/// What `open` does with a record it read, for a client of a given version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AtOpen {
    /// Paho's restore takes it as it is.
    Restore,
    /// Paho's restore takes it only in this form (another version's record
    /// that converts losslessly): the store rewrites it, atomically with the
    /// removal of the original.
    Rewrite { key: String, value: Vec<u8> },
    /// No restore of this client can take it: set aside in the quarantine.
    Quarantine(String),
}

/// What `open` does with the record `key` = `value` for a client of `client` version.
// Unused until the store's open calls it (being plumbed in another branch).
#[cfg_attr(not(feature = "decode"), allow(dead_code))]
pub(crate) fn at_open(key: &str, value: &[u8], client: Version) -> AtOpen {
    // A key without a Paho prefix is not this check's business: the store
    // never hands such fields to Paho (it skips them when listing keys).
    let Ok((kind, version, number)) = parse_key(key) else { return AtOpen::Restore };
    if let Err(reason) = check_key_number(key, kind, number) {
        return AtOpen::Quarantine(reason);
    }
    let layout = match kind {
        Kind::PublishSent | Kind::PublishReceived | Kind::PubrelSent => {
            check_packet_record(kind, number, value, version).map(Layout::Packet)
        }
        Kind::Command => check_command(value, version).map(|()| Layout::Command),
        Kind::QueuedMessage => check_queue_entry(value, version).map(Layout::Queued),
    };
    match layout {
        Err(reason) => AtOpen::Quarantine(reason),
        Ok(_) if version == client => AtOpen::Restore,
        // `MQTTAsync_restoreCommands` restores either version's commands
        // (it takes the version from each key).
        Ok(Layout::Command) => AtOpen::Restore,
        Ok(layout) => match convert(value, &layout, client) {
            Ok(converted) => {
                AtOpen::Rewrite { key: format!("{}{number}", kind.prefix(client)), value: converted }
            }
            Err(reason) => AtOpen::Quarantine(reason),
        },
    }
}

/// What the check learnt of a valid record, for a conversion to the other version.
#[derive(Debug, Clone, Copy)]
enum Layout {
    Packet(Packet),
    Command,
    Queued(QueueEntry),
}

/// Paho looks a record up and removes it by the key it formats from the
/// number (`"%s%d"` in `MQTTPersistence_remove`, `"%s%u"` in
/// `MQTTAsync_unpersistCommand` and `MQTTPersistence_unpersistQueueEntry`),
/// and reads command and queue numbers back with `atoi`
/// (`MQTTAsync_restoreCommands`, `MQTTPersistence_restoreMessageQueue`): a
/// key with leading zeros is restored but never removed (sent again at every
/// start), and a number beyond a C `int` overflows `atoi`.
fn check_key_number(key: &str, kind: Kind, number: u32) -> Result<(), String> {
    let digits = key.rsplit('-').next().unwrap_or_default();
    if digits.len() > 1 && digits.starts_with('0') {
        return Err(format!(
            "the key's number {digits:?} has leading zeros: Paho removes the record under the key it formats \
             from the number ({number}), so it would never remove this one"
        ));
    }
    if matches!(kind, Kind::Command | Kind::QueuedMessage) && i32::try_from(number).is_err() {
        return Err(format!(
            "the key's number {number} is beyond a C int: MQTTAsync_restoreCommands and \
             MQTTPersistence_restoreMessageQueue read it with atoi"
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Byte-level readers, mirroring Paho C's.

/// MQTT packet types (the fixed header's high nibble).
const PUBLISH: u8 = 3;
const PUBREL: u8 = 6;

/// `sizeof(MQTTSubscribe_options)` (MQTTSubscribeOpts.h): `char[4]`, `int`,
/// three `unsigned char`, padded to the `int`'s alignment.
const SUBSCRIBE_OPTIONS_SIZE: usize = 12;

/// The C `int` at `at`, in this machine's byte order (Paho C `memcpy`s them).
fn c_int_at(value: &[u8], at: usize) -> Option<i32> {
    let bytes = value.get(at..at.checked_add(4)?)?;
    Some(i32::from_ne_bytes(bytes.try_into().ok()?))
}

/// The big-endian two-byte integer at `at` (`readInt`, MQTTPacket.c).
fn u16_at(value: &[u8], at: usize) -> Option<u16> {
    let bytes = value.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes(bytes.try_into().ok()?))
}

/// A variable byte integer as `MQTTPacket_VBIdecode` (MQTTPacket.c) reads
/// it through `MQTTPacket_decodeBuf`, which has no end to check against:
/// at most 4 bytes are read; after 4 bytes that all have the continuation
/// bit it stops and answers a length of 5, which its callers add to their
/// pointer. Returns the value and that length; `None` if a byte it reads is
/// past the end of `value`.
fn vbi_at(value: &[u8], at: usize) -> Option<(u32, usize)> {
    let mut number: u32 = 0;
    for (index, shift) in [0u32, 7, 14, 21].into_iter().enumerate() {
        let byte = *value.get(at.checked_add(index)?)?;
        number |= u32::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some((number, index + 1));
        }
    }
    Some((number, 5))
}

/// How `MQTTProperties_read` (MQTTProperties.c) fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PropertiesFault {
    /// It returns 0: its caller drops the packet or command.
    Rejected(&'static str),
    /// It reads past the end of the record (its fixed-size reads, `readChar`,
    /// `readInt`, `readInt4` and `MQTTPacket_decodeBuf`, have no end check),
    /// or leaves its caller's pointer past the end.
    PastEnd(&'static str),
}

impl PropertiesFault {
    fn describe(self) -> &'static str {
        match self {
            PropertiesFault::Rejected(why) | PropertiesFault::PastEnd(why) => why,
        }
    }
}

/// The MQTT 5 property types `MQTTProperty_getType` knows, by identifier
/// (`namesToTypes`, MQTTProperties.c).
#[derive(Debug, Clone, Copy)]
enum PropertyType {
    Byte,
    TwoByte,
    FourByte,
    VarInt,
    Binary,
    Pair,
}

fn property_type(identifier: u8) -> Option<PropertyType> {
    Some(match identifier {
        1 | 23 | 25 | 36 | 37 | 40 | 41 | 42 => PropertyType::Byte,
        19 | 33 | 34 | 35 => PropertyType::TwoByte,
        2 | 17 | 24 | 39 => PropertyType::FourByte,
        11 => PropertyType::VarInt,
        // Binary data and UTF-8 strings are read alike (`MQTTLenStringRead`).
        3 | 8 | 9 | 18 | 21 | 22 | 26 | 28 | 31 => PropertyType::Binary,
        38 => PropertyType::Pair,
        _ => return None,
    })
}

/// A length-prefixed string as `MQTTLenStringRead` (MQTTPacket.c) reads it,
/// which checks both reads against the end: the offset after it.
fn len_string_end(value: &[u8], at: usize) -> Option<usize> {
    let len = u16_at(value, at)?;
    let end = at.checked_add(2)?.checked_add(usize::from(len))?;
    (end <= value.len()).then_some(end)
}

/// The property list at `at` as `MQTTProperties_read` reads it: the offset
/// after it and its declared length.
fn read_properties(value: &[u8], at: usize) -> Result<(usize, u32), PropertiesFault> {
    use PropertiesFault::{PastEnd, Rejected};
    // `if (enddata - (*pptr) > 0)`: no length byte at all is a failure.
    if at >= value.len() {
        return Err(Rejected("MQTT 5 properties are missing (MQTTProperties_read needs their length)"));
    }
    let (declared, len_bytes) =
        vbi_at(value, at).ok_or(PastEnd("the properties length runs past the end of the record"))?;
    let mut at = at.saturating_add(len_bytes);
    // `remlength` is an `unsigned int` that `remlength -= proplen` can wrap
    // around: Paho then reads on until a property fails or it runs off the
    // record, which this loop reaches too (each turn moves on by one byte or more).
    let mut remaining = declared;
    while remaining > 0 {
        let identifier =
            *value.get(at).ok_or(PastEnd("a property identifier is past the end of the record"))?;
        let start = at;
        at = at.saturating_add(1);
        let kind = property_type(identifier).ok_or(Rejected("an unknown MQTT 5 property identifier"))?;
        at = match kind {
            PropertyType::Byte => at.saturating_add(1),
            PropertyType::TwoByte => at.saturating_add(2),
            PropertyType::FourByte => at.saturating_add(4),
            PropertyType::VarInt => {
                let (_, len) = vbi_at(value, at)
                    .ok_or(PastEnd("a property's variable byte integer runs past the end"))?;
                at.saturating_add(len)
            }
            PropertyType::Binary => len_string_end(value, at)
                .ok_or(Rejected("a property's string runs past the end of the record"))?,
            PropertyType::Pair => len_string_end(value, at)
                .and_then(|after_name| len_string_end(value, after_name))
                .ok_or(Rejected("a user property's string runs past the end of the record"))?,
        };
        if at > value.len() {
            return Err(PastEnd("a property's value runs past the end of the record"));
        }
        let length = u32::try_from(at.saturating_sub(start)).unwrap_or(u32::MAX);
        remaining = remaining.wrapping_sub(length);
    }
    if at > value.len() {
        return Err(PastEnd("the properties length skips past the end of the record"));
    }
    Ok((at, declared))
}

// ---------------------------------------------------------------------------
// Rule 1a: PUBLISH and PUBREL records (`s-`, `sc-`, `r-` and their 5 forms).

/// A valid PUBLISH or PUBREL record.
#[derive(Debug, Clone, Copy)]
struct Packet {
    header: u8,
    /// Where the variable header starts (after the remaining length).
    body: usize,
    content: PacketContent,
}

#[derive(Debug, Clone, Copy)]
enum PacketContent {
    Publish {
        qos: u8,
        msg_id: u16,
        /// Where MQTT 5 properties start or would start (after the message id).
        properties_at: usize,
        /// In MQTT 5: where the properties end and whether they declare any.
        properties: Option<(usize, bool)>,
    },
    Pubrel {
        msg_id: u16,
    },
}

/// Mirrors `MQTTPersistence_restorePacket` (MQTTPersistence.c) and the
/// readers it calls, `MQTTPacket_publish` and `MQTTPacket_ack`
/// (MQTTPacket.c), for the record's data version. A record it answers NULL
/// for is removed by `MQTTPersistence_restorePackets` (`premove`) without a
/// trace, so it is refused here.
fn restore_packet(value: &[u8], version: Version) -> Result<Packet, String> {
    // `header.byte = buffer[0]` is read whatever the length (paho.mqtt.c #990).
    let &header = value.first().ok_or(
        "an empty record: MQTTPersistence_restorePacket reads its first byte regardless (paho.mqtt.c #990)",
    )?;
    // The remaining length loop reads bytes while the continuation bit is
    // set, with no end check and no limit; its `int multiplier` overflows
    // (undefined behaviour) past 4 bytes, which MQTT allows at most.
    let mut remaining: usize = 0;
    let mut body = None;
    for (index, shift) in [0u32, 7, 14, 21].into_iter().enumerate() {
        let byte = *value.get(index + 1).ok_or(
            "the remaining length runs past the end of the record: MQTTPersistence_restorePacket would read past it",
        )?;
        remaining |= usize::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            body = Some(index + 2);
            break;
        }
    }
    let body = body.ok_or(
        "the remaining length has more than 4 bytes: MQTTPersistence_restorePacket's int multiplier overflows",
    )?;
    if body.checked_add(remaining) != Some(value.len()) {
        return Err(format!(
            "the remaining length says {remaining} bytes, the record has {}: MQTTPersistence_restorePacket \
             returns NULL and Paho deletes the record",
            value.len().saturating_sub(body)
        ));
    }
    let content = match header >> 4 {
        PUBLISH => read_publish(value, header, body, version)?,
        PUBREL => read_pubrel(value, body, version)?,
        other => return Err(format!(
            "packet type {other}: Paho persists only PUBLISH and PUBREL, and MQTTPersistence_restorePackets \
                 would take this one as one of those (a wrong cast) or drop it"
        )),
    };
    Ok(Packet { header, body, content })
}

/// Mirrors `MQTTPacket_publish` (MQTTPacket.c): topic (`readUTFlen`, which
/// checks the end), message id for QoS 1 and 2 (checked), MQTT 5 properties
/// (`MQTTProperties_read`), the rest is the payload.
fn read_publish(value: &[u8], header: u8, body: usize, version: Version) -> Result<PacketContent, String> {
    let reject = |what: &str| format!("{what}: MQTTPacket_publish returns NULL and Paho deletes the record");
    let topic_end = len_string_end(value, body).ok_or_else(|| reject("the topic runs past the end"))?;
    let qos = (header >> 1) & 0b11;
    let (msg_id, properties_at) = if qos > 0 {
        (
            u16_at(value, topic_end).ok_or_else(|| reject("the message id is missing"))?,
            topic_end.saturating_add(2),
        )
    } else {
        (0, topic_end)
    };
    let properties = match version {
        Version::V3 => None,
        Version::V5 => {
            let (end, declared) = read_properties(value, properties_at).map_err(|fault| match fault {
                PropertiesFault::Rejected(why) => reject(why),
                PropertiesFault::PastEnd(why) => {
                    format!("{why}: MQTTProperties_read would read past the record")
                }
            })?;
            Some((end, declared > 0))
        }
    };
    Ok(PacketContent::Publish { qos, msg_id, properties_at, properties })
}

/// Mirrors `MQTTPacket_ack` (MQTTPacket.c) for a PUBREL: the message id
/// (checked), and in MQTT 5 a reason code if more than 2 bytes and
/// properties if more than 3. MQTT 3 ignores what follows the message id.
fn read_pubrel(value: &[u8], body: usize, version: Version) -> Result<PacketContent, String> {
    let msg_id = u16_at(value, body).ok_or(
        "the PUBREL's message id is missing: MQTTPacket_ack returns NULL and Paho deletes the record",
    )?;
    if version == Version::V5 && value.len().saturating_sub(body) > 3 {
        read_properties(value, body.saturating_add(3)).map_err(|fault| {
            format!("{}: MQTTPacket_ack fails on the PUBREL's properties", fault.describe())
        })?;
    }
    Ok(PacketContent::Pubrel { msg_id })
}

/// Mirrors what `MQTTPersistence_restorePackets` (MQTTPersistence.c) does
/// with the packet by the key's kind: it casts an `s-` or `r-` packet to
/// `Publish*` and an `sc-` one to `Pubrel*` without looking at its type, then
/// files it under the packet's message id, and later removes the record
/// under the key it formats from that id (`MQTTPersistence_remove`).
fn check_packet_record(kind: Kind, number: u32, value: &[u8], version: Version) -> Result<Packet, String> {
    let packet = restore_packet(value, version)?;
    let msg_id = match (kind, packet.content) {
        (Kind::PublishSent, PacketContent::Publish { qos, msg_id, .. }) => {
            // `MQTTProtocol_retries` re-sends QoS 1 and 2 only: any other
            // stays in the outbound list, its record kept for ever.
            if !(1..=2).contains(&qos) {
                return Err(format!(
                    "an s- record holds a QoS {qos} PUBLISH: Paho writes QoS 1 and 2 only, and would never \
                     send it nor remove the record"
                ));
            }
            msg_id
        }
        (Kind::PublishReceived, PacketContent::Publish { qos, msg_id, .. }) => {
            // `MQTTPacket_Factory` persists inbound QoS 2 only; restored, the
            // message waits for a PUBREL the broker sends for QoS 2 only.
            if qos != 2 {
                return Err(format!(
                    "an r- record holds a QoS {qos} PUBLISH: Paho writes QoS 2 only, and would wait for its \
                     PUBREL for ever"
                ));
            }
            msg_id
        }
        (Kind::PubrelSent, PacketContent::Pubrel { msg_id }) => msg_id,
        (Kind::PubrelSent, _) => {
            return Err("the key names a PUBREL but the packet is a PUBLISH: MQTTPersistence_restorePackets \
                        would cast it to Pubrel*"
                .to_owned())
        }
        _ => {
            return Err("the key names a PUBLISH but the packet is a PUBREL: MQTTPersistence_restorePackets \
                        would cast it to Publish*"
                .to_owned())
        }
    };
    if msg_id == 0 || u32::from(msg_id) != number {
        return Err(format!(
            "the packet's message id is {msg_id}, the key's number {number}: Paho files it under the packet's \
             id and would never remove this record"
        ));
    }
    Ok(packet)
}

// ---------------------------------------------------------------------------
// Rule 1b: command records (`c-`, `c5-`).

/// The topic at `at` as `MQTTAsync_restoreCommand` (MQTTAsyncUtils.c) reads
/// it: `data_size = strnlen(ptr, endpos - ptr) + 1`, an error if
/// `data_size == endpos - ptr` (a NUL as the record's last byte). Without a
/// NUL that test passes, and `strcpy` copies on past the record. Returns
/// the offset after the NUL.
fn command_string_end(value: &[u8], at: usize, what: &str) -> Result<usize, String> {
    let rest = value.get(at..).unwrap_or_default();
    match rest.iter().position(|&b| b == 0) {
        None => Err(format!(
            "{what} has no NUL: MQTTAsync_restoreCommand fails on it, or its strcpy reads past the record"
        )),
        Some(nul) if nul + 1 == rest.len() => Err(format!(
            "{what} ends with the record: MQTTAsync_restoreCommand rejects a NUL as the last byte \
             (data_size == endpos - ptr) when it sends the command, and the record then stays for ever"
        )),
        Some(nul) => Ok(at.saturating_add(nul).saturating_add(1)),
    }
}

/// Mirrors `MQTTAsync_restoreCommand` (MQTTAsyncUtils.c) in both its calls:
/// the head only at restore (`MQTTAsync_restoreCommands`), then the whole
/// command when it is sent (`MQTTAsync_processCommand`, `not_restored`).
/// When either answers NULL the command is dropped and its record is never
/// removed, so every start restores it again.
fn check_command(value: &[u8], version: Version) -> Result<(), String> {
    let null =
        |what: &str| format!("{what}: MQTTAsync_restoreCommand returns NULL and the record stays for ever");
    if value.is_empty() {
        return Err(null("an empty command record"));
    }
    let (Some(command_type), Some(token)) = (c_int_at(value, 0), c_int_at(value, 4)) else {
        return Err(null("the record is shorter than the command's type and token"));
    };
    let mut at = 8;
    match command_type {
        PUBLISH_COMMAND => {
            at = command_string_end(value, at, "the topic")?;
            let payload_len = c_int_at(value, at).ok_or_else(|| null("the payload length is missing"))?;
            // A negative length wraps the C pointer (`&ptr[data_size]`) and fails `malloc` on send.
            let payload_len = usize::try_from(payload_len).map_err(|_| {
                format!(
                    "the payload length {payload_len} is negative: MQTTAsync_restoreCommand's pointer \
                     arithmetic wraps, and it returns NULL when the command is sent"
                )
            })?;
            at = at
                .saturating_add(4)
                .checked_add(payload_len)
                .filter(|&end| end <= value.len())
                .ok_or_else(|| null("the payload runs past the end"))?;
            let qos = c_int_at(value, at).ok_or_else(|| null("the QoS is missing"))?;
            c_int_at(value, at.saturating_add(4)).ok_or_else(|| null("the retained flag is missing"))?;
            at = at.saturating_add(8);
            // `MQTTAsync_send` refuses any other QoS; `MQTTProtocol_startPublish`
            // would put it in the header's two bits.
            if !(0..=2).contains(&qos) {
                return Err(format!("QoS {qos}: Paho writes 0, 1 or 2 only, and sends a wrong one"));
            }
            // `MQTTAsync_processCommand` sends it with `p->msgId = token`.
            if qos > 0 && !(1..=i32::from(u16::MAX)).contains(&token) {
                return Err(format!(
                    "a QoS {qos} publish with token {token}: Paho sends it with the token as its message id, \
                     which must be 1 to 65535"
                ));
            }
        }
        SUBSCRIBE_COMMAND | UNSUBSCRIBE_COMMAND => {
            let count = c_int_at(value, at).ok_or_else(|| null("the topic count is missing"))?;
            at = at.saturating_add(4);
            // Paho would send a SUBSCRIBE or UNSUBSCRIBE with no topic, which
            // a broker must answer by closing the connection (MQTT-3.8.3-3, MQTT-3.10.3-2).
            if count <= 0 {
                return Err(format!(
                    "a topic count of {count}: Paho never writes one, and would send an empty request"
                ));
            }
            for _ in 0..count {
                at = command_string_end(value, at, "a topic")?;
                if command_type == SUBSCRIBE_COMMAND {
                    c_int_at(value, at).ok_or_else(|| null("a topic's QoS is missing"))?;
                    at = at.saturating_add(4);
                    if version == Version::V5 {
                        at = at
                            .checked_add(SUBSCRIBE_OPTIONS_SIZE)
                            .filter(|&end| end <= value.len())
                            .ok_or_else(|| null("a topic's subscribe options are missing"))?;
                    }
                }
            }
        }
        other => return Err(null(&format!("command type {other}, which it has no reader for"))),
    }
    if version == Version::V5 {
        read_properties(value, at).map_err(|fault| null(fault.describe()))?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Rule 1c: inbound queue records (`q-`, `q5-`).

/// A valid queue record: where its fixed part ends, and its MQTT 5 properties.
#[derive(Debug, Clone, Copy)]
struct QueueEntry {
    /// After `topicLen`: what Paho reads of an MQTT 3 record.
    fixed_end: usize,
    /// For `q5-`: whether Paho restores properties from it (a valid, non-empty list).
    has_properties: bool,
}

/// Mirrors `MQTTPersistence_restoreQueueEntry` (MQTTPersistence.c), which
/// the async client calls at creation (`MQTTAsync_create` →
/// `MQTTPersistence_restoreMessageQueue`) and which checks no bound at all:
/// `int` payloadlen, payload, `int` qos, retained, dup, msgid, `topic\0`,
/// `int` topicLen, then in MQTT 5 the properties, whose failure it only logs.
fn check_queue_entry(value: &[u8], version: Version) -> Result<QueueEntry, String> {
    let past = |what: &str| format!("{what}: MQTTPersistence_restoreQueueEntry would read past the record");
    let payload_len = c_int_at(value, 0).ok_or_else(|| past("the payload length is missing"))?;
    let payload_len = usize::try_from(payload_len).map_err(|_| {
        format!(
            "the payload length {payload_len} is negative: MQTTPersistence_restoreQueueEntry's malloc fails, \
             and the record is never restored nor removed"
        )
    })?;
    let ints = 4usize
        .checked_add(payload_len)
        .filter(|&end| end <= value.len())
        .ok_or_else(|| past("the payload runs past the end"))?;
    let topic_at = ints.saturating_add(16);
    if topic_at > value.len() {
        return Err(past("the QoS, retained, dup and message id are missing"));
    }
    let rest = value.get(topic_at..).unwrap_or_default();
    let topic_len = rest.iter().position(|&b| b == 0).ok_or_else(|| past("the topic has no NUL (strlen)"))?;
    let topic_len_at = topic_at.saturating_add(topic_len).saturating_add(1);
    let stored_len = c_int_at(value, topic_len_at).ok_or_else(|| past("the topic length is missing"))?;
    // The delivery (`MQTTAsync_cycle`) passes 0 when topicLen is the topic's
    // strlen, else topicLen, to paho-mqtt 0.14's callback, which then takes
    // topicLen bytes of the topic as UTF-8 and a CString and unwraps both:
    // any other value reads past the topic or panics across the C callback.
    if stored_len != 0 && usize::try_from(stored_len).ok() != Some(topic_len) {
        return Err(format!(
            "the topic length {stored_len} is not the topic's ({topic_len}): the delivery of the restored \
             message (paho-mqtt's on_message_arrived) would read past the topic or abort"
        ));
    }
    let fixed_end = topic_len_at.saturating_add(4);
    let has_properties = match version {
        Version::V3 => false,
        // A property list Paho rejects is only logged: the message is delivered without properties.
        Version::V5 => match read_properties(value, fixed_end) {
            Ok((_, declared)) => declared > 0,
            Err(PropertiesFault::Rejected(_)) => false,
            Err(PropertiesFault::PastEnd(why)) => return Err(past(why)),
        },
    };
    Ok(QueueEntry { fixed_end, has_properties })
}

// ---------------------------------------------------------------------------
// Rule 2: records of the other MQTT version.

/// The record in the other version's format, when nothing Paho would restore is lost.
///
/// Why a rewrite and not a restore as is:
/// - v5 `s5-`/`sc5-`/`r5-` under an MQTT 3 client fail the client's creation
///   (`MQTTPersistence_restorePackets`: "can't restore version 5 data with a
///   version 3 client");
/// - v3 `s-`/`sc-` under an MQTT 5 client: `MQTTPersistence_restorePackets`
///   looks up the PUBREL of `s-N` as `sc5-N` (the client's version) and the
///   PUBLISH of `sc-N` as `s5-N`, so the PUBLISH is sent again (a duplicate)
///   and the PUBREL is deleted as an orphan; Paho then removes records under
///   its own version's keys, never these;
/// - queue records: `MQTTPersistence_unpersistQueueEntry` removes `q-N` or
///   `q5-N` by the client's version, so the other version's record is
///   delivered again at every start.
fn convert(value: &[u8], layout: &Layout, client: Version) -> Result<Vec<u8>, String> {
    match *layout {
        Layout::Packet(packet) => convert_packet(value, &packet, client),
        Layout::Queued(entry) => convert_queue_entry(value, &entry, client),
        Layout::Command => Ok(value.to_vec()),
    }
}

/// Appends `length` as an MQTT variable byte integer of at most 4 bytes.
fn push_remaining_length(out: &mut Vec<u8>, mut length: usize) -> Result<(), String> {
    if length > 268_435_455 {
        return Err("the converted packet is too large for a 4-byte remaining length".to_owned());
    }
    loop {
        let byte = u8::try_from(length & 0x7f).unwrap_or_default();
        length >>= 7;
        if length == 0 {
            out.push(byte);
            return Ok(());
        }
        out.push(byte | 0x80);
    }
}

/// A PUBLISH gains an empty property list (v3 → v5) or loses its property
/// list if it is empty (v5 → v3). A PUBREL becomes its fixed header and
/// message id: `MQTTPersistence_restorePackets` reads nothing else of it (it
/// looks up its PUBLISH by `pubrel->msgId`, then frees it; the PUBREL Paho
/// sends again is built from the PUBLISH's state), and both versions'
/// `MQTTPacket_ack` take that form.
fn convert_packet(value: &[u8], packet: &Packet, client: Version) -> Result<Vec<u8>, String> {
    let bytes = |range: std::ops::Range<usize>| value.get(range).unwrap_or_default();
    let mut out = Vec::with_capacity(value.len().saturating_add(1));
    out.push(packet.header);
    match (packet.content, client) {
        (PacketContent::Pubrel { msg_id }, _) => {
            out.push(2);
            out.extend_from_slice(&msg_id.to_be_bytes());
        }
        (PacketContent::Publish { properties_at, properties: None, .. }, Version::V5) => {
            let length = value.len().saturating_sub(packet.body).saturating_add(1);
            push_remaining_length(&mut out, length)?;
            out.extend_from_slice(bytes(packet.body..properties_at));
            out.push(0);
            out.extend_from_slice(bytes(properties_at..value.len()));
        }
        (PacketContent::Publish { properties_at, properties: Some((end, declared)), .. }, Version::V3) => {
            if declared {
                return Err(
                    "an MQTT 5 PUBLISH with properties, for an MQTT 3 client: converting it would lose \
                            its properties"
                        .to_owned(),
                );
            }
            let length =
                value.len().saturating_sub(packet.body).saturating_sub(end.saturating_sub(properties_at));
            push_remaining_length(&mut out, length)?;
            out.extend_from_slice(bytes(packet.body..properties_at));
            out.extend_from_slice(bytes(end..value.len()));
        }
        // The layout is the record's own version's, never the client's.
        (PacketContent::Publish { .. }, _) => return Ok(value.to_vec()),
    }
    Ok(out)
}

/// A queue record gains an empty property list (v3 → v5: Paho reads none
/// past `topicLen` in v3, so what follows is dropped) or loses its property
/// list when Paho would restore none from it (v5 → v3).
fn convert_queue_entry(value: &[u8], entry: &QueueEntry, client: Version) -> Result<Vec<u8>, String> {
    let fixed = value.get(..entry.fixed_end).unwrap_or_default();
    match client {
        Version::V5 => Ok([fixed, &[0]].concat()),
        Version::V3 if entry.has_properties => {
            Err("an MQTT 5 queued message with properties, for an MQTT 3 \
                                                    client: converting it would lose its properties"
                .to_owned())
        }
        Version::V3 => Ok(fixed.to_vec()),
    }
}

/// For the fuzz target (`fuzz/fuzz_targets/restore_check.rs`), which reaches
/// the crate through its public API: [`at_open`] with its answer flattened,
/// `Ok(None)` for Restore, `Ok(Some((key, value)))` for Rewrite, `Err` for
/// Quarantine.
#[cfg(feature = "decode")]
#[doc(hidden)]
pub fn fuzz_at_open(key: &str, value: &[u8], client: Version) -> Result<Option<(String, Vec<u8>)>, String> {
    match at_open(key, value, client) {
        AtOpen::Restore => Ok(None),
        AtOpen::Rewrite { key, value } => Ok(Some((key, value))),
        AtOpen::Quarantine(reason) => Err(reason),
    }
}
