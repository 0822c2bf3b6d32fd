//! What this crate knows about Paho C 1.3.16 (bundled by paho-mqtt-sys 0.11):
//! its keys, its record formats, and what it does with each store call.
//!
//! Every rule the store's core relies on is stated here, with the Paho C
//! function it comes from, so that the core itself holds no Paho lore and a
//! change of Paho shows up in one place. The tests at the end pin what can be
//! pinned without a broker; `tests/fixtures/traces` holds recorded call
//! sequences of real Paho that the core's crash-point checker replays.

pub(crate) mod restore;

/// What kind of record a key names, from its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `s-` / `s5-`: an outbound PUBLISH not yet acknowledged (PUBACK or PUBREC).
    PublishSent,
    /// `sc-` / `sc5-`: an outbound PUBREL not yet completed (PUBCOMP).
    PubrelSent,
    /// `r-` / `r5-`: an inbound QoS 2 PUBLISH whose PUBREL has not arrived.
    PublishReceived,
    /// `c-` / `c5-`: a command queued by the async client and not yet sent.
    Command,
    /// `q-` / `q5-`: an inbound message queued for the application and not yet delivered.
    QueuedMessage,
}

impl Kind {
    /// The key prefix of this kind for `version`, such as `sc5-`.
    // Public through `decode`; the core itself only reads prefixes, and
    // `restore` names the other version's key of a record it converts.
    pub fn prefix(self, version: Version) -> &'static str {
        match (self, version) {
            (Kind::PublishSent, Version::V3) => "s-",
            (Kind::PublishSent, Version::V5) => "s5-",
            (Kind::PubrelSent, Version::V3) => "sc-",
            (Kind::PubrelSent, Version::V5) => "sc5-",
            (Kind::PublishReceived, Version::V3) => "r-",
            (Kind::PublishReceived, Version::V5) => "r5-",
            (Kind::Command, Version::V3) => "c-",
            (Kind::Command, Version::V5) => "c5-",
            (Kind::QueuedMessage, Version::V3) => "q-",
            (Kind::QueuedMessage, Version::V5) => "q5-",
        }
    }
}

/// Which MQTT version wrote a record, from its key prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Version {
    /// MQTT 3.1 or 3.1.1 (Paho uses the same keys for both).
    #[default]
    V3,
    /// MQTT 5: packets and serialized commands carry properties.
    V5,
}

impl Version {
    /// How people name it: `3.1.1` or `5`.
    pub fn name(self) -> &'static str {
        match self {
            Version::V3 => "3.1.1",
            Version::V5 => "5",
        }
    }
}

/// Every key prefix. Each ends with `-`, so no prefix is a prefix of another.
pub(crate) const PREFIXES: [(&str, Kind, Version); 10] = [
    ("sc5-", Kind::PubrelSent, Version::V5),
    ("sc-", Kind::PubrelSent, Version::V3),
    ("s5-", Kind::PublishSent, Version::V5),
    ("s-", Kind::PublishSent, Version::V3),
    ("r5-", Kind::PublishReceived, Version::V5),
    ("r-", Kind::PublishReceived, Version::V3),
    ("c5-", Kind::Command, Version::V5),
    ("c-", Kind::Command, Version::V3),
    ("q5-", Kind::QueuedMessage, Version::V5),
    ("q-", Kind::QueuedMessage, Version::V3),
];

/// Splits a Paho key into its kind, version and number, or says why it is not one.
pub fn parse_key(key: &str) -> Result<(Kind, Version, u32), String> {
    let (rest, kind, version) = PREFIXES
        .iter()
        .find_map(|&(prefix, kind, version)| key.strip_prefix(prefix).map(|rest| (rest, kind, version)))
        .ok_or_else(|| {
            "the key has none of Paho's prefixes (s-, sc-, r-, c-, q-, or their 5 forms)".to_owned()
        })?;
    if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("the key's number {rest:?} is not a decimal number"));
    }
    let number = rest.parse::<u32>().map_err(|_| format!("the key's number {rest:?} is out of range"))?;
    Ok((kind, version, number))
}

/// The kind of `key` by its prefix alone (the number is not checked).
pub(crate) fn kind_of(key: &str) -> Option<Kind> {
    PREFIXES.iter().find(|(prefix, _, _)| key.starts_with(prefix)).map(|&(_, kind, _)| kind)
}

/// The order in which `keys` lists records for Paho's restore: highest
/// number first. `MQTTPersistence_restorePackets` inserts each restored
/// PUBLISH into the outbound list in message-id order with
/// `MQTTPersistence_insertInOrder`, which scans from the head for the first
/// larger id: given the highest id first, every insert stops at the head
/// (linear restore); lowest first, every insert walks the whole list
/// (quadratic). `MQTTAsync_restoreCommands` sorts command keys itself
/// (`qsort` with `cmpkeys`), so their order costs nothing either way.
pub(crate) fn restore_order(key: &str) -> (std::cmp::Reverse<u32>, String) {
    let number = key.rsplit('-').next().and_then(|digits| digits.parse().ok()).unwrap_or(0);
    (std::cmp::Reverse(number), key.to_owned())
}

/// Whether `key` names a command record (`c-`/`c5-`): the only records Paho
/// reads back while running (`MQTTAsync_processCommand`).
pub(crate) fn is_command_key(key: &str) -> bool {
    kind_of(key) == Some(Kind::Command)
}

/// Whether Paho carries on as if a failed `put` of `key` had succeeded, so that
/// the store must keep the record until Redis takes it instead of failing.
/// For every record Paho C 1.3.16 writes, it does:
/// - command records: `MQTTAsync_addCommand` keeps the command queued and sends
///   it, while paho-mqtt 0.14 frees the publish's token when told of the
///   failure (a use after free);
/// - PUBLISH and PUBREL records: `MQTTPacket_sends` and `MQTTPacket_send`
///   overwrite the `put`'s result and send the packet anyway;
/// - received QoS 2 PUBLISH records: `MQTTProtocol_handlePublishes` handles the
///   packet whatever `MQTTPacket_Factory` reports of its `put`;
/// - inbound queue records: `MQTTAsync_processPublication` ignores the result
///   of `MQTTPersistence_persistQueueEntry` and keeps the message queued.
///
/// Only a key Paho never writes (no Paho prefix) fails when Redis cannot take it.
pub(crate) fn put_failure_ignored(key: &str) -> bool {
    kind_of(key).is_some()
}

/// Paho C's command type numbers are the MQTT packet type numbers
/// (`MQTTAsync_persistCommand` writes `command.type` first).
pub(crate) const PUBLISH_COMMAND: i32 = 3;
// The decoder and the restore check read records other than PUBLISH commands.
pub(crate) const SUBSCRIBE_COMMAND: i32 = 8;
pub(crate) const UNSUBSCRIBE_COMMAND: i32 = 10;

/// What the store needs to know of a command record: its type, and for a
/// PUBLISH its QoS and the message id it will be sent with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Command {
    /// A queued PUBLISH. `MQTTAsync_processCommand` sends it with
    /// `p->msgId = command->command.token`, so the token is its message id.
    Publish { qos: u8, token: i32 },
    /// SUBSCRIBE, UNSUBSCRIBE, or a record this crate cannot read.
    Other,
}

impl Command {
    /// Reads the head of a command record as `MQTTAsync_persistCommand`
    /// serializes it: `int` type, `int` token, and for a PUBLISH `topic\0`,
    /// `int` payloadlen, payload, `int` qos (C `int`s in native byte order).
    pub(crate) fn read(value: &[u8]) -> Self {
        Self::read_publish(value).unwrap_or(Command::Other)
    }

    fn read_publish(value: &[u8]) -> Option<Self> {
        let int_at = |at: usize| -> Option<i32> {
            let bytes = value.get(at..at.checked_add(4)?)?;
            Some(i32::from_ne_bytes(bytes.try_into().ok()?))
        };
        if int_at(0)? != PUBLISH_COMMAND {
            return None;
        }
        let token = int_at(4)?;
        let topic_end = 8usize.checked_add(value.get(8..)?.iter().position(|&b| b == 0)?)?;
        let payload_len = usize::try_from(int_at(topic_end.checked_add(1)?)?).ok()?;
        let qos_at = topic_end.checked_add(5)?.checked_add(payload_len)?;
        let qos = u8::try_from(int_at(qos_at)?).ok().filter(|qos| *qos <= 2)?;
        Some(Command::Publish { qos, token })
    }

    /// The message id of the PUBLISH record Paho writes when it sends this
    /// command, if it writes one: for QoS 1 and 2,
    /// `MQTTProtocol_startPublish` → `MQTTPacket_send_publish` →
    /// `MQTTPersistence_putPacket` writes `s-{msgid}` (`s5-` in MQTT 5) before
    /// the socket write. A QoS 0 PUBLISH, a SUBSCRIBE and an UNSUBSCRIBE leave
    /// no record once sent.
    pub(crate) fn sent_as(self) -> Option<i32> {
        match self {
            Command::Publish { qos: 1..=2, token } => Some(token),
            _ => None,
        }
    }

    /// The key of that PUBLISH record, for a command read from `command_key`
    /// by a client of the same MQTT version (the checker predicts it).
    #[cfg(test)]
    pub(crate) fn publish_record_key(self, command_key: &str) -> Option<String> {
        let Command::Publish { qos: 1..=2, token } = self else { return None };
        let version = if command_key.starts_with("c5-") { Version::V5 } else { Version::V3 };
        Some(format!("{}{token}", Kind::PublishSent.prefix(version)))
    }
}

/// How a `remove` of a command record came about, from the call just before
/// it. Paho C removes command records in these places:
/// - `MQTTAsync_processCommand` sends a command: for a PUBLISH it reads the
///   record back (`pget`; `not_restored` is set for every persisted PUBLISH,
///   by `MQTTAsync_addCommand` and by `MQTTAsync_restoreCommand`) and removes
///   it (`MQTTAsync_unpersistCommand`), both under `mqttcommand_mutex`, so
///   nothing comes between the two; for QoS 1 and 2 it then writes the
///   PUBLISH record, still under `mqttasync_mutex`.
/// - `MQTTAsync_addCommand` with `deleteOldestMessages`, when the buffer is
///   full: it removes the oldest queued PUBLISH's record (after writing the
///   new command's record, or without writing one for an unpersisted QoS 0
///   publish): that message is dropped for good.
/// - `MQTTAsync_unpersistCommandsAndMessages` (a client created with
///   `restoreMessages` off) removes them all, after a `keys`.
/// - SUBSCRIBE and UNSUBSCRIBE commands are sent without a read-back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CommandRemoval {
    /// A PUBLISH is being sent (`MQTTAsync_processCommand`).
    Sending,
    /// Anything else: the record is done with (dropped, discarded, or a
    /// SUBSCRIBE or UNSUBSCRIBE sent).
    Done,
}

impl CommandRemoval {
    /// Tells the two apart: only the removal right after the read-back of
    /// the same record (`read_back`, the key the call before read) is a
    /// PUBLISH being sent.
    pub(crate) fn of(key: &str, read_back: Option<&[u8]>) -> Self {
        match read_back {
            Some(read) if read == key.as_bytes() => CommandRemoval::Sending,
            _ => CommandRemoval::Done,
        }
    }
}

/// The other MQTT version's key of command record `key` (`c-N` ↔ `c5-N`).
///
/// `MQTTAsync_unpersistCommand` builds the key it removes from the client's
/// version (`c5-` for MQTT 5), not from the key the command was restored
/// from (`command->key`), while `MQTTAsync_restoreCommands` restores records
/// of both versions. After a client changes its MQTT version, Paho therefore
/// removes each restored command under a key it never had, and the record
/// would be restored (and sent) again at every later start. The store
/// applies such a removal to the record Paho restored: Paho numbers commands
/// on from the highest restored number, so command `N` has one record.
pub(crate) fn command_twin(key: &str) -> Option<String> {
    match parse_key(key) {
        Ok((Kind::Command, Version::V3, number)) => Some(format!("c5-{number}")),
        Ok((Kind::Command, Version::V5, number)) => Some(format!("c-{number}")),
        _ => None,
    }
}

/// Whether `key` is the PUBLISH record (`s-` or `s5-`) of message `id`. A
/// command restored from a `c5-` record by an MQTT 3 client is sent as `s-`,
/// and the other way round (`MQTTPersistence_putPacket` takes the client's
/// version), so the version does not matter here.
pub(crate) fn is_publish_record_of(key: &str, id: i32) -> bool {
    match parse_key(key) {
        Ok((Kind::PublishSent, _, number)) => i64::from(number) == i64::from(id),
        _ => false,
    }
}

/// Whether a PUBLISH record (`s-`/`s5-`) holds a QoS 1 packet: the first byte
/// of the MQTT packet Paho writes is its fixed header, QoS in bits 1-2.
pub(crate) fn is_qos1_publish(key: &str, first_byte: Option<u8>) -> bool {
    kind_of(key) == Some(Kind::PublishSent)
        && first_byte.is_some_and(|header| header >> 4 == 3 && (header >> 1) & 0b11 == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A command record as `MQTTAsync_persistCommand` writes a PUBLISH.
    pub(crate) fn publish_command(token: i32, topic: &str, payload: &[u8], qos: i32) -> Vec<u8> {
        let mut record = Vec::new();
        record.extend_from_slice(&PUBLISH_COMMAND.to_ne_bytes());
        record.extend_from_slice(&token.to_ne_bytes());
        record.extend_from_slice(topic.as_bytes());
        record.push(0);
        record.extend_from_slice(&i32::try_from(payload.len()).unwrap().to_ne_bytes());
        record.extend_from_slice(payload);
        record.extend_from_slice(&qos.to_ne_bytes());
        record.extend_from_slice(&0i32.to_ne_bytes()); // retained
        record
    }

    #[test]
    fn a_publish_command_tells_its_qos_and_message_id() {
        let record = publish_command(7, "a/b", b"hello", 1);
        assert_eq!(Command::read(&record), Command::Publish { qos: 1, token: 7 });
        assert_eq!(Command::read(&record).publish_record_key("c-3").as_deref(), Some("s-7"));
        assert_eq!(Command::read(&record).publish_record_key("c5-3").as_deref(), Some("s5-7"));
    }

    #[test]
    fn qos0_subscribe_and_unreadable_commands_leave_no_publish_record() {
        let qos0 = publish_command(0, "t", b"x", 0);
        assert_eq!(Command::read(&qos0).publish_record_key("c-1"), None);
        let mut subscribe = SUBSCRIBE_COMMAND.to_ne_bytes().to_vec();
        subscribe.extend_from_slice(&5i32.to_ne_bytes());
        assert_eq!(Command::read(&subscribe), Command::Other);
        let truncated = &publish_command(3, "t", b"payload", 2)[..14];
        assert_eq!(Command::read(truncated), Command::Other);
        assert_eq!(Command::read(b""), Command::Other);
    }

    #[test]
    fn only_a_removal_right_after_its_read_back_is_a_send() {
        assert_eq!(CommandRemoval::of("c-1", Some(b"c-1")), CommandRemoval::Sending);
        assert_eq!(CommandRemoval::of("c-1", Some(b"c-6")), CommandRemoval::Done);
        assert_eq!(CommandRemoval::of("c-1", None), CommandRemoval::Done);
    }

    #[test]
    fn paho_carries_on_after_a_failed_put_of_every_record_it_writes() {
        for key in ["c-1", "c5-1", "s-1", "s5-1", "sc-1", "sc5-1", "r-1", "r5-1", "q-1", "q5-1"] {
            assert!(put_failure_ignored(key), "{key}");
        }
        assert!(!put_failure_ignored("x-1"));
        assert!(is_command_key("c5-9") && !is_command_key("sc-9"));
    }

    #[test]
    fn a_command_key_has_a_twin_of_the_other_version() {
        assert_eq!(command_twin("c-12").as_deref(), Some("c5-12"));
        assert_eq!(command_twin("c5-12").as_deref(), Some("c-12"));
        assert_eq!(command_twin("s-12"), None);
        assert_eq!(command_twin("c-x"), None);
    }

    #[test]
    fn a_publish_record_matches_its_message_in_either_version() {
        assert!(is_publish_record_of("s-7", 7) && is_publish_record_of("s5-7", 7));
        assert!(!is_publish_record_of("sc-7", 7) && !is_publish_record_of("s-8", 7));
    }

    #[test]
    fn the_qos_of_a_publish_record_is_in_its_first_byte() {
        assert!(is_qos1_publish("s-1", Some(0x32)));
        assert!(!is_qos1_publish("s-1", Some(0x34)));
        assert!(!is_qos1_publish("sc-1", Some(0x32)));
        assert!(!is_qos1_publish("s-1", None));
    }
}
