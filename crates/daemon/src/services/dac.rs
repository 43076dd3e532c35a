//! libvirt's DAC model for QEMU guests (docs/security.md, "QEMU (qemu engine)"): a sandboxed
//! QEMU runs as a user of its own, one id per running guest from `qemu_user_range` (the same
//! number as its gid), and the files it opens by name (`oxvirt_qemu::confine::guest_files`:
//! kernel, initrd, firmware, NVRAM, disks and backing images) are given to that user for the
//! run. Each file's owner before is recorded in the store first (`security_labels`), so it is
//! given back when the guest stops, crashes or fails to start, and after a daemon restart by
//! [`Dac::recover`]. What is handed to QEMU as a descriptor (a plugged disk, an overlay, a
//! saved state) needs no label.
//!
//! Choices (libvirt's, where it has one):
//! - a file QEMU only reads (kernel, initrd, read-only disks and CD-ROMs, backing images) is
//!   left alone when the guest's user may read it as it is (every user may read the guest kit's
//!   kernel): several guests read one file without taking it from each other; otherwise it is
//!   given to the guest, as one it writes is;
//! - a `<shareable/>` disk is never relabelled (libvirt leaves shared disks alone): its mode
//!   must let the guest's user read and write it, or the start is refused;
//! - a file another running guest's user holds is not taken from it: the start is refused;
//! - a file that cannot be given (a read-only file system) is used as it is if its mode lets
//!   the guest's user in, else the start is refused, naming the file and why, with nothing left
//!   relabelled;
//! - QEMU must reach each file: every directory above it must be searchable by the guest's
//!   user (directories are never relabelled).
//!
//! Access is judged from owner, group and mode bits (not ACLs), as the kernel judges a process
//! of that uid and gid without supplementary groups.

use std::collections::HashSet;
use std::ops::RangeInclusive;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use oxvirt_domain::Domain;
use oxvirt_host::ids::IdPool;
use uuid::Uuid;

use super::error::{db, DaemonError, DaemonResult, ErrorKind};
use crate::store::{self, SecurityLabel, Store};

/// Mode bits asked of a file or directory.
const READ: u32 = 0o4;
const WRITE: u32 = 0o2;
const SEARCH: u32 = 0o1;

/// The users of QEMU guests and their files' owners.
pub struct Dac {
    store: Arc<Store>,
    /// The ids of `qemu_user_range`; none with `--no-sandbox` (QEMU runs as root).
    users: Option<IdPool>,
}

impl Dac {
    pub fn new(store: Arc<Store>, users: Option<RangeInclusive<u32>>) -> Dac {
        Dac {
            store,
            users: users.map(IdPool::new),
        }
    }

    /// Whether guests' QEMUs run as unprivileged users of qemu_user_range (else as root,
    /// `--no-sandbox`).
    pub fn guests_unprivileged(&self) -> bool {
        self.users.is_some()
    }

    /// The security model `dominfo` shows: "dac", or "none" when guests run unconfined.
    pub fn model(&self) -> &'static str {
        if self.users.is_some() {
            "dac"
        } else {
            "none"
        }
    }

    /// The label of the running guest `uuid` as virsh shows DAC labels, "+UID:+GID".
    pub fn label(&self, uuid: &Uuid) -> Option<String> {
        match self.store.guest_user(uuid) {
            Ok(user) => user.map(|uid| format!("+{uid}:+{uid}")),
            Err(err) => {
                tracing::warn!(%uuid, "cannot read its user: {}", store::named(err));
                None
            }
        }
    }

    /// Before a start of `domain` (`uuid`, its run directory `run_dir`): a user of its own,
    /// and its files given to that user. `Ok(None)`: guests run as root (`--no-sandbox`).
    /// On an error nothing stays changed.
    pub fn give(&self, uuid: &Uuid, domain: &Domain, run_dir: &Path) -> DaemonResult<Option<u32>> {
        let Some(users) = &self.users else {
            return Ok(None);
        };
        let uid = users.take().ok_or_else(|| {
            DaemonError::new(
                ErrorKind::InvalidState,
                format!(
                    "cannot start domain '{}': every user id of qemu_user_range ({}-{}) is \
                     taken by a running guest (widen the range in oxvirtd.conf)",
                    domain.name,
                    users.range().start(),
                    users.range().end()
                ),
            )
        })?;
        if let Err(err) = self.store.set_guest_user(uuid, uid) {
            users.release(uid);
            return Err(db(err));
        }
        match self.give_files(uuid, domain, run_dir, uid) {
            Ok(()) => Ok(Some(uid)),
            Err(err) => {
                self.restore(uuid);
                Err(err)
            }
        }
    }

    fn give_files(
        &self,
        uuid: &Uuid,
        domain: &Domain,
        run_dir: &Path,
        uid: u32,
    ) -> DaemonResult<()> {
        let refuse = |message: String| {
            DaemonError::new(
                ErrorKind::InvalidState,
                format!("cannot start domain '{}': {message}", domain.name),
            )
        };
        // QEMU makes its sockets below its run directory (oxvirt_qemu::RunPaths::qemu_dir).
        if let Some((dir, meta)) = unsearchable_above(run_dir, uid) {
            return Err(refuse(format!(
                "its QEMU, running as user {uid}, cannot reach its run directory {}: {} is not \
                 searchable by that user ({}); give the state directory's parents search \
                 permission (chmod o+x)",
                run_dir.display(),
                dir.display(),
                describe(&meta)
            )));
        }
        let mut seen = HashSet::new();
        for file in oxvirt_qemu::confine::guest_files(domain) {
            let what = &file.what;
            let shown = file.path.display();
            let path = std::fs::canonicalize(&file.path)
                .map_err(|err| refuse(format!("{what} {shown}: {err}")))?;
            if !seen.insert(path.clone()) {
                continue;
            }
            let meta =
                std::fs::metadata(&path).map_err(|err| refuse(format!("{what} {shown}: {err}")))?;
            // Device nodes other than disks (an RNG source) are not the guest's to take.
            if !(meta.is_file() || meta.file_type().is_block_device()) {
                continue;
            }
            if let Some((dir, dir_meta)) = unsearchable_above(&path, uid) {
                return Err(refuse(format!(
                    "its QEMU, running as user {uid}, cannot reach {what} {shown}: directory {} \
                     is not searchable by that user ({})",
                    dir.display(),
                    describe(&dir_meta)
                )));
            }
            let need = if file.write { READ | WRITE } else { READ };
            let verb = if file.write { "read and write" } else { "read" };
            if file.shareable {
                if !may(&meta, uid, need) {
                    return Err(refuse(format!(
                        "{what} {shown} is <shareable/>, so it is not given to the guest's user \
                         {uid}, and as it is ({}) that user may not {verb} it",
                        describe(&meta)
                    )));
                }
                continue;
            }
            if !file.write && may(&meta, uid, READ) {
                continue;
            }
            if meta.uid() == uid && meta.gid() == uid {
                continue;
            }
            let label = SecurityLabel {
                path: path.clone(),
                uid: meta.uid(),
                gid: meta.gid(),
            };
            // Recorded before the file changes hands: a crash in between still restores it.
            if let Some(holder) = self.store.record_label(uuid, &label).map_err(db)? {
                return Err(refuse(format!(
                    "{what} {shown} is in use by another running guest ({holder}), whose user \
                     it was given to"
                )));
            }
            if let Err(err) = std::os::unix::fs::chown(&path, Some(uid), Some(uid)) {
                self.store.forget_label(&path).map_err(db)?;
                if may(&meta, uid, need) {
                    tracing::info!(
                        domain = %domain.name,
                        "{} stays as it is ({err}); user {uid} may {verb} it",
                        path.display()
                    );
                    continue;
                }
                return Err(refuse(format!(
                    "cannot give {what} {shown} to the guest's user {uid}: {err}; and as it is \
                     ({}) that user may not {verb} it",
                    describe(&meta)
                )));
            }
        }
        Ok(())
    }

    /// After the guest `uuid` stopped (or failed to start): its files get their owners back,
    /// and its user is free again. Files that went away meanwhile are skipped.
    pub fn restore(&self, uuid: &Uuid) {
        let labels = match self.store.labels_of(uuid) {
            Ok(labels) => labels,
            Err(err) => {
                tracing::error!(%uuid, "cannot read its files' owners: {}", store::named(err));
                return;
            }
        };
        for label in labels {
            match std::os::unix::fs::chown(&label.path, Some(label.uid), Some(label.gid)) {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => tracing::warn!(
                    %uuid,
                    "cannot give {} back to {}:{}: {err}",
                    label.path.display(),
                    label.uid,
                    label.gid
                ),
            }
        }
        self.release(uuid);
    }

    /// Forgets the guest's user and its files' records, the files left as they are; the user
    /// is free for another guest. Alone (not through [`Dac::restore`]): after the guest
    /// migrated away, its files are the destination's guest's now (shared storage).
    pub fn release(&self, uuid: &Uuid) {
        let user = self.store.guest_user(uuid).ok().flatten();
        if let Err(err) = self.store.forget_guest_user(uuid) {
            tracing::error!(%uuid, "cannot forget its user: {}", store::named(err));
            return;
        }
        if let (Some(users), Some(uid)) = (&self.users, user) {
            users.release(uid);
        }
    }

    /// After a daemon restart: the user of each guest in `running` stays taken; the files of
    /// every other guest with a user (it stopped while oxvirtd was down, or its start was cut
    /// short) get their owners back.
    pub fn recover(&self, running: &[Uuid]) -> DaemonResult<()> {
        for (uuid, uid) in self.store.guest_users().map_err(db)? {
            if running.contains(&uuid) {
                if let Some(users) = &self.users {
                    users.hold(uid);
                }
            } else {
                tracing::info!(%uuid, uid, "giving back the files of a guest that stopped");
                self.restore(&uuid);
            }
        }
        Ok(())
    }
}

/// Whether a process of `uid` (gid `uid`, no other groups) has `want` on what `meta`
/// describes, by its owner, group and mode.
fn may(meta: &std::fs::Metadata, uid: u32, want: u32) -> bool {
    let mode = meta.mode();
    let class = if meta.uid() == uid {
        mode >> 6
    } else if meta.gid() == uid {
        mode >> 3
    } else {
        mode
    };
    let bits = class & 0o7;
    bits & want == want
}

/// The first directory above `path` that `uid` may not search, with its metadata.
fn unsearchable_above(path: &Path, uid: u32) -> Option<(PathBuf, std::fs::Metadata)> {
    path.ancestors().skip(1).find_map(|dir| {
        let meta = std::fs::metadata(dir).ok()?;
        (!may(&meta, uid, SEARCH)).then(|| (dir.to_path_buf(), meta))
    })
}

/// "owner 0:0, mode 0600".
fn describe(meta: &std::fs::Metadata) -> String {
    format!(
        "owner {}:{}, mode {:04o}",
        meta.uid(),
        meta.gid(),
        meta.mode() & 0o7777
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, PermissionsExt::from_mode(mode)).unwrap();
    }

    fn owner(path: &Path) -> (u32, u32) {
        let meta = std::fs::metadata(path).unwrap();
        (meta.uid(), meta.gid())
    }

    fn file(path: &Path, mode: u32, owner: (u32, u32)) -> PathBuf {
        std::fs::write(path, b"image").unwrap();
        chmod(path, mode);
        std::os::unix::fs::chown(path, Some(owner.0), Some(owner.1)).unwrap();
        path.to_path_buf()
    }

    /// A guest booting `kernel` with `disks` (`<disk>` bodies after the source).
    fn domain(name: &str, kernel: &Path, disks: &[(&Path, &str)]) -> Domain {
        let mut devices = String::new();
        for (index, (path, extra)) in disks.iter().enumerate() {
            devices.push_str(&format!(
                "<disk type='file'><source file='{}'/><target dev='vd{}' bus='virtio'/>{extra}</disk>",
                path.display(),
                char::from(b'a' + index as u8)
            ));
        }
        oxvirt_domain::parse_domain_xml(&format!(
            "<domain type='qemu'><name>{name}</name><memory>131072</memory>\
             <os><type>hvm</type><kernel>{}</kernel></os><devices>{devices}</devices></domain>",
            kernel.display()
        ))
        .unwrap()
    }

    /// A directory every user may search, with a store, a run directory's path and a kernel
    /// every user may read.
    fn fixture() -> (tempfile::TempDir, Arc<Store>, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        chmod(dir.path(), 0o711);
        let store = Arc::new(Store::open(&dir.path().join("oxvirt.db")).unwrap());
        let run_dir = dir.path().join("run");
        let kernel = file(&dir.path().join("vmlinuz"), 0o644, (0, 0));
        (dir, store, run_dir, kernel)
    }

    #[test]
    fn a_guests_files_are_its_users_while_it_runs_and_get_their_owners_back() {
        let (dir, store, run_dir, kernel) = fixture();
        let disk = file(&dir.path().join("disk.raw"), 0o644, (1234, 1234));
        let locked = file(&dir.path().join("locked.raw"), 0o600, (0, 0));
        let shared = file(&dir.path().join("shared.raw"), 0o666, (0, 0));
        let dac = Dac::new(store.clone(), Some(5000..=5001));
        let first = domain(
            "first",
            &kernel,
            &[
                (&disk, ""),
                (&locked, "<readonly/>"),
                (&shared, "<shareable/>"),
            ],
        );
        let a = Uuid::new_v4();
        assert_eq!(dac.give(&a, &first, &run_dir).unwrap(), Some(5000));
        assert_eq!(owner(&disk), (5000, 5000));
        // Read-only, but its user could not read it as it was.
        assert_eq!(owner(&locked), (5000, 5000));
        // Every user reads the kernel; a shareable disk is never taken.
        assert_eq!(owner(&kernel), (0, 0));
        assert_eq!(owner(&shared), (0, 0));
        assert_eq!(dac.label(&a).as_deref(), Some("+5000:+5000"));

        // Another guest may not take a disk the first holds; it keeps nothing either.
        let b = Uuid::new_v4();
        let second = domain("second", &kernel, &[(&disk, "")]);
        let err = dac.give(&b, &second, &run_dir).unwrap_err();
        assert!(
            err.message
                .contains(&format!("disk vda {}", disk.display()))
                && err.message.contains("in use by another running guest"),
            "{err}"
        );
        assert_eq!(store.guest_user(&b).unwrap(), None);
        assert_eq!(owner(&disk), (5000, 5000));

        // A restarted daemon: the first guest still runs, so its user stays taken.
        let restarted = Dac::new(store.clone(), Some(5000..=5001));
        restarted.recover(&[a]).unwrap();
        let c = Uuid::new_v4();
        let third = domain("third", &kernel, &[]);
        assert_eq!(restarted.give(&c, &third, &run_dir).unwrap(), Some(5001));
        let err = restarted.give(&b, &third, &run_dir).unwrap_err();
        assert!(err.message.contains("qemu_user_range (5000-5001)"), "{err}");
        restarted.restore(&c);

        // It stopped while the daemon was down: the next start gives everything back.
        let again = Dac::new(store.clone(), Some(5000..=5001));
        again.recover(&[]).unwrap();
        assert_eq!(owner(&disk), (1234, 1234));
        assert_eq!(owner(&locked), (0, 0));
        assert_eq!(again.label(&a), None);
        assert!(store.guest_users().unwrap().is_empty());
    }

    #[test]
    fn files_its_user_cannot_reach_or_share_refuse_the_start_with_nothing_changed() {
        let (dir, store, run_dir, kernel) = fixture();
        let disk = file(&dir.path().join("disk.raw"), 0o644, (0, 0));
        let private = dir.path().join("private");
        std::fs::create_dir(&private).unwrap();
        chmod(&private, 0o700);
        let hidden = file(&private.join("hidden.raw"), 0o644, (0, 0));
        let shared = file(&dir.path().join("shared.raw"), 0o644, (0, 0));
        let dac = Dac::new(store.clone(), Some(5000..=5000));
        let uuid = Uuid::new_v4();
        for (disks, expected) in [
            (
                vec![(disk.as_path(), ""), (hidden.as_path(), "")],
                format!(
                    "cannot reach disk vdb {}: directory {} is not searchable by that user \
                     (owner 0:0, mode 0700)",
                    hidden.display(),
                    private.display()
                ),
            ),
            (
                vec![(disk.as_path(), ""), (shared.as_path(), "<shareable/>")],
                format!(
                    "disk vdb {} is <shareable/>, so it is not given to the guest's user 5000, \
                     and as it is (owner 0:0, mode 0644) that user may not read and write it",
                    shared.display()
                ),
            ),
        ] {
            let err = dac
                .give(&uuid, &domain("g", &kernel, &disks), &run_dir)
                .unwrap_err();
            assert!(err.message.contains(&expected), "{err}");
            // The first disk was given before the refusal, and is given back.
            assert_eq!(owner(&disk), (0, 0));
            assert_eq!(owner(&hidden), (0, 0));
            assert!(store.guest_users().unwrap().is_empty());
        }
        // The only id is free again.
        assert_eq!(
            dac.give(&uuid, &domain("g", &kernel, &[]), &run_dir)
                .unwrap(),
            Some(5000)
        );
        // Without a range (--no-sandbox) nobody's files change hands.
        let unconfined = Dac::new(store, None);
        assert_eq!(unconfined.model(), "none");
        assert_eq!(
            unconfined
                .give(
                    &Uuid::new_v4(),
                    &domain("h", &kernel, &[(&disk, "")]),
                    &run_dir
                )
                .unwrap(),
            None
        );
        assert_eq!(owner(&disk), (0, 0));
    }

    #[test]
    fn access_is_judged_by_the_class_the_user_falls_in() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"x").unwrap();
        let set = |mode| std::fs::set_permissions(&path, PermissionsExt::from_mode(mode)).unwrap();
        let meta = || std::fs::metadata(&path).unwrap();
        // Owned by root (these tests run as root): user 4242 is "other".
        set(0o640);
        assert!(!may(&meta(), 4242, READ));
        assert!(may(&meta(), 0, READ | WRITE));
        set(0o604);
        assert!(may(&meta(), 4242, READ));
        assert!(!may(&meta(), 4242, READ | WRITE));
        std::os::unix::fs::chown(&path, Some(4242), Some(4242)).unwrap();
        // The owner's bits decide for the owner, even when "other" has more.
        set(0o006);
        assert!(!may(&meta(), 4242, READ));
        set(0o600);
        assert!(may(&meta(), 4242, READ | WRITE));
        std::fs::set_permissions(dir.path(), PermissionsExt::from_mode(0o700)).unwrap();
        assert!(unsearchable_above(&path, 4242).is_some_and(|(d, _)| d == dir.path()));
        std::fs::set_permissions(dir.path(), PermissionsExt::from_mode(0o711)).unwrap();
        assert_eq!(
            unsearchable_above(&path, 4242).map(|(d, _)| d),
            // /tmp and / are searchable by all on these machines.
            None
        );
    }
}
