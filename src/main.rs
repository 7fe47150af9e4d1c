//! The `whopgate` command: run the sidecar, check or explain a config.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use whopgate::Config;

/// whopgate: lets in only the people who paid for your app on Whop.
#[derive(Debug, Parser)]
#[command(name = "whopgate", version, about, long_about = None, propagate_version = true)]
struct Cli {
    /// The config file.
    #[arg(long, short, global = true, env = "WHOPGATE_CONFIG", default_value = "whopgate.toml")]
    config: PathBuf,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Load and validate the config; print the route table and warnings.
    Check,
    /// Print which rule a request would match and what it would require (no network access).
    Explain {
        /// The request method, e.g. GET.
        method: String,
        /// The request path, with its query if any, e.g. /admin/users?page=2.
        path: String,
        /// The request's Host.
        #[arg(long)]
        host: Option<String>,
    },
}

/// Exit code for a bad config or usage.
const EXIT_CONFIG: u8 = 2;
/// Exit code for a failure at run time.
const EXIT_RUNTIME: u8 = 1;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        None => run(&cli.config),
        Some(Command::Check) => check(&cli.config),
        Some(Command::Explain { method, path, host }) => explain(&cli.config, &method, &path, host.as_deref()),
    }
}

fn load(path: &std::path::Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|errors| {
        eprintln!("{errors}");
        ExitCode::from(EXIT_CONFIG)
    })
}

fn run(path: &std::path::Path) -> ExitCode {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let _log = whopgate::log::init(config.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "could not start the runtime");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    match runtime.block_on(whopgate::sidecar::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    match load(path) {
        Ok(config) => {
            print!("{}", whopgate::check::report(&config));
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

fn explain(path: &std::path::Path, method: &str, request_path: &str, host: Option<&str>) -> ExitCode {
    let Ok(method) = http::Method::from_bytes(method.to_ascii_uppercase().as_bytes()) else {
        eprintln!("error: `{method}` is not an HTTP method (try GET, POST, …)");
        return ExitCode::from(EXIT_CONFIG);
    };
    if !request_path.starts_with('/') {
        eprintln!("error: the path must start with '/', e.g. /admin/users");
        return ExitCode::from(EXIT_CONFIG);
    }
    match load(path) {
        Ok(config) => {
            print!("{}", whopgate::check::explain(&config, &method, request_path, host));
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}
