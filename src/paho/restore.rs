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
        Ok(_) if kind == Kind::PublishReceived => AtOpen::Quarantine(received_in_other_version(version)),
        Ok(layout) => match convert(value, &layout, client) {
            Ok(converted) => {
                AtOpen::Rewrite { key: format!("{}{number}", kind.prefix(client)), value: converted }
            }
            Err(reason) => AtOpen::Quarantine(reason),
        },
    }
}

/// Why an `r-`/`r5-` record cannot change version: the two versions
/// deliver an inbound QoS 2 message at different times. MQTT 5 delivers it
/// when the PUBLISH arrives (`MQTTProtocol_handlePublishes`) and its record
/// only waits for the PUBREL (`MQTTPersistence_restorePackets` frees the
/// restored payload); MQTT 3 delivers it when the PUBREL arrives, from the
/// record (`MQTTProtocol_handlePubrels`). Without the record Paho still
/// completes the exchange: it answers any PUBREL with a PUBCOMP.
fn received_in_other_version(version: Version) -> String {
    match version {
        Version::V5 => "an MQTT 5 inbound QoS 2 message, for an MQTT 3 client: MQTT 5 delivered it when it \
                        arrived, an MQTT 3 client would deliver it again at its PUBREL (a duplicate)"
            .to_owned(),
        Version::V3 => "an undelivered MQTT 3 inbound QoS 2 message, for an MQTT 5 client: MQTT 3 delivers it at \
                        its PUBREL, an MQTT 5 client restores it without its payload and would never deliver it"
            .to_owned(),
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
        other => {
            return Err(format!(
            "packet type {other}: Paho persists only PUBLISH and PUBREL, and MQTTPersistence_restorePackets \
                 would take this one as one of those (a wrong cast) or drop it"
        ))
        }
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
/// - `r-`/`r5-` records are never converted: see [`received_in_other_version`];
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A PUBLISH packet: `header`, topic, message id, MQTT 5 properties (the
    /// list with its length), payload; the remaining length computed.
    fn publish(
        header: u8,
        topic: &str,
        msg_id: Option<u16>,
        properties: Option<&[u8]>,
        payload: &[u8],
    ) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&u16::try_from(topic.len()).unwrap().to_be_bytes());
        body.extend_from_slice(topic.as_bytes());
        if let Some(id) = msg_id {
            body.extend_from_slice(&id.to_be_bytes());
        }
        body.extend_from_slice(properties.unwrap_or_default());
        body.extend_from_slice(payload);
        let mut packet = vec![header];
        push_remaining_length(&mut packet, body.len()).unwrap();
        packet.extend_from_slice(&body);
        packet
    }

    fn int(value: i32) -> [u8; 4] {
        value.to_ne_bytes()
    }

    /// A PUBLISH command as `MQTTAsync_persistCommand` writes it (properties appended in MQTT 5).
    fn publish_command(
        token: i32,
        topic: &str,
        payload: &[u8],
        qos: i32,
        properties: Option<&[u8]>,
    ) -> Vec<u8> {
        let len = i32::try_from(payload.len()).unwrap();
        [
            &int(PUBLISH_COMMAND)[..],
            &int(token),
            topic.as_bytes(),
            &[0],
            &int(len),
            payload,
            &int(qos),
            &int(0),
        ]
        .concat()
        .into_iter()
        .chain(properties.unwrap_or_default().iter().copied())
        .collect()
    }

    /// A queue entry as `MQTTPersistence_persistQueueEntry` writes it.
    fn queue_entry(payload: &[u8], topic: &str, topic_len: i32, properties: Option<&[u8]>) -> Vec<u8> {
        let len = i32::try_from(payload.len()).unwrap();
        [&int(len)[..], payload, &int(2), &int(0), &int(0), &int(9), topic.as_bytes(), &[0], &int(topic_len)]
            .concat()
            .into_iter()
            .chain(properties.unwrap_or_default().iter().copied())
            .collect()
    }

    fn version_of(key: &str) -> Version {
        parse_key(key).map(|(_, version, _)| version).unwrap_or_default()
    }

    fn other(version: Version) -> Version {
        match version {
            Version::V3 => Version::V5,
            Version::V5 => Version::V3,
        }
    }

    fn quarantined(answer: &AtOpen, mentioning: &str) -> bool {
        matches!(answer, AtOpen::Quarantine(reason) if reason.contains(mentioning))
    }

    #[track_caller]
    fn assert_quarantined(key: &str, value: &[u8], client: Version, mentioning: &str) {
        let answer = at_open(key, value, client);
        assert!(
            quarantined(&answer, mentioning),
            "{key} {value:02x?}: {answer:?}, expected a reason with {mentioning:?}"
        );
    }

    fn unhex(text: &str) -> Vec<u8> {
        (0..text.len() / 2).map(|at| u8::from_str_radix(&text[2 * at..2 * at + 2], 16).unwrap()).collect()
    }

    /// Every record Paho wrote in the recorded traces (`put` and `get`
    /// answers) and the captured fixtures, with its key.
    fn recorded_records() -> Vec<(String, Vec<u8>)> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let mut records = Vec::new();
        for entry in std::fs::read_dir(root.join("traces")).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|ext| ext == "trace") {
                for line in std::fs::read_to_string(&path).unwrap().lines() {
                    if let ["put" | "get", key, value] = line.split(' ').collect::<Vec<_>>()[..] {
                        if value != "!" {
                            records.push((key.to_owned(), unhex(value)));
                        }
                    }
                }
            }
        }
        for entry in std::fs::read_dir(root.join("records")).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_stem().unwrap().to_str().unwrap().to_owned();
            if let Some((_, key)) = name.split_once("__") {
                records.push((key.to_owned(), std::fs::read(&path).unwrap()));
            }
        }
        records.sort();
        records.dedup();
        assert!(records.len() > 100, "{} records", records.len());
        records
    }

    /// Paho C 1.3.16's own MQTT 3 UNSUBSCRIBE record, which its
    /// `MQTTAsync_restoreCommand` rejects when it sends a restored one.
    fn is_v3_unsubscribe(key: &str, value: &[u8]) -> bool {
        key.starts_with("c-") && c_int_at(value, 0) == Some(UNSUBSCRIBE_COMMAND)
    }

    #[test]
    fn every_recorded_record_restores_for_its_own_version() {
        for (key, value) in recorded_records() {
            let answer = at_open(&key, &value, version_of(&key));
            if is_v3_unsubscribe(&key, &value) {
                assert!(quarantined(&answer, "data_size == endpos - ptr"), "{key}: {answer:?}");
            } else {
                assert_eq!(answer, AtOpen::Restore, "{key} {value:02x?}");
            }
        }
    }

    #[test]
    fn every_recorded_record_converts_for_the_other_version_unless_properties_would_be_lost() {
        let mut rewrites = 0;
        for (key, value) in recorded_records() {
            let version = version_of(&key);
            let client = other(version);
            match at_open(&key, &value, client) {
                AtOpen::Restore => assert!(key.starts_with('c'), "{key} restored for the other version"),
                AtOpen::Rewrite { key: new_key, value: new_value } => {
                    rewrites += 1;
                    assert_eq!(version_of(&new_key), client, "{key} -> {new_key}");
                    assert_eq!(parse_key(&new_key).unwrap().2, parse_key(&key).unwrap().2);
                    assert_eq!(
                        at_open(&new_key, &new_value, client),
                        AtOpen::Restore,
                        "{new_key} {new_value:02x?}"
                    );
                    // Back again: the original (Paho's records are canonical).
                    match at_open(&new_key, &new_value, version) {
                        AtOpen::Rewrite { key: back_key, value: back } => {
                            assert_eq!(
                                (back_key.as_str(), back.as_slice()),
                                (key.as_str(), value.as_slice())
                            );
                        }
                        answer => panic!("{new_key}: {answer:?}"),
                    }
                }
                AtOpen::Quarantine(reason) => {
                    assert!(
                        reason.contains("lose its properties")
                            || key.starts_with('r')
                            || is_v3_unsubscribe(&key, &value),
                        "{key}: {reason}"
                    );
                }
            }
        }
        assert!(rewrites > 100, "{rewrites} rewrites");
    }

    #[test]
    fn every_truncation_of_a_recorded_record_is_quarantined_without_a_panic() {
        for (key, value) in recorded_records() {
            // A q5- entry cut in its properties: Paho only logs a failed read
            // that stays within the record, and delivers the message.
            let q5_properties_at = match check_queue_entry(&value, Version::V5) {
                Ok(entry) if key.starts_with("q5-") => entry.fixed_end,
                _ => usize::MAX,
            };
            for len in 0..value.len() {
                let answer = at_open(&key, &value[..len], version_of(&key));
                if len < q5_properties_at {
                    assert!(matches!(answer, AtOpen::Quarantine(_)), "{key} cut at {len}: {answer:?}");
                }
                let _ = at_open(&key, &value[..len], other(version_of(&key)));
            }
        }
    }

    #[test]
    fn keys_that_are_not_paho_keys_are_left_alone() {
        for key in ["", "x-1", "mqtt:lease", "s-", "s-x", "c-1-2"] {
            assert_eq!(at_open(key, b"", Version::V3), AtOpen::Restore, "{key}");
        }
    }

    #[test]
    fn key_numbers_paho_would_not_format_are_quarantined() {
        let packet = publish(0x32, "t", Some(7), None, b"x");
        assert_eq!(at_open("s-7", &packet, Version::V3), AtOpen::Restore);
        assert_quarantined("s-007", &packet, Version::V3, "leading zeros");
        assert_quarantined("s-8", &packet, Version::V3, "message id is 7");
        let command = publish_command(7, "t", b"x", 1, None);
        assert_eq!(at_open("c-2147483647", &command, Version::V3), AtOpen::Restore);
        assert_quarantined("c-2147483648", &command, Version::V3, "atoi");
        assert_quarantined("c-01", &command, Version::V3, "leading zeros");
    }

    #[test]
    fn empty_records_are_quarantined() {
        for key in ["s-1", "sc-1", "r-1", "s5-1", "sc5-1", "r5-1", "c-1", "c5-1", "q-1", "q5-1"] {
            for client in [Version::V3, Version::V5] {
                assert!(matches!(at_open(key, b"", client), AtOpen::Quarantine(_)), "{key}");
            }
        }
        assert_quarantined("s-1", b"", Version::V3, "#990");
    }

    #[test]
    fn the_remaining_length_must_fit_the_record_and_four_bytes() {
        let packet = publish(0x32, "t", Some(1), None, b"x");
        assert_quarantined("s-1", &[0x32], Version::V3, "past the end");
        assert_quarantined("s-1", &[0x32, 0x80], Version::V3, "past the end");
        assert_quarantined("s-1", &[0x32, 0xff, 0xff, 0xff, 0xff, 0x7f], Version::V3, "more than 4 bytes");
        assert_quarantined("s-1", &[&packet[..], b"y"].concat(), Version::V3, "remaining length says 6");
        // A longer encoding than needed, as Paho's loop takes it.
        let long = [&[0x32, 0x86, 0x80, 0x80, 0x00][..], &packet[2..]].concat();
        assert_eq!(at_open("s-1", &long, Version::V3), AtOpen::Restore);
    }

    #[test]
    fn the_packet_type_must_be_the_one_the_key_names() {
        let pubrel = [0x62, 0x02, 0x00, 0x01];
        let publish = publish(0x34, "t", Some(1), None, b"x");
        assert_quarantined("s-1", &pubrel, Version::V3, "Publish*");
        assert_quarantined("r-1", &pubrel, Version::V3, "Publish*");
        assert_quarantined("sc-1", &publish, Version::V3, "Pubrel*");
        // PUBACK and CONNACK have readers in Paho's table, SUBSCRIBE and type 0 none.
        for header in [0x40, 0x20, 0x82, 0x00, 0xf0] {
            assert_quarantined("sc-1", &[header, 0x02, 0x00, 0x01], Version::V3, "packet type");
        }
        assert_eq!(at_open("sc-1", &pubrel, Version::V3), AtOpen::Restore);
        assert_eq!(at_open("r-1", &publish, Version::V3), AtOpen::Restore);
    }

    #[test]
    fn a_publish_must_have_its_topic_id_and_a_qos_paho_persists() {
        assert_quarantined("s-1", &[0x32, 0x04, 0xff, 0xff, 0x00, 0x01], Version::V3, "topic");
        assert_quarantined("s-1", &[0x32, 0x01, 0x00], Version::V3, "topic");
        assert_quarantined("s-1", &[0x32, 0x03, 0x00, 0x01, b't'], Version::V3, "message id is missing");
        assert_quarantined("s-0", &publish(0x30, "t", None, None, b"x"), Version::V3, "QoS 0");
        assert_quarantined("s-1", &publish(0x36, "t", Some(1), None, b"x"), Version::V3, "QoS 3");
        assert_quarantined("r-1", &publish(0x32, "t", Some(1), None, b"x"), Version::V3, "QoS 1");
        assert_quarantined("s-0", &publish(0x32, "t", Some(0), None, b"x"), Version::V3, "message id is 0");
        // An empty topic and payload are fine for Paho's reader.
        assert_eq!(at_open("s-1", &publish(0x32, "", Some(1), None, b""), Version::V3), AtOpen::Restore);
    }

    #[test]
    fn mqtt5_properties_are_read_as_paho_reads_them() {
        let with = |properties: &[u8]| publish(0x32, "t", Some(1), Some(properties), b"payload");
        assert_eq!(at_open("s5-1", &with(&[0]), Version::V5), AtOpen::Restore);
        // Message expiry (4 bytes), user property, subscription identifier.
        let many = [15, 2, 0, 0, 0, 60, 38, 0, 1, b'k', 0, 1, b'v', 11, 0x81, 0x01];
        assert_eq!(at_open("s5-1", &with(&many), Version::V5), AtOpen::Restore);
        // MQTTPacket_decodeBuf stops after 4 continuation bytes and skips 5.
        assert_eq!(at_open("s5-1", &with(&[0x80, 0x80, 0x80, 0x80, 0xaa]), Version::V5), AtOpen::Restore);
        // No property length: MQTTProperties_read fails.
        assert_quarantined("s5-1", &publish(0x32, "t", Some(1), None, b""), Version::V5, "missing");
        assert_quarantined("s5-1", &with(&[2, 0x7f, 0]), Version::V5, "unknown");
        // A declared length shorter than the property: Paho reads the payload as properties.
        assert_quarantined("s5-1", &with(&[1, 1, 0]), Version::V5, "unknown");
        // Fixed-size values and the identifier are read without an end check.
        let past = |tail: &[u8]| publish(0x32, "t", Some(1), Some(tail), b"");
        assert_quarantined("s5-1", &past(&[5, 2, 0, 0]), Version::V5, "past the end");
        assert_quarantined("s5-1", &past(&[2, 1]), Version::V5, "past the end");
        assert_quarantined("s5-1", &past(&[9]), Version::V5, "past the end");
        assert_quarantined("s5-1", &past(&[3, 11, 0x80, 0x80]), Version::V5, "past the end");
        assert_quarantined("s5-1", &past(&[0x80, 0x80]), Version::V5, "past the end");
        assert_quarantined("s5-1", &past(&[0x80, 0x80, 0x80, 0x80]), Version::V5, "skips past the end");
        // A string longer than the record: MQTTLenStringRead checks it.
        assert_quarantined("s5-1", &past(&[5, 3, 0xff, 0xff, 0, 0]), Version::V5, "string");
    }

    #[test]
    fn a_pubrel_is_read_as_mqttpacket_ack_reads_it() {
        assert_eq!(at_open("sc-1", &[0x62, 0x02, 0, 1], Version::V3), AtOpen::Restore);
        assert_quarantined("sc-1", &[0x62, 0x01, 0], Version::V3, "message id is missing");
        // MQTT 3 ignores what follows the id; MQTT 5 reads a reason code, then properties.
        assert_eq!(at_open("sc-1", &[0x62, 0x04, 0, 1, 0x7f, 0x7f], Version::V3), AtOpen::Restore);
        assert_eq!(at_open("sc5-1", &[0x62, 0x03, 0, 1, 0x92], Version::V5), AtOpen::Restore);
        assert_eq!(at_open("sc5-1", &[0x62, 0x04, 0, 1, 0, 0], Version::V5), AtOpen::Restore);
        assert_quarantined("sc5-1", &[0x62, 0x04, 0, 1, 0, 1], Version::V5, "past the end");
        assert_quarantined("sc5-1", &[0x62, 0x05, 0, 1, 0, 1, 0x7f], Version::V5, "unknown");
    }

    #[test]
    fn commands_are_read_as_mqttasync_restorecommand_reads_them_when_sending() {
        let valid = publish_command(5, "a/b", b"hello", 1, None);
        assert_eq!(at_open("c-1", &valid, Version::V3), AtOpen::Restore);
        assert_quarantined("c-1", &valid[..7], Version::V3, "type and token");
        let other_type = [&int(5)[..], &int(1)].concat();
        assert_quarantined("c-1", &other_type, Version::V3, "command type 5");
        let no_nul = [&int(PUBLISH_COMMAND)[..], &int(1), b"topic"].concat();
        assert_quarantined("c-1", &no_nul, Version::V3, "no NUL");
        let negative = [&int(PUBLISH_COMMAND)[..], &int(1), b"t\0", &int(-1), &int(1), &int(0)].concat();
        assert_quarantined("c-1", &negative, Version::V3, "negative");
        let huge = [&int(PUBLISH_COMMAND)[..], &int(1), b"t\0", &int(i32::MAX), &int(1), &int(0)].concat();
        assert_quarantined("c-1", &huge, Version::V3, "payload runs past");
        assert_quarantined("c-1", &publish_command(5, "t", b"", 3, None), Version::V3, "QoS 3");
        assert_quarantined("c-1", &publish_command(0, "t", b"", 1, None), Version::V3, "token 0");
        assert_quarantined("c-1", &publish_command(65536, "t", b"", 2, None), Version::V3, "token 65536");
        assert_eq!(at_open("c-1", &publish_command(0, "t", b"", 0, None), Version::V3), AtOpen::Restore);
        // Trailing bytes are ignored.
        assert_eq!(at_open("c-1", &[&valid[..], b"zz"].concat(), Version::V3), AtOpen::Restore);
        // MQTT 5 commands end with properties, which the send-time read needs.
        assert_quarantined("c5-1", &valid, Version::V5, "missing");
        let v5 = publish_command(5, "a/b", b"hello", 1, Some(&[0]));
        assert_eq!(at_open("c5-1", &v5, Version::V5), AtOpen::Restore);
        // Either version's command restores for either client.
        assert_eq!(at_open("c5-1", &v5, Version::V3), AtOpen::Restore);
        assert_eq!(at_open("c-1", &valid, Version::V5), AtOpen::Restore);
    }

    #[test]
    fn subscribe_and_unsubscribe_commands_need_every_topic_and_option() {
        let head = |kind: i32, count: i32| [&int(kind)[..], &int(3), &int(count)].concat();
        let subscribe = [&head(SUBSCRIBE_COMMAND, 1)[..], b"a/#\0", &int(1)].concat();
        assert_eq!(at_open("c-1", &subscribe, Version::V3), AtOpen::Restore);
        let options = [&b"MQSO"[..], &int(0), &[0, 0, 0, 0]].concat();
        let subscribe5 = [&subscribe[..], &options, &[0]].concat();
        assert_eq!(at_open("c5-1", &subscribe5, Version::V5), AtOpen::Restore);
        assert_quarantined("c5-1", &[&subscribe[..], &[0]].concat(), Version::V5, "options");
        assert_quarantined("c-1", &head(SUBSCRIBE_COMMAND, 0), Version::V3, "count of 0");
        assert_quarantined("c-1", &head(UNSUBSCRIBE_COMMAND, -3), Version::V3, "count of -3");
        let many = [&head(SUBSCRIBE_COMMAND, i32::MAX)[..], b"a\0", &int(1)].concat();
        assert!(matches!(at_open("c-1", &many, Version::V3), AtOpen::Quarantine(_)));
        let unterminated = [&head(SUBSCRIBE_COMMAND, 1)[..], b"a/#"].concat();
        assert_quarantined("c-1", &unterminated, Version::V3, "strcpy");
        // Paho's own MQTT 3 UNSUBSCRIBE: the last topic's NUL is the record's last byte.
        let unsubscribe = [&head(UNSUBSCRIBE_COMMAND, 1)[..], b"a/#\0"].concat();
        assert_quarantined("c-1", &unsubscribe, Version::V3, "data_size == endpos - ptr");
        assert_eq!(at_open("c5-1", &[&unsubscribe[..], &[0]].concat(), Version::V5), AtOpen::Restore);
    }

    #[test]
    fn queue_entries_are_read_as_restorequeueentry_reads_them() {
        let entry = queue_entry(b"hello", "a/b", 3, None);
        assert_eq!(at_open("q-1", &entry, Version::V3), AtOpen::Restore);
        assert_eq!(at_open("q-1", &queue_entry(b"", "a/b", 0, None), Version::V3), AtOpen::Restore);
        assert_quarantined("q-1", &queue_entry(b"x", "a/b", 7, None), Version::V3, "topic length 7");
        assert_quarantined("q-1", &queue_entry(b"x", "a/b", -1, None), Version::V3, "topic length -1");
        let mut negative = entry.clone();
        negative[..4].copy_from_slice(&int(-2));
        assert_quarantined("q-1", &negative, Version::V3, "negative");
        let mut huge = entry.clone();
        huge[..4].copy_from_slice(&int(1000));
        assert_quarantined("q-1", &huge, Version::V3, "past the record");
        let no_nul = entry[..entry.len() - 8].to_vec();
        assert_quarantined("q-1", &no_nul, Version::V3, "NUL");
        // MQTT 5: a failed property read is only logged; a read past the end is not taken.
        let q5 = |properties: &[u8]| queue_entry(b"hello", "a/b", 3, Some(properties));
        assert_eq!(at_open("q5-1", &q5(&[0]), Version::V5), AtOpen::Restore);
        assert_eq!(at_open("q5-1", &q5(&[]), Version::V5), AtOpen::Restore);
        assert_eq!(at_open("q5-1", &q5(&[2, 0x7f, 0]), Version::V5), AtOpen::Restore);
        assert_quarantined("q5-1", &q5(&[2, 2, 0]), Version::V5, "past");
    }

    #[test]
    fn publish_records_convert_between_versions_only_without_properties() {
        let v3 = publish(0x3a, "t/1", Some(9), None, b"payload");
        let v5 = publish(0x3a, "t/1", Some(9), Some(&[0]), b"payload");
        assert_eq!(
            at_open("s-9", &v3, Version::V5),
            AtOpen::Rewrite { key: "s5-9".into(), value: v5.clone() }
        );
        assert_eq!(
            at_open("s5-9", &v5, Version::V3),
            AtOpen::Rewrite { key: "s-9".into(), value: v3.clone() }
        );
        // Inbound QoS 2 messages are delivered at different times by the two versions.
        let r3 = publish(0x34, "t", Some(4), None, b"");
        let r5 = publish(0x34, "t", Some(4), Some(&[0]), b"");
        assert_quarantined("r-4", &r3, Version::V5, "never deliver it");
        assert_quarantined("r5-4", &r5, Version::V3, "a duplicate");
        let with_properties = publish(0x32, "t", Some(9), Some(&[2, 1, 1]), b"x");
        assert_quarantined("s5-9", &with_properties, Version::V3, "lose its properties");
        // The remaining length grows across its one-byte limit.
        let big = publish(0x32, "t", Some(9), None, &[b'p'; 122]);
        assert_eq!(big[1], 127);
        match at_open("s-9", &big, Version::V5) {
            AtOpen::Rewrite { value, .. } => {
                assert_eq!(&value[1..3], &[0x80, 0x01]);
                assert_eq!(at_open("s5-9", &value, Version::V5), AtOpen::Restore);
            }
            answer => panic!("{answer:?}"),
        }
    }

    #[test]
    fn pubrel_and_queue_records_convert_between_versions() {
        let pubrel = [0x62, 0x02, 0, 5];
        assert_eq!(
            at_open("sc-5", &pubrel, Version::V5),
            AtOpen::Rewrite { key: "sc5-5".into(), value: pubrel.to_vec() }
        );
        // Paho reads only the message id of a stored PUBREL.
        let pubrel5 = [0x62, 0x06, 0, 5, 0x92, 2, 1, 1];
        assert_eq!(
            at_open("sc5-5", &pubrel5, Version::V3),
            AtOpen::Rewrite { key: "sc-5".into(), value: pubrel.to_vec() }
        );
        let q3 = queue_entry(b"m", "a", 1, None);
        let q5 = queue_entry(b"m", "a", 1, Some(&[0]));
        assert_eq!(
            at_open("q-2", &q3, Version::V5),
            AtOpen::Rewrite { key: "q5-2".into(), value: q5.clone() }
        );
        assert_eq!(
            at_open("q5-2", &q5, Version::V3),
            AtOpen::Rewrite { key: "q-2".into(), value: q3.clone() }
        );
        assert_eq!(at_open("q5-2", &q3, Version::V3), AtOpen::Rewrite { key: "q-2".into(), value: q3 });
        let with_properties = queue_entry(b"m", "a", 1, Some(&[2, 1, 1]));
        assert_quarantined("q5-2", &with_properties, Version::V3, "lose its properties");
    }

    /// What the check costs at open, next to Paho's restore of the same
    /// records (`cargo run --release --features unix-socket --example
    /// restore_order 30000`): the records that example builds, checked in a
    /// loop. Run with `cargo test --release --lib restore_check_time -- --ignored --nocapture`.
    #[test]
    #[ignore = "a timing, run by hand in release"]
    fn restore_check_time() {
        let payload = [b'p'; 64];
        let mut records = Vec::new();
        for n in 1..=30_000u16 {
            records.push((format!("s-{n}"), publish(0x32, "bench/restore", Some(n), None, &payload)));
            records.push((format!("sc-{n}"), vec![0x62, 0x02, (n >> 8) as u8, n as u8]));
            records
                .push((format!("c-{n}"), publish_command(i32::from(n), "bench/restore", &payload, 1, None)));
        }
        for (kind, step) in [("s-", 0), ("sc-", 1), ("c-", 2)] {
            let of_kind: Vec<_> = records.iter().skip(step).step_by(3).collect();
            let mut best = std::time::Duration::MAX;
            for _ in 0..5 {
                let start = std::time::Instant::now();
                for (key, value) in &of_kind {
                    assert_eq!(
                        at_open(std::hint::black_box(key), std::hint::black_box(value), Version::V3),
                        AtOpen::Restore
                    );
                }
                best = best.min(start.elapsed());
            }
            println!(
                "{kind} {} records: at_open {:.3} ms (best of 5)",
                of_kind.len(),
                best.as_secs_f64() * 1e3
            );
        }
    }

    #[test]
    fn hostile_bytes_never_panic() {
        let keys = ["s-1", "sc-1", "r-1", "s5-1", "sc5-1", "r5-1", "c-1", "c5-1", "q-1", "q5-1"];
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for round in 0..20_000 {
            let len = round % 64;
            let value: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    // Mostly small bytes, so that lengths and types are often plausible.
                    if state.is_multiple_of(3) {
                        (state >> 8) as u8
                    } else {
                        (state >> 8) as u8 & 0x0f
                    }
                })
                .collect();
            for key in keys {
                for client in [Version::V3, Version::V5] {
                    if let AtOpen::Rewrite { key, value } = at_open(key, &value, client) {
                        assert_eq!(at_open(&key, &value, client), AtOpen::Restore, "{key} {value:02x?}");
                    }
                }
            }
        }
    }
}
