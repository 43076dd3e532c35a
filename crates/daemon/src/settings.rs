//! oxvirtd's settings: the configuration file's keys, each overridden by its flag, checked
//! once here so that a bad value stops oxvirtd (or fails `--check-config`) with a message
//! naming the key and where it was set.

use std::collections::HashMap;
use std::path::PathBuf;

use clap::Parser;

use crate::config::{ConfError, ConfFile, Origin, DEFAULT_CONFIG};
use crate::logging::{self, Format, LogError, LogSettings, Sink};
use crate::services::cluster::ClusterConfig;
use oxvirt_logfile::Rotation;

/// oxvirtd's flags: each configuration key, and the actions that are not keys
/// (`--config`, `--check-config`, `--restore-backup`).
#[derive(Debug, Parser)]
#[command(name = "oxvirtd", version, about = "The oxvirt daemon")]
pub struct Args {
    /// Configuration file (libvirtd.conf syntax; see docs/configuration.md). A missing default
    /// file means defaults; a missing file named here is an error. Flags override its keys.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Check the configuration file and flags, then exit (0 valid, 1 not) without starting.
    #[arg(long)]
    pub check_config: bool,
    /// Unix socket to serve the API on [key socket_path; default /run/oxvirt/oxvirtd.sock].
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// The API socket's permissions, octal [key socket_mode; default 0600].
    #[arg(long, value_name = "MODE")]
    pub socket_mode: Option<String>,
    /// Group owning the API socket [key socket_group; default: root's].
    #[arg(long, value_name = "GROUP")]
    pub socket_group: Option<String>,
    /// The most API connections open at once; one more is closed at once, with a log line
    /// (libvirtd's max_clients). Changed at run time with oxvirt admin server-clients-set
    /// [key max_clients; default 5000].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_clients: Option<u32>,
    /// Also serve the API over TLS on this TCP address, e.g. 0.0.0.0:16514; every request there
    /// needs a user's password or a token (see docs/remote.md) [key listen; default: none].
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<String>,
    /// The TLS certificate chain (PEM) for --listen; without it (and --tls-key) oxvirtd makes a
    /// self-signed one in STATE_DIR/tls on its first start [key tls_cert].
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert [key tls_key].
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Directory for the state database and the guests' run directories [key state_dir;
    /// default /var/lib/oxvirt].
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Level for every module no filter names: 1 debug, 2 info, 3 warning, 4 error (or
    /// debug, info, warn, error) [key log_level; default 2].
    #[arg(long)]
    pub log_level: Option<String>,
    /// Per-module levels, "LEVEL:NAME ..." (e.g. "3:qemu 1:daemon.engine") [key log_filters].
    #[arg(long, value_name = "FILTERS")]
    pub log_filters: Option<String>,
    /// Where the log goes, "LEVEL:stderr LEVEL:file:PATH LEVEL:syslog:IDENT" [key
    /// log_outputs; default "2:stderr"].
    #[arg(long, value_name = "OUTPUTS")]
    pub log_outputs: Option<String>,
    /// Rotate a log file once it would grow past this many bytes; 0 never [key log_max_size;
    /// default 2097152].
    #[arg(long, value_name = "BYTES")]
    pub log_max_size: Option<u64>,
    /// How many gzip-compressed rotated log files to keep [key log_max_backups; default 3].
    #[arg(long, value_name = "N")]
    pub log_max_backups: Option<u32>,
    /// Rotate each guest's logs (console.log, qemu.log, vmm.log) once they would grow past this
    /// many bytes; 0 never [key guest_log_max_size; default 2097152].
    #[arg(long, value_name = "BYTES")]
    pub guest_log_max_size: Option<u64>,
    /// How many gzip-compressed rotated files of each guest log to keep [key
    /// guest_log_max_backups; default 3].
    #[arg(long, value_name = "N")]
    pub guest_log_max_backups: Option<u32>,
    /// Log line format, text or json [key log_format; default text].
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// Do not define libvirt's `default` NAT network on the first start (test suites that run
    /// the daemon in the host's own network namespace use this) [key default_network = 0].
    #[arg(long, env = "OXVIRTD_NO_DEFAULT_NETWORK")]
    pub no_default_network: bool,
    /// UNSAFE: run every guest's engine process unconfined, with all of oxvirtd's rights and the
    /// whole host in reach: no seccomp sandbox, NoNewPrivs or Landlock for QEMU, no jail for
    /// oxvirt-vmm (namespaces, own root, own user, no new privileges, limits); see
    /// docs/security.md [key sandbox = 0].
    #[arg(long)]
    pub no_sandbox: bool,
    /// The user ids (and group ids, the same numbers) jailed oxvirt-vmm processes run as,
    /// "FIRST-LAST": each running native guest takes one [key native_user_range; default
    /// "3001000-3001999"].
    #[arg(long, value_name = "FIRST-LAST")]
    pub native_user_range: Option<String>,
    /// The user ids (and group ids, the same numbers) sandboxed QEMU processes run as,
    /// "FIRST-LAST": each running QEMU guest takes one, and its files are given to it while it
    /// runs [key qemu_user_range; default "3002000-3002999"].
    #[arg(long, value_name = "FIRST-LAST")]
    pub qemu_user_range: Option<String>,
    /// A libvirt <cpu> description (a model, a vendor and features, as `oxvirt capabilities`
    /// shows a host's CPU) that oxvirtd advertises as the CPU it provides: in capabilities,
    /// hypervisor-cpu-compare/-baseline and a migration's CPU check. Under TCG it describes the
    /// CPU, it does not change what guests run on (see docs/configuration.md) [key
    /// host_cpu_file; default: TCG's max CPU as QEMU reports it].
    #[arg(long, value_name = "FILE")]
    pub host_cpu_file: Option<PathBuf>,
    /// The TCP ports, "FIRST-LAST", an incoming migration from another host listens on (one
    /// for the stream, one for the copied disks' NBD connections, each closed once the source
    /// connected), on the address the source reached this host's --listen at (docs/migration.md)
    /// [key migration_port_range; default "49152-49215", libvirt's].
    #[arg(long, value_name = "FIRST-LAST")]
    pub migration_port_range: Option<String>,
    /// Directory for the networks' dnsmasq files and leases (default: the state directory's
    /// path with `-network` appended, e.g. /var/lib/oxvirt-network). dnsmasq drops its
    /// privileges, so this directory, unlike the state directory, must be reachable by others
    /// [key network_dir].
    #[arg(long)]
    pub network_dir: Option<PathBuf>,
    /// Seconds between backups of the state database while oxvirtd runs, each taken only if
    /// something changed since the last one; 0 keeps only the backups taken at start and at a
    /// clean stop. Backups go to STATE_DIR/backups (see docs/store.md) [key backup_interval;
    /// default 600].
    #[arg(long, value_name = "SECONDS")]
    pub backup_interval: Option<u64>,
    /// How many backups STATE_DIR/backups keeps (the oldest are deleted first) [key
    /// backup_keep; default 7].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub backup_keep: Option<u64>,
    /// Install a backup as the state database and exit: FILE, or without it the newest backup
    /// in STATE_DIR/backups. Refused while an oxvirtd runs on the state directory. The database
    /// it replaces is moved aside (oxvirt.db.broken-TIME), never deleted.
    #[arg(long, value_name = "FILE", num_args = 0..=1)]
    pub restore_backup: Option<Option<PathBuf>>,
    /// Join the cluster whose state is in these etcd endpoints, "etcd=http://HOST:2379[,...]"
    /// (see docs/cluster.md); etcd being down does not stop oxvirtd [key cluster; default: none].
    #[arg(long, value_name = "etcd=URL[,URL]")]
    pub cluster: Option<String>,
    /// This host's name in the cluster, unique among its members [key host_name; default: the
    /// system's host name].
    #[arg(long, value_name = "NAME")]
    pub host_name: Option<String>,
}

#[derive(Debug)]
pub struct Settings {
    pub socket: PathBuf,
    pub socket_mode: u32,
    pub socket_gid: Option<u32>,
    /// The most API connections open at once (src/clients.rs).
    pub max_clients: u32,
    /// Where the API is also served over TLS (src/remote.rs), with its certificate and key
    /// files, or `None` for the generated ones.
    pub listen: Option<std::net::SocketAddr>,
    pub tls_files: Option<(PathBuf, PathBuf)>,
    pub state_dir: PathBuf,
    pub network_dir: Option<PathBuf>,
    pub default_network: bool,
    /// Whether guests' engine processes run confined (false: `--no-sandbox`).
    pub sandbox: bool,
    /// The ids jailed oxvirt-vmm processes take (key native_user_range).
    pub native_users: std::ops::RangeInclusive<u32>,
    /// The ids sandboxed QEMU processes take (key qemu_user_range).
    pub qemu_users: std::ops::RangeInclusive<u32>,
    /// The ports incoming migrations from other hosts listen on (key migration_port_range).
    pub migration_ports: std::ops::RangeInclusive<u16>,
    pub backup_interval: u64,
    pub backup_keep: u64,
    /// The host CPU description to advertise (key host_cpu_file), read at the start
    /// ([`Settings::read_host_cpu`]) as the TLS files are.
    pub host_cpu_file: Option<PathBuf>,
    pub log: LogSettings,
    /// How each guest's logs rotate (the log writer's, and the native console relay's).
    pub guest_logs: Rotation,
    /// `--cluster` and `--host-name` (services/cluster.rs), if this host is a member.
    pub cluster: Option<ClusterConfig>,
    /// Where each key's value came from (keys at their default are absent).
    origins: HashMap<&'static str, Origin>,
}

/// Looks a key up: the flag if given, else the file, else nothing.
struct Merge<'a> {
    file: Option<&'a ConfFile>,
    origins: HashMap<&'static str, Origin>,
}

impl Merge<'_> {
    fn string(
        &mut self,
        key: &'static str,
        flag: &'static str,
        value: Option<String>,
    ) -> Result<Option<String>, ConfError> {
        if let Some(value) = value {
            self.origins.insert(key, Origin::Flag(flag));
            return Ok(Some(value));
        }
        let Some(file) = self.file else {
            return Ok(None);
        };
        Ok(file.string(key)?.map(|(value, origin)| {
            self.origins.insert(key, origin);
            value
        }))
    }

    fn integer(
        &mut self,
        key: &'static str,
        flag: &'static str,
        value: Option<u64>,
    ) -> Result<Option<u64>, ConfError> {
        if let Some(value) = value {
            self.origins.insert(key, Origin::Flag(flag));
            return Ok(Some(value));
        }
        let Some(file) = self.file else {
            return Ok(None);
        };
        Ok(file.integer(key)?.map(|(value, origin)| {
            self.origins.insert(key, origin);
            value
        }))
    }

    /// A range of user ids ("FIRST-LAST"), `default` when not set.
    fn id_range(
        &mut self,
        key: &'static str,
        flag: &'static str,
        value: Option<String>,
        default: std::ops::RangeInclusive<u32>,
    ) -> Result<std::ops::RangeInclusive<u32>, ConfError> {
        match self.string(key, flag, value)? {
            None => Ok(default),
            Some(text) => parse_id_range(&text).map_err(|e| self.bad(key, e)),
        }
    }

    fn origin(&self, key: &'static str) -> Origin {
        self.origins.get(key).cloned().unwrap_or(Origin::Default)
    }

    /// An error about `key`'s value, naming where it was set.
    fn bad(&self, key: &'static str, message: impl std::fmt::Display) -> ConfError {
        ConfError::new(self.origin(key), format!("key '{key}': {message}"))
    }
}

impl Settings {
    pub fn resolve(args: &Args) -> Result<Settings, ConfError> {
        let file = match &args.config {
            Some(path) => ConfFile::load(path, true)?,
            None => ConfFile::load(std::path::Path::new(DEFAULT_CONFIG), false)?,
        };
        let mut m = Merge {
            file: file.as_ref(),
            origins: HashMap::new(),
        };
        let path = |s: Option<String>| s.map(PathBuf::from);
        let socket = path(m.string(
            "socket_path",
            "--socket",
            args.socket.as_ref().map(|p| p.display().to_string()),
        )?)
        .unwrap_or_else(|| PathBuf::from(oxvirt_api::DEFAULT_SOCKET));
        let socket_mode =
            match m.string("socket_mode", "--socket-mode", args.socket_mode.clone())? {
                None => 0o600,
                Some(text) => u32::from_str_radix(&text, 8)
                    .ok()
                    .filter(|mode| *mode <= 0o777)
                    .ok_or_else(|| {
                        m.bad(
                            "socket_mode",
                            format!("'{text}' is not an octal mode like \"0660\""),
                        )
                    })?,
            };
        let socket_gid =
            match m.string("socket_group", "--socket-group", args.socket_group.clone())? {
                None => None,
                Some(name) => Some(
                    group_id(&name)
                        .ok_or_else(|| m.bad("socket_group", format!("no group '{name}'")))?,
                ),
            };
        let max_clients = match m.integer(
            "max_clients",
            "--max-clients",
            args.max_clients.map(u64::from),
        )? {
            None => crate::clients::DEFAULT_MAX_CLIENTS,
            Some(0) => return Err(m.bad("max_clients", "must be at least 1")),
            Some(n) => u32::try_from(n).map_err(|_| m.bad("max_clients", "too large"))?,
        };
        let listen = match m.string("listen", "--listen", args.listen.clone())? {
            None => None,
            Some(text) => Some(text.parse::<std::net::SocketAddr>().map_err(|_| {
                m.bad(
                    "listen",
                    format!("'{text}' is not an address and port like \"0.0.0.0:16514\""),
                )
            })?),
        };
        let tls_cert = path(m.string(
            "tls_cert",
            "--tls-cert",
            args.tls_cert.as_ref().map(|p| p.display().to_string()),
        )?);
        let tls_key = path(m.string(
            "tls_key",
            "--tls-key",
            args.tls_key.as_ref().map(|p| p.display().to_string()),
        )?);
        let tls_files = match (tls_cert, tls_key) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some((cert, key)),
            (Some(_), None) => return Err(m.bad("tls_cert", "is given without tls_key")),
            (None, Some(_)) => return Err(m.bad("tls_key", "is given without tls_cert")),
        };
        let state_dir = path(m.string(
            "state_dir",
            "--state-dir",
            args.state_dir.as_ref().map(|p| p.display().to_string()),
        )?)
        .unwrap_or_else(|| PathBuf::from("/var/lib/oxvirt"));
        let network_dir = path(m.string(
            "network_dir",
            "--network-dir",
            args.network_dir.as_ref().map(|p| p.display().to_string()),
        )?);
        let default_network = match m.integer(
            "default_network",
            "--no-default-network",
            args.no_default_network.then_some(0),
        )? {
            None | Some(1) => true,
            Some(0) => false,
            Some(n) => return Err(m.bad("default_network", format!("{n} is neither 0 nor 1"))),
        };
        let sandbox = match m.integer("sandbox", "--no-sandbox", args.no_sandbox.then_some(0))? {
            None | Some(1) => true,
            Some(0) => false,
            Some(n) => return Err(m.bad("sandbox", format!("{n} is neither 0 nor 1"))),
        };
        let native_users = m.id_range(
            "native_user_range",
            "--native-user-range",
            args.native_user_range.clone(),
            DEFAULT_NATIVE_USERS,
        )?;
        let qemu_users = m.id_range(
            "qemu_user_range",
            "--qemu-user-range",
            args.qemu_user_range.clone(),
            DEFAULT_QEMU_USERS,
        )?;
        // A QEMU and a VMM sharing an id could reach each other's files and processes.
        if qemu_users.start() <= native_users.end() && native_users.start() <= qemu_users.end() {
            return Err(m.bad(
                "qemu_user_range",
                format!(
                    "{}-{} overlaps native_user_range ({}-{}): each engine needs ids of its own",
                    qemu_users.start(),
                    qemu_users.end(),
                    native_users.start(),
                    native_users.end()
                ),
            ));
        }
        let migration_ports = match m.string(
            "migration_port_range",
            "--migration-port-range",
            args.migration_port_range.clone(),
        )? {
            None => crate::services::migration_tcp::DEFAULT_PORTS,
            Some(text) => parse_port_range(&text).map_err(|e| m.bad("migration_port_range", e))?,
        };
        let host_cpu_file = path(m.string(
            "host_cpu_file",
            "--host-cpu-file",
            args.host_cpu_file.as_ref().map(|p| p.display().to_string()),
        )?);
        let backup_interval = m
            .integer("backup_interval", "--backup-interval", args.backup_interval)?
            .unwrap_or(600);
        let backup_keep = m
            .integer("backup_keep", "--backup-keep", args.backup_keep)?
            .unwrap_or(7);
        if backup_keep == 0 {
            return Err(m.bad("backup_keep", "must be at least 1"));
        }
        // log_level is an integer in the file (as in libvirtd.conf), a word or number as a flag.
        let level = match &args.log_level {
            Some(text) => {
                m.origins.insert("log_level", Origin::Flag("--log-level"));
                logging::parse_level(text).map_err(|e| m.bad("log_level", e))?
            }
            None => match m.integer("log_level", "--log-level", None)? {
                None => logging::DEFAULT_LEVEL,
                Some(n) => {
                    logging::parse_level(&n.to_string()).map_err(|e| m.bad("log_level", e))?
                }
            },
        };
        let filters = m
            .string("log_filters", "--log-filters", args.log_filters.clone())?
            .unwrap_or_default();
        logging::filter_directives(level, &filters).map_err(|e| m.bad("log_filters", e))?;
        let outputs = m
            .string("log_outputs", "--log-outputs", args.log_outputs.clone())?
            // As libvirtd: without outputs, stderr at log_level.
            .unwrap_or_else(|| format!("{level}:stderr"));
        logging::parse_outputs(&outputs).map_err(|e| m.bad("log_outputs", e))?;
        let max_size = m
            .integer("log_max_size", "--log-max-size", args.log_max_size)?
            .unwrap_or(logging::DEFAULT_MAX_SIZE);
        let max_backups = m
            .integer(
                "log_max_backups",
                "--log-max-backups",
                args.log_max_backups.map(u64::from),
            )?
            .map(|n| u32::try_from(n).map_err(|_| m.bad("log_max_backups", "too large")))
            .transpose()?
            .unwrap_or(logging::DEFAULT_MAX_BACKUPS);
        let guest_logs = Rotation {
            max_size: m
                .integer(
                    "guest_log_max_size",
                    "--guest-log-max-size",
                    args.guest_log_max_size,
                )?
                .unwrap_or(logging::DEFAULT_MAX_SIZE),
            max_backups: m
                .integer(
                    "guest_log_max_backups",
                    "--guest-log-max-backups",
                    args.guest_log_max_backups.map(u64::from),
                )?
                .map(|n| u32::try_from(n).map_err(|_| m.bad("guest_log_max_backups", "too large")))
                .transpose()?
                .unwrap_or(logging::DEFAULT_MAX_BACKUPS),
        };
        let format = match m.string("log_format", "--log-format", args.log_format.clone())? {
            None => Format::Text,
            Some(text) => Format::parse(&text).map_err(|e| m.bad("log_format", e))?,
        };
        let host_name = m.string("host_name", "--host-name", args.host_name.clone())?;
        let cluster = match m.string("cluster", "--cluster", args.cluster.clone())? {
            None => {
                if host_name.is_some() {
                    return Err(m.bad("host_name", "is given without cluster"));
                }
                None
            }
            Some(spec) => {
                let endpoints =
                    oxvirt_cluster::parse_spec(&spec).map_err(|e| m.bad("cluster", e))?;
                let host_name = match host_name {
                    Some(name) => name,
                    None => system_host_name()
                        .ok_or_else(|| m.bad("host_name", "is not set and the system has none"))?,
                };
                oxvirt_cluster::check_host_name(&host_name).map_err(|e| m.bad("host_name", e))?;
                Some(ClusterConfig {
                    endpoints,
                    host_name,
                    api_address: listen.map(|address| address.to_string()),
                })
            }
        };
        Ok(Settings {
            cluster,
            socket,
            socket_mode,
            socket_gid,
            max_clients,
            listen,
            tls_files,
            state_dir,
            network_dir,
            default_network,
            sandbox,
            native_users,
            qemu_users,
            migration_ports,
            backup_interval,
            backup_keep,
            host_cpu_file,
            log: LogSettings {
                level,
                filters,
                outputs,
                max_size,
                max_backups,
                format,
            },
            guest_logs,
            origins: m.origins,
        })
    }

    fn bad(&self, key: &'static str, message: impl std::fmt::Display) -> ConfError {
        let origin = self.origins.get(key).cloned().unwrap_or(Origin::Default);
        ConfError::new(origin, format!("key '{key}': {message}"))
    }

    /// `--check-config`: what starting would check, without creating or opening anything.
    pub fn check(&self) -> Result<(), ConfError> {
        self.read_host_cpu()?;
        for output in
            logging::parse_outputs(&self.log.outputs).map_err(|e| self.bad("log_outputs", e))?
        {
            match output.sink {
                Sink::File(path) => {
                    logging::check_writable(&path).map_err(|e| self.bad("log_outputs", e))?
                }
                Sink::Journald => {
                    logging::check_journald().map_err(|e| self.bad("log_outputs", e))?
                }
                Sink::Stderr | Sink::Syslog(_) => {}
            }
        }
        Ok(())
    }

    /// The host CPU description of key host_cpu_file (its path and text), if one is set; an
    /// unreadable file names the key and where it was set.
    pub fn read_host_cpu(&self) -> Result<Option<(PathBuf, String)>, ConfError> {
        let Some(file) = &self.host_cpu_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(file).map_err(|err| {
            self.bad(
                "host_cpu_file",
                format!("cannot read {}: {err}", file.display()),
            )
        })?;
        Ok(Some((file.clone(), text)))
    }

    /// Installs the log; an output that cannot be opened names its key and line.
    pub fn init_logging(&self) -> Result<(), ConfError> {
        logging::init(&self.log).map_err(|err| match err {
            LogError::Filters(e) => self.bad("log_filters", e),
            LogError::Outputs(e) => self.bad("log_outputs", e),
        })
    }
}

/// The ids jailed VMMs take when the configuration names none: above the 16-bit ids
/// distributions give to accounts and the subordinate ranges (/etc/subuid) of a host's first
/// users, and beside QEMU's range; a host that uses them otherwise moves the range.
pub const DEFAULT_NATIVE_USERS: std::ops::RangeInclusive<u32> = 3_001_000..=3_001_999;

/// The ids sandboxed QEMUs take when the configuration names none: beside the VMMs' range.
pub const DEFAULT_QEMU_USERS: std::ops::RangeInclusive<u32> = 3_002_000..=3_002_999;

/// "FIRST-LAST", none of the ids root's (0) or the "no id" value (2^32-1).
fn parse_id_range(text: &str) -> Result<std::ops::RangeInclusive<u32>, String> {
    let bad = || format!("'{text}' is not a range of ids like \"3001000-3001999\"");
    let (first, last) = text.split_once('-').ok_or_else(bad)?;
    let first: u32 = first.trim().parse().map_err(|_| bad())?;
    let last: u32 = last.trim().parse().map_err(|_| bad())?;
    if first == 0 || last < first || last == u32::MAX {
        return Err(format!(
            "'{text}' must run from a first id to a last one not below it, neither 0 (root) nor {}",
            u32::MAX
        ));
    }
    Ok(first..=last)
}

/// "FIRST-LAST" TCP ports, 1 to 65535.
fn parse_port_range(text: &str) -> Result<std::ops::RangeInclusive<u16>, String> {
    let bad = || format!("'{text}' is not a range of ports like \"49152-49215\" (1 to 65535)");
    let (first, last) = text.split_once('-').ok_or_else(bad)?;
    let first: u16 = first.trim().parse().map_err(|_| bad())?;
    let last: u16 = last.trim().parse().map_err(|_| bad())?;
    if first == 0 || last < first {
        return Err(bad());
    }
    Ok(first..=last)
}

/// The system's host name (uname's node name).
fn system_host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
}

/// A group's id by name (or a numeric id as is).
fn group_id(name: &str) -> Option<u32> {
    if let Ok(gid) = name.parse::<u32>() {
        return Some(gid);
    }
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: getgrnam reads a NUL-terminated name; the result, if any, points to static
    // storage that is read at once (oxvirtd resolves groups only at start, single-threaded).
    let group = unsafe { libc::getgrnam(c.as_ptr()) };
    if group.is_null() {
        return None;
    }
    // SAFETY: non-null, as checked.
    Some(unsafe { (*group).gr_gid })
}
