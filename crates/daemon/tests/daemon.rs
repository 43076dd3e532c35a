//! oxvirtd end to end: the real daemon binary, real QEMU (TCG) guests, the API client.

mod common;

use std::time::Duration;

use common::{process_alive, raw_request, signal, wait_until, TestEnv, STATE_TIMEOUT};
use oxvirt_api::{code, ClientError, DomainState};

fn api_code(result: Result<impl std::fmt::Debug, ClientError>) -> String {
    match result {
        Err(ClientError::Api(e)) => {
            assert!(!e.message.is_empty());
            e.code
        }
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_boots_pauses_resumes_and_shuts_down() {
    let mut env = TestEnv::new();
    env.start_daemon().await;
    let client = env.client();

    let version = client.version().await.unwrap();
    assert_eq!(version.api, oxvirt_api::API_VERSION);
    assert!(
        version.qemu.is_some(),
        "qemu-system-x86_64 is installed, so its version is known"
    );

    let defined = client
        .define_domain(&env.domain_xml("life", None))
        .await
        .unwrap();
    assert_eq!(defined.state, DomainState::ShutOff);
    assert_eq!(defined.id, None);

    let started = client.start("life").await.unwrap();
    assert_eq!(started.state, DomainState::Running);
    assert!(started.id.is_some());
    env.wait_for_boot("life").await;

    let list = client.list_domains().await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].state, DomainState::Running);
    assert_eq!(list[0].id, started.id);
    let info = client.domain_info(&defined.uuid).await.unwrap();
    assert_eq!(info.name, "life");
    assert_eq!(info.accel, oxvirt_api::Accel::Tcg);
    assert_eq!(info.max_memory_kib, 256 * 1024);
    assert!(info.console_socket.is_some());

    // The guest answers on its console.
    let mut console = env.console("life").await;
    let out = tokio::task::block_in_place(|| console.run("echo $((6*7))", Duration::from_secs(30)));
    assert_eq!(out.as_deref().map(str::trim), Some("42"));
    let cpu = client.domain_info("life").await.unwrap().cpu_time_ns;
    assert!(cpu > 0, "a booted guest has used CPU time");

    // Paused: the guest does not run the command typed now...
    let paused = client.suspend("life").await.unwrap();
    assert_eq!(paused.state, DomainState::Paused);
    assert_eq!(api_code(client.suspend("life").await), code::INVALID_STATE);
    tokio::task::block_in_place(|| {
        console.send_line("echo resumed-$((40+2))").unwrap();
        assert!(console
            .wait_for_text("resumed-42", Duration::from_secs(2))
            .is_none());
    });
    // ...until it is resumed.
    let resumed = client.resume("life").await.unwrap();
    assert_eq!(resumed.state, DomainState::Running);
    assert!(tokio::task::block_in_place(|| console
        .wait_for_text("resumed-42", Duration::from_secs(30))
        .is_some()));

    // Starting it again is refused, in words that name it.
    match client.start("life").await {
        Err(ClientError::Api(e)) => {
            assert_eq!(e.code, code::INVALID_STATE);
            assert_eq!(e.message, "domain 'life' is already running");
        }
        other => panic!("second start: {other:?}"),
    }
    assert_eq!(
        api_code(client.undefine_domain("life", None).await),
        code::INVALID_STATE
    );

    // ACPI shutdown, waiting for it.
    let off = client.shutdown("life", Some(60)).await.unwrap();
    assert_eq!(off.state, DomainState::ShutOff);
    assert_eq!(off.id, None);
    let info = client.domain_info("life").await.unwrap();
    assert_eq!(info.state_reason, "shutdown");
    assert!(
        env.pids_mentioning(&defined.uuid).is_empty(),
        "QEMU is gone"
    );

    let removed = client.undefine_domain("life", None).await.unwrap();
    assert_eq!(removed.name, "life");
    assert!(client.list_domains().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_survives_a_daemon_crash_and_stays_controllable() {
    let mut env = TestEnv::new();
    env.start_daemon().await;
    let client = env.client();
    let defined = client
        .define_domain(&env.domain_xml("survivor", None))
        .await
        .unwrap();
    let started = client.start("survivor").await.unwrap();
    env.wait_for_boot("survivor").await;
    let qemu_pids = env.pids_mentioning(&defined.uuid);
    assert_eq!(qemu_pids.len(), 1, "one QEMU process for the guest");
    let qemu_pid = qemu_pids[0];

    env.kill_daemon();
    assert!(
        process_alive(qemu_pid),
        "SIGKILL of oxvirtd must not take the guest down"
    );
    assert!(matches!(
        client.list_domains().await,
        Err(ClientError::DaemonNotRunning { .. })
    ));
    // While the daemon is away, the guest gets paused behind its back (over QMP directly):
    // the restarted daemon must ask QEMU rather than trust its stored state.
    let qmp_socket = env
        .state_dir
        .join("run")
        .join(&defined.uuid)
        .join("qemu/qmp.sock");
    {
        let (qmp, _events) = oxvirt_qemu::Qmp::connect(&qmp_socket).await.unwrap();
        qmp.stop().await.unwrap();
    }

    env.start_daemon().await;
    let list = client.list_domains().await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].state, DomainState::Paused, "state comes from QEMU");
    assert_eq!(list[0].id, started.id, "the runtime id survives");
    assert_eq!(
        env.pids_mentioning(&defined.uuid),
        vec![qemu_pid],
        "same QEMU process"
    );

    // Still controllable, and the guest sees it.
    assert_eq!(
        client.resume("survivor").await.unwrap().state,
        DomainState::Running
    );
    let mut console = env.console("survivor").await;
    assert_eq!(
        client.suspend("survivor").await.unwrap().state,
        DomainState::Paused
    );
    assert_eq!(
        client.resume("survivor").await.unwrap().state,
        DomainState::Running
    );
    let out =
        tokio::task::block_in_place(|| console.run("echo alive-$((1+1))", Duration::from_secs(30)));
    assert_eq!(out.as_deref().map(str::trim), Some("alive-2"));

    let destroyed = client.destroy("survivor").await.unwrap();
    assert_eq!(destroyed.state, DomainState::ShutOff);
    assert!(
        wait_until(STATE_TIMEOUT, || async { !process_alive(qemu_pid) }).await,
        "destroy ends QEMU"
    );
    assert_eq!(
        client.domain_info("survivor").await.unwrap().state_reason,
        "destroyed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_qemu_leaves_the_domain_shut_off_crashed() {
    let mut env = TestEnv::new();
    env.start_daemon().await;
    let client = env.client();
    let defined = client
        .define_domain(&env.domain_xml("victim", None))
        .await
        .unwrap();
    client.start("victim").await.unwrap();
    env.wait_for_boot("victim").await;
    let pids = env.pids_mentioning(&defined.uuid);
    assert_eq!(pids.len(), 1);

    signal(pids[0], libc::SIGKILL);
    let off = env.wait_for_state("victim", DomainState::ShutOff).await;
    assert_eq!(off.id, None);
    let info = client.domain_info("victim").await.unwrap();
    assert_eq!(info.state_reason, "crashed");

    // And it can be started again.
    client.start("victim").await.unwrap();
    env.wait_for_state("victim", DomainState::Running).await;

    // A guest that dies while the daemon is down is found shut off by the next daemon.
    let pids = env.pids_mentioning(&defined.uuid);
    assert_eq!(pids.len(), 1);
    env.kill_daemon();
    signal(pids[0], libc::SIGKILL);
    assert!(wait_until(STATE_TIMEOUT, || async { !process_alive(pids[0]) }).await);
    env.start_daemon().await;
    let list = client.list_domains().await.unwrap();
    assert_eq!(list[0].state, DomainState::ShutOff);
    assert_eq!(list[0].id, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_requests_change_nothing() {
    let mut env = TestEnv::new();
    env.start_daemon().await;
    let client = env.client();
    const UUID_A: &str = "3b0c7d3e-8f5a-4b7e-9d1c-2a6f0e4b5c01";
    const UUID_B: &str = "3b0c7d3e-8f5a-4b7e-9d1c-2a6f0e4b5c02";
    client
        .define_domain(&env.domain_xml("alpha", Some(UUID_A)))
        .await
        .unwrap();
    let snapshot = || async {
        let list = client.list_domains().await.unwrap();
        let xml = client.domain_xml("alpha").await.unwrap();
        (list, xml)
    };
    let before = snapshot().await;

    assert_eq!(
        api_code(
            client
                .define_domain("<domain type='qemu'><name>x</name")
                .await
        ),
        code::INVALID_XML
    );
    assert_eq!(
        api_code(
            client
                .define_domain(&env.domain_xml("alpha", Some(UUID_B)))
                .await
        ),
        code::ALREADY_EXISTS,
        "same name, other uuid"
    );
    assert_eq!(
        api_code(
            client
                .define_domain(&env.domain_xml("beta", Some(UUID_A)))
                .await
        ),
        code::ALREADY_EXISTS,
        "same uuid, other name"
    );
    assert_eq!(api_code(client.start("nosuch").await), code::NOT_FOUND);
    assert_eq!(
        api_code(client.domain_info("nosuch").await),
        code::NOT_FOUND
    );
    assert_eq!(
        api_code(client.undefine_domain("nosuch", None).await),
        code::NOT_FOUND
    );
    assert_eq!(api_code(client.destroy("alpha").await), code::INVALID_STATE);
    assert_eq!(
        api_code(
            client
                .replace_domain_xml("alpha", &env.domain_xml("renamed", Some(UUID_A)))
                .await
        ),
        code::INVALID_XML
    );
    assert_eq!(
        api_code(client.replace_domain_xml("alpha", "<domain>").await),
        code::INVALID_XML
    );
    // Malformed requests get an ApiError too.
    let reply = raw_request(&env.socket, "POST", "/v1/domains", "{not json");
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert!(reply.contains("\"code\":\"bad_request\""), "{reply}");
    let reply = raw_request(&env.socket, "GET", "/v2/whatever", "");
    assert!(reply.starts_with("HTTP/1.1 404"), "{reply}");
    assert!(reply.contains("\"code\":\"not_found\""), "{reply}");
    let reply = raw_request(&env.socket, "PATCH", "/v1/domains", "");
    assert!(reply.starts_with("HTTP/1.1 405"), "{reply}");
    assert!(reply.contains("\"code\":\"bad_request\""), "{reply}");
    assert_eq!(snapshot().await, before);

    // A definition whose kernel is missing is stored, but its start fails naming the file.
    let kit = oxvirt_testkit::guest_kit();
    let missing = env.dir.path().join("no-such-vmlinuz");
    let xml = common::domain_xml("gamma", None, &missing, &kit.initramfs);
    client.define_domain(&xml).await.unwrap();
    match client.start("gamma").await {
        Err(ClientError::Api(e)) => assert!(
            e.message.contains(&missing.display().to_string()),
            "message names the missing file: {}",
            e.message
        ),
        other => panic!("start with a missing kernel: {other:?}"),
    }
    let gamma = client.domain_info("gamma").await.unwrap();
    assert_eq!(gamma.state, DomainState::ShutOff);
    client.undefine_domain("gamma", None).await.unwrap();
    assert_eq!(snapshot().await, before);

    // Redefining with the same name and uuid updates it.
    let updated = env.domain_xml("alpha", Some(UUID_A)).replace("256", "128");
    client.define_domain(&updated).await.unwrap();
    assert_eq!(
        client.domain_info("alpha").await.unwrap().max_memory_kib,
        128 * 1024
    );
    assert_eq!(client.list_domains().await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_starts_launch_one_guest() {
    let mut env = TestEnv::new();
    env.start_daemon().await;
    let client = env.client();
    let defined = client
        .define_domain(&env.domain_xml("race", None))
        .await
        .unwrap();
    let (a, b) = tokio::join!(client.start("race"), client.start("race"));
    let outcomes = [a, b];
    let wins = outcomes.iter().filter(|r| r.is_ok()).count();
    assert_eq!(wins, 1, "exactly one start succeeds: {outcomes:?}");
    for outcome in &outcomes {
        if let Err(err) = outcome {
            let code = err.api_code().unwrap_or_default();
            assert!(code == code::BUSY || code == code::INVALID_STATE, "{err:?}");
        }
    }
    env.wait_for_boot("race").await;
    assert_eq!(
        env.pids_mentioning(&defined.uuid).len(),
        1,
        "one QEMU process"
    );
    client.destroy("race").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autostart_domains_start_with_the_daemon() {
    let mut env = TestEnv::new();
    env.start_daemon().await;
    let client = env.client();
    client
        .define_domain(&env.domain_xml("auto", None))
        .await
        .unwrap();
    client
        .define_domain(&env.domain_xml("manual", None))
        .await
        .unwrap();
    let flagged = client.set_autostart("auto", true).await.unwrap();
    assert!(flagged.autostart);
    env.stop_daemon();

    env.start_daemon().await;
    env.wait_for_state("auto", DomainState::Running).await;
    env.wait_for_boot("auto").await;
    let list = client.list_domains().await.unwrap();
    let manual = list.iter().find(|d| d.name == "manual").unwrap();
    assert_eq!(manual.state, DomainState::ShutOff);
    assert!(!manual.autostart);
    client.destroy("auto").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_daemon_on_the_same_state_dir_is_refused() {
    let mut env = TestEnv::new();
    env.start_daemon().await;
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_oxvirtd"))
        .arg("--socket")
        .arg(env.dir.path().join("other.sock"))
        .arg("--state-dir")
        .arg(&env.state_dir)
        .arg("--no-default-network")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("another oxvirtd"), "{stderr}");
    // The first one still serves.
    env.client().version().await.unwrap();
    let pid = env.daemon_pid();
    assert!(process_alive(pid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reboot_powers_the_guest_off_and_on_again() {
    let mut env = TestEnv::new();
    env.start_daemon().await;
    let client = env.client();
    client
        .define_domain(&env.domain_xml("cycle", None))
        .await
        .unwrap();
    let started = client.start("cycle").await.unwrap();
    env.wait_for_boot("cycle").await;
    assert_eq!(common::boot_count(&env, "cycle").await, 1);

    client.reboot("cycle").await.unwrap();
    let booted_twice = wait_until(common::BOOT_TIMEOUT, || async {
        common::boot_count(&env, "cycle").await >= 2
    })
    .await;
    assert!(
        booted_twice,
        "the guest did not boot again; logs:\n{}",
        env.logs()
    );
    let after = env.wait_for_state("cycle", DomainState::Running).await;
    assert_eq!(after.id, started.id, "a reboot keeps the runtime id");
    client.destroy("cycle").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_timeout_reports_a_guest_that_did_not_stop() {
    let mut env = TestEnv::new();
    env.start_daemon().await;
    let client = env.client();
    client
        .define_domain(&env.domain_xml("stubborn", None))
        .await
        .unwrap();
    client.start("stubborn").await.unwrap();
    env.wait_for_boot("stubborn").await;
    // Wait for the shell: by then acpid listens for the power button.
    drop(env.console("stubborn").await);

    // A paused guest cannot react to the power button.
    client.suspend("stubborn").await.unwrap();
    match client.shutdown("stubborn", Some(2)).await {
        Err(ClientError::Api(e)) => {
            assert_eq!(e.code, code::TIMEOUT);
            assert!(
                e.message.contains("'stubborn'") && e.message.contains("2 s"),
                "{}",
                e.message
            );
        }
        other => panic!("shutdown of a paused guest: {other:?}"),
    }
    assert_eq!(
        client.domain_info("stubborn").await.unwrap().state,
        DomainState::Paused
    );

    // Resumed, it sees the pending button press and powers off; shutdown without a timeout
    // returns at once and the state follows.
    client.resume("stubborn").await.unwrap();
    env.wait_for_state("stubborn", DomainState::ShutOff).await;
    assert_eq!(
        client.domain_info("stubborn").await.unwrap().state_reason,
        "shutdown"
    );

    client.start("stubborn").await.unwrap();
    env.wait_for_boot("stubborn").await;
    drop(env.console("stubborn").await);
    client.shutdown("stubborn", None).await.unwrap();
    env.wait_for_state("stubborn", DomainState::ShutOff).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_panic_honours_on_crash() {
    let mut env = TestEnv::new();
    env.start_daemon().await;
    let client = env.client();
    let kit = oxvirt_testkit::guest_kit();
    let initrd = common::initramfs_with_pvpanic(env.dir.path());
    let base = common::domain_xml("PLACEHOLDER", None, &kit.kernel, &initrd);
    let with_on_crash = |name: &str, action: &str| {
        base.replace("PLACEHOLDER", name).replace(
            "  <devices>",
            &format!("  <on_crash>{action}</on_crash>\n  <devices>"),
        )
    };
    client
        .define_domain(&with_on_crash("falls", "destroy"))
        .await
        .unwrap();
    client
        .define_domain(&with_on_crash("rises", "restart"))
        .await
        .unwrap();
    client.start("falls").await.unwrap();
    client.start("rises").await.unwrap();
    env.wait_for_boot("falls").await;
    env.wait_for_boot("rises").await;

    let console = env.console("falls").await;
    tokio::task::block_in_place(|| common::panic_guest(console, &kit.kernel_version));
    env.wait_for_state("falls", DomainState::ShutOff).await;
    assert_eq!(
        client.domain_info("falls").await.unwrap().state_reason,
        "crashed"
    );

    let console = env.console("rises").await;
    tokio::task::block_in_place(|| common::panic_guest(console, &kit.kernel_version));
    let booted_again = wait_until(common::BOOT_TIMEOUT, || async {
        common::boot_count(&env, "rises").await >= 2
    })
    .await;
    assert!(
        booted_again,
        "on_crash=restart did not boot the guest again; logs:\n{}",
        env.logs()
    );
    env.wait_for_state("rises", DomainState::Running).await;
    client.destroy("rises").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edit_and_autostart_flag_round_trip() {
    let mut env = TestEnv::new();
    env.start_daemon().await;
    let client = env.client();
    let defined = client
        .define_domain(&env.domain_xml("edited", None))
        .await
        .unwrap();
    let xml = client.domain_xml("edited").await.unwrap();
    assert!(
        xml.contains(&defined.uuid),
        "normalized XML carries the uuid:\n{xml}"
    );

    // An edit without <uuid> keeps the domain's uuid; the store has the normalized new form.
    let edited = env
        .domain_xml("edited", None)
        .replace("<vcpu>1</vcpu>", "<vcpu>2</vcpu>");
    let summary = client.replace_domain_xml("edited", &edited).await.unwrap();
    assert_eq!(summary.uuid, defined.uuid);
    assert_eq!(client.domain_info("edited").await.unwrap().vcpus, 2);
    let new_xml = client.domain_xml(&defined.uuid).await.unwrap();
    assert_ne!(new_xml, xml);

    assert!(
        client
            .set_autostart("edited", true)
            .await
            .unwrap()
            .autostart
    );
    assert!(client.list_domains().await.unwrap()[0].autostart);
    assert!(
        !client
            .set_autostart("edited", false)
            .await
            .unwrap()
            .autostart
    );
    assert!(!client.domain_info("edited").await.unwrap().autostart);

    // <domain type='kvm'> falls back to TCG, with a warning, where there is no hardware KVM.
    let kvm_xml = env
        .domain_xml("wants-kvm", None)
        .replace("<domain type='qemu'>", "<domain type='kvm'>");
    client.define_domain(&kvm_xml).await.unwrap();
    let info = client.domain_info("wants-kvm").await.unwrap();
    let probe = oxvirt_qemu::probe_accel();
    match probe.accel {
        oxvirt_qemu::Accel::Kvm => {
            assert_eq!(info.accel, oxvirt_api::Accel::Kvm);
            assert!(info.warnings.is_empty(), "{:?}", info.warnings);
        }
        oxvirt_qemu::Accel::Tcg => {
            assert_eq!(info.accel, oxvirt_api::Accel::Tcg);
            assert_eq!(info.warnings.len(), 1, "{:?}", info.warnings);
            assert!(
                info.warnings[0].starts_with("TCG: no hardware KVM here ("),
                "{:?}",
                info.warnings
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_whose_start_was_not_recorded_is_adopted() {
    let mut env = TestEnv::new();
    env.start_daemon().await;
    let client = env.client();
    let defined = client
        .define_domain(&env.domain_xml("orphan", None))
        .await
        .unwrap();
    client.start("orphan").await.unwrap();
    let pids = env.pids_mentioning(&defined.uuid);
    assert_eq!(pids.len(), 1);

    // As if oxvirtd died after launching QEMU but before recording the start.
    env.kill_daemon();
    let db = rusqlite::Connection::open(env.state_dir.join("oxvirt.db")).unwrap();
    assert_eq!(db.execute("DELETE FROM runtime", []).unwrap(), 1);
    drop(db);

    env.start_daemon().await;
    let list = client.list_domains().await.unwrap();
    assert_eq!(
        list[0].state,
        DomainState::Running,
        "the running guest is adopted"
    );
    assert!(list[0].id.is_some());
    assert_eq!(env.pids_mentioning(&defined.uuid), pids);
    env.wait_for_boot("orphan").await;
    client.destroy("orphan").await.unwrap();
    assert!(env.pids_mentioning(&defined.uuid).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_poweroff_honours_on_poweroff() {
    let mut env = TestEnv::new();
    env.start_daemon().await;
    let client = env.client();
    let with_on_poweroff = |name: &str, action: &str| {
        env.domain_xml(name, None).replace(
            "  <devices>",
            &format!("  <on_poweroff>{action}</on_poweroff>\n  <devices>"),
        )
    };
    client
        .define_domain(&with_on_poweroff("phoenix", "restart"))
        .await
        .unwrap();
    client
        .define_domain(&with_on_poweroff("ends", "destroy"))
        .await
        .unwrap();
    let phoenix = client.start("phoenix").await.unwrap();
    client.start("ends").await.unwrap();
    env.wait_for_boot("phoenix").await;
    env.wait_for_boot("ends").await;

    for name in ["phoenix", "ends"] {
        let mut console = env.console(name).await;
        // Keep reading until the guest acted: QEMU drops input still queued when a console
        // client hangs up.
        let powered_off = tokio::task::block_in_place(|| {
            console.send_line("poweroff -f").unwrap();
            console.wait_for_text("Power down", Duration::from_secs(30))
        });
        assert!(powered_off.is_some(), "guest '{name}' did not power off");
    }
    env.wait_for_state("ends", DomainState::ShutOff).await;
    assert_eq!(
        client.domain_info("ends").await.unwrap().state_reason,
        "shutdown"
    );

    let booted_again = wait_until(common::BOOT_TIMEOUT, || async {
        common::boot_count(&env, "phoenix").await >= 2
    })
    .await;
    assert!(
        booted_again,
        "on_poweroff=restart did not boot the guest again; logs:\n{}",
        env.logs()
    );
    let after = env.wait_for_state("phoenix", DomainState::Running).await;
    assert_eq!(after.id, phoenix.id);
    client.destroy("phoenix").await.unwrap();
}
