//! Images for local runs, without Docker or a registry: the docker-archive tarballs the
//! project builds (`infrastructure/local/cluster.sh image` or `up` writes `<cache>/images/python.tar`,
//! the same file it imports into the cluster's containerd), unpacked once with skopeo + umoci
//! into `<cache>/run/images/<digest>/rootfs` and then shared read-only by every run.
//!
//! A run costs one `readdir` and one `stat` per tarball: which references a tarball holds and
//! its image digest are remembered in `<cache>/run/images/tarballs/<hash of path>.json`,
//! keyed by the tarball's size and mtime.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};

use crate::digest::sha256_hex;
use crate::run::pod::{OUTPUTS_DIR, RESULT_PATH, WORKSPACE_DIR};
use crate::samples::spec::SAMPLES_DIR;

/// Largest `manifest.json` or image config read from a tarball.
const MAX_METADATA: u64 = 1024 * 1024;
/// Where skopeo keeps a blob-info cache it creates on first use.
const SKOPEO_CACHE: &str = "/var/lib/containers";

/// The parts of an image config a run needs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// `Entrypoint`.
    #[serde(default)]
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    #[serde(default)]
    pub cmd: Vec<String>,
    /// `Env` (`NAME=value`).
    #[serde(default)]
    pub env: Vec<String>,
    /// `WorkingDir`.
    #[serde(default)]
    pub working_dir: Option<String>,
}

/// An unpacked image.
#[derive(Clone, Debug)]
pub struct Image {
    /// `sha256:<hex>` of the image config (the image ID), for `provenance.imageID`.
    pub digest: String,
    /// The unpacked root filesystem (used read-only).
    pub rootfs: PathBuf,
    /// Entrypoint, cmd, env, working directory.
    pub config: ImageConfig,
}

/// Why an image cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// No tarball holds the reference.
    #[error(
        "image {reference} is not on this machine: no docker-archive in {dir} holds it. \
         `sudo infrastructure/local/cluster.sh image` builds localhost/crucible/python:3.11 there; \
         other images: `skopeo copy <source> docker-archive:{dir}/<name>.tar:<ref>`"
    )]
    NotFound {
        /// The reference.
        reference: String,
        /// The tarball directory.
        dir: String,
    },
    /// A tarball or the unpack failed.
    #[error("image {reference}: {message}")]
    Broken {
        /// The reference.
        reference: String,
        /// What went wrong.
        message: String,
    },
}

/// What a tarball holds, remembered between runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct TarballIndex {
    size: u64,
    mtime_ns: u128,
    tags: Vec<String>,
    digest: String,
}

/// Finds and unpacks images; one per process, shared by parallel runs (an image is unpacked
/// once even when several runs ask for it at the same moment).
#[derive(Debug)]
pub struct ImageStore {
    tarballs: PathBuf,
    unpacked: PathBuf,
    rootless: bool,
    known: Mutex<HashMap<String, Arc<Mutex<Option<Image>>>>>,
}

/// `${CRUCIBLE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/crucible}`, as `cluster.sh` computes it.
pub fn cache_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("CRUCIBLE_CACHE") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/cache"));
    base.join("crucible")
}

/// `name:tag` with the implied `:latest`.
fn normalize(reference: &str) -> String {
    let last = reference.rsplit('/').next().unwrap_or(reference);
    if last.contains(':') || last.contains('@') {
        reference.to_string()
    } else {
        format!("{reference}:latest")
    }
}

impl ImageStore {
    /// Images from `<cache>/images`, unpacked under `<cache>/run/images`.
    pub fn new(cache: &Path, rootless: bool) -> Self {
        ImageStore {
            tarballs: cache.join("images"),
            unpacked: cache.join("run").join("images"),
            rootless,
            known: Mutex::default(),
        }
    }

    /// The unpacked image `reference`, unpacking it first if needed.
    ///
    /// # Errors
    /// [`ImageError::NotFound`] with how to build it; [`ImageError::Broken`] otherwise.
    pub fn get(&self, reference: &str) -> Result<Image, ImageError> {
        let wanted = normalize(reference);
        let slot = self
            .known
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(wanted.clone())
            .or_default()
            .clone();
        let mut slot = slot.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(image) = slot.as_ref() {
            return Ok(image.clone());
        }
        let broken = |message: String| ImageError::Broken {
            reference: reference.to_string(),
            message,
        };
        let (tarball, index) =
            self.locate(&wanted)
                .map_err(broken)?
                .ok_or_else(|| ImageError::NotFound {
                    reference: reference.to_string(),
                    dir: self.tarballs.display().to_string(),
                })?;
        let dir = self
            .unpacked
            .join(index.digest.trim_start_matches("sha256:"));
        if dir.join("image.json").exists() {
            mount_points(&dir.join("rootfs")).map_err(broken)?;
        } else {
            self.unpack(&tarball, &wanted, &dir).map_err(broken)?;
        }
        let config = std::fs::read(dir.join("image.json"))
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
            .map_err(|e| broken(format!("{}: {e}", dir.display())))?;
        let image = Image {
            digest: index.digest,
            rootfs: dir.join("rootfs"),
            config,
        };
        *slot = Some(image.clone());
        Ok(image)
    }

    /// The tarball that holds `wanted`, and its index.
    fn locate(&self, wanted: &str) -> Result<Option<(PathBuf, TarballIndex)>, String> {
        let entries = match std::fs::read_dir(&self.tarballs) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{}: {e}", self.tarballs.display())),
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "tar"))
            .collect();
        paths.sort();
        for path in paths {
            let index = self.index(&path)?;
            if index.tags.iter().any(|t| normalize(t) == wanted) {
                return Ok(Some((path, index)));
            }
        }
        Ok(None)
    }

    /// The remembered index of `tarball`, or a fresh one when it changed.
    fn index(&self, tarball: &Path) -> Result<TarballIndex, String> {
        let meta = std::fs::metadata(tarball).map_err(|e| format!("{}: {e}", tarball.display()))?;
        let mtime_ns = meta
            .modified()
            .ok()
            .and_then(|m| m.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        let file = self.unpacked.join("tarballs").join(format!(
            "{}.json",
            &sha256_hex(tarball.as_os_str().as_encoded_bytes())[..16]
        ));
        let remembered = std::fs::read(&file)
            .ok()
            .and_then(|b| serde_json::from_slice::<TarballIndex>(&b).ok())
            .filter(|i| i.size == meta.len() && i.mtime_ns == mtime_ns);
        if let Some(index) = remembered {
            return Ok(index);
        }
        let (tags, digest) = read_docker_archive(tarball)?;
        let index = TarballIndex {
            size: meta.len(),
            mtime_ns,
            tags,
            digest,
        };
        if let Some(parent) = file.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        // A lost write only costs a re-read next time.
        let _ = serde_json::to_vec(&index).map(|b| std::fs::write(&file, b));
        Ok(index)
    }

    /// skopeo (docker-archive → OCI layout) + umoci (layout → rootfs), into a temporary
    /// directory renamed into place, so a crash or a concurrent run never sees half an image.
    fn unpack(&self, tarball: &Path, wanted: &str, dir: &Path) -> Result<(), String> {
        eprintln!(
            "crucible: unpacking {wanted} from {} (once)",
            tarball.display()
        );
        let parent = dir.parent().ok_or("no cache directory")?;
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        let work = parent.join(format!(".unpack-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
        let result = self.unpack_into(tarball, wanted, &work);
        let result = result.and_then(|()| match std::fs::rename(work.join("image"), dir) {
            Ok(()) => Ok(()),
            // Another process unpacked the same image meanwhile.
            Err(_) if dir.join("image.json").exists() => Ok(()),
            Err(e) => Err(format!("{}: {e}", dir.display())),
        });
        let _ = std::fs::remove_dir_all(&work);
        result
    }

    fn unpack_into(&self, tarball: &Path, wanted: &str, work: &Path) -> Result<(), String> {
        let layout = work.join("oci");
        let had_skopeo_cache = Path::new(SKOPEO_CACHE).exists();
        let copied = run_tool(
            Command::new("skopeo")
                .arg("copy")
                .arg("--quiet")
                .arg(format!("docker-archive:{}:{wanted}", tarball.display()))
                .arg(format!("oci:{}:image", layout.display())),
        );
        if !had_skopeo_cache {
            let _ = std::fs::remove_dir_all(SKOPEO_CACHE);
        }
        copied?;
        let bundle = work.join("bundle");
        let mut umoci = Command::new("umoci");
        umoci.arg("unpack");
        if self.rootless {
            umoci.arg("--rootless");
        }
        run_tool(
            umoci
                .arg("--image")
                .arg(format!("{}:image", layout.display()))
                .arg(&bundle),
        )?;
        let config = oci_image_config(&layout)?;
        let image = work.join("image");
        std::fs::create_dir_all(&image).map_err(|e| e.to_string())?;
        let rootfs = image.join("rootfs");
        std::fs::rename(bundle.join("rootfs"), &rootfs).map_err(|e| e.to_string())?;
        mount_points(&rootfs)?;
        let bytes = serde_json::to_vec_pretty(&config).map_err(|e| e.to_string())?;
        std::fs::write(image.join("image.json"), bytes).map_err(|e| e.to_string())
    }
}

/// Creates the mount points the sandbox mounts on that the image lacks, so runs never write to
/// the shared rootfs; also for images unpacked before a mount point was added.
fn mount_points(rootfs: &Path) -> Result<(), String> {
    let result_dir = RESULT_PATH.rsplit_once('/').map_or("/crucible", |(d, _)| d);
    for point in [
        WORKSPACE_DIR,
        OUTPUTS_DIR,
        result_dir,
        SAMPLES_DIR,
        "/tmp",
        "/proc",
        "/dev",
        "/sys",
    ] {
        let path = rootfs.join(point.trim_start_matches('/'));
        if !path.exists() {
            std::fs::create_dir_all(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    Ok(())
}

fn run_tool(command: &mut Command) -> Result<(), String> {
    let program = command.get_program().to_string_lossy().into_owned();
    let out = command.output().map_err(|e| {
        format!("cannot run {program} ({e}); it comes with `infrastructure/local/cluster.sh image` (apt-get install skopeo umoci)")
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Entrypoint, Cmd, Env and WorkingDir from an OCI layout with one image.
fn oci_image_config(layout: &Path) -> Result<ImageConfig, String> {
    let read_json = |path: PathBuf| -> Result<serde_json::Value, String> {
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))
    };
    let blob = |digest: &serde_json::Value| {
        let hex = digest
            .as_str()
            .unwrap_or_default()
            .trim_start_matches("sha256:");
        layout.join("blobs").join("sha256").join(hex)
    };
    let index = read_json(layout.join("index.json"))?;
    let manifest = read_json(blob(&index["manifests"][0]["digest"]))?;
    let config = read_json(blob(&manifest["config"]["digest"]))?;
    let c = &config["config"];
    let list = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    Ok(ImageConfig {
        entrypoint: list(&c["Entrypoint"]),
        cmd: list(&c["Cmd"]),
        env: list(&c["Env"]),
        working_dir: c["WorkingDir"].as_str().map(String::from),
    })
}

/// The tags of a docker-archive and the digest of its image config, reading only tar headers
/// and the two small metadata files.
fn read_docker_archive(path: &Path) -> Result<(Vec<String>, String), String> {
    let shown = path.display();
    let mut file = std::fs::File::open(path).map_err(|e| format!("{shown}: {e}"))?;
    let entries = tar_entries(&mut file).map_err(|e| format!("{shown}: {e}"))?;
    let mut read = |name: &str| -> Result<Vec<u8>, String> {
        let (offset, size) = entries
            .get(name.trim_start_matches("./"))
            .copied()
            .ok_or_else(|| format!("{shown}: no {name} (not a docker-archive)"))?;
        if size > MAX_METADATA {
            return Err(format!(
                "{shown}: {name} is larger than {MAX_METADATA} bytes"
            ));
        }
        let mut bytes = vec![0; size as usize];
        file.seek(SeekFrom::Start(offset))
            .and_then(|_| file.read_exact(&mut bytes))
            .map_err(|e| format!("{shown}: {e}"))?;
        Ok(bytes)
    };
    let manifest: serde_json::Value = serde_json::from_slice(&read("manifest.json")?)
        .map_err(|e| format!("{shown}: manifest.json: {e}"))?;
    let first = &manifest[0];
    let config_name = first["Config"]
        .as_str()
        .ok_or_else(|| format!("{shown}: manifest.json names no Config"))?;
    let config = read(config_name)?;
    let tags = first["RepoTags"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    Ok((tags, format!("sha256:{}", sha256_hex(&config))))
}

/// Name → (data offset, size) of every regular file in a tar, seeking over the data.
fn tar_entries(file: &mut std::fs::File) -> std::io::Result<HashMap<String, (u64, u64)>> {
    let mut entries = HashMap::new();
    let mut header = [0u8; 512];
    let mut long_name: Option<String> = None;
    let mut offset = 0u64;
    loop {
        file.seek(SeekFrom::Start(offset))?;
        if file.read_exact(&mut header).is_err() || header.iter().all(|&b| b == 0) {
            return Ok(entries);
        }
        let field = |range: std::ops::Range<usize>| {
            let raw = &header[range];
            let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
            String::from_utf8_lossy(&raw[..end]).into_owned()
        };
        let size = u64::from_str_radix(field(124..136).trim(), 8).unwrap_or(0);
        let data = offset + 512;
        let kind = header[156];
        if kind == b'L' {
            let mut name = vec![0; size.min(4096) as usize];
            file.read_exact(&mut name)?;
            let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
            long_name = Some(String::from_utf8_lossy(&name[..end]).into_owned());
        } else {
            let prefix = field(345..500);
            let name = long_name.take().unwrap_or_else(|| {
                let name = field(0..100);
                if prefix.is_empty() {
                    name
                } else {
                    format!("{prefix}/{name}")
                }
            });
            if kind == b'0' || kind == 0 {
                entries.insert(name.trim_start_matches("./").to_string(), (data, size));
            }
        }
        offset = data + size.div_ceil(512) * 512;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_get_the_implied_latest_tag() {
        assert_eq!(
            normalize("localhost/crucible/python:3.11"),
            "localhost/crucible/python:3.11"
        );
        assert_eq!(normalize("localhost:5000/py"), "localhost:5000/py:latest");
        assert_eq!(normalize("py@sha256:ab"), "py@sha256:ab");
    }

    #[test]
    fn a_missing_image_says_how_to_build_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ImageStore::new(dir.path(), false);
        let err = store
            .get("localhost/crucible/python:3.11")
            .expect_err("no tarballs");
        assert!(matches!(err, ImageError::NotFound { .. }));
        assert!(err.to_string().contains("cluster.sh image"), "{err}");
    }

    /// A two-file tar as `tar` writes it, one name longer than 100 bytes (GNU `L` entry).
    fn tar(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut entry = |name: &str, kind: u8, data: &[u8]| {
            let mut h = [0u8; 512];
            h[..name.len().min(100)].copy_from_slice(&name.as_bytes()[..name.len().min(100)]);
            h[124..135].copy_from_slice(format!("{:011o}", data.len()).as_bytes());
            h[156] = kind;
            out.extend_from_slice(&h);
            out.extend_from_slice(data);
            out.resize(out.len().div_ceil(512) * 512, 0);
        };
        for (name, data) in files {
            if name.len() > 100 {
                entry("././@LongLink", b'L', name.as_bytes());
            }
            entry(name, b'0', data);
        }
        out.extend_from_slice(&[0u8; 1024]);
        out
    }

    #[test]
    fn docker_archives_give_their_tags_and_config_digest() {
        let config = br#"{"config": {"Cmd": ["/usr/bin/python3"]}}"#;
        let long = format!("{}.json", "c".repeat(120));
        let manifest =
            format!(r#"[{{"Config": "{long}", "RepoTags": ["localhost/x:1"], "Layers": []}}]"#);
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.tar");
        std::fs::write(
            &path,
            tar(&[(&long, config), ("manifest.json", manifest.as_bytes())]),
        )
        .expect("write");
        let (tags, digest) = read_docker_archive(&path).expect("readable");
        assert_eq!(tags, ["localhost/x:1"]);
        assert_eq!(digest, format!("sha256:{}", sha256_hex(config)));
        std::fs::write(&path, tar(&[("other", b"x")])).expect("write");
        assert!(
            read_docker_archive(&path)
                .expect_err("no manifest")
                .contains("not a docker-archive")
        );
    }
}
