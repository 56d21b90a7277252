use super::*;
use crate::config::Config;
use crate::crd::Evaluation;
use crate::crd::evaluation::Scorer;
use crate::lifecycle::{self, Child, Observed};

/// The pod the controller plans for `ev` (Admitted, sandbox present).
fn planned(ev: &Evaluation) -> Pod {
    let obs = Observed::empty();
    let p = lifecycle::plan(
        ev,
        &obs,
        &crate::admission::Decision::Admit,
        &Config::default(),
    )
    .expect("plans");
    p.create
        .into_iter()
        .find_map(|c| match c {
            Child::Pod(p) => Some(*p),
            _ => None,
        })
        .expect("a pod is planned")
}

fn image() -> ImageConfig {
    ImageConfig {
        entrypoint: vec![],
        cmd: vec!["/usr/bin/python3".into()],
        env: vec!["PATH=/usr/bin:/bin".into()],
        working_dir: None,
    }
}

fn volumes() -> BTreeMap<String, PathBuf> {
    ["workspace", "outputs", "samples"]
        .into_iter()
        .map(|v| (v.to_string(), PathBuf::from(format!("/run/x/{v}"))))
        .collect()
}

#[test]
fn the_step_keeps_the_pods_sandbox_rules() {
    let pod = planned(&Evaluation::test());
    let container = &pod.spec.as_ref().expect("spec").containers[0];
    let step = step(
        &pod,
        container,
        &image(),
        &volumes(),
        Path::new("/run/x/term"),
    )
    .expect("step");
    assert_eq!(step.process.args, ["python3", "/workspace/eval.py"]);
    assert_eq!(step.process.cwd, "/workspace");
    assert!(
        step.process
            .env
            .contains(&"CRUCIBLE_RESULT_PATH=/crucible/result.json".to_string())
    );
    assert!(step.process.env.contains(&"PATH=/usr/bin:/bin".to_string()));
    assert!(step.mounts.contains(&Mount::Tmpfs {
        destination: "/tmp".into(),
        size: 64 * 1024 * 1024
    }));
    assert!(step.mounts.contains(&Mount::Bind {
        destination: "/workspace".into(),
        source: "/run/x/workspace".into(),
        read_only: true
    }));
    assert!(step.mounts.contains(&Mount::Bind {
        destination: "/crucible".into(),
        source: "/run/x/term".into(),
        read_only: false
    }));
    assert_eq!(
        step.termination_file.as_deref(),
        Some(Path::new("/run/x/term/result.json"))
    );
    // Controller defaults: 1 cpu, 512Mi.
    assert_eq!(
        (step.cpu_millis, step.memory_bytes),
        (Some(1000), Some(512 * 1024 * 1024))
    );

    let config = oci_config(
        &step,
        Path::new("/cache/rootfs"),
        "arith-x",
        Some("/crucible-run/a"),
    );
    assert_eq!(config["process"]["user"]["uid"], 65534);
    assert_eq!(config["process"]["user"]["gid"], 65534);
    assert_eq!(config["process"]["noNewPrivileges"], true);
    assert_eq!(
        config["process"]["capabilities"]["bounding"],
        serde_json::json!([])
    );
    assert_eq!(
        config["root"],
        serde_json::json!({"path": "/cache/rootfs", "readonly": true})
    );
    assert_eq!(
        config["linux"]["resources"]["memory"]["limit"],
        512 * 1024 * 1024
    );
    assert_eq!(
        config["linux"]["resources"]["cpu"],
        serde_json::json!({"quota": 100000, "period": 100000})
    );
    assert!(
        config["linux"]["namespaces"]
            .as_array()
            .expect("list")
            .contains(&serde_json::json!({"type": "network"})),
        "a network namespace of its own: loopback only"
    );
    let mounts = config["mounts"].as_array().expect("mounts");
    let tmp = mounts
        .iter()
        .find(|m| m["destination"] == "/tmp")
        .expect("/tmp");
    assert_eq!(tmp["type"], "tmpfs");
    assert!(
        tmp["options"]
            .as_array()
            .expect("options")
            .contains(&serde_json::json!("size=67108864"))
    );
    let ws = mounts
        .iter()
        .find(|m| m["destination"] == "/workspace")
        .expect("/workspace");
    assert!(
        ws["options"]
            .as_array()
            .expect("options")
            .contains(&serde_json::json!("ro"))
    );
    let rootless = oci_config(&step, Path::new("/r"), "h", None);
    assert!(rootless["linux"].get("resources").is_none());
}

#[test]
fn with_a_scorer_only_outputs_is_shared_and_only_the_scorer_writes_the_result() {
    let mut ev = Evaluation::test();
    ev.spec.scorer = Some(Scorer {
        image: "localhost/crucible/python:3.11".into(),
        command: Some(vec!["python3".into(), "/workspace/score.py".into()]),
        ..Default::default()
    });
    let pod = planned(&ev);
    let spec = pod.spec.as_ref().expect("spec");
    let evaluated = &spec.init_containers.as_ref().expect("init")[0];
    let scorer = &spec.containers[0];
    let term = Path::new("/t");
    let first = step(&pod, evaluated, &image(), &volumes(), term).expect("step");
    let second = step(&pod, scorer, &image(), &volumes(), term).expect("step");
    let outputs = |s: &Step| {
        s.mounts.iter().find_map(|m| match m {
            Mount::Bind {
                destination,
                read_only,
                ..
            } if destination == "/outputs" => Some(*read_only),
            _ => None,
        })
    };
    assert_eq!(outputs(&first), Some(false));
    assert_eq!(outputs(&second), Some(true));
    assert_eq!(
        first.termination_file, None,
        "the evaluated code has no result file"
    );
    assert!(
        !first
            .process
            .env
            .iter()
            .any(|e| e.starts_with("CRUCIBLE_RESULT_PATH="))
    );
    assert!(second.termination_file.is_some());
}

#[test]
fn command_and_args_follow_the_kubelet() {
    let img = ImageConfig {
        entrypoint: vec!["/entry".into()],
        cmd: vec!["default".into()],
        ..Default::default()
    };
    let c = |command: Option<&[&str]>, args: Option<&[&str]>| Container {
        command: command.map(|c| c.iter().map(|s| s.to_string()).collect()),
        args: args.map(|a| a.iter().map(|s| s.to_string()).collect()),
        ..Default::default()
    };
    let argv = |c: &Container| process(c, &img, "h").expect("process").args;
    assert_eq!(argv(&c(None, None)), ["/entry", "default"]);
    assert_eq!(argv(&c(None, Some(&["x"]))), ["/entry", "x"]);
    assert_eq!(argv(&c(Some(&["p"]), None)), ["p"]);
    assert_eq!(argv(&c(Some(&["p"]), Some(&["x"]))), ["p", "x"]);
    let empty = ImageConfig::default();
    assert!(process(&c(None, None), &empty, "h").is_err());
    let mut from_secret = c(Some(&["p"]), None);
    from_secret.env = Some(vec![k8s_openapi::api::core::v1::EnvVar {
        name: "TOKEN".into(),
        value: None,
        value_from: Some(Default::default()),
    }]);
    assert!(
        process(&from_secret, &img, "h")
            .expect_err("valueFrom")
            .contains("valueFrom")
    );
}
