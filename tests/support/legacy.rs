//! The algorithm of paho-mqtt-redis 0.3, rebuilt for tests: one Redis command
//! per callback, hash `{client_id}:{server_uri}`, plain `contains_key`, and
//! `get` of a missing key answering an empty value. (0.3's panics are left out.)

use paho_mqtt::{ClientPersistence, Error, Result};
use redis::Commands;

/// 0.3's store, used to write records that 0.4 must restore.
pub struct LegacyStore {
    url: String,
    name: String,
    conn: Option<redis::Connection>,
}

impl LegacyStore {
    pub fn new(url: &str) -> Self {
        Self { url: url.to_owned(), name: String::new(), conn: None }
    }

    fn conn(&mut self) -> Result<&mut redis::Connection> {
        self.conn.as_mut().ok_or(Error::PersistenceError)
    }
}

impl ClientPersistence for LegacyStore {
    fn open(&mut self, client_id: &str, server_uri: &str) -> Result<()> {
        self.name = format!("{client_id}:{server_uri}");
        let conn = redis::Client::open(self.url.as_str())
            .and_then(|c| c.get_connection())
            .map_err(|_| Error::PersistenceError)?;
        self.conn = Some(conn);
        Ok(())
    }

    fn close(&mut self) -> Result<()> {
        self.conn = None;
        Ok(())
    }

    fn put(&mut self, key: &str, buffers: Vec<&[u8]>) -> Result<()> {
        let name = self.name.clone();
        self.conn()?.hset::<_, _, _, ()>(name, key, buffers.concat()).map_err(|_| Error::PersistenceError)
    }

    fn get(&mut self, key: &str) -> Result<Vec<u8>> {
        let name = self.name.clone();
        self.conn()?.hget::<_, _, Vec<u8>>(name, key).map_err(|_| Error::PersistenceError)
    }

    fn remove(&mut self, key: &str) -> Result<()> {
        let name = self.name.clone();
        self.conn()?.hdel::<_, _, ()>(name, key).map_err(|_| Error::PersistenceError)
    }

    fn keys(&mut self) -> Result<Vec<String>> {
        let name = self.name.clone();
        self.conn()?.hkeys(name).map_err(|_| Error::PersistenceError)
    }

    fn clear(&mut self) -> Result<()> {
        let name = self.name.clone();
        self.conn()?.del::<_, ()>(name).map_err(|_| Error::PersistenceError)
    }

    fn contains_key(&mut self, key: &str) -> bool {
        let name = self.name.clone();
        self.conn().and_then(|c| c.hexists(name, key).map_err(|_| Error::PersistenceError)).unwrap_or(false)
    }
}
