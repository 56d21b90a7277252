//! Checks an Evaluation spec beyond what the OpenAPI schema can express. Pure.
//!
//! Everything the API server would refuse when the pod is created is caught here, so an invalid
//! spec ends as `Stalled=True, reason=InvalidSpec` with every problem listed, and no pod.

use k8s_openapi::api::core::v1::EnvVar;

use crate::config::Config;
use crate::config::cidr::{self, Cidr};
use crate::crd::bounds::{
    MAX_ARG_LEN, MAX_ARGS, MAX_ENV, MAX_ENV_NAME_LEN, MAX_ENV_VALUE_LEN, MAX_IMAGE_LEN,
    MAX_INLINE_BYTES, MAX_POD_SPEC_BYTES, MAX_SOURCE_FILES, MAX_SOURCE_PATH_LEN, capped, json_len,
    shown,
};
use crate::crd::evaluation::{EvaluationSpec, NetworkMode, Source};
use crate::run::{models, pod};
use crate::{duration, quantity};

/// JSON bytes a source file adds to the pod spec beyond its path twice (key and path of its
/// item in the workspace volume): field names, quotes, a hash suffix on the key.
const POD_BYTES_PER_FILE: usize = 40;
/// Longest allowed timeout: a day-long sandbox is almost certainly a mistake.
const MAX_TIMEOUT_SECS: u64 = 24 * 3600;
/// Prefix of the environment variables the controller injects.
pub const RESERVED_ENV_PREFIX: &str = "CRUCIBLE_";

/// Every problem of `spec`, in a stable order; `Ok` when it can run.
///
/// # Errors
/// The list of problems, each a sentence naming the field.
pub fn validate(spec: &EvaluationSpec, config: &Config) -> Result<(), Vec<String>> {
    let mut problems = size_problems(spec);
    check_image("spec.image", &spec.image, &mut problems);
    check_env("spec.env", spec.env.as_deref(), &mut problems);
    if let Some(timeout) = &spec.timeout {
        match duration::parse(timeout) {
            Ok(d) if d.as_secs() < 1 => problems.push("spec.timeout must be at least 1s".into()),
            Ok(d) if d.as_secs() > MAX_TIMEOUT_SECS => {
                problems.push("spec.timeout must be at most 24h".into())
            }
            Ok(_) => {}
            Err(e) => problems.push(format!("spec.timeout: {e}")),
        }
    }
    if let Some(Err(e)) = spec.queue_timeout.as_deref().map(duration::parse) {
        problems.push(format!("spec.queueTimeout: {e}"));
    }
    if spec.pass_threshold.is_some_and(|t| !t.is_finite()) {
        problems.push("spec.passThreshold must be a finite number".into());
    }
    problems.extend(crate::samples::spec::problems(spec));
    match &spec.source {
        Some(Source::Inline(inline)) => check_inline(&inline.files, &mut problems),
        Some(Source::Git(git)) => {
            if git.url.trim().is_empty() {
                problems.push("spec.source.git.url must not be empty".into());
            }
            if let Some(path) = &git.path
                && path.split('/').any(|s| s == "..")
            {
                problems.push(format!(
                    "spec.source.git.path: {} must not contain '..'",
                    shown(path)
                ));
            }
        }
        None => {}
    }
    if let Some(resources) = &spec.resources {
        for (field, q) in [
            ("cpu", &resources.cpu),
            ("memory", &resources.memory),
            ("ephemeralStorage", &resources.ephemeral_storage),
        ] {
            if let Some(q) = q
                && !quantity::is_positive(&q.0)
            {
                problems.push(format!(
                    "spec.resources.{field}: {} is not a positive quantity such as 500m, 1 or 512Mi",
                    shown(&q.0)
                ));
            }
        }
    }
    if let Some(scorer) = &spec.scorer {
        check_image("spec.scorer.image", &scorer.image, &mut problems);
        check_env("spec.scorer.env", scorer.env.as_deref(), &mut problems);
    }
    check_sandbox(spec, config, &mut problems);
    if requests_gpu(spec) && !models::models(spec).is_empty() {
        problems.push(format!(
            "spec.models is not available with spec.resources.gpu (GPU evaluations run in {:?}, \
             without network, so they cannot reach the model gateway)",
            config.gpu_runtime_class
        ));
    }
    models::problems(spec, config.gateway.is_some(), &mut problems);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(capped(problems))
    }
}

/// Every size bound `spec` exceeds (crd::bounds), in a stable order. Independent of the
/// controller's configuration, so a suite can check each child before creating any; and
/// independent of the CRD schema, which Helm never upgrades.
pub fn size_problems(spec: &EvaluationSpec) -> Vec<String> {
    let mut problems = Vec::new();
    check_len("spec.image", &spec.image, MAX_IMAGE_LEN, &mut problems);
    check_args("spec.command", spec.command.as_deref(), &mut problems);
    check_args("spec.args", spec.args.as_deref(), &mut problems);
    check_env_size("spec.env", spec.env.as_deref(), &mut problems);
    if let Some(scorer) = &spec.scorer {
        check_len(
            "spec.scorer.image",
            &scorer.image,
            MAX_IMAGE_LEN,
            &mut problems,
        );
        check_args(
            "spec.scorer.command",
            scorer.command.as_deref(),
            &mut problems,
        );
        check_args("spec.scorer.args", scorer.args.as_deref(), &mut problems);
        check_env_size("spec.scorer.env", scorer.env.as_deref(), &mut problems);
    }
    if let Some(Source::Inline(inline)) = &spec.source {
        let files = &inline.files;
        if files.len() > MAX_SOURCE_FILES {
            problems.push(format!(
                "spec.source.inline.files: {} files, at most {MAX_SOURCE_FILES} allowed",
                files.len()
            ));
        }
        let total = files
            .iter()
            .fold(0usize, |sum, (p, c)| sum.saturating_add(p.len() + c.len()));
        if total > MAX_INLINE_BYTES {
            problems.push(format!(
                "spec.source.inline.files: {total} bytes in total, at most {MAX_INLINE_BYTES} allowed"
            ));
        }
    }
    models::size_problems(spec, &mut problems);
    let pod_bytes = pod_spec_estimate(spec);
    if pod_bytes > MAX_POD_SPEC_BYTES {
        problems.push(format!(
            "spec: command, args, env and file paths need about {pod_bytes} bytes in the pod \
             spec, at most {MAX_POD_SPEC_BYTES} allowed"
        ));
    }
    problems
}

/// Bytes `spec` puts into its pod spec: what it copies there (command, args and env of both
/// containers; every inline file's path twice; its models' variables). Git files are bounded by count at fetch time.
fn pod_spec_estimate(spec: &EvaluationSpec) -> usize {
    let scorer = spec.scorer.as_ref().map_or(0, |s| {
        json_len(&s.command) + json_len(&s.args) + json_len(&s.env)
    });
    let files = match &spec.source {
        Some(Source::Inline(inline)) => inline.files.keys().fold(0usize, |sum, path| {
            sum.saturating_add(2 * path.len() + POD_BYTES_PER_FILE)
        }),
        _ => 0,
    };
    [
        json_len(&spec.command),
        json_len(&spec.args),
        json_len(&spec.env),
        scorer,
        files,
        models::pod_bytes(spec),
    ]
    .into_iter()
    .fold(0, usize::saturating_add)
}

fn check_len(field: &str, text: &str, max: usize, problems: &mut Vec<String>) {
    if text.len() > max {
        problems.push(format!(
            "{field}: {} bytes, at most {max} allowed",
            text.len()
        ));
    }
}

fn check_args(field: &str, args: Option<&[String]>, problems: &mut Vec<String>) {
    let args = args.unwrap_or_default();
    if args.len() > MAX_ARGS {
        problems.push(format!(
            "{field}: {} entries, at most {MAX_ARGS} allowed",
            args.len()
        ));
    }
    if let Some((i, arg)) = args.iter().enumerate().find(|(_, a)| a.len() > MAX_ARG_LEN) {
        check_len(&format!("{field}[{i}]"), arg, MAX_ARG_LEN, problems);
    }
}

fn check_env_size(field: &str, env: Option<&[EnvVar]>, problems: &mut Vec<String>) {
    let env = env.unwrap_or_default();
    if env.len() > MAX_ENV {
        problems.push(format!(
            "{field}: {} variables, at most {MAX_ENV} allowed",
            env.len()
        ));
    }
    for var in env {
        check_len(
            &format!("{field}: name {}", shown(&var.name)),
            &var.name,
            MAX_ENV_NAME_LEN,
            problems,
        );
        if let Some(value) = &var.value {
            check_len(
                &format!("{field}: {}", shown(&var.name)),
                value,
                MAX_ENV_VALUE_LEN,
                problems,
            );
        }
    }
}

/// The RuntimeClass the pod of `spec` runs with: the GPU class (gVisor with nvproxy) when it
/// requests GPUs, else the class of its network mode.
pub fn runtime_class<'a>(spec: &EvaluationSpec, config: &'a Config) -> &'a str {
    if requests_gpu(spec) {
        return &config.gpu_runtime_class;
    }
    if pod::has_network(spec) {
        &config.allowlist_runtime_class
    } else {
        &config.runtime_class
    }
}

/// Whether `spec` asks for at least one GPU.
fn requests_gpu(spec: &EvaluationSpec) -> bool {
    spec.resources
        .as_ref()
        .and_then(|r| r.gpu)
        .is_some_and(|g| g > 0)
}

/// The network mode of `spec` (None when unset).
pub fn network_mode(spec: &EvaluationSpec) -> NetworkMode {
    spec.sandbox
        .as_ref()
        .and_then(|s| s.network)
        .unwrap_or_default()
}

fn check_image(field: &str, image: &str, problems: &mut Vec<String>) {
    if image.trim().is_empty() || image.chars().any(char::is_whitespace) {
        problems.push(format!(
            "{field}: {} is not an image reference",
            shown(image)
        ));
    }
}

fn check_env(field: &str, env: Option<&[EnvVar]>, problems: &mut Vec<String>) {
    for var in env.unwrap_or_default() {
        let valid = !var.name.is_empty()
            && !var.name.starts_with(|c: char| c.is_ascii_digit())
            && var
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c));
        if !valid {
            problems.push(format!(
                "{field}: {} is not a valid variable name",
                shown(&var.name)
            ));
        } else if var.name.starts_with(RESERVED_ENV_PREFIX) {
            problems.push(format!(
                "{field}: {} is reserved (the controller sets CRUCIBLE_* variables)",
                shown(&var.name)
            ));
        }
    }
}

fn check_inline(files: &std::collections::BTreeMap<String, String>, problems: &mut Vec<String>) {
    if files.is_empty() {
        problems.push("spec.source.inline.files must name at least one file".into());
    }
    for path in files.keys() {
        let bad_segment = path
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..");
        let bad_char = !path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._/".contains(c));
        if bad_segment || bad_char || path.len() > MAX_SOURCE_PATH_LEN {
            problems.push(format!(
                "spec.source.inline.files: {} must be a relative path of at most {MAX_SOURCE_PATH_LEN} letters, digits, '-', '_', '.' and '/' without '..'",
                shown(path)
            ));
        }
    }
}

fn check_sandbox(spec: &EvaluationSpec, config: &Config, problems: &mut Vec<String>) {
    let Some(sandbox) = &spec.sandbox else {
        return;
    };
    let mode = network_mode(spec);
    let expected = runtime_class(spec, config);
    if let Some(class) = &sandbox.runtime_class_name
        && class != expected
    {
        problems.push(format!(
            "spec.sandbox.runtimeClassName: {class:?} is not the sandbox this controller uses for network {mode:?} ({expected:?})"
        ));
    }
    // The GPU class is one sandbox without network: an allowlist there would silently not apply.
    if mode == NetworkMode::Allowlist && requests_gpu(spec) {
        problems.push(format!(
            "spec.sandbox.network: Allowlist is not available with spec.resources.gpu (GPU evaluations run in {:?}, without network)",
            config.gpu_runtime_class
        ));
    }
    // The gateway must be a run's only egress with models: an allowlist beside it would be a
    // second way out for what the models answer.
    if mode == NetworkMode::Allowlist && !models::models(spec).is_empty() {
        problems.push(
            "spec.sandbox.network: Allowlist cannot be combined with spec.models (a run with \
             models reaches the model gateway and nothing else)"
                .into(),
        );
    }
    let rules = sandbox.egress.as_deref().unwrap_or_default();
    match mode {
        NetworkMode::None if !rules.is_empty() => {
            problems.push("spec.sandbox.egress is only allowed with network: Allowlist".into())
        }
        NetworkMode::Allowlist if rules.is_empty() => problems.push(
            "spec.sandbox.egress must list at least one destination with network: Allowlist".into(),
        ),
        _ => {}
    }
    for rule in rules {
        match rule.cidr.parse::<Cidr>() {
            Err(_) => problems.push(format!(
                "spec.sandbox.egress: {:?} is not a CIDR such as 203.0.113.0/24",
                rule.cidr
            )),
            Ok(entry) => {
                if let Err(range) = cidr::carve(&entry, &config.forbidden_egress) {
                    problems.push(format!(
                        "spec.sandbox.egress: {:?} is inside {range}, which this controller forbids sandboxes to reach (cloud metadata, link-local or the cluster's own addresses)",
                        rule.cidr
                    ));
                }
            }
        }
        for port in rule.ports.as_deref().unwrap_or_default() {
            if !(1..=65535).contains(port) {
                problems.push(format!(
                    "spec.sandbox.egress: port {port} is not in 1..65535"
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::evaluation::{EgressRule, InlineSource, Resources, Sandbox};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn spec() -> EvaluationSpec {
        EvaluationSpec {
            image: "localhost/crucible/python:3.11".into(),
            ..Default::default()
        }
    }

    fn problems(spec: &EvaluationSpec) -> Vec<String> {
        validate(spec, &Config::default()).err().unwrap_or_default()
    }

    #[test]
    fn a_minimal_spec_is_valid() {
        assert_eq!(validate(&spec(), &Config::default()), Ok(()));
    }

    #[test]
    fn samples_fields_out_of_range_make_the_spec_invalid() {
        let s = EvaluationSpec {
            epochs: Some(0),
            compare_to: Some(Default::default()),
            ..spec()
        };
        let p = problems(&s);
        assert!(p.iter().any(|p| p.starts_with("spec.epochs")), "{p:?}");
        assert!(p.iter().any(|p| p.starts_with("spec.compareTo")), "{p:?}");
    }

    #[test]
    fn reserved_and_malformed_env_names_are_rejected() {
        let s = EvaluationSpec {
            env: Some(vec![
                EnvVar {
                    name: "CRUCIBLE_RESULT_PATH".into(),
                    ..Default::default()
                },
                EnvVar {
                    name: "1BAD NAME".into(),
                    ..Default::default()
                },
                EnvVar {
                    name: "GOOD".into(),
                    ..Default::default()
                },
            ]),
            ..spec()
        };
        let p = problems(&s);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].contains("reserved"));
        assert!(p[1].contains("not a valid variable name"));
    }

    #[test]
    fn inline_paths_cannot_escape_the_workspace() {
        for bad in [
            "../etc/passwd",
            "/abs.py",
            "a//b.py",
            "a/./b",
            "sp ace.py",
            "",
        ] {
            let s = EvaluationSpec {
                source: Some(Source::Inline(InlineSource {
                    files: [(bad.to_string(), "x".to_string())].into(),
                })),
                ..spec()
            };
            assert_eq!(problems(&s).len(), 1, "{bad:?} should be rejected");
        }
        let ok = EvaluationSpec {
            source: Some(Source::Inline(InlineSource {
                files: [("lib/util.py".to_string(), "x".to_string())].into(),
            })),
            ..spec()
        };
        assert_eq!(problems(&ok), Vec::<String>::new());
    }

    #[test]
    fn oversized_inline_sources_are_rejected() {
        let s = EvaluationSpec {
            source: Some(Source::Inline(InlineSource {
                files: [("big.py".to_string(), "#".repeat(MAX_INLINE_BYTES))].into(),
            })),
            ..spec()
        };
        assert!(problems(&s)[0].contains("bytes in total"));
    }

    fn inline(files: impl IntoIterator<Item = (String, String)>) -> Option<Source> {
        Some(Source::Inline(InlineSource {
            files: files.into_iter().collect(),
        }))
    }

    #[test]
    fn too_many_inline_files_are_rejected() {
        let files = |n: usize| inline((0..n).map(|i| (format!("f{i}"), "x".to_string())));
        let at_limit = EvaluationSpec {
            source: files(MAX_SOURCE_FILES),
            ..spec()
        };
        assert_eq!(problems(&at_limit), Vec::<String>::new());
        // ≈40,000 one-byte files fit in an Evaluation but make a pod spec over 1.5 MiB.
        let many = EvaluationSpec {
            source: files(40_000),
            ..spec()
        };
        let p = problems(&many);
        assert!(p[0].contains("40000 files, at most 1000"), "{p:?}");
    }

    #[test]
    fn long_paths_are_rejected_and_quoted_short() {
        let s = EvaluationSpec {
            source: inline([("a".repeat(MAX_SOURCE_PATH_LEN + 1), "x".to_string())]),
            ..spec()
        };
        let p = problems(&s);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].len() < 300, "{p:?}");
    }

    #[test]
    fn lists_and_strings_beyond_their_bounds_are_rejected() {
        let long_arg = "x".repeat(MAX_ARG_LEN + 1);
        let s = EvaluationSpec {
            image: "i".repeat(MAX_IMAGE_LEN + 1),
            command: Some(vec!["c".into(); MAX_ARGS + 1]),
            args: Some(vec![long_arg]),
            env: Some(
                (0..=MAX_ENV)
                    .map(|i| EnvVar {
                        name: format!("V{i}"),
                        value: Some("1".into()),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..spec()
        };
        let p = size_problems(&s);
        assert_eq!(p.len(), 4, "{p:?}");
        assert!(p[0].starts_with("spec.image: 1025 bytes"), "{p:?}");
        assert!(p[1].starts_with("spec.command: 257 entries"), "{p:?}");
        assert!(p[2].starts_with("spec.args[0]: 65537 bytes"), "{p:?}");
        assert!(p[3].starts_with("spec.env: 257 variables"), "{p:?}");
    }

    #[test]
    fn a_pod_spec_over_the_estimate_is_rejected() {
        // Every entry is within its own bound; together they exceed what a pod can hold.
        let s = EvaluationSpec {
            args: Some(vec!["x".repeat(MAX_ARG_LEN); 20]),
            ..spec()
        };
        let p = problems(&s);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("bytes in the pod spec"), "{p:?}");
        let paths = EvaluationSpec {
            source: inline((0..MAX_SOURCE_FILES).map(|i| {
                (
                    format!("{i:0>width$}", width = MAX_SOURCE_PATH_LEN),
                    String::new(),
                )
            })),
            args: Some(vec!["x".repeat(MAX_ARG_LEN); 10]),
            ..spec()
        };
        assert!(problems(&paths)[0].contains("bytes in the pod spec"));
    }

    #[test]
    fn many_problems_are_capped() {
        let s = EvaluationSpec {
            env: Some(
                (0..100)
                    .map(|i| EnvVar {
                        name: format!("CRUCIBLE_{i}"),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..spec()
        };
        let p = problems(&s);
        assert_eq!(p.len(), crate::crd::bounds::MAX_PROBLEMS + 1, "{p:?}");
        assert_eq!(p.last().map(String::as_str), Some("and 90 more problems"));
    }

    #[test]
    fn quantities_and_durations_are_checked() {
        let s = EvaluationSpec {
            resources: Some(Resources {
                cpu: Some(Quantity("lots".into())),
                memory: Some(Quantity("0".into())),
                ephemeral_storage: Some(Quantity("1.5Gi".into())),
                gpu: None,
            }),
            timeout: Some("0s".into()),
            pass_threshold: Some(f64::NAN),
            ..spec()
        };
        let p = problems(&s);
        assert_eq!(p.len(), 4, "{p:?}");
    }

    #[test]
    fn sandbox_class_must_match_the_network_mode() {
        let wrong_class = EvaluationSpec {
            sandbox: Some(Sandbox {
                runtime_class_name: Some("runc".into()),
                ..Default::default()
            }),
            ..spec()
        };
        assert!(problems(&wrong_class)[0].contains("runtimeClassName"));

        let allowlist = EvaluationSpec {
            sandbox: Some(Sandbox {
                network: Some(NetworkMode::Allowlist),
                egress: Some(vec![EgressRule {
                    cidr: "203.0.113.0/24".into(),
                    ports: Some(vec![443]),
                }]),
                ..Default::default()
            }),
            ..spec()
        };
        assert_eq!(problems(&allowlist), Vec::<String>::new());
        assert_eq!(runtime_class(&allowlist, &Config::default()), "gvisor-net");

        let bad_rules = EvaluationSpec {
            sandbox: Some(Sandbox {
                network: Some(NetworkMode::None),
                egress: Some(vec![EgressRule {
                    cidr: "300.0.0.0/8".into(),
                    ports: Some(vec![0]),
                }]),
                ..Default::default()
            }),
            ..spec()
        };
        assert_eq!(problems(&bad_rules).len(), 3);
    }

    /// Cloud metadata and link-local addresses are forbidden by default, the cluster's ranges
    /// once given: an allowlist entry inside one is refused where the user looks.
    #[test]
    fn allowlist_entries_inside_a_forbidden_range_are_refused() {
        let to = |cidr: &str| EvaluationSpec {
            sandbox: Some(Sandbox {
                network: Some(NetworkMode::Allowlist),
                egress: Some(vec![EgressRule {
                    cidr: cidr.into(),
                    ports: None,
                }]),
                ..Default::default()
            }),
            ..spec()
        };
        let metadata = problems(&to("169.254.169.254/32"));
        assert_eq!(metadata.len(), 1, "{metadata:?}");
        assert!(
            metadata[0].contains("inside 169.254.0.0/16"),
            "{metadata:?}"
        );
        assert_eq!(problems(&to("fd00:ec2::254/128")).len(), 1);
        assert_eq!(
            problems(&to("0.0.0.0/0")),
            Vec::<String>::new(),
            "excepted instead"
        );
        assert_eq!(problems(&to("10.96.0.1/32")), Vec::<String>::new());
        let mut config = Config::default();
        config
            .forbidden_egress
            .push("10.96.0.0/12".parse().expect("cidr"));
        let service = validate(&to("10.96.0.1/32"), &config)
            .err()
            .unwrap_or_default();
        assert!(service[0].contains("inside 10.96.0.0/12"), "{service:?}");
    }

    #[test]
    fn gpu_runs_use_the_gpu_class_which_has_no_network() {
        let gpus = |n| Resources {
            gpu: Some(n),
            ..Default::default()
        };
        let config = Config::default();
        let gpu = EvaluationSpec {
            resources: Some(gpus(1)),
            ..spec()
        };
        assert_eq!(problems(&gpu), Vec::<String>::new());
        assert_eq!(runtime_class(&gpu, &config), "gvisor-nvproxy");
        let zero = EvaluationSpec {
            resources: Some(gpus(0)),
            ..spec()
        };
        assert_eq!(runtime_class(&zero, &config), "gvisor");

        // A manifest cannot name the plain gVisor class to run a GPU job elsewhere.
        let named = EvaluationSpec {
            sandbox: Some(Sandbox {
                runtime_class_name: Some("gvisor".into()),
                ..Default::default()
            }),
            ..gpu.clone()
        };
        assert!(problems(&named)[0].contains("runtimeClassName"));

        let allowlist = EvaluationSpec {
            sandbox: Some(Sandbox {
                network: Some(NetworkMode::Allowlist),
                egress: Some(vec![EgressRule {
                    cidr: "203.0.113.0/24".into(),
                    ports: Some(vec![443]),
                }]),
                ..Default::default()
            }),
            ..gpu
        };
        let p = problems(&allowlist);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("Allowlist is not available with spec.resources.gpu"));
    }

    #[test]
    fn git_sources_need_a_url_and_a_path_inside_the_repository() {
        let s = EvaluationSpec {
            source: Some(Source::Git(crate::crd::evaluation::GitSource {
                url: " ".into(),
                path: Some("../outside".into()),
                ..Default::default()
            })),
            ..spec()
        };
        let p = problems(&s);
        assert_eq!(p.len(), 2, "{p:?}");
    }
}
