//! Decoding of the records Paho C keeps in a store, for operators and tools.
//!
//! A store holds Paho's records byte for byte, under keys of the form
//! `{prefix}{number}`. [`decode`] turns one key and value into a [`Record`]:
//!
//! | Key prefix | MQTT version | What the value is | The number is |
//! |---|---|---|---|
//! | `s-`, `s5-` | 3.1/3.1.1, 5 | an outbound QoS 1/2 PUBLISH packet, as sent | the message id |
//! | `sc-`, `sc5-` | 3.1/3.1.1, 5 | an outbound PUBREL packet (QoS 2, PUBREC received) | the message id |
//! | `r-`, `r5-` | 3.1/3.1.1, 5 | an inbound QoS 2 PUBLISH packet awaiting its PUBREL | the message id |
//! | `c-`, `c5-` | 3.1/3.1.1, 5 | a command queued by the async client (publish, subscribe, unsubscribe) | a sequence number |
//! | `q-`, `q5-` | 3.1/3.1.1, 5 | an inbound message queued for the application | a sequence number |
//!
//! The `s`, `sc` and `r` records are MQTT packets: a fixed header, the
//! variable header (with properties in MQTT 5) and the payload. The `c` and
//! `q` records are Paho C's own serialization of its structures, in which
//! integers are C `int`s: 4 bytes in **the byte order of the machine that
//! wrote them**. This module reads them in the byte order of the machine it
//! runs on, which is right when the store is inspected on the device that
//! wrote it (Redis keeps it local); records written on a machine of the other
//! byte order decode to nonsense lengths and fail with a [`DecodeError`].
//!
//! Decoding never panics: a value that is truncated, too long, or otherwise
//! not what Paho would write yields a [`DecodeError`] that says why.
//!
//! ```
//! use paho_mqtt_redis::decode::{decode, Content};
//!
//! // A QoS 1 PUBLISH of "21.5" on topic "t", message id 1, as Paho stores it under `s-1`.
//! let value = [0x32, 0x09, 0x00, 0x01, b't', 0x00, 0x01, b'2', b'1', b'.', b'5'];
//! let record = decode("s-1", &value)?;
//! assert_eq!(record.message_id(), Some(1));
//! assert_eq!(record.topic(), Some("t"));
//! assert!(matches!(record.content, Content::Publish(ref p) if p.qos == 1 && p.payload == b"21.5"));
//! assert_eq!(record.to_string(), "s-1 PUBLISH out qos=1 id=1 topic=\"t\" 4 B \"21.5\"");
//! # Ok::<(), paho_mqtt_redis::decode::DecodeError>(())
//! ```

use std::fmt;

/// How many characters of a payload [`Record`]'s `Display` and [`preview`] show by default.
pub const PREVIEW_CHARS: usize = 40;

/// The MQTT packet type numbers Paho stores.
const PUBLISH: u8 = 3;
const PUBREL: u8 = 6;
use crate::paho::{PUBLISH_COMMAND, SUBSCRIBE_COMMAND, UNSUBSCRIBE_COMMAND};
/// Size of Paho C's `MQTTSubscribe_options` in a `c5-` subscribe record:
/// `char[4]` eyecatcher, `int` version, three `unsigned char`s, padded to 12.
const SUBSCRIBE_OPTIONS_SIZE: usize = 12;

pub use crate::paho::{parse_key, Kind, Version};

/// One decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The key, such as `s-12`.
    pub key: String,
    /// What the key says the record is.
    pub kind: Kind,
    /// The MQTT version the key says wrote it.
    pub version: Version,
    /// The number in the key: the message id for `s`, `sc` and `r` records,
    /// Paho's sequence number for `c` and `q` records.
    pub number: u32,
    /// The size of the stored value in bytes.
    pub size: usize,
    /// What the value holds.
    pub content: Content,
}

/// What a record holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// A message: an `s`/`r` PUBLISH packet, a queued publish command (`c`),
    /// or a queued inbound message (`q`).
    Publish(Publish),
    /// A PUBREL packet (`sc` records).
    Pubrel(Pubrel),
    /// A queued SUBSCRIBE command (`c` records, short-lived: Paho removes it once sent).
    Subscribe(Subscribe),
    /// A queued UNSUBSCRIBE command (`c` records, short-lived as well).
    Unsubscribe(Unsubscribe),
}

/// A message, whichever record it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// The topic (invalid UTF-8 replaced, as MQTT requires UTF-8 topics anyway).
    pub topic: String,
    /// The MQTT message id: present in `s`/`r` packets of QoS 1/2 and in `q`
    /// records; absent in `c` records (assigned when the command is sent).
    pub message_id: Option<u16>,
    /// The quality of service, 0 to 2.
    pub qos: u8,
    /// The retain flag.
    pub retain: bool,
    /// The DUP flag: set on a re-sent packet. Always false in `c` records.
    pub dup: bool,
    /// The payload.
    pub payload: Vec<u8>,
    /// The MQTT 5 properties (empty for MQTT 3).
    pub properties: Vec<Property>,
    /// The token Paho gave the command (`c` records only).
    pub token: Option<i32>,
}

/// A PUBREL packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pubrel {
    /// The message id of the QoS 2 exchange.
    pub message_id: u16,
    /// The MQTT 5 reason code, when the packet carries one (Paho writes none: success).
    pub reason_code: Option<u8>,
    /// The MQTT 5 properties.
    pub properties: Vec<Property>,
}

/// A queued SUBSCRIBE command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// The token Paho gave the command.
    pub token: i32,
    /// Each topic filter with its requested QoS.
    pub filters: Vec<(String, i32)>,
    /// The MQTT 5 properties.
    pub properties: Vec<Property>,
}

/// A queued UNSUBSCRIBE command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    /// The token Paho gave the command.
    pub token: i32,
    /// The topic filters.
    pub filters: Vec<String>,
    /// The MQTT 5 properties.
    pub properties: Vec<Property>,
}

/// One MQTT 5 property.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Property {
    /// The property identifier, such as 38 for a user property.
    pub id: u8,
    /// The value.
    pub value: PropertyValue,
}

impl Property {
    /// The name MQTT 5 gives the property, such as `user-property`.
    pub fn name(&self) -> &'static str {
        property_name(self.id)
    }
}

/// The value of an MQTT 5 property.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PropertyValue {
    /// A byte.
    Byte(u8),
    /// A two-byte integer.
    U16(u16),
    /// A four-byte integer.
    U32(u32),
    /// A variable byte integer.
    VarInt(u32),
    /// Binary data.
    Binary(Vec<u8>),
    /// A UTF-8 string (invalid UTF-8 replaced).
    Text(String),
    /// A user property: name and value.
    Pair(String, String),
}

impl fmt::Display for PropertyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PropertyValue::Byte(v) => write!(f, "{v}"),
            PropertyValue::U16(v) => write!(f, "{v}"),
            PropertyValue::U32(v) | PropertyValue::VarInt(v) => write!(f, "{v}"),
            PropertyValue::Binary(v) => write!(f, "{}", preview(v, PREVIEW_CHARS)),
            PropertyValue::Text(v) => write!(f, "{v:?}"),
            PropertyValue::Pair(k, v) => write!(f, "{k:?}={v:?}"),
        }
    }
}

impl fmt::Display for Property {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.name(), self.value)
    }
}

impl Record {
    /// The MQTT message id, where the record has one.
    pub fn message_id(&self) -> Option<u16> {
        match &self.content {
            Content::Publish(publish) => publish.message_id,
            Content::Pubrel(pubrel) => Some(pubrel.message_id),
            Content::Subscribe(_) | Content::Unsubscribe(_) => None,
        }
    }

    /// The topic of a message record.
    pub fn topic(&self) -> Option<&str> {
        match &self.content {
            Content::Publish(publish) => Some(&publish.topic),
            _ => None,
        }
    }

    /// The packet or command name: `PUBLISH`, `PUBREL`, `SUBSCRIBE` or `UNSUBSCRIBE`.
    pub fn operation(&self) -> &'static str {
        match &self.content {
            Content::Publish(_) => "PUBLISH",
            Content::Pubrel(_) => "PUBREL",
            Content::Subscribe(_) => "SUBSCRIBE",
            Content::Unsubscribe(_) => "UNSUBSCRIBE",
        }
    }

    /// Which way the record travels, in words: `out` (to the broker), `in`
    /// (from the broker), `queued out` (a command not yet sent) or `queued in`
    /// (a message not yet handed to the application).
    pub fn direction(&self) -> &'static str {
        match self.kind {
            Kind::PublishSent | Kind::PubrelSent => "out",
            Kind::PublishReceived => "in",
            Kind::Command => "queued out",
            Kind::QueuedMessage => "queued in",
        }
    }
}

/// One line: key, operation, direction, flags, message id, topic, payload size and preview.
impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.key, self.operation(), self.direction())?;
        match &self.content {
            Content::Publish(p) => {
                write!(f, " qos={}", p.qos)?;
                if p.retain {
                    f.write_str(" retain")?;
                }
                if p.dup {
                    f.write_str(" dup")?;
                }
                if let Some(id) = p.message_id {
                    write!(f, " id={id}")?;
                }
                if let Some(token) = p.token {
                    write!(f, " token={token}")?;
                }
                write!(
                    f,
                    " topic={:?} {} B {}",
                    p.topic,
                    p.payload.len(),
                    preview(&p.payload, PREVIEW_CHARS)
                )?;
                write_properties(f, &p.properties)
            }
            Content::Pubrel(p) => {
                write!(f, " id={}", p.message_id)?;
                if let Some(code) = p.reason_code {
                    write!(f, " reason={code:#04x}")?;
                }
                write_properties(f, &p.properties)
            }
            Content::Subscribe(s) => {
                write!(f, " token={}", s.token)?;
                for (filter, qos) in &s.filters {
                    write!(f, " {filter:?}@qos{qos}")?;
                }
                write_properties(f, &s.properties)
            }
            Content::Unsubscribe(u) => {
                write!(f, " token={}", u.token)?;
                for filter in &u.filters {
                    write!(f, " {filter:?}")?;
                }
                write_properties(f, &u.properties)
            }
        }
    }
}

fn write_properties(f: &mut fmt::Formatter<'_>, properties: &[Property]) -> fmt::Result {
    for property in properties {
        write!(f, " [{property}]")?;
    }
    Ok(())
}

/// Why a record could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot decode record `{key}`: {reason}")]
pub struct DecodeError {
    /// The key of the record.
    pub key: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Decodes the record stored under `key`. Never panics; see the [module documentation](self).
pub fn decode(key: &str, value: &[u8]) -> Result<Record, DecodeError> {
    let fail = |reason: String| DecodeError { key: key.to_owned(), reason };
    let (kind, version, number) = parse_key(key).map_err(fail)?;
    let content = match kind {
        Kind::PublishSent | Kind::PublishReceived => match decode_packet(value, version).map_err(fail)? {
            Content::Publish(publish) => {
                if kind == Kind::PublishReceived && publish.qos != 2 {
                    return Err(fail(format!(
                        "an r- record holds a QoS {} PUBLISH; Paho stores QoS 2 only",
                        publish.qos
                    )));
                }
                Content::Publish(publish)
            }
            _ => return Err(fail("the key names a PUBLISH but the packet is a PUBREL".to_owned())),
        },
        Kind::PubrelSent => match decode_packet(value, version).map_err(fail)? {
            pubrel @ Content::Pubrel(_) => pubrel,
            _ => return Err(fail("the key names a PUBREL but the packet is a PUBLISH".to_owned())),
        },
        Kind::Command => decode_command(value, version).map_err(fail)?,
        Kind::QueuedMessage => Content::Publish(decode_queued(value, version).map_err(fail)?),
    };
    Ok(Record { key: key.to_owned(), kind, version, number, size: value.len(), content })
}

/// A printable rendering of at most `max_chars` characters of a payload:
/// quoted and escaped text when it is UTF-8 without control characters other
/// than whitespace, else `hex:` and the first bytes in hex. `…` marks a cut.
pub fn preview(payload: &[u8], max_chars: usize) -> String {
    match std::str::from_utf8(payload) {
        Ok(text) if !text.chars().any(|c| c.is_control() && !c.is_whitespace()) => {
            let shown: String = text.chars().take(max_chars).collect();
            let cut = if shown.len() < text.len() { "…" } else { "" };
            format!("{shown:?}{cut}")
        }
        _ => {
            let bytes = max_chars / 2;
            let hex: String = payload.iter().take(bytes).map(|b| format!("{b:02x}")).collect();
            let cut = if payload.len() > bytes { "…" } else { "" };
            format!("hex:{hex}{cut}")
        }
    }
}

/// A bounds-checked reader over a record; every read says what it was reading when it runs out.
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    fn remaining(&self) -> usize {
        self.data.len().saturating_sub(self.pos)
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).ok_or_else(|| format!("{what}: length overflows"))?;
        let bytes = self.data.get(self.pos..end).ok_or_else(|| {
            format!(
                "truncated: {what} needs {n} bytes at offset {}, only {} left",
                self.pos,
                self.remaining()
            )
        })?;
        self.pos = end;
        Ok(bytes)
    }

    fn rest(&mut self) -> &'a [u8] {
        let rest = self.data.get(self.pos..).unwrap_or_default();
        self.pos = self.data.len();
        rest
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], String> {
        let bytes = self.take(N, what)?;
        <[u8; N]>::try_from(bytes).map_err(|_| format!("{what}: wrong length"))
    }

    fn u8(&mut self, what: &str) -> Result<u8, String> {
        Ok(u8::from_be_bytes(self.array(what)?))
    }

    fn u16(&mut self, what: &str) -> Result<u16, String> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    fn u32(&mut self, what: &str) -> Result<u32, String> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    /// A C `int` as Paho C writes it with `memcpy`: 4 bytes, native byte order.
    fn c_int(&mut self, what: &str) -> Result<i32, String> {
        Ok(i32::from_ne_bytes(self.array(what)?))
    }

    /// A C `int` that is a length: must not be negative.
    fn c_len(&mut self, what: &str) -> Result<usize, String> {
        let value = self.c_int(what)?;
        usize::try_from(value).map_err(|_| format!("{what} is negative ({value})"))
    }

    /// A NUL-terminated C string (the NUL is consumed, not returned).
    fn c_string(&mut self, what: &str) -> Result<String, String> {
        let rest = self.data.get(self.pos..).unwrap_or_default();
        let len = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| format!("{what} at offset {} has no terminating NUL", self.pos))?;
        let bytes = self.take(len, what)?;
        self.take(1, what)?;
        Ok(String::from_utf8_lossy(bytes).into_owned())
    }

    /// An MQTT variable byte integer: at most 4 bytes, 7 bits each.
    fn var_int(&mut self, what: &str) -> Result<u32, String> {
        let mut value: u32 = 0;
        for shift in [0u32, 7, 14, 21] {
            let byte = self.u8(what)?;
            value |= u32::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(format!("{what}: variable byte integer longer than 4 bytes"))
    }

    /// An MQTT length-prefixed string or binary field.
    fn mqtt_bytes(&mut self, what: &str) -> Result<&'a [u8], String> {
        let len = self.u16(what)?;
        self.take(usize::from(len), what)
    }

    fn mqtt_string(&mut self, what: &str) -> Result<String, String> {
        Ok(String::from_utf8_lossy(self.mqtt_bytes(what)?).into_owned())
    }

    fn expect_end(&self, what: &str) -> Result<(), String> {
        match self.remaining() {
            0 => Ok(()),
            extra => Err(format!("{extra} unexpected bytes after {what}")),
        }
    }
}

/// An MQTT packet as Paho stores it: fixed header, remaining length, variable header and payload.
fn decode_packet(value: &[u8], version: Version) -> Result<Content, String> {
    let mut reader = Reader::new(value);
    let header = reader.u8("the fixed header")?;
    let remaining_length = reader.var_int("the remaining length")?;
    let remaining_length = usize::try_from(remaining_length).map_err(|_| "remaining length too large")?;
    if reader.remaining() != remaining_length {
        return Err(format!(
            "the packet says it has {remaining_length} bytes after its header, the record has {}",
            reader.remaining()
        ));
    }
    let packet_type = header >> 4;
    match packet_type {
        PUBLISH => {
            let qos = (header >> 1) & 0x03;
            if qos == 3 {
                return Err("PUBLISH with QoS 3".to_owned());
            }
            let topic = reader.mqtt_string("the topic")?;
            let message_id = if qos > 0 { Some(reader.u16("the message id")?) } else { None };
            let properties = match version {
                Version::V5 => read_properties(&mut reader)?,
                Version::V3 => Vec::new(),
            };
            Ok(Content::Publish(Publish {
                topic,
                message_id,
                qos,
                retain: header & 0x01 != 0,
                dup: header & 0x08 != 0,
                payload: reader.rest().to_vec(),
                properties,
                token: None,
            }))
        }
        PUBREL => {
            let message_id = reader.u16("the message id")?;
            let mut reason_code = None;
            let mut properties = Vec::new();
            if version == Version::V5 && reader.remaining() > 0 {
                reason_code = Some(reader.u8("the reason code")?);
                if reader.remaining() > 0 {
                    properties = read_properties(&mut reader)?;
                }
            }
            reader.expect_end("the PUBREL")?;
            Ok(Content::Pubrel(Pubrel { message_id, reason_code, properties }))
        }
        other => {
            Err(format!("packet type {other} ({}); Paho stores only PUBLISH and PUBREL", packet_name(other)))
        }
    }
}

/// A command as `MQTTAsync_persistCommand` serializes it: `int` type, `int` token, then per type.
fn decode_command(value: &[u8], version: Version) -> Result<Content, String> {
    let mut reader = Reader::new(value);
    let command_type = reader.c_int("the command type")?;
    let token = reader.c_int("the token")?;
    let content = match command_type {
        PUBLISH_COMMAND => {
            // topic\0, int payloadlen, payload, int qos, int retained
            let topic = reader.c_string("the topic")?;
            let payload_len = reader.c_len("the payload length")?;
            let payload = reader.take(payload_len, "the payload")?.to_vec();
            let qos = c_qos(reader.c_int("the QoS")?)?;
            let retain = reader.c_int("the retained flag")? != 0;
            let properties = read_trailing_properties(&mut reader, version)?;
            Content::Publish(Publish {
                topic,
                message_id: None,
                qos,
                retain,
                dup: false,
                payload,
                properties,
                token: Some(token),
            })
        }
        SUBSCRIBE_COMMAND => {
            // int count, then per filter: topic\0, int qos, and in MQTT 5 the options struct
            let count = reader.c_len("the filter count")?;
            let mut filters = Vec::new();
            for _ in 0..count {
                let filter = reader.c_string("a topic filter")?;
                let qos = reader.c_int("a filter's QoS")?;
                if version == Version::V5 {
                    let options = reader.take(SUBSCRIBE_OPTIONS_SIZE, "the subscribe options")?;
                    if options.get(..4) != Some(b"MQSO") {
                        return Err("the subscribe options lack their MQSO eyecatcher".to_owned());
                    }
                }
                filters.push((filter, qos));
            }
            let properties = read_trailing_properties(&mut reader, version)?;
            Content::Subscribe(Subscribe { token, filters, properties })
        }
        UNSUBSCRIBE_COMMAND => {
            let count = reader.c_len("the filter count")?;
            let mut filters = Vec::new();
            for _ in 0..count {
                filters.push(reader.c_string("a topic filter")?);
            }
            let properties = read_trailing_properties(&mut reader, version)?;
            Content::Unsubscribe(Unsubscribe { token, filters, properties })
        }
        _ => {
            return Err(format!(
                "command type {command_type}; Paho persists only publish, subscribe and unsubscribe"
            ))
        }
    };
    reader.expect_end("the command")?;
    Ok(content)
}

/// An inbound message as `MQTTPersistence_persistQueueEntry` serializes it:
/// `int` payloadlen, payload, `int` qos, retained, dup, msgid, topic\0, `int` topicLen.
fn decode_queued(value: &[u8], version: Version) -> Result<Publish, String> {
    let mut reader = Reader::new(value);
    let payload_len = reader.c_len("the payload length")?;
    let payload = reader.take(payload_len, "the payload")?.to_vec();
    let qos = c_qos(reader.c_int("the QoS")?)?;
    let retain = reader.c_int("the retained flag")? != 0;
    let dup = reader.c_int("the dup flag")? != 0;
    let message_id = reader.c_int("the message id")?;
    let message_id =
        u16::try_from(message_id).map_err(|_| format!("message id {message_id} is out of MQTT's range"))?;
    let topic = reader.c_string("the topic")?;
    // The topic length as received; Paho keeps it to restore topics with embedded NULs.
    reader.c_int("the topic length")?;
    let properties = read_trailing_properties(&mut reader, version)?;
    reader.expect_end("the queued message")?;
    Ok(Publish {
        topic,
        // QoS 0 messages have no message id on the wire; Paho stores 0.
        message_id: if qos == 0 { None } else { Some(message_id) },
        qos,
        retain,
        dup,
        payload,
        properties,
        token: None,
    })
}

fn c_qos(value: i32) -> Result<u8, String> {
    u8::try_from(value).ok().filter(|qos| *qos <= 2).ok_or_else(|| format!("QoS {value} is not 0, 1 or 2"))
}

/// The properties Paho appends to MQTT 5 `c5-` and `q5-` records; none in MQTT 3 ones.
fn read_trailing_properties(reader: &mut Reader<'_>, version: Version) -> Result<Vec<Property>, String> {
    match version {
        Version::V5 => read_properties(reader),
        Version::V3 => Ok(Vec::new()),
    }
}

/// An MQTT 5 property list: a variable byte integer length, then the properties.
fn read_properties(reader: &mut Reader<'_>) -> Result<Vec<Property>, String> {
    let length = reader.var_int("the properties length")?;
    let length = usize::try_from(length).map_err(|_| "properties length too large")?;
    let mut list = Reader::new(reader.take(length, "the properties")?);
    let mut properties = Vec::new();
    while list.remaining() > 0 {
        let id = list.u8("a property identifier")?;
        let what = property_name(id);
        let value = match id {
            1 | 23 | 25 | 36 | 37 | 40 | 41 | 42 => PropertyValue::Byte(list.u8(what)?),
            19 | 33 | 34 | 35 => PropertyValue::U16(list.u16(what)?),
            2 | 17 | 24 | 39 => PropertyValue::U32(list.u32(what)?),
            11 => PropertyValue::VarInt(list.var_int(what)?),
            9 | 22 => PropertyValue::Binary(list.mqtt_bytes(what)?.to_vec()),
            3 | 8 | 18 | 21 | 26 | 28 | 31 => PropertyValue::Text(list.mqtt_string(what)?),
            38 => PropertyValue::Pair(list.mqtt_string(what)?, list.mqtt_string(what)?),
            unknown => return Err(format!("unknown MQTT 5 property identifier {unknown}")),
        };
        properties.push(Property { id, value });
    }
    Ok(properties)
}

fn property_name(id: u8) -> &'static str {
    match id {
        1 => "payload-format-indicator",
        2 => "message-expiry-interval",
        3 => "content-type",
        8 => "response-topic",
        9 => "correlation-data",
        11 => "subscription-identifier",
        17 => "session-expiry-interval",
        18 => "assigned-client-identifier",
        19 => "server-keep-alive",
        21 => "authentication-method",
        22 => "authentication-data",
        23 => "request-problem-information",
        24 => "will-delay-interval",
        25 => "request-response-information",
        26 => "response-information",
        28 => "server-reference",
        31 => "reason-string",
        33 => "receive-maximum",
        34 => "topic-alias-maximum",
        35 => "topic-alias",
        36 => "maximum-qos",
        37 => "retain-available",
        38 => "user-property",
        39 => "maximum-packet-size",
        40 => "wildcard-subscription-available",
        41 => "subscription-identifiers-available",
        42 => "shared-subscription-available",
        _ => "unknown-property",
    }
}

fn packet_name(packet_type: u8) -> &'static str {
    match packet_type {
        1 => "CONNECT",
        2 => "CONNACK",
        3 => "PUBLISH",
        4 => "PUBACK",
        5 => "PUBREC",
        6 => "PUBREL",
        7 => "PUBCOMP",
        8 => "SUBSCRIBE",
        9 => "SUBACK",
        10 => "UNSUBSCRIBE",
        11 => "UNSUBACK",
        12 => "PINGREQ",
        13 => "PINGRESP",
        14 => "DISCONNECT",
        15 => "AUTH",
        _ => "reserved",
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::PathBuf;

    use super::*;

    /// One fixture: the scene and key from its file name, and the stored value.
    struct Fixture {
        scene: String,
        key: String,
        value: Vec<u8>,
    }

    fn fixtures_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/records")
    }

    fn fixtures() -> Vec<Fixture> {
        let mut fixtures = Vec::new();
        for entry in std::fs::read_dir(fixtures_dir()).expect("read tests/fixtures/records") {
            let path = entry.expect("a directory entry").path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".bin"))
            else {
                continue;
            };
            let (scene, key) = name.split_once("__").expect("fixture names are SCENE__KEY.bin");
            let value = std::fs::read(&path).expect("read a fixture");
            fixtures.push(Fixture { scene: scene.to_owned(), key: key.to_owned(), value });
        }
        fixtures.sort_by(|a, b| (&a.scene, &a.key).cmp(&(&b.scene, &b.key)));
        assert!(fixtures.len() >= 20, "only {} fixtures: run scripts/capture-fixtures.sh", fixtures.len());
        fixtures
    }

    /// One line of manifest.tsv: what the sender of a message knew about it.
    #[derive(Debug)]
    struct Sent {
        scene: String,
        operation: String,
        topic: String,
        qos: i32,
        retain: bool,
        message_id: Option<u16>,
        payload: Vec<u8>,
    }

    fn manifest() -> Vec<Sent> {
        let text = std::fs::read_to_string(fixtures_dir().join("manifest.tsv")).expect("read manifest.tsv");
        text.lines()
            .filter(|line| !line.starts_with('#'))
            .map(|line| {
                let f: Vec<&str> = line.split('\t').collect();
                assert_eq!(f.len(), 7, "manifest line {line:?}");
                let hex = f[6];
                let payload = if hex == "-" {
                    Vec::new()
                } else {
                    (0..hex.len())
                        .step_by(2)
                        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                        .collect()
                };
                Sent {
                    scene: f[0].to_owned(),
                    operation: f[1].to_owned(),
                    topic: f[2].to_owned(),
                    qos: f[3].parse().unwrap(),
                    retain: f[4] == "1",
                    message_id: f[5].parse().ok(),
                    payload,
                }
            })
            .collect()
    }

    fn has_property(properties: &[Property], id: u8, value: &PropertyValue) -> bool {
        properties.iter().any(|p| p.id == id && &p.value == value)
    }

    #[test]
    fn every_fixture_decodes_to_what_its_sender_sent() {
        let manifest = manifest();
        for fixture in fixtures() {
            let record = decode(&fixture.key, &fixture.value)
                .unwrap_or_else(|e| panic!("{}__{}: {e}", fixture.scene, fixture.key));
            let v5 = fixture.scene.starts_with("v5-");
            assert_eq!(record.version, if v5 { Version::V5 } else { Version::V3 }, "{}", record.key);
            assert_eq!(record.size, fixture.value.len());
            let scene = fixture.scene.as_str();
            let in_scene = |operation: &'static str| {
                manifest.iter().filter(move |s| s.scene == scene && s.operation == operation)
            };
            match &record.content {
                Content::Publish(p) => {
                    let sent = in_scene("PUBLISH")
                        .find(|s| s.topic == p.topic && s.qos == i32::from(p.qos))
                        .unwrap_or_else(|| panic!("{}: no message sent on {:?}", record.key, p.topic));
                    assert_eq!(p.payload, sent.payload, "{}", record.key);
                    assert_eq!(p.retain, sent.retain, "{}", record.key);
                    assert!(!p.dup, "{}", record.key);
                    if let Some(id) = sent.message_id {
                        assert_eq!(p.message_id, Some(id), "{}", record.key);
                    }
                    if record.kind == Kind::Command {
                        assert!(p.token.is_some() && p.message_id.is_none(), "{}", record.key);
                    }
                    let outbound =
                        p.topic.starts_with("fixtures/out") || p.topic.starts_with("fixtures/offline");
                    match (v5, outbound) {
                        (false, _) => assert!(p.properties.is_empty()),
                        (true, true) => {
                            let origin = PropertyValue::Pair("origin".into(), "capture_fixtures".into());
                            assert!(has_property(&p.properties, 38, &origin), "{record}");
                            assert!(has_property(&p.properties, 2, &PropertyValue::U32(3600)), "{record}");
                        }
                        (true, false) => {
                            assert!(has_property(&p.properties, 1, &PropertyValue::Byte(1)), "{record}")
                        }
                    }
                }
                Content::Pubrel(pubrel) => {
                    assert!(
                        in_scene("PUBREL").any(|s| s.message_id == Some(pubrel.message_id)),
                        "{}: no PUBREC was sent for id {}",
                        record.key,
                        pubrel.message_id
                    );
                    assert_eq!(record.number, u32::from(pubrel.message_id));
                }
                Content::Subscribe(s) => {
                    let sent = in_scene("SUBSCRIBE").next().expect("a SUBSCRIBE in the manifest");
                    assert_eq!(s.filters, vec![(sent.topic.clone(), sent.qos)]);
                }
                Content::Unsubscribe(u) => {
                    let sent = in_scene("UNSUBSCRIBE").next().expect("an UNSUBSCRIBE in the manifest");
                    assert_eq!(u.filters, vec![sent.topic.clone()]);
                }
            }
            if matches!(record.kind, Kind::PublishSent | Kind::PublishReceived) {
                assert_eq!(
                    record.message_id(),
                    Some(u16::try_from(record.number).unwrap()),
                    "{}",
                    record.key
                );
            }
        }
    }

    #[test]
    fn the_fixtures_cover_every_prefix() {
        let prefixes: BTreeSet<&str> = fixtures()
            .iter()
            .map(|f| {
                let (kind, version, _) = parse_key(&f.key).unwrap();
                kind.prefix(version)
            })
            .collect();
        let all: BTreeSet<&str> = crate::paho::PREFIXES.iter().map(|(prefix, _, _)| *prefix).collect();
        assert_eq!(prefixes, all);
    }

    #[test]
    fn every_truncation_of_every_fixture_is_an_error() {
        for fixture in fixtures() {
            for len in 0..fixture.value.len() {
                let result = decode(&fixture.key, &fixture.value[..len]);
                assert!(
                    result.is_err(),
                    "{}__{} cut to {len} bytes decoded: {result:?}",
                    fixture.scene,
                    fixture.key
                );
            }
            let mut longer = fixture.value.clone();
            longer.push(0);
            if !matches!(parse_key(&fixture.key), Ok((Kind::PublishSent | Kind::PublishReceived, ..))) {
                // A PUBLISH payload is everything after the header; elsewhere an extra byte is an error.
                assert!(decode(&fixture.key, &longer).is_err(), "{} with an extra byte", fixture.key);
            }
        }
    }

    #[test]
    fn corrupted_fixtures_never_panic() {
        let (mut decoded, mut rejected) = (0, 0);
        for fixture in fixtures() {
            for position in 0..fixture.value.len() {
                for flip in [0x01u8, 0x80, 0xff] {
                    let mut value = fixture.value.clone();
                    value[position] ^= flip;
                    match decode(&fixture.key, &value) {
                        Ok(_) => decoded += 1,
                        Err(_) => rejected += 1,
                    }
                }
            }
        }
        // Payload bytes may change freely; lengths, types and flags may not.
        assert!(decoded > 0 && rejected > 0, "{decoded} decoded, {rejected} rejected");
    }

    #[test]
    fn a_publish_packet_decodes_with_flags() {
        // QoS 1, retain and dup, topic "a/b", id 0x0102, payload "hi".
        let value = [0x3b, 0x09, 0x00, 0x03, b'a', b'/', b'b', 0x01, 0x02, b'h', b'i'];
        let record = decode("s-258", &value).unwrap();
        let Content::Publish(p) = &record.content else { panic!("{record:?}") };
        assert_eq!((p.qos, p.retain, p.dup, p.message_id), (1, true, true, Some(258)));
        assert_eq!(record.to_string(), "s-258 PUBLISH out qos=1 retain dup id=258 topic=\"a/b\" 2 B \"hi\"");
    }

    #[test]
    fn a_v5_pubrel_with_reason_code_and_properties_decodes() {
        // PUBREL id 5, reason 0x92, reason string "x".
        let value = [0x62, 0x08, 0x00, 0x05, 0x92, 0x04, 0x1f, 0x00, 0x01, b'x'];
        let record = decode("sc5-5", &value).unwrap();
        let Content::Pubrel(p) = &record.content else { panic!("{record:?}") };
        assert_eq!(p.reason_code, Some(0x92));
        assert_eq!(p.properties, vec![Property { id: 31, value: PropertyValue::Text("x".into()) }]);
    }

    #[test]
    fn bad_records_are_errors_that_say_why() {
        let cases: [(&str, &[u8], &str); 12] = [
            ("x-1", b"", "none of Paho's prefixes"),
            ("s-", b"", "not a decimal number"),
            ("s-1a", b"", "not a decimal number"),
            ("s-99999999999", b"", "out of range"),
            ("s-1", &[0x62, 0x02, 0x00, 0x01], "names a PUBLISH but the packet is a PUBREL"),
            ("sc-1", &[0x32, 0x05, 0x00, 0x01, b't', 0x00, 0x01], "names a PUBREL"),
            ("s-1", &[0x36, 0x05, 0x00, 0x01, b't', 0x00, 0x01], "QoS 3"),
            ("s-1", &[0x40, 0x02, 0x00, 0x01], "packet type 4 (PUBACK)"),
            ("r-1", &[0x32, 0x05, 0x00, 0x01, b't', 0x00, 0x01], "QoS 2 only"),
            ("s-1", &[0x32, 0xff, 0xff, 0xff, 0xff, 0x01], "longer than 4 bytes"),
            ("c-1", &[3, 0, 0, 0, 1, 0, 0, 0, b't', 0, 0xff, 0xff, 0xff, 0xff], "negative"),
            ("c-1", &[9, 0, 0, 0, 1, 0, 0, 0], "command type 9"),
        ];
        for (key, value, reason) in cases {
            let error = decode(key, value).expect_err(key);
            assert_eq!(error.key, key);
            assert!(error.reason.contains(reason), "{key}: {:?} lacks {reason:?}", error.reason);
        }
    }

    #[test]
    fn previews_are_printable_and_bounded() {
        assert_eq!(preview(b"hello", 40), "\"hello\"");
        assert_eq!(preview(b"hello", 3), "\"hel\"…");
        assert_eq!(preview(b"line\nbreak", 40), "\"line\\nbreak\"");
        assert_eq!(preview(&[0, 1, 0xff], 40), "hex:0001ff");
        assert_eq!(preview(&[0xaa; 10], 8), "hex:aaaaaaaa…");
        assert_eq!(preview(b"", 40), "\"\"");
        assert_eq!(preview("é".repeat(50).as_bytes(), 40).chars().count(), 43);
    }
}
