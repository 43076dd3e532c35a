//! Fuzzes the `oxvirt+ssh://` destination parser (a migration's URI, user input): any text gives a
//! destination or a typed error, never a panic; a destination it accepts has a host and user ssh
//! cannot take for options, an absolute socket path, and ssh arguments that end with the remote
//! command.
#![no_main]
use libfuzzer_sys::fuzz_target;
use oxvirt_api::ssh::SshDestination;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(destination) = SshDestination::parse(text) else {
        return;
    };
    assert!(!destination.host.is_empty() && !destination.host.starts_with('-'), "{destination:?}");
    if let Some(user) = &destination.user {
        assert!(!user.is_empty() && !user.starts_with('-'), "{destination:?}");
    }
    assert!(destination.socket.starts_with('/'), "{destination:?}");
    let args = destination.ssh_args();
    assert!(args.len() >= 2, "{args:?}");
    let _ = destination.url();
});
