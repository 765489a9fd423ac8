//! The archive stream against a real tree: a copy of /usr/share/doc (thousands of files) plus the
//! sample tree, written and extracted concurrently through an OS pipe.
mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::tree::{assert_same_tree, copy_system_tree, make_sample_tree, tree_stats};
use mimeo::engine::archive::{extract_archive, write_dir_archive};

#[test]
fn system_tree_round_trips_through_a_pipe() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let system = Path::new("/usr/share/doc");
    if system.is_dir() {
        copy_system_tree(system, &src);
    }
    make_sample_tree(&src.join("zz-sample"));
    let (files, dirs, symlinks, bytes) = tree_stats(&src);

    let (reader, writer) = std::io::pipe().unwrap();
    let writer_src = src.clone();
    let backup = std::thread::spawn(move || write_dir_archive(&writer_src, None, writer));
    let dst = tmp.path().join("dst");
    let report = extract_archive(reader, &dst).unwrap();
    let summary = backup.join().unwrap().unwrap();

    let context = format!("{files} files, {dirs} dirs, {symlinks} symlinks, {bytes} bytes");
    assert!(
        summary.skipped.is_empty(),
        "{context}: skipped {:?}",
        summary.skipped
    );
    assert!(
        report.refused.is_empty(),
        "{context}: refused {:?}",
        report.refused
    );
    assert_eq!(report.entries, summary.entries, "{context}");
    assert_eq!(report.bytes, summary.file_bytes, "{context}");
    assert_eq!(summary.entries, files + dirs + symlinks, "{context}");
    // Second names of an inode carry no data in the stream.
    assert!(summary.file_bytes <= bytes, "{context}");
    assert_same_tree(&src, &dst);
}

#[test]
fn assert_same_tree_notices_differences() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    make_sample_tree(&a);
    let expect_panic = |b: &Path, needle: &str| {
        let result = std::panic::catch_unwind(|| assert_same_tree(&a, b));
        let message = result.expect_err(needle);
        let text = message
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_default();
        assert!(text.contains(needle), "{text:?} lacks {needle:?}");
    };
    let copy = |name: &str| {
        let b = tmp.path().join(name);
        copy_system_tree(&a, &b);
        assert_same_tree(&a, &b);
        b
    };

    let b = copy("content");
    let mut bytes = fs::read(b.join("data/random.bin")).unwrap();
    bytes[1234] ^= 1;
    fs::write(b.join("data/random.bin"), bytes).unwrap();
    // Keep the original mtime, so only the contents differ.
    let mtime = filetime::FileTime::from_last_modification_time(
        &fs::metadata(a.join("data/random.bin")).unwrap(),
    );
    filetime::set_file_mtime(b.join("data/random.bin"), mtime).unwrap();
    expect_panic(&b, "data/random.bin: contents differ at byte 1234");

    let b = copy("mtime");
    fs::write(b.join("README"), fs::read(a.join("README")).unwrap()).unwrap();
    expect_panic(&b, "README: mtime seconds differ");

    let b = copy("mode");
    fs::set_permissions(b.join("etc/secret.key"), fs::Permissions::from_mode(0o644)).unwrap();
    expect_panic(&b, "etc/secret.key: permission bits differ");

    let b = copy("missing");
    fs::remove_dir(b.join("data/empty-dir")).unwrap();
    expect_panic(&b, "data/empty-dir: present in");

    let b = copy("hard-link");
    let second = b.join("links/second-name");
    fs::remove_file(&second).unwrap();
    fs::copy(b.join("links/original"), &second).unwrap();
    let time = filetime::FileTime::from_last_modification_time(
        &fs::metadata(a.join("links/original")).unwrap(),
    );
    filetime::set_file_mtime(&second, time).unwrap();
    expect_panic(&b, "share an inode");
}
