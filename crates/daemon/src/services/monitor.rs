//! The engine's own monitor (more of [`Domains`]): `qemu-monitor-command`, for what oxvirt has
//! no verb for. As libvirt does, oxvirtd passes the command on and cannot know what it
//! changed; it logs that the domain was handled behind its back ("tainted").

use std::sync::Arc;

use oxvirt_api::{MonitorAnswer, MonitorCommand};

use super::domains::Domains;
use super::error::{bad_request, engine_failure, DaemonResult};

/// The longest command passed on (QEMU's own limit on a QMP line is far above any real one).
const MAX_COMMAND_BYTES: usize = 64 * 1024;

impl Domains {
    /// `qemu-monitor-command`: `request.command` to the running guest's monitor.
    pub async fn monitor_command(
        self: &Arc<Self>,
        id: &str,
        request: &MonitorCommand,
    ) -> DaemonResult<MonitorAnswer> {
        let record = self.guests.resolve(id)?;
        if request.command.trim().is_empty() {
            return Err(bad_request("no monitor command given"));
        }
        if request.command.len() > MAX_COMMAND_BYTES {
            return Err(bad_request(format!(
                "the monitor command is longer than {MAX_COMMAND_BYTES} bytes"
            )));
        }
        let (vm, _guard) = self.guests.begin(&record)?;
        let control = self.guests.running_control(&vm, &record)?;
        tracing::warn!(domain = %record.name, hmp = request.hmp, command = %request.command, "domain is tainted: custom-monitor (a command oxvirtd passed on without knowing what it changes)");
        let answer = control
            .monitor_command(&request.command, request.hmp)
            .await
            .map_err(|err| engine_failure(&record.name, err))?;
        Ok(MonitorAnswer { answer })
    }
}
