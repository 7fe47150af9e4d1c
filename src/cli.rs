//! The `whopgate` command line (feature `cli`): the sidecar, `check`, `explain`, `demo`,
//! `healthcheck` and `mock-whop`. The binary only calls [`main`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::Config;

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
    /// See the gate work on this machine: a local Whop stand-in, a tiny app, and the gate in front.
    Demo {
        /// Where the gate listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
    },
    /// Exit 0 when the admin listener answers 200 on /healthz (or --ready: /readyz), else 1:
    /// a container health check that needs no HTTP client in the image.
    Healthcheck {
        /// The admin listener's address (`admin_listen`).
        #[arg(default_value = "127.0.0.1:9091")]
        admin: SocketAddr,
        /// Ask /readyz instead of /healthz.
        #[arg(long)]
        ready: bool,
    },
    /// A local stand-in for the Whop API, for development and CI (like stripe-mock for Stripe).
    MockWhop {
        /// Where the mock listens.
        #[arg(long, default_value_t = whopgate_mock::DEFAULT_LISTEN)]
        listen: SocketAddr,
        /// A state file (TOML): users, products, memberships, keys. Default: the built-in state.
        #[arg(long)]
        state: Option<PathBuf>,
        #[command(subcommand)]
        command: Option<MockCommand>,
    },
}

#[derive(Debug, Subcommand)]
enum MockCommand {
    /// Print a user token that the mock's JWKS verifies.
    Token {
        /// The user, e.g. user_alice.
        user: String,
        /// The same state file the mock runs with.
        #[arg(long)]
        state: Option<PathBuf>,
    },
}

/// Exit code for a bad config or usage.
const EXIT_CONFIG: u8 = 2;
/// Exit code for a failure at run time.
const EXIT_RUNTIME: u8 = 1;

/// Parses the arguments and runs the command they name; the exit code says how it went (0 done,
/// 1 failed at run time, 2 a bad config or usage).
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        None => run(&cli.config),
        Some(Command::Check) => check(&cli.config),
        Some(Command::Explain { method, path, host }) => explain(&cli.config, &method, &path, host.as_deref()),
        Some(Command::Demo { listen }) => demo(listen),
        Some(Command::Healthcheck { admin, ready }) => {
            let path = if ready { "/readyz" } else { "/healthz" };
            match crate::admin::probe(admin, path, std::time::Duration::from_secs(2)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("unhealthy: {e}");
                    ExitCode::from(EXIT_RUNTIME)
                }
            }
        }
        Some(Command::MockWhop { listen, state, command: None }) => mock_whop(listen, state),
        Some(Command::MockWhop { state, command: Some(MockCommand::Token { user, state: token_state }), .. }) => {
            mock_token(&user, token_state.or(state))
        }
    }
}

fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("error: could not start the runtime: {e}");
            None
        }
    }
}

fn demo(listen: SocketAddr) -> ExitCode {
    let _log = crate::log::init(crate::config::LogFormat::Text);
    let Some(runtime) = runtime() else {
        return ExitCode::from(EXIT_RUNTIME);
    };
    // The default port may be taken on a developer machine: any free port is as good a demo.
    let listen = if std::net::TcpListener::bind(listen).is_ok() { listen } else { SocketAddr::new(listen.ip(), 0) };
    match runtime.block_on(crate::demo::run(listen)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

fn mock_whop(listen: SocketAddr, state: Option<PathBuf>) -> ExitCode {
    let _log = crate::log::init(crate::config::LogFormat::Text);
    let Some(runtime) = runtime() else {
        return ExitCode::from(EXIT_RUNTIME);
    };
    match runtime.block_on(whopgate_mock::run_cli(listen, state.as_deref())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(if matches!(e, whopgate_mock::MockError::InvalidState(_)) {
                EXIT_CONFIG
            } else {
                EXIT_RUNTIME
            })
        }
    }
}

fn mock_token(user: &str, state: Option<PathBuf>) -> ExitCode {
    match whopgate_mock::token_cli(user, state.as_deref()) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
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
    let _log = crate::log::init(config.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "could not start the runtime");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    match runtime.block_on(crate::sidecar::run(config)) {
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
            print!("{}", crate::check::report(&config));
            let table = crate::route::RouteTable::new(&config.routes);
            for warning in crate::check::warnings(&config, &table) {
                eprintln!("{warning}");
            }
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
            print!("{}", crate::check::explain(&config, &method, request_path, host));
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}
