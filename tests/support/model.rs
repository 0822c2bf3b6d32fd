//! The reference model: Paho's persistence contract as a map in memory.
//!
//! The contract suite runs against this and against Redis; where they
//! disagree, one of them is wrong about `MQTTClientPersistence.h`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use paho_mqtt::{ClientPersistence, Error, Result};

type Stores = HashMap<String, BTreeMap<String, Vec<u8>>>;

/// An in-memory store; clones share their data, like two processes sharing one Redis.
#[derive(Clone, Default)]
pub struct ModelStore {
    stores: Arc<Mutex<Stores>>,
    open: Option<String>,
}

impl ModelStore {
    fn with_store<T>(&self, f: impl FnOnce(&mut BTreeMap<String, Vec<u8>>) -> T) -> Result<T> {
        let name = self.open.as_ref().ok_or(Error::PersistenceError)?;
        let mut stores = self.stores.lock().unwrap();
        Ok(f(stores.entry(name.clone()).or_default()))
    }

    /// A fresh handle on the same data, not yet open.
    pub fn reopened(&self) -> Self {
        Self { stores: Arc::clone(&self.stores), open: None }
    }
}

impl ClientPersistence for ModelStore {
    fn open(&mut self, client_id: &str, server_uri: &str) -> Result<()> {
        self.open = Some(format!("{client_id}:{server_uri}"));
        Ok(())
    }

    fn close(&mut self) -> Result<()> {
        self.open = None;
        Ok(())
    }

    fn put(&mut self, key: &str, buffers: Vec<&[u8]>) -> Result<()> {
        let value = buffers.concat();
        self.with_store(|s| s.insert(key.to_owned(), value)).map(drop)
    }

    fn get(&mut self, key: &str) -> Result<Vec<u8>> {
        self.with_store(|s| s.get(key).cloned())?.ok_or(Error::PersistenceError)
    }

    fn remove(&mut self, key: &str) -> Result<()> {
        self.with_store(|s| s.remove(key)).map(drop)
    }

    fn keys(&mut self) -> Result<Vec<String>> {
        self.with_store(|s| s.keys().cloned().collect())
    }

    fn clear(&mut self) -> Result<()> {
        self.with_store(|s| s.clear())
    }

    /// Inverted like `RedisPersistence`, so Paho C sees the truth through paho-mqtt 0.14.
    fn contains_key(&mut self, key: &str) -> bool {
        !self.with_store(|s| s.contains_key(key)).unwrap_or(false)
    }
}
