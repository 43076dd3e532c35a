//! What oxvirtd does, one service per resource, on top of the store and the engines:
//! [`domains`] (definitions and lifecycle, with a [`supervisor`] per running guest; [`display`]: a
//! running guest's displays, screenshots, keys, CD-ROM media and live definition; [`snapshots`]:
//! snapshot-create, -list, -revert, -delete; [`monitor`]: qemu-monitor-command; [`tuning`]:
//! vcpuinfo, vcpupin, emulatorpin and `<cputune>` at start; [`memory`]: setmem, setmaxmem,
//! dommemstat; [`disks`]: disk hotplug, domblkinfo, domblkstat, blkdeviotune; [`cgroups`]:
//! a guest's cgroups, schedinfo, memtune; [`events`]: the event bus of lifecycle and monitor
//! events),
//! [`saves`]: `save`, `restore` and managed saves, with the save image format; [`migration`]:
//! live migration to and from another oxvirtd (`migrate`, `domjobinfo`, `domjobabort`), its
//! jobs in memory in [`jobs`], a cluster guest's lock during it in [`migration_lock`];
//! [`cluster`]: this host as a member of a cluster on etcd (registration, host-list);
//! [`interfaces`] (a domain's NICs), [`hostdevs`] (passthrough), [`networks`], [`pools`], [`volumes`] and [`secrets`]. Each is a type of
//! its own; [`guests`] holds the running side of domains in memory; every failure is a
//! [`error::DaemonError`]. A service uses only the ones below it: domains use networks,
//! volumes and secrets, volumes use pools, interfaces use networks; all of them use guests and the store.

pub mod capabilities;
pub mod cgroups;
pub mod change;
pub mod cluster;
pub mod dac;
pub mod disks;
pub mod display;
pub mod domains;
pub mod error;
pub mod events;
pub mod guests;
pub mod hostdevs;
pub mod interfaces;
pub mod iothreads;
pub mod jobs;
pub mod memory;
pub mod migration;
pub mod migration_cpu;
pub mod migration_flags;
pub mod migration_lock;
mod migration_native;
pub mod migration_offline;
mod migration_storage;
pub mod migration_tcp;
pub mod migration_tunnel;
pub mod monitor;
pub mod networks;
pub mod pools;
pub mod saves;
pub mod secrets;
pub mod snapshots;
pub mod stats;
pub mod supervisor;
pub mod tuning;
pub mod users;
pub mod volumes;
mod xml;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use oxvirt_api::{VersionInfo, API_VERSION};

use crate::engine::Engine;
use crate::store::Store;
use domains::Domains;
use guests::Guests;
use interfaces::Interfaces;
use networks::Networks;
use pools::Pools;
use secrets::Secrets;
use volumes::Volumes;

/// Every service of the daemon, as the API routes reach them.
pub struct Services {
    pub store: Arc<Store>,
    engine: Arc<dyn Engine>,
    pub domains: Arc<Domains>,
    pub interfaces: Interfaces,
    pub networks: Arc<Networks>,
    pub pools: Arc<Pools>,
    pub secrets: Arc<Secrets>,
    pub volumes: Arc<Volumes>,
    /// Users and tokens of the remote API (users.rs).
    pub users: Arc<users::Users>,
    /// This host as a cluster member (cluster.rs), when `--cluster` is set.
    pub cluster: Arc<cluster::Cluster>,
    /// The host CPU description oxvirtd advertises (key host_cpu_file): its path and text;
    /// `None`: TCG's max CPU (capabilities.rs, `advertised_cpu`).
    host_cpu: Option<(PathBuf, String)>,
}

/// Where the services keep their files and what the daemon's settings give them.
pub struct ServicesConfig {
    pub state_dir: PathBuf,
    pub network_dir: PathBuf,
    /// Define the `default` NAT network when none exists.
    pub define_default_network: bool,
    /// The ids QEMU runs as (one per guest); `None`: `--no-sandbox`.
    pub qemu_users: Option<std::ops::RangeInclusive<u32>>,
    /// The cluster to join (`--cluster`), if any.
    pub cluster: Option<cluster::ClusterConfig>,
    /// The host CPU description to advertise (key host_cpu_file): its path and text.
    pub host_cpu: Option<(PathBuf, String)>,
    /// The ports incoming migrations from other hosts listen on (key migration_port_range).
    pub migration_ports: std::ops::RangeInclusive<u16>,
}

impl Services {
    /// Wires the services together (nothing starts yet: see [`Services::start`]).
    pub async fn new(
        store: Arc<Store>,
        engine: Arc<dyn Engine>,
        config: ServicesConfig,
    ) -> anyhow::Result<Arc<Services>> {
        let ServicesConfig {
            state_dir,
            network_dir,
            define_default_network,
            qemu_users,
            cluster,
            host_cpu,
            migration_ports,
        } = config;
        let guests = Arc::new(Guests::new(store.clone(), state_dir));
        let networks =
            Arc::new(Networks::new(store.clone(), network_dir, define_default_network).await?);
        let pools = Arc::new(Pools::new(store.clone()));
        let volumes = Arc::new(Volumes::new(store.clone(), pools.clone()));
        let secrets = Arc::new(Secrets::new(store.clone()));
        let domains = Domains::new(
            store.clone(),
            engine.clone(),
            guests.clone(),
            networks.clone(),
            volumes.clone(),
            secrets.clone(),
            Arc::new(dac::Dac::new(store.clone(), qemu_users)),
        );
        domains.migrations.set_ports(migration_ports);
        let interfaces = Interfaces::new(store.clone(), guests, networks.clone());
        let users = Arc::new(users::Users::new(store.clone()));
        let cluster =
            cluster::Cluster::new(cluster, domains.clone(), pools.clone(), engine.clone());
        Ok(Arc::new(Services {
            store,
            engine,
            domains,
            interfaces,
            networks,
            pools,
            secrets,
            users,
            volumes,
            cluster,
            host_cpu,
        }))
    }

    /// What the daemon does when it starts, in order: autostart pools (before domains, whose
    /// disks may be volumes), reattach to the guests that kept running, adopt or clean up the
    /// networks (before autostart domains, which may need them), and start the autostart
    /// domains in the background.
    pub async fn start(self: &Arc<Self>) -> anyhow::Result<()> {
        self.pools.start_pools()?;
        self.domains
            .recover()
            .await
            .context("reattaching to running guests")?;
        self.networks.start_networking().await;
        let domains = self.domains.clone();
        tokio::spawn(async move { domains.autostart().await });
        // After recovery, so the first record counts the guests that kept running.
        self.cluster.start();
        Ok(())
    }

    pub fn version(&self) -> VersionInfo {
        VersionInfo {
            daemon: env!("CARGO_PKG_VERSION").to_string(),
            api: API_VERSION,
            qemu: self.engine.version(),
        }
    }
}
