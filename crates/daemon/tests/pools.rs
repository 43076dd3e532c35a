//! Storage pools and volumes through the API of a real oxvirtd: state that survives a daemon
//! restart, autostart, error codes, and names that try to leave the pool.

mod common;

use common::TestEnv;
use oxvirt_api::{code, ClientError, CreateVolumeRequest, ResizeVolumeRequest};

fn api_code<T: std::fmt::Debug>(result: Result<T, ClientError>) -> String {
    match result {
        Err(ClientError::Api(e)) => {
            assert!(!e.message.is_empty());
            e.code
        }
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn pool_xml(name: &str, target: &std::path::Path) -> String {
    format!(
        "<pool type='dir'><name>{name}</name><target><path>{}</path></target></pool>",
        target.display()
    )
}

fn volume(name: &str, capacity: u64, format: &str) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: name.to_string(),
        capacity,
        format: format.to_string(),
        prealloc_metadata: false,
        allocation: None,
        backing_vol: None,
        backing_format: None,
        cluster_size: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_survive_a_restart_and_autostart() {
    let mut env = TestEnv::new();
    env.start_daemon().await;
    let client = env.client();
    let kept = env.dir.path().join("kept");
    let auto = env.dir.path().join("auto");
    std::fs::create_dir(&kept).unwrap();
    std::fs::create_dir(&auto).unwrap();

    let defined = client.define_pool(&pool_xml("kept", &kept)).await.unwrap();
    assert!(!defined.active && defined.persistent && defined.capacity.is_none());
    client.pool_action("kept", "start").await.unwrap();
    client.define_pool(&pool_xml("auto", &auto)).await.unwrap();
    client.set_pool_autostart("auto", true).await.unwrap();
    client
        .define_pool(&pool_xml("idle", &env.dir.path().join("idle")))
        .await
        .unwrap();
    let created = client
        .create_volume("kept", &volume("v.qcow2", 1 << 20, "qcow2"))
        .await
        .unwrap();
    assert_eq!(created.format, "qcow2");
    assert_eq!(created.capacity, 1 << 20);
    assert_eq!(created.path, kept.join("v.qcow2").display().to_string());

    env.stop_daemon();
    env.start_daemon().await;
    let client = env.client();
    let pools = client.list_pools().await.unwrap();
    let state: Vec<(&str, bool, bool)> = pools
        .iter()
        .map(|p| (p.name.as_str(), p.active, p.autostart))
        .collect();
    assert_eq!(
        state,
        [
            ("auto", true, true),
            ("idle", false, false),
            ("kept", true, false)
        ],
        "{}",
        env.logs()
    );
    let kept_info = client.pool_info(&defined.uuid).await.unwrap();
    assert_eq!(kept_info.name, "kept");
    assert!(kept_info.capacity.unwrap() > 0);
    let volumes = client.list_volumes("kept").await.unwrap();
    assert_eq!(volumes.len(), 1);
    assert_eq!(volumes[0].name, "v.qcow2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_codes_and_change_nothing() {
    let mut env = TestEnv::new();
    env.start_daemon().await;
    let client = env.client();
    let target = env.dir.path().join("pool");
    std::fs::create_dir(&target).unwrap();
    client.define_pool(&pool_xml("p", &target)).await.unwrap();
    assert_eq!(
        api_code(client.create_volume("p", &volume("v", 1, "raw")).await),
        code::INVALID_STATE
    );
    client.pool_action("p", "start").await.unwrap();
    // A file next to the pool that no volume name may reach.
    let outside = env.dir.path().join("secret");
    std::fs::write(&outside, b"keep me").unwrap();
    std::os::unix::fs::symlink(&outside, target.join("link")).unwrap();

    for name in ["../secret", "..", ".", "/etc/passwd", ".hidden", ""] {
        assert_eq!(
            api_code(client.create_volume("p", &volume(name, 1024, "raw")).await),
            code::INVALID_NAME,
            "{name:?}"
        );
    }
    for name in ["../secret", ".."] {
        assert_eq!(
            api_code(client.delete_volume("p", name).await),
            code::INVALID_NAME
        );
        assert_eq!(
            api_code(client.volume_info("p", name).await),
            code::INVALID_NAME
        );
    }
    // A symlink in the pool is not a volume: it cannot be read, resized or deleted through.
    assert_eq!(
        api_code(client.delete_volume("p", "link").await),
        code::NOT_FOUND
    );
    assert_eq!(
        api_code(
            client
                .resize_volume(
                    "p",
                    "link",
                    ResizeVolumeRequest {
                        capacity: 1 << 20,
                        delta: false,
                        shrink: false
                    }
                )
                .await
        ),
        code::NOT_FOUND
    );
    assert_eq!(
        api_code(client.clone_volume("p", "link", "copy").await),
        code::NOT_FOUND
    );
    assert!(client.list_volumes("p").await.unwrap().is_empty());
    assert_eq!(std::fs::read(&outside).unwrap(), b"keep me");

    assert_eq!(
        api_code(client.create_volume("p", &volume("v", 1024, "vmdk")).await),
        code::BAD_REQUEST
    );
    assert_eq!(
        api_code(
            client
                .create_volume("nope", &volume("v", 1024, "raw"))
                .await
        ),
        code::NOT_FOUND
    );
    client
        .create_volume("p", &volume("v", 1024, "raw"))
        .await
        .unwrap();
    assert_eq!(
        api_code(client.create_volume("p", &volume("v", 1024, "qcow2")).await),
        code::ALREADY_EXISTS
    );
    assert_eq!(
        api_code(
            client
                .define_pool("<pool type='dir'><name>x</name></pool>")
                .await
        ),
        code::INVALID_XML
    );
    assert_eq!(
        api_code(
            client
                .define_pool("<pool type='netfs'><name>x</name></pool>")
                .await
        ),
        code::UNSUPPORTED
    );
    // '.' and '..' are path components, not pool names; unknown attributes are not ignored.
    for name in [".", ".."] {
        assert_eq!(
            api_code(
                client
                    .define_pool(&pool_xml(name, &env.dir.path().join("dots")))
                    .await
            ),
            code::INVALID_NAME,
            "{name:?}"
        );
    }
    assert_eq!(
        api_code(
            client
                .define_pool(
                    &pool_xml("x", &env.dir.path().join("x"))
                        .replace("type='dir'", "type='dir' foo='1'")
                )
                .await
        ),
        code::UNSUPPORTED
    );
    assert_eq!(client.list_pools().await.unwrap().len(), 1);
    assert_eq!(
        api_code(client.undefine_pool("p").await),
        code::INVALID_STATE
    );
    let mut names: Vec<String> = std::fs::read_dir(&target)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["link", "v"]);
}
