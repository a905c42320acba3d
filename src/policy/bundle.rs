//! Reading a policy directory: one consistent snapshot of the files that make a policy.
//!
//! A snapshot is read once and both compiled and hashed from memory, so the revision always
//! names exactly the text that was compiled, even when a file changes during a reload.
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::PolicyError;
use crate::classify::CATALOGUE_FILE;

/// The directory of `policy test` fixtures inside a policy directory: never loaded as
/// policy or data, and not part of the revision.
pub const FIXTURES_DIR: &str = "fixtures";

/// Kinds of file in a policy directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileRole {
    /// `*.rego` that is not a test: compiled into the engine.
    Policy,
    /// `*_test.rego`: only loaded by the test runner.
    Test,
    /// `data.yaml`, `data.yml`, `data.json`: merged into `data` at the directory's path.
    Data,
    /// `catalogue.yaml` at the top of the directory.
    Catalogue,
}

/// One file of a snapshot.
#[derive(Debug, Clone)]
pub(crate) struct BundleFile {
    /// Path as shown in messages (the directory joined with the relative path).
    pub path: PathBuf,
    /// Directory components below the policy directory (the data path of a data file).
    pub dirs: Vec<String>,
    pub role: FileRole,
    pub text: String,
}

/// The symlink through which the kubelet publishes a mounted ConfigMap's current version
/// (AtomicWriter): the files live in a timestamped directory next to it, the names at the top
/// are symlinks through `..data`, and an update writes a new directory and swaps this link.
const KUBELET_DATA_LINK: &str = "..data";

/// Every policy, test, data and catalogue file under `dir`, sorted by path.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    pub files: Vec<BundleFile>,
}

impl Snapshot {
    pub fn read(dir: &Path) -> Result<Snapshot, PolicyError> {
        let meta = std::fs::metadata(dir).map_err(|source| PolicyError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        if !meta.is_dir() {
            return Err(PolicyError::NotADirectory {
                path: dir.to_path_buf(),
            });
        }
        let mut attempt = 0;
        loop {
            let published = std::fs::read_link(dir.join(KUBELET_DATA_LINK)).ok();
            // The files of one version: behind `..data` when the kubelet manages the
            // directory, else the directory itself.
            let source = published
                .as_ref()
                .map_or(dir.to_path_buf(), |d| dir.join(d));
            let mut files = Vec::new();
            let walked = walk(&source, dir, &mut Vec::new(), &mut files);
            let republished = published.is_some()
                && std::fs::read_link(dir.join(KUBELET_DATA_LINK)).ok() != published;
            // The kubelet swapped versions (and may have removed the one being read): read
            // the new one instead of reporting a mix or a vanished file.
            if republished && attempt < 3 {
                attempt += 1;
                continue;
            }
            walked?;
            files.sort_by(|a, b| a.path.cmp(&b.path));
            return Ok(Snapshot { files });
        }
    }

    /// Hex SHA-256 (first 16 digits) over the files that affect decisions (policies, data,
    /// catalogue; not tests), names included.
    pub fn revision(&self) -> String {
        let mut h = Sha256::new();
        for f in self.files.iter().filter(|f| f.role != FileRole::Test) {
            let name = f.dirs.join("/");
            h.update(name.as_bytes());
            h.update([0]);
            h.update(
                f.path
                    .file_name()
                    .map(|n| n.as_encoded_bytes())
                    .unwrap_or_default(),
            );
            h.update([0]);
            h.update((f.text.len() as u64).to_le_bytes());
            h.update(f.text.as_bytes());
        }
        hex::encode(h.finalize())[..16].to_string()
    }

    pub fn of(&self, role: FileRole) -> impl Iterator<Item = &BundleFile> {
        self.files.iter().filter(move |f| f.role == role)
    }
}

/// Collect the files under `dir` into `out`; paths in messages are shown under `shown` (the
/// configured directory, when `dir` is the kubelet's timestamped copy of it).
fn walk(
    dir: &Path,
    shown: &Path,
    dirs: &mut Vec<String>,
    out: &mut Vec<BundleFile>,
) -> Result<(), PolicyError> {
    let entries = std::fs::read_dir(dir).map_err(|source| PolicyError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    for entry in entries {
        let entry = entry.map_err(|source| PolicyError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue; // editor swap files, .git, the kubelet's ..data and its versions
        }
        let shown_path = shown.join(&name);
        let file_type = entry.file_type().map_err(|source| PolicyError::Io {
            path: path.clone(),
            source,
        })?;
        if file_type.is_dir() {
            if dirs.is_empty() && name == FIXTURES_DIR {
                continue; // recorded decisions for `policy test`, not part of the policy
            }
            dirs.push(name);
            walk(&path, &shown_path, dirs, out)?;
            dirs.pop();
            continue;
        }
        let role = if name.ends_with("_test.rego") {
            FileRole::Test
        } else if name.ends_with(".rego") {
            FileRole::Policy
        } else if matches!(name.as_str(), "data.yaml" | "data.yml" | "data.json") {
            FileRole::Data
        } else if name == CATALOGUE_FILE && dirs.is_empty() {
            FileRole::Catalogue
        } else {
            continue;
        };
        let text = std::fs::read_to_string(&path).map_err(|source| PolicyError::Io {
            path: shown_path.clone(),
            source,
        })?;
        out.push(BundleFile {
            path: shown_path,
            dirs: dirs.clone(),
            role,
            text,
        });
    }
    Ok(())
}
