//! What Paho C's restore can take: the check `open` runs on every record it
//! reads, before Paho sees any of them.

use super::Version;

/// What `open` does with a record it read, for a client of a given version.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(not(test), allow(dead_code))] // until the check returns every verdict
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
pub(crate) fn at_open(_key: &str, _value: &[u8], _client: Version) -> AtOpen {
    AtOpen::Restore
}
