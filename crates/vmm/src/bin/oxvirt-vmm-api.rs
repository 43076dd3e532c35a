//! Minimal client for the `oxvirt-vmm` control socket: `oxvirt-vmm-api SOCKET COMMAND` prints the JSON answer
//! and exits 0 when it says `"ok":true`. COMMAND is a bare name or a whole JSON request
//! (`{"command":"save","path":"/x","offset":0}`).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;

use oxvirt_vmm::protocol::{Reply, Request};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let [_, socket, command] = args.as_slice() else {
        eprintln!("usage: oxvirt-vmm-api SOCKET status|pause|resume|poweroff|stop|JSON-REQUEST");
        return ExitCode::from(2);
    };
    let request: Request = match Request::parse_line(command) {
        Ok(request) => request,
        Err(err) => {
            eprintln!("oxvirt-vmm-api: {err}");
            return ExitCode::from(2);
        }
    };
    let result = (|| -> std::io::Result<String> {
        let mut s = UnixStream::connect(socket)?;
        s.write_all(format!("{}\n", request.to_line()).as_bytes())?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line)?;
        Ok(line)
    })();
    match result {
        Ok(line) => {
            print!("{line}");
            match Reply::parse_line(&line) {
                Ok(
                    Reply::Done
                    | Reply::Status { .. }
                    | Reply::Balloon(_)
                    | Reply::Block(_)
                    | Reply::Migrated(_)
                    | Reply::LiveMigration(_),
                ) => ExitCode::SUCCESS,
                Ok(Reply::Refused { .. }) => ExitCode::FAILURE,
                Err(err) => {
                    eprintln!("oxvirt-vmm-api: unreadable answer: {err}");
                    ExitCode::FAILURE
                }
            }
        }
        Err(e) => {
            eprintln!("oxvirt-vmm-api: {socket}: {e}");
            ExitCode::FAILURE
        }
    }
}
