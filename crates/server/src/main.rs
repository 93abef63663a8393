//! The `tributary` binary: `serve`, `config check` and `user` commands.

mod amqp;
mod cluster;
mod coap;
mod ctl;
mod http;
mod kafka;
mod limits;
mod mailbox;
mod memory;
mod mgmt;
mod mqtt;
mod persistence;
mod readbuf;
mod registry;
mod scram;
mod serve;
mod streams;
mod tls;
mod users;
mod vhosts;
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
    /// Operate a running broker through its HTTP API (exit codes: 0 ok,
    /// 1 API error, 2 usage, 3 cannot connect).
    Ctl(ctl::Ctl),
    /// Manage users in the shared user database.
    User {
        /// Data directory holding the user database.
        #[arg(long, global = true)]
        data_dir: Option<PathBuf>,
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Manage virtual hosts (kept with the users; a running broker follows).
    Vhost {
        /// Data directory holding the user database.
        #[arg(long, global = true)]
        data_dir: Option<PathBuf>,
        #[command(subcommand)]
        command: VhostCommand,
    },
}

#[derive(Subcommand)]
enum VhostCommand {
    /// Create a virtual host (as `rabbitmqctl add_vhost`).
    Add {
        /// The vhost's name.
        name: String,
        /// Free text shown by listings.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Delete a virtual host with all its queues, exchanges, messages and
    /// permissions (as `rabbitmqctl delete_vhost`).
    Delete {
        /// The vhost's name.
        name: String,
    },
    /// List virtual hosts with their limits.
    List,
    /// Set a vhost's limits from JSON, as `rabbitmqctl set_vhost_limits`:
    /// `{"max-connections": 100, "max-queues": 50, "max-sessions": 1000}`;
    /// a negative value removes that limit.
    #[command(name = "set_limits")]
    SetLimits {
        /// Virtual host.
        #[arg(short = 'p', long = "vhost", default_value = "/")]
        vhost: String,
        /// The limits.
        json: String,
    },
    /// Remove every limit of a vhost.
    #[command(name = "clear_limits")]
    ClearLimits {
        /// Virtual host.
        #[arg(short = 'p', long = "vhost", default_value = "/")]
        vhost: String,
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
    /// Set a user's topic permissions on one topic exchange (as `rabbitmqctl
    /// set_topic_permissions`): regular expressions over routing keys (MQTT
    /// topics with `/` as `.`); `{username}`/`%u`, `{client_id}`/`%c` and
    /// `{vhost}` are replaced by the connection's values.
    #[command(name = "set_topic_permissions")]
    SetTopicPermissions {
        /// Virtual host.
        #[arg(short = 'p', long = "vhost", default_value = "/")]
        vhost: String,
        /// Login name.
        name: String,
        /// The topic exchange (MQTT uses amq.topic).
        exchange: String,
        /// Routing keys the user may publish with.
        write: String,
        /// Routing keys the user may bind or subscribe with.
        read: String,
    },
    /// Remove a user's topic permissions in a virtual host (one exchange's, or all).
    #[command(name = "clear_topic_permissions")]
    ClearTopicPermissions {
        /// Virtual host.
        #[arg(short = 'p', long = "vhost", default_value = "/")]
        vhost: String,
        /// Login name.
        name: String,
        /// Only this exchange's.
        exchange: Option<String>,
    },
    /// List topic permissions in a virtual host.
    #[command(name = "list_topic_permissions")]
    ListTopicPermissions {
        /// Virtual host.
        #[arg(short = 'p', long = "vhost", default_value = "/")]
        vhost: String,
    },
    /// Replace a user's tags (as `rabbitmqctl set_user_tags`); none clears them.
    #[command(name = "set_user_tags")]
    SetUserTags {
        /// Login name.
        name: String,
        /// The tags (administrator, monitoring, policymaker, management, ...).
        tags: Vec<String>,
    },
}

fn init_logging(log: &config::LogConfig) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&log.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match log.format {
        config::LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        config::LogFormat::Json => builder.json().with_ansi(false).init(),
    }
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
            init_logging(&config.log);
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
        Command::Ctl(args) => std::process::exit(ctl::run(args)),
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
                UserCommand::SetTopicPermissions {
                    vhost,
                    name,
                    exchange,
                    write,
                    read,
                } => {
                    println!(
                        "Setting topic permissions on \"{exchange}\" for user \"{name}\" in vhost \"{vhost}\" ..."
                    );
                    admin.set_topic_permissions(
                        &name,
                        &vhost,
                        users::TopicPermission {
                            exchange,
                            write,
                            read,
                        },
                    )?;
                }
                UserCommand::ClearTopicPermissions {
                    vhost,
                    name,
                    exchange,
                } => {
                    println!(
                        "Clearing topic permissions for user \"{name}\" in vhost \"{vhost}\" ..."
                    );
                    admin.clear_topic_permissions(&name, &vhost, exchange.as_deref())?;
                }
                UserCommand::ListTopicPermissions { vhost } => {
                    println!("user\texchange\twrite\tread");
                    for u in admin.list()? {
                        for p in u.topic_permissions.get(&vhost).into_iter().flatten() {
                            println!("{}\t{}\t{}\t{}", u.name, p.exchange, p.write, p.read);
                        }
                    }
                }
                UserCommand::SetUserTags { name, tags } => {
                    println!(
                        "Setting tags for user \"{name}\" to [{}] ...",
                        tags.join(", ")
                    );
                    admin.set_tags(&name, tags)?;
                }
            }
            Ok(())
        }
        Command::Vhost { data_dir, command } => {
            let dir = data_dir.unwrap_or_else(config::default_data_dir);
            let admin = users::UserAdmin::open(&dir)?;
            admin.ensure_initialised(true)?;
            match command {
                VhostCommand::Add { name, description } => {
                    println!("Adding vhost \"{name}\" ...");
                    admin.add_vhost(&name, &description)?;
                }
                VhostCommand::Delete { name } => {
                    println!("Deleting vhost \"{name}\" ...");
                    admin.delete_vhost(&name)?;
                }
                VhostCommand::List => {
                    println!("name\tdescription\tlimits");
                    for v in admin.list_vhosts()? {
                        let limits = serde_json::to_string(&v.limits)?;
                        println!("{}\t{}\t{limits}", v.name, v.description);
                    }
                }
                VhostCommand::SetLimits { vhost, json } => {
                    println!("Applying limits to vhost \"{vhost}\" ...");
                    admin.set_vhost_limits(&vhost, &json)?;
                }
                VhostCommand::ClearLimits { vhost } => {
                    println!("Clearing limits of vhost \"{vhost}\" ...");
                    admin.clear_vhost_limits(&vhost)?;
                }
            }
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    memory::tune_allocator();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
