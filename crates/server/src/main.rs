//! The `tributary` binary: `serve`, `config check` and `user` commands.

mod amqp;
mod http;
mod limits;
mod mqtt;
mod persistence;
mod serve;
mod users;
mod xmpp;

use anyhow::Context;
use clap::{Parser, Subcommand};
use config::Config;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tributary::config;

#[derive(Parser)]
#[command(
    name = "tributary",
    version,
    about = "A message broker for AMQP 0-9-1, MQTT and XMPP on one routing core"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the broker (loopback and default ports unless configured).
    Serve {
        /// TOML configuration file; every key has a default.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Data directory (overrides `data_dir` in the config).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Configuration file tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Manage users in the shared user database.
    User {
        /// Data directory holding the user database.
        #[arg(long, global = true)]
        data_dir: Option<PathBuf>,
        #[command(subcommand)]
        command: UserCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a configuration file and report the first problem.
    Check {
        /// The file.
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Add a user.
    Add {
        /// Login name.
        name: String,
        /// Password (stored hashed).
        password: String,
        /// Comma-separated tags (administrator, monitoring, management).
        #[arg(long, value_delimiter = ',')]
        tags: Vec<String>,
    },
    /// Delete a user.
    Delete {
        /// Login name.
        name: String,
    },
    /// List users and their tags.
    List,
    /// Change a user's password.
    Passwd {
        /// Login name.
        name: String,
        /// New password.
        password: String,
    },
    /// Set a user's permissions in a virtual host (as `rabbitmqctl set_permissions`):
    /// regular expressions over exchange and queue names; "" matches nothing.
    #[command(name = "set_permissions")]
    SetPermissions {
        /// Virtual host.
        #[arg(short = 'p', long = "vhost", default_value = "/")]
        vhost: String,
        /// Login name.
        name: String,
        /// Which resources the user may declare and delete.
        configure: String,
        /// Which resources the user may publish to (and bind queues to).
        write: String,
        /// Which resources the user may consume from (and bind from).
        read: String,
    },
    /// Remove a user's permissions in a virtual host.
    #[command(name = "clear_permissions")]
    ClearPermissions {
        /// Virtual host.
        #[arg(short = 'p', long = "vhost", default_value = "/")]
        vhost: String,
        /// Login name.
        name: String,
    },
    /// List users' permissions in a virtual host.
    #[command(name = "list_permissions")]
    ListPermissions {
        /// Virtual host.
        #[arg(short = 'p', long = "vhost", default_value = "/")]
        vhost: String,
    },
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn load_config(path: Option<&Path>) -> anyhow::Result<Config> {
    match path {
        Some(p) => Ok(Config::load(p)?),
        None => Ok(Config::default()),
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config, data_dir } => {
            let config = load_config(config.as_deref())?;
            init_logging(&config.log.level);
            let data_dir = data_dir
                .or_else(|| config.data_dir.clone())
                .unwrap_or_else(config::default_data_dir);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("tributary")
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(serve::serve(config, data_dir))
        }
        Command::Config {
            command: ConfigCommand::Check { file },
        } => {
            Config::load(&file)?;
            println!("{}: ok", file.display());
            Ok(())
        }
        Command::User { data_dir, command } => {
            let dir = data_dir.unwrap_or_else(config::default_data_dir);
            let admin = users::UserAdmin::open(&dir)?;
            admin.ensure_initialised(true)?;
            match command {
                UserCommand::Add {
                    name,
                    password,
                    tags,
                } => {
                    admin.add(&name, &password, tags)?;
                    println!("Adding user \"{name}\" ...");
                }
                UserCommand::Delete { name } => {
                    admin.delete(&name)?;
                    println!("Deleting user \"{name}\" ...");
                }
                UserCommand::Passwd { name, password } => {
                    admin.passwd(&name, &password)?;
                    println!("Changing password for user \"{name}\" ...");
                }
                UserCommand::SetPermissions {
                    vhost,
                    name,
                    configure,
                    write,
                    read,
                } => {
                    println!("Setting permissions for user \"{name}\" in vhost \"{vhost}\" ...");
                    admin.set_permissions(
                        &name,
                        &vhost,
                        users::Permission {
                            configure,
                            write,
                            read,
                        },
                    )?;
                }
                UserCommand::ClearPermissions { vhost, name } => {
                    println!("Clearing permissions for user \"{name}\" in vhost \"{vhost}\" ...");
                    admin.clear_permissions(&name, &vhost)?;
                }
                UserCommand::ListPermissions { vhost } => {
                    println!("user\tconfigure\twrite\tread");
                    for u in admin.list()? {
                        if let Some(p) = u.permissions.get(&vhost) {
                            println!("{}\t{}\t{}\t{}", u.name, p.configure, p.write, p.read);
                        }
                    }
                }
                UserCommand::List => {
                    println!("user\ttags");
                    for u in admin.list()? {
                        println!("{}\t[{}]", u.name, u.tags.join(", "));
                    }
                }
            }
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
