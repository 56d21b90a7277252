//! The `crucible` binary: `controller` runs the operator, `crds` renders the CRDs, `stop` /
//! `resume` flip the emergency stop, `selftest` checks an installation, `run` runs manifests
//! locally under gVisor, `samples` / `compare` read runs' samples, `gateway` serves the model
//! gateway, `calls` lists a run's model calls, `canary-probe` runs inside a sandbox canary pod, `network-gate` first in a sandbox pod with a
//! network, `samples-emit` in a sandbox pod's samples
//! container.
//! Wiring only.

use clap::Parser;
use crucible::cli::{Cli, Command, CrdsArgs, DocsArgs, ScopeArgs, SelftestArgs, StopArgs};
use crucible::{
    apiref, canary, crd, local, network_gate, operator, reading, source, stop, telemetry,
};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // The canary's probe needs neither git nor an async runtime: it runs in 128Mi in a sandbox.
    if let Command::CanaryProbe = cli.command {
        return canary::report::main();
    }
    // So does the network gate, before anything else in its pod.
    if let Command::NetworkGate(args) = &cli.command {
        return network_gate::main(args);
    }
    // The samples container waits in a sandbox for its SIGTERM: one thread is plenty.
    if let Command::SamplesEmit(args) = cli.command {
        return samples_emit(args);
    }
    // Before the runtime starts any thread: libgit2's limits are process-wide C globals.
    #[allow(unsafe_code)]
    // SAFETY: no other thread exists yet.
    let limited = unsafe {
        source::socket_timeouts::install(
            source::socket_timeouts::CONNECT,
            source::socket_timeouts::READ,
        )
    };
    if let Err(error) = limited {
        eprintln!("crucible: cannot limit git's socket waits: {error}");
        return std::process::ExitCode::FAILURE;
    }
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(run(cli)),
        Err(error) => {
            eprintln!("crucible: cannot start the async runtime: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `crucible samples-emit` on a single-threaded runtime (its SIGTERM handler needs one).
fn samples_emit(args: crucible::transfer::emit::EmitArgs) -> std::process::ExitCode {
    let emitted = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .and_then(|runtime| runtime.block_on(crucible::transfer::emit::run(args)));
    match emitted {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("crucible: samples-emit: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> std::process::ExitCode {
    let outcome = match cli.command {
        Command::Controller(args) => {
            let (config, runtime) = args.into_parts();
            telemetry::init(runtime.log_format, &runtime.log_filter);
            operator::run(config, runtime).await
        }
        Command::Crds(args) => crds(args),
        Command::Docs(args) => docs(args),
        Command::Selftest(args) => selftest(args).await,
        Command::Stop(args) => stop_all(args).await,
        Command::Resume(args) => resume(args).await,
        Command::Samples(args) => samples(args).await,
        Command::Compare(args) => compare(args).await,
        Command::Gateway(args) => crucible::gateway::main(args).await,
        Command::GatewayToken(args) => {
            crucible::gateway::mint(&args).map(|token| println!("{token}"))
        }
        Command::Calls(args) => calls(args).await,
        // Its own exit codes: 1 = an evaluation did not pass, 2 = nothing could run.
        Command::Run(args) => return local::main(args).await,
        Command::CanaryProbe => return canary::report::main(),
        Command::NetworkGate(args) => return network_gate::main(&args),
        Command::SamplesEmit(args) => return samples_emit(args),
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("crucible: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The commands' client: reads bounded as the controller's are, so a silent API server fails
/// `crucible stop` with a message instead of hanging it.
async fn client() -> Result<kube::Client, String> {
    let unreachable = |e: &dyn std::fmt::Display| format!("cannot reach the API server: {e}");
    let config = kube::Config::infer().await.map_err(|e| unreachable(&e))?;
    kube::Client::try_from(operator::bounded(config)).map_err(|e| unreachable(&e))
}

async fn samples(args: reading::SamplesArgs) -> Result<(), String> {
    // A bundle is read without a cluster: no kubeconfig needed.
    let client = match args.bundle {
        Some(_) => None,
        None => Some(client().await?),
    };
    print!("{}", reading::samples(&args, client.as_ref()).await?);
    Ok(())
}

async fn compare(args: reading::CompareArgs) -> Result<(), String> {
    let client = if args.bundles {
        None
    } else {
        Some(client().await?)
    };
    print!("{}", reading::compare(&args, client.as_ref()).await?);
    Ok(())
}

async fn selftest(args: SelftestArgs) -> Result<(), String> {
    let line = crucible::selftest::run(client().await?, &args.namespace, &args.image, args.timeout)
        .await?;
    println!("{line}");
    Ok(())
}

async fn calls(args: crucible::gateway::listing::CallsArgs) -> Result<(), String> {
    use crucible::gateway::listing;
    let (namespace, run) = match args.run {
        // Named: no cluster needed (a copied ledger directory, a cluster gone).
        Some(run) => (args.namespace.unwrap_or_else(|| "default".into()), run),
        None => {
            let client = client().await?;
            let namespace = args
                .namespace
                .unwrap_or_else(|| client.default_namespace().to_string());
            let run = listing::run_id(&client, &namespace, &args.name).await?;
            (namespace, run)
        }
    };
    let run = listing::RunRef {
        namespace,
        evaluation: args.name,
        run,
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    listing::list(&args.ledger, &run, args.output, &mut out)
        .map(drop)
        .map_err(|e| e.to_string())
}

async fn stop_all(args: StopArgs) -> Result<(), String> {
    let client = client().await?;
    let scope = args.scope.scope();
    stop::stop(
        &client,
        &args.scope.system_namespace,
        &scope,
        args.reason.clone(),
    )
    .await?;
    println!("emergency stop set ({scope:?}); admission is held until `crucible resume`");
    let took = stop::wait_until_stopped(&client, &scope, args.timeout).await?;
    println!("no evaluation pod is running any more ({took:.1?})");
    Ok(())
}

async fn resume(args: ScopeArgs) -> Result<(), String> {
    let switch = stop::resume(&client().await?, &args.system_namespace, &args.scope()).await?;
    if switch.is_clear() {
        println!("resumed: admission is open everywhere");
    } else {
        println!(
            "resumed; still stopped: all={} namespaces={:?}",
            switch.all, switch.namespaces
        );
    }
    Ok(())
}

fn crds(args: CrdsArgs) -> Result<(), String> {
    let rendered = crd::render_all().map_err(|e| format!("cannot render CRDs: {e}"))?;
    let Some(root) = args.write else {
        for (_, yaml) in rendered {
            print!("---\n{yaml}");
        }
        return Ok(());
    };
    for dir in crd::OUTPUT_DIRS {
        let dir = root.join(dir);
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        for (file, yaml) in &rendered {
            let path = dir.join(file);
            std::fs::write(&path, yaml)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            println!("wrote {}", path.display());
        }
    }
    Ok(())
}

fn docs(args: DocsArgs) -> Result<(), String> {
    let rendered = apiref::render_all();
    let Some(root) = args.write else {
        for (file, markdown) in rendered {
            print!("==> {}/{file} <==\n{markdown}", apiref::OUTPUT_DIR);
        }
        return Ok(());
    };
    let dir = root.join(apiref::OUTPUT_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    // Every Markdown file in the directory is generated: one left from a removed kind goes.
    let entries =
        std::fs::read_dir(&dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    for entry in entries {
        let path = entry
            .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
            .path();
        let generated = rendered
            .iter()
            .any(|(file, _)| path.file_name() == Some(file.as_ref()));
        if path.extension().is_some_and(|e| e == "md") && !generated {
            std::fs::remove_file(&path)
                .map_err(|e| format!("cannot remove {}: {e}", path.display()))?;
            println!("removed {}", path.display());
        }
    }
    for (file, markdown) in &rendered {
        let path = dir.join(file);
        std::fs::write(&path, markdown)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
