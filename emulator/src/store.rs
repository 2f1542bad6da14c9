//! Crash-safe persistence of the resource model in SQLite.
//!
//! One table holds one row per resource, `(kind, id) → JSON body`; a second holds settings fixed
//! when the data directory is created (the region). The database runs in WAL mode with
//! `synchronous=FULL`, so a commit that returned is on disk and survives `kill -9` or power loss.
//! The actor writes every change of a batch of API calls in **one** transaction before it answers
//! any of them, so a call is either wholly on disk or not at all.
//!
//! This module knows nothing of the model's types beyond [`Kind`]: bodies are opaque JSON.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use enifab_model::Kind;
use rusqlite::{Connection, OptionalExtension, params};

pub struct Store {
    conn: Connection,
    path: PathBuf,
}

/// One row to write (`Some(body)`) or delete (`None`).
pub type Change = (Kind, String, Option<String>);

impl Store {
    /// Open (creating if needed) `<data_dir>/enifab.db`.
    pub fn open(data_dir: &Path) -> Result<Store> {
        std::fs::create_dir_all(data_dir).with_context(|| format!("creating data directory {}", data_dir.display()))?;
        let path = data_dir.join("enifab.db");
        let conn = Connection::open(&path).with_context(|| format!("opening {}", path.display()))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS resources (kind TEXT NOT NULL, id TEXT NOT NULL, body TEXT NOT NULL, PRIMARY KEY (kind, id)) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);",
        )?;
        Ok(Store { conn, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn setting(&self, key: &str) -> Result<Option<String>> {
        Ok(self.conn.query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| r.get(0)).optional()?)
    }

    pub fn set_setting(&self, key: &str, value: &str) -> Result<()> {
        self.conn.execute(
            "INSERT INTO settings (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [key, value],
        )?;
        Ok(())
    }

    /// Every stored row.
    pub fn load(&self) -> Result<Vec<(Kind, String, String)>> {
        let mut stmt = self.conn.prepare("SELECT kind, id, body FROM resources")?;
        let rows =
            stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (kind, id, body) = row?;
            let Some(kind) = Kind::parse(&kind) else { bail!("unknown row kind {kind:?} in {}", self.path.display()) };
            out.push((kind, id, body));
        }
        Ok(out)
    }

    /// Apply `changes` in one transaction; nothing is visible (or durable) until it commits.
    pub fn commit(&mut self, changes: &[Change]) -> Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut upsert = tx.prepare_cached(
                "INSERT INTO resources (kind, id, body) VALUES (?1, ?2, ?3) ON CONFLICT(kind, id) DO UPDATE SET body = excluded.body",
            )?;
            let mut delete = tx.prepare_cached("DELETE FROM resources WHERE kind = ?1 AND id = ?2")?;
            for (kind, id, body) in changes {
                match body {
                    Some(body) => upsert.execute(params![kind.as_str(), id, body])?,
                    None => delete.execute(params![kind.as_str(), id])?,
                };
            }
        }
        tx.commit()?;
        Ok(())
    }
}
