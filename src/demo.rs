//! `mimeo demo`: the whole story on local disks in one command. It runs the very resources of
//! `examples/local/` (their paths rewritten to the demo directory) through the local driver.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::api::*;
use crate::error::{Error, Result};
use crate::local::get::format_table;
use crate::local::{Local, read_inputs};

const EXAMPLE_DIR: &str = "/tmp/mimeo-example";
const EXAMPLES: [(&str, &str); 5] = [
    (
        "01-media.yaml",
        include_str!("../examples/local/01-media.yaml"),
    ),
    (
        "02-trails.yaml",
        include_str!("../examples/local/02-trails.yaml"),
    ),
    (
        "03-policies.yaml",
        include_str!("../examples/local/03-policies.yaml"),
    ),
    (
        "04-restore.yaml",
        include_str!("../examples/local/04-restore.yaml"),
    ),
    (
        "05-vault-away.yaml",
        include_str!("../examples/local/vault-away/vault-away.yaml"),
    ),
];
const MARKER: &str = ".mimeo-demo";

/// Sample work items: (name, files, bytes per large file).
const ITEMS: [(&str, usize, usize); 6] = [
    ("finance", 3, 2 << 20),
    ("hr", 2, 1 << 20),
    ("web", 4, 1 << 20),
    ("db", 2, 3 << 20),
    ("logs", 6, 512 << 10),
    ("mail", 3, 1 << 20),
];

/// Deterministic pseudo-random bytes (xorshift), so sample data does not compress to nothing.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        out.extend_from_slice(&seed.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Creates the sample work items under `dir/data`.
pub fn make_sample_data(dir: &Path) -> Result<()> {
    for (i, (name, files, size)) in ITEMS.iter().enumerate() {
        let root = dir.join("data").join(name);
        let sub = root.join("archive/2026");
        std::fs::create_dir_all(&sub).map_err(|e| Error::io(&sub, e))?;
        std::fs::create_dir_all(root.join("empty")).map_err(|e| Error::io(&root, e))?;
        for f in 0..*files {
            let p = sub.join(format!("part-{f}.bin"));
            std::fs::write(&p, noise(*size, (i * 100 + f + 1) as u64))
                .map_err(|e| Error::io(&p, e))?;
        }
        let readme = root.join("README.txt");
        std::fs::write(&readme, format!("work item {name}\n"))
            .map_err(|e| Error::io(&readme, e))?;
        let link = root.join("latest");
        if !link.exists() {
            std::os::unix::fs::symlink("archive/2026/part-0.bin", &link)
                .map_err(|e| Error::io(&link, e))?;
        }
    }
    Ok(())
}

/// Runs the demo in `dir` (wiped first if a previous demo made it).
pub async fn run(dir: Option<PathBuf>) -> Result<()> {
    let dir = dir.unwrap_or_else(|| PathBuf::from(EXAMPLE_DIR));
    if dir.exists() {
        if !dir.join(MARKER).exists()
            && std::fs::read_dir(&dir)
                .map_err(|e| Error::io(&dir, e))?
                .next()
                .is_some()
        {
            return Err(Error::Usage(format!(
                "{} exists and was not made by mimeo demo; pass --dir with a new directory",
                dir.display()
            )));
        }
        std::fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    }
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    std::fs::write(dir.join(MARKER), "").map_err(|e| Error::io(&dir, e))?;
    println!("== Mimeo demo in {}", dir.display());
    make_sample_data(&dir)?;
    let res_dir = dir.join("resources");
    std::fs::create_dir_all(&res_dir).map_err(|e| Error::io(&res_dir, e))?;
    let mut files = Vec::new();
    for (name, text) in EXAMPLES {
        let p = res_dir.join(name);
        let body = text.replace(EXAMPLE_DIR, &dir.display().to_string());
        std::fs::write(&p, body).map_err(|e| Error::io(&p, e))?;
        files.push(p);
    }
    let mut local = Local::new(dir.join("state"));
    println!(
        "\n== 1. back up 6 work items with 4 interleaved streams, duplicate finance+db to the vault,"
    );
    println!("==    clone every volume (media duplication), restore finance");
    let first = local.apply(read_inputs(&files[..4])?).await?;
    println!(
        "\n== 2. the vault and clone media go offsite (available: false); restore finance again"
    );
    let second = local.apply(read_inputs(&files[4..])?).await?;
    let set = local.state.load_resources()?;
    print!("\n{}", summary(&set, &local.state.load_catalog()?));
    println!(
        "\nInspect: mimeo local --state {} get catalogentries",
        dir.join("state").display()
    );
    std::io::stdout().flush().ok();
    let failures: Vec<String> = first.failures.into_iter().chain(second.failures).collect();
    if failures.is_empty() {
        Ok(())
    } else {
        Err(Error::Demo(failures))
    }
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
}

fn run_secs(p: &DuplicationPolicy) -> String {
    p.status
        .as_ref()
        .and_then(|s| s.last_run.as_ref())
        .and_then(|r| Some((r.end? - r.start).num_milliseconds() as f64 / 1000.0))
        .map_or("-".into(), |s| format!("{s:.2}s"))
}

/// The summary table printed at the end of the demo.
pub fn summary(set: &ResourceSet, catalog: &crate::engine::catalog::Catalog) -> String {
    let mut out = String::from("== Trails\n");
    let mut rows = vec![vec![
        "TRAIL".into(),
        "KIND".into(),
        "MEDIA".into(),
        "VOLUMES".into(),
        "BYTES".into(),
        "INSTANCES".into(),
    ]];
    let trail_row = |name: &str, kind: &str, mc: &str, st: Option<&TrailStatus>| {
        let st = st.cloned().unwrap_or_default();
        vec![
            name.into(),
            kind.into(),
            mc.into(),
            st.volumes.len().to_string(),
            mib(st.bytes),
            st.instances.to_string(),
        ]
    };
    for (n, t) in &set.backup_trails {
        rows.push(trail_row(
            n,
            "backup",
            &t.spec.media_class_name,
            t.status.as_ref(),
        ));
    }
    for (n, t) in &set.duplication_trails {
        rows.push(trail_row(
            n,
            "duplication",
            &t.spec.media_class_name,
            t.status.as_ref(),
        ));
    }
    out += &format_table(&rows);
    out += "\n== Media duplication vs logical duplication of a subset\n";
    let mut rows = vec![vec![
        "POLICY".into(),
        "MODE".into(),
        "INSTANCES".into(),
        "BYTES WRITTEN".into(),
        "TIME".into(),
    ]];
    for (n, p) in &set.policies {
        let last = p.status.as_ref().and_then(|s| s.last_run.clone());
        rows.push(vec![
            n.clone(),
            format!("{:?}", p.spec.mode),
            last.as_ref()
                .map_or("-".into(), |r| r.instances.to_string()),
            last.as_ref().map_or("-".into(), |r| mib(r.bytes)),
            run_secs(p),
        ]);
    }
    out += &format_table(&rows);
    out += "\n== Restores\n";
    let mut rows = vec![vec![
        "RESTORE".into(),
        "PHASE".into(),
        "FROM".into(),
        "ROLE".into(),
        "TIME".into(),
        "REASON".into(),
    ]];
    for (n, r) in &set.restores {
        let st = r.status.clone().unwrap_or_default();
        rows.push(vec![
            n.clone(),
            format!("{:?}", st.phase),
            st.restored_from
                .as_ref()
                .map_or("-".into(), |f| f.trail.clone()),
            st.restored_from
                .as_ref()
                .map_or("-".into(), |f| format!("{:?}", f.role)),
            st.duration_seconds
                .map_or("-".into(), |s| format!("{s:.3}s")),
            st.reason.clone(),
        ]);
    }
    out += &format_table(&rows);
    let valid = catalog.valid().count();
    out += &format!(
        "\nCatalog: {} entries ({valid} Valid)\n",
        catalog.entries().len()
    );
    out
}
