//! Storage pools of type `dir`: define, build, start, destroy, undefine, autostart, and what they
//! are (pool-list, pool-info, pool-dumpxml). Their volumes are the volumes service's.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use oxvirt_api::PoolInfo;
use oxvirt_domain::pool::{PoolDef, PoolUsage};
use uuid::Uuid;

use super::error::{
    db, definition_error, internal, invalid_state, not_found, DaemonError, DaemonResult, ErrorKind,
};
use crate::store::{self, list_pool_rows, pool_by, set_pool_flag, PoolRecord, Store};

/// Storage pools.
pub struct Pools {
    store: Arc<Store>,
}

impl Pools {
    pub fn new(store: Arc<Store>) -> Pools {
        Pools { store }
    }
}

/// Pool XML as pool-define reads it. (Target permissions are read but not applied: the
/// directory gets the daemon's owner and umask at pool-build.)
fn parse_pool_xml(xml: &str) -> DaemonResult<PoolDef> {
    PoolDef::from_xml(xml).map_err(definition_error)
}

/// File system usage of the directory, as libvirt reports it for dir pools:
/// (capacity, allocation, available) in bytes.
fn fs_usage(dir: &Path) -> std::io::Result<(u64, u64, u64)> {
    let path = CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: statvfs is a plain C struct; all-zero is a valid value for the kernel to fill.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a valid NUL-terminated string and `stat` a valid, writable statvfs.
    let rc = unsafe { libc::statvfs(path.as_ptr(), &mut stat) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fragment = stat.f_frsize as u64;
    let capacity = fragment.saturating_mul(stat.f_blocks as u64);
    let available = fragment.saturating_mul(stat.f_bfree as u64);
    Ok((capacity, capacity.saturating_sub(available), available))
}

fn pool_info_of(record: &PoolRecord) -> PoolInfo {
    let usage = if record.active {
        fs_usage(&record.target).ok()
    } else {
        None
    };
    PoolInfo {
        name: record.name.clone(),
        uuid: record.uuid.to_string(),
        pool_type: "dir".to_string(),
        active: record.active,
        persistent: true,
        autostart: record.autostart,
        target: record.target.display().to_string(),
        capacity: usage.map(|u| u.0),
        allocation: usage.map(|u| u.1),
        available: usage.map(|u| u.2),
    }
}

fn pool_xml_of(record: &PoolRecord) -> String {
    let info = pool_info_of(record);
    let def = PoolDef {
        name: record.name.clone(),
        uuid: Some(record.uuid),
        target: record.target.clone(),
        permissions: None,
    };
    def.to_xml(PoolUsage {
        capacity: info.capacity.unwrap_or(0),
        allocation: info.allocation.unwrap_or(0),
        available: info.available.unwrap_or(0),
    })
}

impl Pools {
    /// Starts the autostart pools (before guests autostart).
    pub fn start_pools(&self) -> anyhow::Result<()> {
        let pools = self
            .store
            .transaction(list_pool_rows)
            .map_err(crate::store::named)?;
        for pool in pools {
            if pool.active || !pool.autostart {
                continue;
            }
            match self.start_pool(&pool.uuid.to_string()) {
                Ok(_) => tracing::info!(pool = %pool.name, "pool autostarted"),
                Err(err) => tracing::error!(pool = %pool.name, "pool autostart failed: {err}"),
            }
        }
        Ok(())
    }

    /// Finds a pool by name, then by UUID.
    pub fn resolve_pool(&self, id: &str) -> DaemonResult<PoolRecord> {
        let found = self
            .store
            .transaction(|tx| {
                if let Some(pool) = pool_by(tx, "name", id)? {
                    return Ok(Some(pool));
                }
                match Uuid::parse_str(id) {
                    Ok(uuid) => pool_by(tx, "uuid", &uuid.to_string()),
                    Err(_) => Ok(None),
                }
            })
            .map_err(db)?;
        found.ok_or_else(|| not_found(format!("storage pool '{id}' not found")))
    }

    pub fn active_pool(&self, id: &str) -> DaemonResult<PoolRecord> {
        let pool = self.resolve_pool(id)?;
        if !pool.active {
            return Err(invalid_state(format!(
                "storage pool '{}' is not active",
                pool.name
            )));
        }
        Ok(pool)
    }

    pub fn list_pools(&self) -> DaemonResult<Vec<PoolInfo>> {
        let pools = self.store.transaction(list_pool_rows).map_err(db)?;
        Ok(pools.iter().map(pool_info_of).collect())
    }

    pub fn pool_info(&self, id: &str) -> DaemonResult<PoolInfo> {
        Ok(pool_info_of(&self.resolve_pool(id)?))
    }

    pub fn pool_xml(&self, id: &str) -> DaemonResult<String> {
        Ok(pool_xml_of(&self.resolve_pool(id)?))
    }

    /// pool-define: a new pool, or a new target for an inactive pool of the same name (and
    /// uuid, if the XML names one).
    pub fn define_pool(&self, xml: &str) -> DaemonResult<PoolInfo> {
        let def = parse_pool_xml(xml)?;
        let record = self
            .store
            .transaction_or(db, |tx| -> DaemonResult<PoolRecord> {
                let by_name = pool_by(tx, "name", &def.name).map_err(db)?;
                let by_uuid = match def.uuid {
                    Some(uuid) => pool_by(tx, "uuid", &uuid.to_string()).map_err(db)?,
                    None => None,
                };
                let clash = list_pool_rows(tx)
                    .map_err(db)?
                    .into_iter()
                    .find(|p| p.target == def.target && p.name != def.name);
                if let Some(other) = clash {
                    return Err(DaemonError::new(
                        ErrorKind::AlreadyExists,
                        format!(
                            "storage pool '{}' already uses the directory {}",
                            other.name,
                            def.target.display()
                        ),
                    ));
                }
                match (by_name, by_uuid) {
                    (None, None) => {
                        let record = PoolRecord {
                            uuid: def.uuid.unwrap_or_else(Uuid::new_v4),
                            name: def.name.clone(),
                            target: def.target.clone(),
                            autostart: false,
                            active: false,
                        };
                        store::insert_pool(tx, &record).map_err(db)?;
                        Ok(record)
                    }
                    (Some(existing), by_uuid)
                        if def.uuid.is_none()
                            || by_uuid.as_ref().map(|p| p.uuid) == Some(existing.uuid) =>
                    {
                        if existing.active {
                            return Err(invalid_state(format!(
                                "storage pool '{}' is active; destroy it before redefining it",
                                existing.name
                            )));
                        }
                        store::set_pool_target(tx, &existing.uuid, &def.target).map_err(db)?;
                        Ok(PoolRecord {
                            target: def.target.clone(),
                            ..existing
                        })
                    }
                    (Some(existing), _) => Err(DaemonError::new(
                        ErrorKind::AlreadyExists,
                        format!(
                            "storage pool '{}' already exists with uuid {}",
                            existing.name, existing.uuid
                        ),
                    )),
                    (None, Some(other)) => Err(DaemonError::new(
                        ErrorKind::AlreadyExists,
                        format!(
                            "storage pool with uuid {} already exists with name '{}'",
                            other.uuid, other.name
                        ),
                    )),
                }
            })?;
        tracing::info!(pool = %record.name, target = %record.target.display(), "pool defined");
        Ok(pool_info_of(&record))
    }

    pub fn undefine_pool(&self, id: &str) -> DaemonResult<PoolInfo> {
        let pool = self.resolve_pool(id)?;
        self.store.transaction_or(db, |tx| -> DaemonResult<()> {
            let current = pool_by(tx, "uuid", &pool.uuid.to_string()).map_err(db)?;
            if current.is_some_and(|p| p.active) {
                return Err(invalid_state(format!(
                    "storage pool '{}' is still active; destroy it first",
                    pool.name
                )));
            }
            store::delete_pool(tx, &pool.uuid).map_err(db)
        })?;
        tracing::info!(pool = %pool.name, "pool undefined");
        Ok(pool_info_of(&PoolRecord {
            active: false,
            ..pool
        }))
    }

    /// pool-build: creates the target directory (and its parents) of an inactive pool.
    pub fn build_pool(&self, id: &str) -> DaemonResult<PoolInfo> {
        let pool = self.resolve_pool(id)?;
        if pool.active {
            return Err(invalid_state(format!(
                "storage pool '{}' is active",
                pool.name
            )));
        }
        std::fs::create_dir_all(&pool.target).map_err(|e| {
            internal(
                &format!(
                    "cannot build storage pool '{}': cannot create {}",
                    pool.name,
                    pool.target.display()
                ),
                e,
            )
        })?;
        Ok(pool_info_of(&pool))
    }

    /// pool-start: the target directory must exist.
    pub fn start_pool(&self, id: &str) -> DaemonResult<PoolInfo> {
        let pool = self.resolve_pool(id)?;
        if pool.active {
            return Err(invalid_state(format!(
                "storage pool '{}' is already active",
                pool.name
            )));
        }
        self.check_target(&pool, "start")?;
        self.store
            .transaction(|tx| set_pool_flag(tx, &pool.uuid, "active", true))
            .map_err(db)?;
        tracing::info!(pool = %pool.name, "pool started");
        Ok(pool_info_of(&PoolRecord {
            active: true,
            ..pool
        }))
    }

    fn check_target(&self, pool: &PoolRecord, verb: &str) -> DaemonResult<()> {
        match std::fs::metadata(&pool.target) {
            Ok(meta) if meta.is_dir() => Ok(()),
            Ok(_) => Err(invalid_state(format!(
                "cannot {verb} storage pool '{}': target {} is not a directory",
                pool.name,
                pool.target.display()
            ))),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Err(not_found(format!(
                "cannot {verb} storage pool '{}': target directory {} does not exist (pool-build creates it)",
                pool.name,
                pool.target.display()
            ))),
            Err(err) => Err(internal(
                &format!(
                    "cannot {verb} storage pool '{}': {}",
                    pool.name,
                    pool.target.display()
                ),
                err,
            )),
        }
    }

    /// pool-destroy: the pool becomes inactive; its files stay.
    pub fn destroy_pool(&self, id: &str) -> DaemonResult<PoolInfo> {
        let pool = self.active_pool(id)?;
        self.store
            .transaction(|tx| set_pool_flag(tx, &pool.uuid, "active", false))
            .map_err(db)?;
        tracing::info!(pool = %pool.name, "pool destroyed");
        Ok(pool_info_of(&PoolRecord {
            active: false,
            ..pool
        }))
    }

    /// pool-refresh: volumes are scanned on every request, so this only checks the directory.
    pub fn refresh_pool(&self, id: &str) -> DaemonResult<PoolInfo> {
        let pool = self.active_pool(id)?;
        self.check_target(&pool, "refresh")?;
        Ok(pool_info_of(&pool))
    }

    pub fn set_pool_autostart(&self, id: &str, enabled: bool) -> DaemonResult<PoolInfo> {
        let pool = self.resolve_pool(id)?;
        self.store
            .transaction(|tx| set_pool_flag(tx, &pool.uuid, "autostart", enabled))
            .map_err(db)?;
        Ok(pool_info_of(&PoolRecord {
            autostart: enabled,
            ..pool
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn pool_xml_is_parsed_and_the_target_normalized() {
        let def = parse_pool_xml(
            "<pool type='dir'><name>p1</name><uuid>c43c80d3-124b-485a-b2bb-5dd6b962967c</uuid>\
             <target><path>/srv/images/</path></target></pool>",
        )
        .unwrap();
        assert_eq!(def.name, "p1");
        assert_eq!(def.target, PathBuf::from("/srv/images"));
        assert!(def.uuid.is_some());
        let errors = [
            (
                "<pool type='logical'><name>p</name></pool>",
                ErrorKind::Unsupported,
            ),
            ("<pool><name>p</name></pool>", ErrorKind::InvalidXml),
            (
                "<pool type='dir'><name>p</name></pool>",
                ErrorKind::InvalidXml,
            ),
            (
                "<pool type='dir'><name>p</name><target><path>rel</path></target></pool>",
                ErrorKind::InvalidXml,
            ),
            (
                "<pool type='dir'><name>p</name><target><path>/a/../b</path></target></pool>",
                ErrorKind::InvalidXml,
            ),
            (
                "<pool type='dir'><name>a/b</name><target><path>/a</path></target></pool>",
                ErrorKind::InvalidName,
            ),
            ("<pool type='dir'", ErrorKind::InvalidXml),
            (
                "<pool type='dir'><name>..</name><target><path>/a</path></target></pool>",
                ErrorKind::InvalidName,
            ),
            (
                "<pool type='dir' foo='1'><name>p</name><target><path>/a</path></target></pool>",
                ErrorKind::Unsupported,
            ),
        ];
        for (xml, want) in errors {
            assert_eq!(parse_pool_xml(xml).unwrap_err().kind, want, "{xml}");
        }
    }

    #[test]
    fn pool_xml_output_escapes_and_parses_back() {
        let record = PoolRecord {
            uuid: Uuid::new_v4(),
            name: "a<b>&'c".to_string(),
            target: PathBuf::from("/tmp/x&y"),
            autostart: false,
            active: false,
        };
        let def = parse_pool_xml(&pool_xml_of(&record)).unwrap();
        assert_eq!(def.name, record.name);
        assert_eq!(def.uuid, Some(record.uuid));
        assert_eq!(def.target, record.target);
    }
}
