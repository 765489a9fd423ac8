//! `S3Store` against a real S3 server (`s3s-fs` on loopback; MinIO where a test says so).

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::s3server::S3Server;
use futures::{StreamExt, TryStreamExt};
use mimeo::media::error::MediaError;
use mimeo::media::s3::{S3Config, S3Store};
use mimeo::media::store::{ObjectInfo, ObjectStore};

const BUCKET: &str = "mimeo-test";
const MIB: usize = 1024 * 1024;

async fn store(server: &S3Server, prefix: &str) -> S3Store {
    server.create_bucket(BUCKET);
    connect(server.config(BUCKET, prefix)).await
}

async fn connect(config: S3Config) -> S3Store {
    S3Store::connect(config).await.expect("connect")
}

/// Deterministic, incompressible-looking bytes (xorshift).
fn pattern(len: usize) -> Vec<u8> {
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// Multipart uploads s3s-fs still holds (part files and upload records in its root).
fn pending_uploads(server: &S3Server) -> usize {
    std::fs::read_dir(server.data_dir())
        .expect("read s3s-fs root")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().starts_with(".upload"))
        })
        .count()
}

#[tokio::test]
async fn small_put_get_head_and_ranges() {
    let server = S3Server::start();
    let store = store(&server, "/pfx/").await;
    assert_eq!(store.describe(), "s3://mimeo-test/pfx");

    store
        .put("dir/hello.txt", Bytes::from_static(b"hello"))
        .await
        .unwrap();
    assert_eq!(store.get("dir/hello.txt").await.unwrap(), "hello");
    assert_eq!(store.head("dir/hello.txt").await.unwrap(), Some(5));
    assert_eq!(store.get_range("dir/hello.txt", 1..3).await.unwrap(), "el");
    // Ranges running past the end return what exists.
    assert_eq!(
        store.get_range("dir/hello.txt", 3..100).await.unwrap(),
        "lo"
    );
    assert_eq!(store.get_range("dir/hello.txt", 5..10).await.unwrap(), "");
    assert_eq!(store.get_range("dir/hello.txt", 2..2).await.unwrap(), "");
    // The prefix is applied: the object sits under pfx/ in the bucket.
    assert!(
        server
            .data_dir()
            .join(BUCKET)
            .join("pfx/dir/hello.txt")
            .is_file()
    );

    // An empty object.
    store.put("empty", Bytes::new()).await.unwrap();
    assert_eq!(store.head("empty").await.unwrap(), Some(0));
    assert_eq!(store.get("empty").await.unwrap(), "");
}

#[tokio::test]
async fn put_is_write_once() {
    let server = S3Server::start();
    let store = store(&server, "").await;
    store.put("k", Bytes::from_static(b"first")).await.unwrap();

    let err = store
        .put("k", Bytes::from_static(b"second"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, MediaError::AlreadyExists { ref key, .. } if key == "k"),
        "{err:?}"
    );

    // A small streaming write ends in the same conditional PutObject.
    let mut writer = store.create("k").await.unwrap();
    writer.write(Bytes::from_static(b"third")).await.unwrap();
    let err = writer.finish().await.unwrap_err();
    assert!(matches!(err, MediaError::AlreadyExists { .. }), "{err:?}");

    assert_eq!(store.get("k").await.unwrap(), "first");
}

#[tokio::test]
async fn streaming_multipart_write_and_ranged_reads() {
    let server = S3Server::start();
    let store = store(&server, "media").await;
    let data = Bytes::from(pattern(20 * MIB + 12_345));

    let mut writer = store.create("vol/000001").await.unwrap();
    // Uneven chunks so that parts are assembled from pieces of several writes.
    for chunk in data.chunks(MIB + 7) {
        writer.write(Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    // Nothing is visible before finish.
    assert_eq!(store.head("vol/000001").await.unwrap(), None);
    assert_eq!(writer.finish().await.unwrap(), data.len() as u64);
    assert_eq!(pending_uploads(&server), 0);

    assert_eq!(
        store.head("vol/000001").await.unwrap(),
        Some(data.len() as u64)
    );
    let len = data.len() as u64;
    let part = 8 * MIB as u64;
    for range in [
        0..100,
        part - 10..part + 10,
        2 * part - 1..2 * part + 3 * MIB as u64,
        5 * MIB as u64..15 * MIB as u64,
        len - 1000..len,
    ] {
        let got = store.get_range("vol/000001", range.clone()).await.unwrap();
        assert!(
            got == data[range.start as usize..range.end as usize],
            "range {range:?} differs"
        );
    }
    let tail = store
        .get_range("vol/000001", len - 10..len + 100)
        .await
        .unwrap();
    assert_eq!(tail, data[data.len() - 10..]);
    assert_eq!(
        store.get_range("vol/000001", len..len + 10).await.unwrap(),
        ""
    );
    assert!(store.get("vol/000001").await.unwrap() == data);

    // Writing the same key again fails before any part is uploaded.
    let mut again = store.create("vol/000001").await.unwrap();
    let err = again.write(data.slice(..9 * MIB)).await.unwrap_err();
    assert!(matches!(err, MediaError::AlreadyExists { .. }), "{err:?}");
    assert_eq!(pending_uploads(&server), 0);
}

#[tokio::test]
async fn multipart_complete_is_conditional() {
    let server = S3Server::start();
    let store = store(&server, "").await;
    let mut writer = store.create("race").await.unwrap();
    writer.write(Bytes::from(pattern(9 * MIB))).await.unwrap();
    // Another writer creates the key while this upload is in progress: only the server-side
    // `If-None-Match: *` on CompleteMultipartUpload can refuse the overwrite now.
    store
        .put("race", Bytes::from_static(b"winner"))
        .await
        .unwrap();
    let err = writer.finish().await.unwrap_err();
    assert!(matches!(err, MediaError::AlreadyExists { .. }), "{err:?}");
    assert_eq!(store.get("race").await.unwrap(), "winner");
    assert_eq!(pending_uploads(&server), 0, "the failed upload is aborted");
}

#[tokio::test]
async fn missing_objects() {
    let server = S3Server::start();
    let store = store(&server, "pfx").await;
    assert_eq!(store.head("nope").await.unwrap(), None);
    let err = store.get("nope").await.unwrap_err();
    assert!(
        matches!(err, MediaError::NotFound { ref key, .. } if key == "nope"),
        "{err:?}"
    );
    let err = store.get_range("nope", 0..10).await.unwrap_err();
    assert!(matches!(err, MediaError::NotFound { .. }), "{err:?}");
}

#[tokio::test]
async fn list_paginates_and_strips_the_prefix() {
    let server = S3Server::start();
    let store = store(&server, "pfx").await;
    // More keys than one ListObjectsV2 page (1000).
    let keys: Vec<String> = (0..1005).rev().map(|i| format!("many/{i:05}")).collect();
    futures::stream::iter(keys.iter())
        .map(|key| store.put(key, Bytes::from(key.clone())))
        .buffer_unordered(16)
        .try_collect::<()>()
        .await
        .unwrap();
    store.put("other", Bytes::from_static(b"xy")).await.unwrap();
    // Outside the store's prefix: never listed.
    let outside = connect(server.config(BUCKET, "elsewhere")).await;
    outside
        .put("many/outside", Bytes::from_static(b"z"))
        .await
        .unwrap();

    let listed = store.list("many/").await.unwrap();
    let mut expected: Vec<ObjectInfo> = keys
        .iter()
        .map(|key| ObjectInfo {
            key: key.clone(),
            size: key.len() as u64,
        })
        .collect();
    expected.sort_by(|a, b| a.key.cmp(&b.key));
    assert_eq!(listed, expected);

    let all = store.list("").await.unwrap();
    assert_eq!(all.len(), 1006);
    assert_eq!(
        all.last(),
        Some(&ObjectInfo {
            key: "other".into(),
            size: 2
        })
    );
    assert!(store.list("none/").await.unwrap().is_empty());
}

#[tokio::test]
async fn delete_is_idempotent() {
    let server = S3Server::start();
    let store = store(&server, "").await;
    store.put("gone", Bytes::from_static(b"x")).await.unwrap();
    store.delete("gone").await.unwrap();
    assert_eq!(store.head("gone").await.unwrap(), None);
    store.delete("gone").await.unwrap();
    store.delete("never-existed").await.unwrap();
}

#[tokio::test]
async fn aborted_or_dropped_writers_leave_nothing() {
    let server = S3Server::start();
    let store = store(&server, "").await;

    // Aborted after parts were uploaded.
    let mut writer = store.create("aborted").await.unwrap();
    writer.write(Bytes::from(pattern(10 * MIB))).await.unwrap();
    assert!(
        pending_uploads(&server) > 0,
        "a multipart upload is under way"
    );
    writer.abort().await.unwrap();
    assert_eq!(pending_uploads(&server), 0);
    assert_eq!(store.head("aborted").await.unwrap(), None);

    // Aborted while still buffering.
    let mut writer = store.create("small").await.unwrap();
    writer.write(Bytes::from_static(b"abc")).await.unwrap();
    writer.abort().await.unwrap();
    assert_eq!(store.head("small").await.unwrap(), None);

    // Dropped mid-upload: aborted in the background.
    let mut writer = store.create("dropped").await.unwrap();
    writer.write(Bytes::from(pattern(9 * MIB))).await.unwrap();
    drop(writer);
    for _ in 0..100 {
        if pending_uploads(&server) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(pending_uploads(&server), 0);
    assert!(store.list("").await.unwrap().is_empty());
}

#[tokio::test]
async fn probe_and_error_messages() {
    let server = S3Server::start();
    let store = store(&server, "").await;
    store.probe().await.unwrap();

    let missing = connect(server.config("no-such-bucket", "")).await;
    let err = missing.probe().await.unwrap_err();
    assert!(!err.is_transient(), "{err:?}");
    assert!(
        err.to_string()
            .contains("bucket \"no-such-bucket\" does not exist"),
        "{err}"
    );

    // Wrong secret: a permanent error that names the operation and key, never the secret.
    let mut config = server.config(BUCKET, "");
    let secret = "not-the-right-secret";
    config.credentials.as_mut().unwrap().secret_access_key = secret.into();
    assert!(!format!("{config:?}").contains(secret));
    let err = connect(config)
        .await
        .put("k", Bytes::from_static(b"x"))
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(!err.is_transient(), "{err:?}");
    assert!(message.contains("PutObject") && message.contains("s3://mimeo-test: k:"));
    assert!(!message.contains(secret), "{message}");

    // Nothing listening: a transient error.
    let mut config = server.config(BUCKET, "");
    config.endpoint = Some("http://127.0.0.1:1".into());
    let err = connect(config).await.head("k").await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert!(err.to_string().contains("HeadObject"), "{err}");
}

/// The server verifies and keeps the CRC32C sent with PutObject. s3s-fs ignores part checksums
/// and keeps none for multipart objects, so those cannot be observed here.
#[tokio::test]
async fn put_carries_a_crc32c_checksum() {
    let server = S3Server::start();
    let store = store(&server, "").await;
    store
        .put("small", Bytes::from_static(b"abc"))
        .await
        .unwrap();
    let head = server
        .client()
        .head_object()
        .bucket(BUCKET)
        .key("small")
        .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
        .send()
        .await
        .unwrap();
    // CRC32C("abc") = 0x364b3fb7, base64-encoded big-endian.
    assert_eq!(crc32c::crc32c(b"abc"), 0x364b_3fb7);
    assert_eq!(head.checksum_crc32_c(), Some("Nks/tw=="));
}

/// Markers are media other writers can touch: one from before upload ids moved into the body
/// (`KEY@HEX(ID)`, empty) still gets its upload aborted, and one far larger than any id is
/// passed over, not read into memory.
#[tokio::test]
async fn purge_reads_older_markers_and_skips_oversized_ones() {
    let server = S3Server::start();
    let store = store(&server, "").await;
    let client = server.client();
    let upload = client
        .create_multipart_upload()
        .bucket(BUCKET)
        .key("trail/old.seg")
        .send()
        .await
        .unwrap();
    let id = upload.upload_id().unwrap();
    let legacy = format!(".uploads/trail/old.seg@{}", hex::encode(id));
    store.put(&legacy, Bytes::new()).await.unwrap();
    let oversized = ".uploads/trail/big.seg@0123456789abcdef";
    store
        .put(oversized, Bytes::from(vec![b'x'; 64 * 1024]))
        .await
        .unwrap();
    assert!(pending_uploads(&server) > 0);

    let later = chrono::Utc::now() + chrono::Duration::seconds(5);
    store.purge_incomplete("trail/", later).await.unwrap();
    assert_eq!(
        pending_uploads(&server),
        0,
        "the older marker's upload is aborted"
    );
    assert_eq!(
        store.head(&legacy).await.unwrap(),
        None,
        "and its marker removed"
    );
    assert_eq!(
        store.head(oversized).await.unwrap(),
        Some(64 * 1024),
        "left alone"
    );
}

/// MinIO lists multipart uploads, but takes the listing's prefix as one exact key: the purge
/// must still find an upload under the trail that no marker records (a writer killed between
/// starting it and writing its marker), and leave alone uploads of other trails, of other
/// prefixes, and those started after `before`.
#[tokio::test(flavor = "multi_thread")]
async fn purge_finds_unmarked_uploads_under_the_prefix_on_minio() {
    let server = S3Server::minio();
    let store = store(&server, "site-a").await;
    let client = server.client();
    let start = |key: &'static str| {
        let client = client.clone();
        async move {
            client
                .create_multipart_upload()
                .bucket(BUCKET)
                .key(key)
                .send()
                .await
                .unwrap();
        }
    };
    start("site-a/trail/vol-1/00000.seg").await;
    start("site-a/trail/vol-2/00003.seg").await;
    start("site-a/other/vol-1/00000.seg").await;
    start("site-b/trail/vol-1/00000.seg").await;
    let open = || server.open_uploads(BUCKET, "");
    assert_eq!(open().len(), 4);

    let earlier = chrono::Utc::now() - chrono::Duration::seconds(60);
    assert_eq!(store.purge_incomplete("trail/", earlier).await.unwrap(), 0);
    assert_eq!(open().len(), 4, "uploads started after `before` stay");

    let later = chrono::Utc::now() + chrono::Duration::seconds(5);
    assert_eq!(store.purge_incomplete("trail/", later).await.unwrap(), 2);
    let mut left: Vec<String> = open().into_iter().map(|(key, _)| key).collect();
    left.sort();
    assert_eq!(
        left,
        [
            "site-a/other/vol-1/00000.seg",
            "site-b/trail/vol-1/00000.seg"
        ]
    );
}

/// A put retried after its first attempt succeeded unseen meets MinIO's 412, which MinIO sends
/// before it has read the body and then resets the connection. Through the fault proxy (which
/// forwards, faulting nothing here) the store must still get that answer and recognise the
/// object as its own, and refuse a put of other bytes under the key; so must a store that
/// talks to MinIO directly. (The proxy used to read until the close, lost the 412 in the
/// reset, and the fault test failed on a retried put.)
#[tokio::test(flavor = "multi_thread")]
async fn retried_put_through_the_proxy_finds_its_own_object_on_minio() {
    let server = S3Server::minio();
    let direct = store(&server, "").await;
    let proxy = common::fault_proxy::FaultProxy::start(&server.endpoint, 1, Duration::from_secs(1));
    let mut config = server.config(BUCKET, "");
    config.endpoint = Some(proxy.endpoint.clone());
    let proxied = connect(config).await;

    let data = Bytes::from(pattern(4 * MIB));
    direct.put("seg", data.clone()).await.unwrap();
    // Straight to MinIO and through the proxy alike.
    for store in [&direct, &proxied] {
        store.put("seg", data.clone()).await.unwrap();
        let err = store
            .put("seg", Bytes::from(pattern(4 * MIB + 1)))
            .await
            .unwrap_err();
        assert!(matches!(err, MediaError::AlreadyExists { .. }), "{err:?}");
    }
    assert_eq!(proxy.total_faults(), 0);
    assert_eq!(direct.get("seg").await.unwrap(), data);
}
