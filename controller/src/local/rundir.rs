//! The host side of one local pod: its private run directory, the host directories of its
//! volumes (the workspace written out read-only, emptyDirs the sandbox user owns), and its
//! termination message read as the kubelet reads it. Everything here is under a directory made
//! fresh for the run, so nothing a sandbox plants is followed or reused.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{ConfigMap, Pod};

use crate::local::{files, sandbox};
use crate::run::pod::SANDBOX_UID;
use crate::run::results::TERMINATION_MESSAGE_MAX;

/// The run directory of the `n`th pod: under `root` (shared: `/tmp`), named unpredictably, and
/// created fresh (0700) by the caller, so no other user can plant it or look inside.
pub fn work_dir(root: &Path, n: u64, name: &str) -> PathBuf {
    use std::hash::BuildHasher;
    let random = std::hash::RandomState::new().hash_one(n);
    root.join(format!(
        "crucible-run.{}.{n}.{random:016x}.{name}",
        std::process::id()
    ))
}

/// The termination message as the kubelet reads it: at most 4 KiB from the start. The sandbox
/// owns the directory the file is in: a symlink or a FIFO put in its place is not read (and
/// said so), or it would read a host file as root, or hang.
pub fn read_termination_message(path: &Path) -> Option<String> {
    match files::read_bounded(path, TERMINATION_MESSAGE_MAX as u64) {
        Ok(bytes) => (!bytes.is_empty()).then(|| String::from_utf8_lossy(&bytes).into_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            eprintln!(
                "crucible: the result file {} is not read: {e}",
                path.display()
            );
            None
        }
    }
}

/// A fresh directory the sandbox user can write: owned by 65534 as root; world-writable
/// otherwise (rootless runsc maps the caller to the sandbox's root, so host ownership does not
/// carry). Its parents are in the private run directory.
pub fn mkdir_owned(dir: &Path) -> Result<(), String> {
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    files::fresh_dir(dir, 0o755)?;
    let uid = u32::try_from(SANDBOX_UID).unwrap_or(65534);
    if !sandbox::is_root() || std::os::unix::fs::chown(dir, Some(uid), Some(uid)).is_err() {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777))
            .map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    Ok(())
}

/// Creates the run directory `dir` (fresh, 0700) and in it the host directories of the pod's
/// volumes: the workspace ConfigMap written out read-only (its items say which key goes to
/// which path), every other emptyDir an empty directory the sandbox user owns (`/tmp` is a
/// tmpfs inside the sandbox instead).
pub fn prepare_volumes(
    dir: &Path,
    pod: &Pod,
    workspace: Option<&ConfigMap>,
) -> Result<BTreeMap<String, PathBuf>, String> {
    files::fresh_dir(dir, 0o700)?;
    let mut out = BTreeMap::new();
    for volume in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let path = dir.join("volumes").join(&volume.name);
        if let Some(source) = &volume.config_map {
            let cm = workspace.ok_or("the workspace ConfigMap was not planned")?;
            for item in source.items.iter().flatten() {
                let bytes = cm
                    .data
                    .as_ref()
                    .and_then(|d| d.get(&item.key))
                    .map(|s| s.as_bytes().to_vec())
                    .or_else(|| {
                        cm.binary_data
                            .as_ref()
                            .and_then(|d| d.get(&item.key))
                            .map(|b| b.0.clone())
                    })
                    .ok_or_else(|| format!("the workspace has no key {}", item.key))?;
                // The kubelet refuses paths that leave the volume; so does this.
                let relative = Path::new(&item.path);
                if !relative
                    .components()
                    .all(|c| matches!(c, std::path::Component::Normal(_)))
                {
                    return Err(format!("workspace path {:?} leaves the volume", item.path));
                }
                let file = path.join(relative);
                if let Some(parent) = file.parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| format!("{}: {e}", parent.display()))?;
                }
                files::create_file(&file, 0o444, &bytes)?;
            }
            std::fs::create_dir_all(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        } else if volume.empty_dir.is_some() {
            mkdir_owned(&path)?;
        }
        out.insert(volume.name.clone(), path);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ConfigMapVolumeSource, KeyToPath, PodSpec, Volume};

    fn pod(path: &str) -> (Pod, ConfigMap) {
        let pod = Pod {
            spec: Some(PodSpec {
                volumes: Some(vec![Volume {
                    name: "workspace".into(),
                    config_map: Some(ConfigMapVolumeSource {
                        items: Some(vec![KeyToPath {
                            key: "k".into(),
                            path: path.into(),
                            mode: None,
                        }]),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let cm = ConfigMap {
            data: Some([("k".to_string(), "print(1)".to_string())].into()),
            ..Default::default()
        };
        (pod, cm)
    }

    #[test]
    fn workspace_files_are_written_read_only_and_cannot_leave_the_volume() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (p, cm) = pod("lib/eval.py");
        let volumes = prepare_volumes(&dir.path().join("run"), &p, Some(&cm)).expect("prepared");
        let file = volumes["workspace"].join("lib/eval.py");
        assert_eq!(std::fs::read_to_string(&file).expect("written"), "print(1)");
        let mode = std::fs::metadata(&file).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o444);
        for (i, bad) in ["../escape.py", "/abs.py"].into_iter().enumerate() {
            let (p, cm) = pod(bad);
            let run = dir.path().join(format!("bad{i}"));
            let err = prepare_volumes(&run, &p, Some(&cm)).expect_err(bad);
            assert!(err.contains("leaves the volume"), "{err}");
            assert!(!run.join("volumes/escape.py").exists());
        }
    }

    #[test]
    fn run_directories_are_unpredictable_and_never_reused() {
        let root = tempfile::tempdir().expect("tempdir");
        let first = work_dir(root.path(), 1, "pod");
        assert_ne!(first, work_dir(root.path(), 1, "pod"));
        // One planted where a run directory goes is refused, not used.
        std::fs::create_dir(&first).expect("planted");
        let (p, cm) = pod("eval.py");
        let err =
            prepare_volumes(&first, &p, Some(&cm)).expect_err("an existing one is not reused");
        assert!(err.contains("exists"), "{err}");
        assert!(!first.join("volumes").exists());
    }

    #[test]
    fn a_symlinked_result_file_is_not_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = dir.path().join("shadow");
        std::fs::write(&secret, r#"{"score": 1, "summary": "host secret"}"#).expect("write");
        let result = dir.path().join("result.json");
        std::os::unix::fs::symlink(&secret, &result).expect("symlink");
        assert_eq!(read_termination_message(&result), None);
    }

    #[test]
    fn termination_messages_are_read_as_the_kubelet_does() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("result.json");
        assert_eq!(read_termination_message(&path), None);
        std::fs::write(&path, "").expect("write");
        assert_eq!(read_termination_message(&path), None);
        std::fs::write(&path, "x".repeat(10_000)).expect("write");
        assert_eq!(
            read_termination_message(&path).map(|m| m.len()),
            Some(TERMINATION_MESSAGE_MAX)
        );
    }
}
