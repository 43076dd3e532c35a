//! Live migration to another oxvirtd: `migrate`, `domjobinfo`, `domjobabort`, with virsh's
//! arguments and messages (docs/migration.md).

use std::io::Write;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use oxvirt_api::remote::{Endpoint, Trust};
use oxvirt_api::ssh::SSH_SCHEME;
use oxvirt_api::{
    Client, CopyStorage, JobInfo, MigrateRequest, MigrationSettings, RemoteDestination,
    SshDestination,
};

use crate::commands::block_on;

/// Another oxvirtd on this host, by its API socket.
const UNIX_SCHEME: &str = "oxvirt+unix://";
/// Another host's oxvirtd, by its TLS API (docs/remote.md).
const HTTPS_SCHEME: &str = "oxvirt+https://";
/// How often `--verbose` asks for the job's progress.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);

#[derive(Subcommand, Debug)]
pub enum MigrateCommand {
    /// Move a running domain to another oxvirtd (DEST_URI `oxvirt+unix:///PATH/TO/SOCKET` on
    /// this host, `oxvirt+https://HOST:PORT`, another host's TLS API, with --dest-token or
    /// --dest-user, or `oxvirt+ssh://[USER@]HOST[:PORT][/SOCKET][?keyfile=FILE&known_hosts=FILE]`,
    /// its socket through ssh, always tunnelled), its disks on storage both reach at the same path or copied
    /// (--copy-storage-all|inc). With --tunnelled the stream goes through a connection to the
    /// destination's API. On any failure the domain goes on running here (with --postcopy: until
    /// the switch to post-copy, see migrate-postcopy). With --offline only its definition moves
    /// (a shut-off domain too).
    Migrate {
        /// Domain name or UUID.
        domain: String,
        /// The destination oxvirtd: `oxvirt+unix:///PATH/TO/ITS/SOCKET`,
        /// `oxvirt+https://HOST:PORT` or `oxvirt+ssh://[USER@]HOST[:PORT][/PATH/TO/ITS/SOCKET]`.
        dest_uri: String,
        #[command(flatten)]
        dest: DestArgs,
        /// The guest runs while its memory is copied (else it is paused until it runs there).
        #[arg(long)]
        live: bool,
        /// Keep the definition on the destination (always so: oxvirt has no transient domains).
        #[arg(long)]
        persistent: bool,
        /// Undefine the domain here once it runs on the destination.
        #[arg(long)]
        undefinesource: bool,
        /// Move only the definition: the destination defines the domain, nothing starts there
        /// or stops here (a shut-off domain moves too). Needs --persistent, as in virsh.
        #[arg(long, conflicts_with = "live", requires = "persistent")]
        offline: bool,
        /// Slow the guest's vCPUs down while its memory changes faster than it is sent, so the
        /// migration converges (QEMU's auto-converge).
        #[arg(long, conflicts_with = "offline")]
        auto_converge: bool,
        /// Send pages that changed again as differences (QEMU's xbzrle).
        #[arg(long, conflicts_with = "offline")]
        compressed: bool,
        /// After this many seconds of live migration, make it converge: pause the guest (it runs
        /// again on the destination; --timeout-suspend, the default) or switch to post-copy
        /// (--timeout-postcopy).
        #[arg(long, value_name = "SECONDS", requires = "live", value_parser = clap::value_parser!(u64).range(1..))]
        timeout: Option<u64>,
        /// The action at --timeout: suspend the guest (virsh's default).
        #[arg(long, requires = "timeout", conflicts_with = "timeout_postcopy")]
        timeout_suspend: bool,
        /// The action at --timeout: switch to post-copy (needs --postcopy).
        #[arg(long, requires_all = ["timeout", "postcopy"])]
        timeout_postcopy: bool,
        /// Allow switching to post-copy (migrate-postcopy, --timeout-postcopy,
        /// --postcopy-after-precopy): the guest then runs on the destination while the rest of
        /// its memory comes from here; a failure after the switch leaves it paused on both
        /// hosts. The destination's QEMU needs userfaultfd (docs/migration.md).
        #[arg(long, requires = "live")]
        postcopy: bool,
        /// Switch to post-copy once the first pass over the memory ended.
        #[arg(long, requires = "postcopy")]
        postcopy_after_precopy: bool,
        /// Bandwidth limit of the migration stream, MiB/s.
        #[arg(long, value_name = "MiB")]
        bandwidth: Option<u64>,
        /// Print the progress (remaining memory and disks, dirty rate) while it runs.
        #[arg(long)]
        verbose: bool,
        /// Copy the writable file disks too (they are not on shared storage): the destination
        /// creates each at the same path, with the same format and size; read-only disks and
        /// CD-ROMs must be there already.
        #[arg(long, conflicts_with = "copy_storage_inc")]
        copy_storage_all: bool,
        /// Copy only the top image of each writable disk: the destination creates a qcow2 over
        /// the same backing file, which it must have.
        #[arg(long)]
        copy_storage_inc: bool,
        /// Send the migration stream through a connection to the destination's API (its socket,
        /// or its TLS API: then encrypted), instead of a socket or port the destination opens
        /// for it (always so with oxvirt+ssh://). Not with --copy-storage-all|inc.
        #[arg(long, conflicts_with_all = ["offline", "copy_storage_all", "copy_storage_inc"])]
        tunnelled: bool,
        /// Accepted for virsh's scripts: the source's oxvirtd always runs the migration itself
        /// (virsh's peer-to-peer).
        #[arg(long)]
        p2p: bool,
    },
    /// Set the longest a running domain may be paused for the last pass of its migrations.
    #[command(name = "migrate-setmaxdowntime")]
    MigrateSetmaxdowntime {
        /// Domain name or UUID.
        domain: String,
        /// Milliseconds.
        downtime: u64,
    },
    /// Set a running domain's migration bandwidth limit, MiB/s (0: none); a running migration
    /// follows it at once.
    #[command(name = "migrate-setspeed")]
    MigrateSetspeed {
        /// Domain name or UUID.
        domain: String,
        /// MiB/s; 0 lifts the limit.
        bandwidth: u64,
    },
    /// Print a running domain's migration bandwidth limit, MiB/s (migrate --bandwidth and
    /// migrate-setspeed set it).
    #[command(name = "migrate-getspeed")]
    MigrateGetspeed {
        /// Domain name or UUID.
        domain: String,
    },
    /// Print the domain's running (or last) migration job.
    Domjobinfo {
        /// Domain name or UUID.
        domain: String,
    },
    /// Abort the domain's running migration; it goes on running here.
    Domjobabort {
        /// Domain name or UUID.
        domain: String,
    },
    /// Switch the domain's running migration (started with --postcopy) to post-copy: it runs
    /// on the destination from now on, its memory following.
    #[command(name = "migrate-postcopy")]
    MigratePostcopy {
        /// Domain name or UUID.
        domain: String,
    },
}

/// How the source's oxvirtd logs in to a remote destination (`oxvirt+https://`), as
/// `--connect https://` does: the source uses these for this migration only.
#[derive(Args, Debug, Clone, Default)]
pub struct DestArgs {
    /// With oxvirt+https://: a token of the destination (role admin).
    #[arg(
        long,
        env = "OXVIRT_DEST_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub dest_token: Option<String>,
    /// With oxvirt+https://: a user of the destination (role admin); the password is asked for
    /// (read from stdin when it is not a terminal).
    #[arg(long, value_name = "USER", conflicts_with = "dest_token")]
    pub dest_user: Option<String>,
    /// With oxvirt+https://: check the destination's certificate against this CA certificate
    /// (PEM), or its own, instead of trusting it on first use (known_hosts, as --connect).
    #[arg(long, value_name = "FILE")]
    pub dest_ca: Option<std::path::PathBuf>,
}

pub fn run(client: &Client, command: MigrateCommand) -> anyhow::Result<String> {
    // Before the command's runtime: trusting a certificate on first use runs one of its own.
    let destination = match &command {
        MigrateCommand::Migrate { dest_uri, dest, .. } => Some(destination(dest_uri, dest)?),
        _ => None,
    };
    block_on(run_async(client, command, destination))?
}

/// Where `uri` points: a socket path, or `https://HOST:PORT` with what the source needs to
/// reach it (`dest`'s credentials and the certificate's trust).
fn destination(uri: &str, dest: &DestArgs) -> anyhow::Result<(String, Option<RemoteDestination>)> {
    if uri.starts_with(SSH_SCHEME) {
        if dest.dest_token.is_some() || dest.dest_user.is_some() || dest.dest_ca.is_some() {
            bail!("--dest-token, --dest-user and --dest-ca go with an {HTTPS_SCHEME}HOST:PORT destination ({SSH_SCHEME} logs in with ssh's keys)");
        }
        // Checked here, before the source's oxvirtd is asked; it parses it again to run ssh.
        SshDestination::parse(uri)?;
        return Ok((uri.to_string(), None));
    }
    let Some(address) = uri.strip_prefix(HTTPS_SCHEME) else {
        if dest.dest_token.is_some() || dest.dest_user.is_some() || dest.dest_ca.is_some() {
            bail!("--dest-token, --dest-user and --dest-ca go with an {HTTPS_SCHEME}HOST:PORT destination");
        }
        return Ok((destination_socket(uri)?, None));
    };
    let url = format!("https://{address}");
    let endpoint = Endpoint::parse(&url)
        .with_context(|| format!("destination URI '{uri}' is not {HTTPS_SCHEME}HOST:PORT"))?;
    let remote = credentials(dest, &endpoint.key(), uri)?;
    let remote = with_trust(remote, &endpoint, dest)?;
    Ok((endpoint.url(), Some(remote)))
}

/// The credentials of `dest` for `key` (`HOST:PORT`, or what the password prompt names):
/// a token, or a user and the password asked for now.
pub(crate) fn credentials(
    dest: &DestArgs,
    key: &str,
    uri: &str,
) -> anyhow::Result<RemoteDestination> {
    let mut remote = RemoteDestination::default();
    match (&dest.dest_token, &dest.dest_user) {
        (Some(token), _) => remote.token = Some(token.clone()),
        (None, Some(user)) => {
            remote.password = Some(crate::remote::prompt_password(&format!(
                "Password for {user} at {key}: "
            ))?);
            remote.user = Some(user.clone());
        }
        (None, None) => bail!(
            "destination {uri} needs credentials for the source's oxvirtd: --dest-token TOKEN (or OXVIRT_DEST_TOKEN) or --dest-user USER"
        ),
    }
    Ok(remote)
}

/// `remote` with the trust of `endpoint`'s certificate: `dest`'s --dest-ca, or the pin
/// `known_hosts` records (recorded now at the first connection).
pub(crate) fn with_trust(
    mut remote: RemoteDestination,
    endpoint: &Endpoint,
    dest: &DestArgs,
) -> anyhow::Result<RemoteDestination> {
    match crate::remote::trust(endpoint, dest.dest_ca.as_deref())? {
        Trust::Ca(path) => {
            let pem = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read --dest-ca {}", path.display()))?;
            remote.ca_pem = Some(pem);
        }
        Trust::CaPem(pem) => remote.ca_pem = Some(String::from_utf8_lossy(&pem).into_owned()),
        Trust::Pinned {
            fingerprint,
            known_hosts,
        } => {
            remote.fingerprint = Some(fingerprint);
            remote.known_hosts = Some(known_hosts.display().to_string());
        }
    }
    Ok(remote)
}

/// The destination socket of `uri`.
fn destination_socket(uri: &str) -> anyhow::Result<String> {
    match uri.strip_prefix(UNIX_SCHEME) {
        Some(path) if path.starts_with('/') && path.len() > 1 => Ok(path.to_string()),
        Some(_) => bail!("destination URI '{uri}' names no absolute socket path ({UNIX_SCHEME}/PATH/TO/SOCKET)"),
        None => bail!(
            "destination URI '{uri}' is not supported: only {UNIX_SCHEME}/PATH/TO/SOCKET (another oxvirtd on this host), {HTTPS_SCHEME}HOST:PORT (another host's TLS API) and {SSH_SCHEME}[USER@]HOST[:PORT][/SOCKET] (its socket through ssh) are"
        ),
    }
}

async fn run_async(
    client: &Client,
    command: MigrateCommand,
    destination: Option<(String, Option<RemoteDestination>)>,
) -> anyhow::Result<String> {
    Ok(match command {
        MigrateCommand::Migrate {
            domain,
            dest_uri: _,
            dest: _,
            live,
            persistent: _,
            undefinesource,
            offline,
            auto_converge,
            compressed,
            timeout,
            timeout_suspend: _,
            timeout_postcopy,
            postcopy,
            postcopy_after_precopy,
            bandwidth,
            verbose,
            copy_storage_all,
            copy_storage_inc,
            tunnelled,
            p2p: _,
        } => {
            let copy_storage = match (copy_storage_all, copy_storage_inc) {
                (true, _) => Some(CopyStorage::All),
                (false, true) => Some(CopyStorage::Inc),
                (false, false) => None,
            };
            let (destination, remote) =
                destination.context("the destination was not worked out")?;
            // Through ssh there is no other way for the stream: no port of the destination is
            // reached, only its socket.
            let over_ssh = destination.starts_with(SSH_SCHEME);
            if over_ssh && copy_storage.is_some() {
                bail!("an {SSH_SCHEME} destination takes the migration stream through ssh (as --tunnelled), which cannot copy disks (--copy-storage-all/-inc): migrate the disks on shared storage, or to an {HTTPS_SCHEME} destination");
            }
            let tunnelled = tunnelled || (over_ssh && !offline);
            let request = MigrateRequest {
                destination,
                remote,
                live,
                undefine_source: undefinesource,
                offline,
                auto_converge,
                compressed,
                timeout_s: timeout,
                postcopy,
                timeout_postcopy,
                postcopy_after_precopy,
                bandwidth_mib: bandwidth,
                copy_storage,
                tunnelled,
            };
            let migration = client.migrate(&domain, &request);
            let migrated = if verbose {
                tokio::pin!(migration);
                loop {
                    tokio::select! {
                        done = &mut migration => break done,
                        () = tokio::time::sleep(PROGRESS_EVERY) => {
                            if let Ok(job) = client.job_info(&domain).await {
                                print_progress(&job);
                            }
                        }
                    }
                }
            } else {
                migration.await
            };
            migrated.with_context(|| format!("Failed to migrate domain '{domain}'"))?;
            if verbose {
                eprintln!("\rMigration: [100 %]");
            }
            String::new()
        }
        MigrateCommand::MigrateSetmaxdowntime { domain, downtime } => {
            let settings = MigrationSettings {
                max_downtime_ms: Some(downtime),
                bandwidth_mib: None,
            };
            client.set_migration_settings(&domain, &settings).await?;
            String::new()
        }
        MigrateCommand::MigrateSetspeed { domain, bandwidth } => {
            let settings = MigrationSettings {
                max_downtime_ms: None,
                bandwidth_mib: Some(bandwidth),
            };
            client.set_migration_settings(&domain, &settings).await?;
            String::new()
        }
        MigrateCommand::MigrateGetspeed { domain } => {
            let settings = client.migration_settings(&domain).await?;
            format!("{}\n", settings.bandwidth_mib.unwrap_or(0))
        }
        MigrateCommand::Domjobinfo { domain } => format_job(&client.job_info(&domain).await?),
        MigrateCommand::Domjobabort { domain } => {
            client.job_abort(&domain).await?;
            String::new()
        }
        MigrateCommand::MigratePostcopy { domain } => {
            client.start_postcopy(&domain).await?;
            String::new()
        }
    })
}

/// virsh's progress line, with what remains (memory, and disks being copied) and the dirty rate.
fn print_progress(job: &JobInfo) {
    if job.job_type != "Unbounded" || job.data_total == 0 {
        return;
    }
    let done = 100 - job.data_remaining.saturating_mul(100) / job.data_total;
    let disks = if job.disk_total > 0 {
        format!(" (disks {:.3} MiB)", mib(job.disk_remaining))
    } else {
        String::new()
    };
    let mut stderr = std::io::stderr();
    let _ = write!(
        stderr,
        "\rMigration: [{done:3} %] remaining {:.3} MiB{disks}, dirty rate {:.3} MiB/s ",
        mib(job.data_remaining),
        mib(job.dirty_rate)
    );
    let _ = stderr.flush();
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// virsh domjobinfo's lines.
fn format_job(job: &JobInfo) -> String {
    let mut lines = vec![format!("{:<18}{}", "Job type:", job.job_type)];
    if job.job_type == "None" {
        return lines.join("\n") + "\n";
    }
    if let Some(operation) = &job.operation {
        lines.push(format!("{:<18}{operation}", "Operation:"));
    }
    // QEMU's word for where it is (virsh shows no such line; libvirt has no postcopy phase in
    // its job type either, only in the domain's state).
    if let Some(phase) = &job.phase {
        lines.push(format!("{:<18}{phase}", "Phase:"));
    }
    lines.push(format!(
        "{:<18}{:<13}ms",
        "Time elapsed:", job.time_elapsed_ms
    ));
    let sizes = [
        ("Data processed:", job.data_processed),
        ("Data remaining:", job.data_remaining),
        ("Data total:", job.data_total),
        ("Memory processed:", job.memory_processed),
        ("Memory remaining:", job.memory_remaining),
        ("Memory total:", job.memory_total),
    ];
    // virsh's names of the disks' figures; shown when disks are copied.
    let files = [
        ("File processed:", job.disk_processed),
        ("File remaining:", job.disk_remaining),
        ("File total:", job.disk_total),
    ];
    let files = if job.disk_total > 0 { &files[..] } else { &[] };
    for (label, bytes) in sizes.iter().chain(files) {
        lines.push(format!("{label:<18}{:.3} MiB", mib(*bytes)));
    }
    lines.push(format!(
        "{:<18}{:.3} MiB/s",
        "Dirty rate:",
        mib(job.dirty_rate)
    ));
    if job.memory_iteration > 0 {
        lines.push(format!("{:<18}{}", "Iteration:", job.memory_iteration));
    }
    if job.postcopy_requests > 0 {
        // (The label is one wider than the column, as in virsh.)
        lines.push(format!("Postcopy requests: {}", job.postcopy_requests));
    }
    if let Some(downtime) = job.downtime_ms {
        lines.push(format!("{:<18}{downtime:<13}ms", "Total downtime:"));
    }
    if let Some(error) = &job.error {
        lines.push(format!("{:<18}{error}", "Error message:"));
    }
    lines.join("\n") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destination_uris() {
        assert_eq!(
            destination_socket("oxvirt+unix:///run/b/oxvirtd.sock").unwrap(),
            "/run/b/oxvirtd.sock"
        );
        let err = destination_socket("qemu+ssh://host/system")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("qemu+ssh://host/system") && err.contains("not supported"),
            "{err}"
        );
        let err = destination_socket("oxvirt+unix://")
            .unwrap_err()
            .to_string();
        assert!(err.contains("no absolute socket path"), "{err}");
        let token = DestArgs {
            dest_token: Some("oxv_1_x".into()),
            dest_ca: Some("/nonexistent/ca.pem".into()),
            ..DestArgs::default()
        };
        let err = destination("oxvirt+https://h:1", &DestArgs::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("--dest-token"), "{err}");
        let err = destination("oxvirt+https://h", &token).unwrap_err();
        assert!(format!("{err:#}").contains("port is missing"), "{err:#}");
        let err = destination("oxvirt+https://h:1", &token).unwrap_err();
        assert!(
            format!("{err:#}").contains("/nonexistent/ca.pem"),
            "{err:#}"
        );
        let err = destination("oxvirt+unix:///s", &token)
            .unwrap_err()
            .to_string();
        assert!(err.contains("go with an oxvirt+https://"), "{err}");
        let ssh = "oxvirt+ssh://root@h:2222/s.sock?keyfile=/k";
        assert_eq!(
            destination(ssh, &DestArgs::default()).unwrap(),
            (ssh.to_string(), None)
        );
        let err = destination(ssh, &token).unwrap_err().to_string();
        assert!(err.contains("ssh's keys"), "{err}");
        let err = destination("oxvirt+ssh://h/?keyfile=k", &DestArgs::default()).unwrap_err();
        assert!(
            format!("{err:#}").contains("keyfile 'k' is not an absolute path"),
            "{err:#}"
        );
    }

    #[test]
    fn no_job() {
        let none = JobInfo {
            job_type: "None".to_string(),
            ..JobInfo::default()
        };
        assert_eq!(format_job(&none), "Job type:         None\n");
    }
}
