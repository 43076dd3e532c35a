//! Secrets in oxvirtd: libvirt's secret objects (`secret-define`, `secret-set-value`, ...), and
//! handing a network disk's secret to its engine at start.
//!
//! Persistent secrets live in the store's `secrets` table (definition and value); ephemeral ones
//! (`ephemeral='yes'`) only in this service's memory, gone when the daemon stops, as in libvirt.
//! A usage (`ceph client.admin`, `iscsi TARGET`, ...) names at most one secret. A value is never
//! logged, never put on an engine's command line, and never read back for a `private='yes'`
//! secret.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use oxvirt_api::{SecretInfo, SecretValue};
use oxvirt_domain::secret::{SecretDef, MAX_SECRET_VALUE_BYTES};
use oxvirt_domain::{Domain, SecretLookup};
use uuid::Uuid;

use super::error::{
    bad_request, db, definition_error, invalid_state, not_found, DaemonError, DaemonResult,
    ErrorKind,
};
use crate::engine::DiskSecret;
use crate::store::{self, SecretRecord, Store};

/// One secret as the service sees it, wherever it is kept.
#[derive(Clone)]
struct Secret {
    def: SecretDef,
    uuid: Uuid,
    value: Option<Vec<u8>>,
}

impl Secret {
    fn info(&self) -> SecretInfo {
        SecretInfo {
            uuid: self.uuid.to_string(),
            usage_type: self.def.usage.as_ref().map(|u| u.kind().to_string()),
            usage_id: self.def.usage.as_ref().map(|u| u.id().to_string()),
            ephemeral: self.def.ephemeral,
            private: self.def.private,
            has_value: self.value.is_some(),
        }
    }

    fn usage_key(&self) -> Option<String> {
        self.def
            .usage
            .as_ref()
            .map(|u| format!("{} {}", u.kind(), u.id()))
    }
}

pub struct Secrets {
    store: Arc<Store>,
    ephemeral: Mutex<BTreeMap<Uuid, Secret>>,
}

impl Secrets {
    pub fn new(store: Arc<Store>) -> Secrets {
        Secrets {
            store,
            ephemeral: Mutex::new(BTreeMap::new()),
        }
    }

    fn ephemeral(&self) -> std::sync::MutexGuard<'_, BTreeMap<Uuid, Secret>> {
        oxvirt_host::lock(&self.ephemeral)
    }

    fn from_record(record: SecretRecord) -> DaemonResult<Secret> {
        let def = SecretDef::from_xml(&record.xml).map_err(|e| {
            DaemonError::new(
                ErrorKind::Internal,
                format!("stored secret {} no longer parses: {e}", record.uuid),
            )
        })?;
        Ok(Secret {
            def,
            uuid: record.uuid,
            value: record.value,
        })
    }

    fn all(&self) -> DaemonResult<Vec<Secret>> {
        let mut all = self
            .store
            .transaction(store::list_secrets)
            .map_err(db)?
            .into_iter()
            .map(Self::from_record)
            .collect::<DaemonResult<Vec<_>>>()?;
        all.extend(self.ephemeral().values().cloned());
        all.sort_by_key(|s| s.uuid);
        Ok(all)
    }

    fn find(&self, id: &str) -> DaemonResult<Secret> {
        let uuid = Uuid::parse_str(id.trim())
            .map_err(|_| bad_request(format!("'{id}' is not a secret UUID")))?;
        if let Some(secret) = self.ephemeral().get(&uuid) {
            return Ok(secret.clone());
        }
        let record = self
            .store
            .transaction(|tx| store::secret_by(tx, "uuid", &uuid.to_string()))
            .map_err(db)?
            .ok_or_else(|| not_found(format!("no secret with UUID '{uuid}'")))?;
        Self::from_record(record)
    }

    pub fn list(&self) -> DaemonResult<Vec<SecretInfo>> {
        Ok(self.all()?.iter().map(Secret::info).collect())
    }

    pub fn info(&self, id: &str) -> DaemonResult<SecretInfo> {
        Ok(self.find(id)?.info())
    }

    pub fn xml(&self, id: &str) -> DaemonResult<String> {
        Ok(self.find(id)?.def.to_xml())
    }

    /// `secret-define`: a new secret, or a new definition of the one with the same UUID (which
    /// keeps its value). A usage another secret has is refused, naming that secret.
    pub fn define(&self, xml: &str) -> DaemonResult<SecretInfo> {
        let mut def = SecretDef::from_xml(xml).map_err(definition_error)?;
        let uuid = *def.uuid.get_or_insert_with(Uuid::new_v4);
        let existing = self.all()?;
        let previous = existing.iter().find(|s| s.uuid == uuid);
        if let Some(previous) = previous {
            if previous.def.ephemeral != def.ephemeral || previous.def.private != def.private {
                return Err(invalid_state(format!(
                    "secret {uuid} exists: its ephemeral and private flags cannot change"
                )));
            }
        }
        let secret = Secret {
            value: previous.and_then(|p| p.value.clone()),
            def,
            uuid,
        };
        let usage = secret.usage_key();
        if let Some(other) = existing
            .iter()
            .find(|s| s.uuid != uuid && s.usage_key().is_some() && s.usage_key() == usage)
        {
            return Err(DaemonError::new(
                ErrorKind::AlreadyExists,
                format!(
                    "a secret with UUID {} is already defined for use with {}",
                    other.uuid,
                    usage.unwrap_or_default()
                ),
            ));
        }
        let xml = secret.def.to_xml();
        if secret.def.ephemeral {
            self.ephemeral().insert(uuid, secret.clone());
        } else {
            self.store
                .transaction(|tx| store::put_secret_definition(tx, &uuid, usage.as_deref(), &xml))
                .map_err(db)?;
        }
        Ok(secret.info())
    }

    pub fn undefine(&self, id: &str) -> DaemonResult<SecretInfo> {
        let secret = self.find(id)?;
        if self.ephemeral().remove(&secret.uuid).is_none() {
            self.store
                .transaction(|tx| store::delete_secret(tx, &secret.uuid))
                .map_err(db)?;
        }
        Ok(secret.info())
    }

    /// `secret-set-value`, from its base64 form.
    pub fn set_value(&self, id: &str, value: &SecretValue) -> DaemonResult<SecretInfo> {
        let mut secret = self.find(id)?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(value.base64.trim())
            .map_err(|e| bad_request(format!("the secret value is not base64: {e}")))?;
        if bytes.len() > MAX_SECRET_VALUE_BYTES {
            return Err(bad_request(format!(
                "the secret value is {} bytes; at most {MAX_SECRET_VALUE_BYTES} are stored",
                bytes.len()
            )));
        }
        if secret.def.ephemeral {
            secret.value = Some(bytes);
            self.ephemeral().insert(secret.uuid, secret.clone());
        } else {
            self.store
                .transaction(|tx| store::set_secret_value(tx, &secret.uuid, &bytes))
                .map_err(db)?;
            secret.value = Some(bytes);
        }
        Ok(secret.info())
    }

    /// `secret-get-value`: refused for a private secret.
    pub fn value(&self, id: &str) -> DaemonResult<SecretValue> {
        let secret = self.find(id)?;
        if secret.def.private {
            return Err(invalid_state(format!(
                "secret {} is private: its value cannot be read back",
                secret.uuid
            )));
        }
        let value = secret
            .value
            .ok_or_else(|| not_found(format!("secret {} has no value", secret.uuid)))?;
        Ok(SecretValue {
            base64: base64::engine::general_purpose::STANDARD.encode(value),
        })
    }

    /// The secret of every network disk of `domain` that has `<auth>`, found by UUID or by
    /// usage, and of the type the disk names. Refused, naming the disk: a missing secret, one
    /// of another type, one without a value.
    pub fn disk_secrets(&self, domain: &Domain) -> DaemonResult<Vec<DiskSecret>> {
        let mut found = Vec::new();
        if domain.devices.disks.iter().all(|d| d.auth.is_none()) {
            return Ok(found);
        }
        // Read once: every disk's secret is looked up in the same list.
        let all = self.all()?;
        for disk in &domain.devices.disks {
            let Some(auth) = &disk.auth else { continue };
            let dev = &disk.target.dev;
            let fail = |message: String| {
                DaemonError::new(
                    ErrorKind::InvalidState,
                    format!(
                        "cannot start domain '{}': disk '{dev}': {message}",
                        domain.name
                    ),
                )
            };
            let wanted = auth.secret_type.as_str();
            let secret = match &auth.secret {
                SecretLookup::Uuid(uuid) => all
                    .iter()
                    .find(|s| s.uuid == *uuid)
                    .ok_or_else(|| fail(format!("no secret with UUID '{uuid}'")))?,
                SecretLookup::Usage(usage) => all
                    .iter()
                    .find(|s| {
                        s.def
                            .usage
                            .as_ref()
                            .is_some_and(|u| u.kind() == wanted && u.id() == usage)
                    })
                    .ok_or_else(|| fail(format!("no {wanted} secret with usage '{usage}'")))?,
            };
            let kind = secret.def.usage.as_ref().map(|u| u.kind());
            if kind != Some(wanted) {
                return Err(fail(format!(
                    "secret {} is not of usage type '{wanted}'",
                    secret.uuid
                )));
            }
            let value = secret
                .value
                .clone()
                .ok_or_else(|| fail(format!("secret {} has no value", secret.uuid)))?;
            found.push(DiskSecret {
                dev: dev.clone(),
                value,
            });
        }
        Ok(found)
    }
}
