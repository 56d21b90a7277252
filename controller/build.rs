//! Records the git commit the binary is built from, for `crucible --version`.
//!
//! `CRUCIBLE_GIT_COMMIT` wins (image builds from a source tree without `.git`); else `git
//! rev-parse` in the repository; else `unknown`, so a build never fails for want of git.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (out.status.success() && !text.is_empty()).then(|| text.to_string())
}

fn main() {
    println!("cargo:rerun-if-env-changed=CRUCIBLE_GIT_COMMIT");
    let commit = std::env::var("CRUCIBLE_GIT_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(|| {
            let commit = git(&["rev-parse", "--short=12", "HEAD"])?;
            // Build again when HEAD moves: a checkout (HEAD) or a commit on the branch (its ref,
            // loose or packed). `--git-path` resolves them in worktrees too.
            let mut watched = vec!["HEAD".to_string(), "packed-refs".to_string()];
            watched.extend(git(&["symbolic-ref", "-q", "HEAD"]));
            for name in watched {
                if let Some(path) = git(&["rev-parse", "--git-path", &name]) {
                    println!("cargo:rerun-if-changed={path}");
                }
            }
            Some(commit)
        })
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=CRUCIBLE_GIT_COMMIT={commit}");
}
