//! The `crucible` binary: `crucible controller` runs the operator, `crucible crds` renders the
//! CRDs. No logic here beyond wiring.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::Parser;
use crucible::config::{Cli, Command, ControllerArgs, CrdsArgs, SelftestArgs};
use crucible::evaluation::{self, Context};
use crucible::metrics::Metrics;
use crucible::{crd, http, telemetry};
use prometheus_client::registry::Registry;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Controller(args) => controller(args).await,
        Command::Crds(args) => crds(args),
        Command::Selftest(args) => selftest(args).await,
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("crucible: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn controller(args: ControllerArgs) -> Result<(), String> {
    let (config, runtime) = args.into_parts();
    telemetry::init(runtime.log_format, &runtime.log_filter);
    let client = kube::Client::try_default().await.map_err(|e| {
        format!("cannot reach the API server (kubeconfig or in-cluster config): {e}")
    })?;
    let mut registry = Registry::with_prefix("crucible");
    let metrics = Arc::new(Metrics::default().register(&mut registry));
    let ready = Arc::new(AtomicBool::new(false));
    let endpoints = http::Endpoints {
        registry: Arc::new(registry),
        ready: ready.clone(),
    };
    let listener = tokio::net::TcpListener::bind(runtime.metrics_addr)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", runtime.metrics_addr))?;
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, http::router(endpoints)).await {
            tracing::error!(%error, "metrics server stopped");
        }
    });
    let instance = std::env::var("POD_NAME").ok();
    let ctx = Arc::new(Context::new(client, config, metrics, instance));
    tracing::info!(namespaces = ?runtime.namespaces, runtime_class = %ctx.config.runtime_class, "crucible controller starting");
    let namespaces: Vec<Option<String>> = if runtime.namespaces.is_empty() {
        vec![None]
    } else {
        runtime.namespaces.into_iter().map(Some).collect()
    };
    let pending = Arc::new(std::sync::atomic::AtomicUsize::new(namespaces.len()));
    let controllers = namespaces.into_iter().map(|ns| {
        let (ctx, ready, pending) = (ctx.clone(), ready.clone(), pending.clone());
        async move {
            let on_ready = move || {
                if pending.fetch_sub(1, Ordering::SeqCst) == 1 {
                    ready.store(true, Ordering::SeqCst);
                }
            };
            evaluation::run(ctx, ns.as_deref(), runtime.concurrency, on_ready).await;
        }
    });
    futures::future::join_all(controllers).await;
    tracing::info!("crucible controller stopped");
    Ok(())
}

async fn selftest(args: SelftestArgs) -> Result<(), String> {
    let client = kube::Client::try_default()
        .await
        .map_err(|e| format!("cannot reach the API server: {e}"))?;
    let line = crucible::selftest::run(client, &args.namespace, &args.image, args.timeout).await?;
    println!("{line}");
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
