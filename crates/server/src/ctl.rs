//! `tributary ctl`: operates a running broker through its management HTTP
//! API, as `rabbitmqctl`/`rabbitmqadmin` do. The URL, credentials and CA
//! file come from `--url/--user/--password/--ca`, else `TRIBUTARY_URL`,
//! `TRIBUTARY_USER`, `TRIBUTARY_PASSWORD`, `TRIBUTARY_CA`, else the config
//! file (`--config`, else `~/.config/tributary/ctl.toml` when it exists),
//! else `http://127.0.0.1:15672` and guest/guest. `https://` URLs are
//! verified against the CA file, or the system's CA bundle without one.
//!
//! Exit codes scripts can rely on: 0 success, 1 the API refused (4xx/5xx),
//! 2 usage error (clap's), 3 the broker could not be reached.

use base64::Engine;
use clap::{Args, Subcommand, ValueEnum};
use serde::Deserialize;
use serde_json::{Value as J, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Exit code: the API answered with an error.
pub const EXIT_API: i32 = 1;
/// Exit code: a usage error (clap's, or a bad config file).
pub const EXIT_USAGE: i32 = 2;
/// Exit code: the broker could not be reached.
pub const EXIT_CONNECT: i32 = 3;

/// CA bundles of the common distributions, tried in order for `https://`
/// when no CA file is given.
const SYSTEM_CA_FILES: [&str; 4] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// `tributary ctl` and its options.
#[derive(Args)]
pub struct Ctl {
    /// Base URL of the HTTP API, http:// or https:// [default: http://127.0.0.1:15672]
    #[arg(long, env = "TRIBUTARY_URL")]
    url: Option<String>,
    /// User name (needs a management tag) [default: guest]
    #[arg(long, env = "TRIBUTARY_USER")]
    user: Option<String>,
    /// Password [default: guest]
    #[arg(long, env = "TRIBUTARY_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// PEM file of the CA certificates trusted for https:// [default: the system's]
    #[arg(long, env = "TRIBUTARY_CA")]
    ca: Option<PathBuf>,
    /// TOML file with `url`, `user`, `password` and `ca` [default:
    /// ~/.config/tributary/ctl.toml, when it exists]
    #[arg(long, env = "TRIBUTARY_CTL_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: CtlCommand,
}

/// The config file's keys; each is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    url: Option<String>,
    user: Option<String>,
    password: Option<String>,
    /// Relative to the file's directory.
    ca: Option<PathBuf>,
}

/// Where to connect and as whom, once flags, environment, file and
/// defaults are merged.
struct Settings {
    url: String,
    user: String,
    password: String,
    ca: Option<PathBuf>,
}

fn default_config_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("tributary").join("ctl.toml"))
}

fn read_config(path: &Path) -> Result<FileConfig, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut c: FileConfig =
        toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    if let (Some(ca), Some(dir)) = (&c.ca, path.parent())
        && ca.is_relative()
    {
        c.ca = Some(dir.join(ca));
    }
    Ok(c)
}

impl Ctl {
    /// Flags and environment first, then the config file, then defaults.
    fn settings(&self) -> Result<Settings, String> {
        let file = match &self.config {
            Some(path) => read_config(path)?,
            None => match default_config_path() {
                Some(path) if path.exists() => read_config(&path)?,
                _ => FileConfig::default(),
            },
        };
        Ok(Settings {
            url: self
                .url
                .clone()
                .or(file.url)
                .unwrap_or_else(|| "http://127.0.0.1:15672".into()),
            user: self
                .user
                .clone()
                .or(file.user)
                .unwrap_or_else(|| "guest".into()),
            password: self
                .password
                .clone()
                .or(file.password)
                .unwrap_or_else(|| "guest".into()),
            ca: self.ca.clone().or(file.ca),
        })
    }
}

/// The root certificates for https://: the CA file, else the system's bundle.
fn root_certs(ca: Option<&Path>) -> Result<ureq::tls::RootCerts, String> {
    let path = match ca {
        Some(p) => p.to_path_buf(),
        None => SYSTEM_CA_FILES
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .ok_or("no CA bundle found on this system: give one with --ca")?,
    };
    let pem = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => certs.push(c),
            Ok(_) => {}
            Err(e) => return Err(format!("{}: {e}", path.display())),
        }
    }
    if certs.is_empty() {
        return Err(format!("{}: no certificate in it", path.display()));
    }
    Ok(ureq::tls::RootCerts::new_with_certs(&certs))
}

/// Output formats of `list`.
#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Format {
    /// Aligned columns.
    Table,
    /// The API's JSON.
    Json,
}

/// What `list` can list.
#[derive(Clone, Copy, ValueEnum)]
pub enum Listable {
    /// Connections of every protocol.
    Connections,
    /// Queues.
    Queues,
    /// Exchanges.
    Exchanges,
    /// Bindings.
    Bindings,
    /// Users.
    Users,
    /// Virtual hosts.
    Vhosts,
    /// MQTT and XMPP sessions.
    Sessions,
}

#[derive(Subcommand)]
enum CtlCommand {
    /// The broker's version, uptime, object counts and listeners.
    Status,
    /// List objects as an aligned table or JSON.
    List {
        /// What to list.
        what: Listable,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
        /// Only this virtual host (queues, exchanges, bindings).
        #[arg(short = 'p', long = "vhost")]
        vhost: Option<String>,
    },
    /// Add a user.
    #[command(name = "add_user")]
    AddUser {
        /// Login name.
        name: String,
        /// Password.
        password: String,
        /// Comma-separated tags (administrator, monitoring, management).
        #[arg(long, default_value = "")]
        tags: String,
    },
    /// Delete a user.
    #[command(name = "delete_user")]
    DeleteUser {
        /// Login name.
        name: String,
    },
    /// Set a user's permissions in a virtual host.
    #[command(name = "set_permissions")]
    SetPermissions {
        /// Virtual host.
        #[arg(short = 'p', long = "vhost", default_value = "/")]
        vhost: String,
        /// Login name.
        user: String,
        /// Configure pattern.
        configure: String,
        /// Write pattern.
        write: String,
        /// Read pattern.
        read: String,
    },
    /// Declare a queue.
    #[command(name = "declare_queue")]
    DeclareQueue {
        /// Queue name.
        name: String,
        /// Virtual host.
        #[arg(short = 'p', long = "vhost", default_value = "/")]
        vhost: String,
        /// Survives a restart.
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        durable: bool,
        /// Deleted when its last consumer goes.
        #[arg(long)]
        auto_delete: bool,
    },
    /// Delete a queue.
    #[command(name = "delete_queue")]
    DeleteQueue {
        /// Queue name.
        name: String,
        /// Virtual host.
        #[arg(short = 'p', long = "vhost", default_value = "/")]
        vhost: String,
    },
    /// Remove every ready message from a queue.
    #[command(name = "purge_queue")]
    PurgeQueue {
        /// Queue name.
        name: String,
        /// Virtual host.
        #[arg(short = 'p', long = "vhost", default_value = "/")]
        vhost: String,
    },
    /// Close a connection (by the name `list connections` shows).
    #[command(name = "close_connection")]
    CloseConnection {
        /// Connection name.
        name: String,
        /// Reason given to the client.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Write the broker's definitions to a file.
    #[command(name = "export_definitions")]
    ExportDefinitions {
        /// Output file ("-" for standard output).
        file: String,
    },
    /// Import definitions from a file (RabbitMQ's format).
    #[command(name = "import_definitions")]
    ImportDefinitions {
        /// Input file.
        file: String,
    },
}

/// Why a command failed, and the exit code it maps to.
#[derive(Debug)]
enum Failure {
    Api(u16, String),
    Connect(String),
    Local(String),
}

struct Client {
    agent: ureq::Agent,
    base: String,
    auth: String,
}

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

impl Client {
    fn new(c: &Settings) -> Result<Self, String> {
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)));
        if c.url.starts_with("https://") {
            // rustls with the provider the broker's own TLS uses.
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            config = config.tls_config(
                ureq::tls::TlsConfig::builder()
                    .provider(ureq::tls::TlsProvider::Rustls)
                    .unversioned_rustls_crypto_provider(provider)
                    .root_certs(root_certs(c.ca.as_deref())?)
                    .build(),
            );
        } else if !c.url.starts_with("http://") {
            return Err(format!(
                "--url {}: only http:// and https:// URLs are supported",
                c.url
            ));
        }
        let credentials = format!("{}:{}", c.user, c.password);
        Ok(Client {
            agent: config.build().into(),
            base: c.url.trim_end_matches('/').to_string(),
            auth: format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(credentials)
            ),
        })
    }

    /// One request; the parsed JSON answer (Null for an empty one).
    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&J>,
        reason: Option<&str>,
    ) -> Result<J, Failure> {
        let url = format!("{}/api{path}", self.base);
        let result = match (method, body) {
            ("GET", _) => self
                .agent
                .get(&url)
                .header("Authorization", &self.auth)
                .call(),
            ("DELETE", _) => {
                let mut r = self.agent.delete(&url).header("Authorization", &self.auth);
                if let Some(reason) = reason {
                    r = r.header("X-Reason", reason);
                }
                r.call()
            }
            (m, b) => {
                let text = b.map(J::to_string).unwrap_or_default();
                let r = if m == "PUT" {
                    self.agent.put(&url)
                } else {
                    self.agent.post(&url)
                };
                r.header("Authorization", &self.auth)
                    .header("Content-Type", "application/json")
                    .send(text.as_bytes())
            }
        };
        let mut response = result.map_err(|e| match e {
            ureq::Error::Io(_) | ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => {
                Failure::Connect(format!("cannot reach {}: {e}", self.base))
            }
            other => Failure::Connect(format!("{}: {other}", self.base)),
        })?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .read_to_string()
            .map_err(|e| Failure::Connect(e.to_string()))?;
        if status >= 400 {
            let reason = serde_json::from_str::<J>(&text)
                .ok()
                .and_then(|j| j.get("reason").and_then(J::as_str).map(String::from))
                .unwrap_or(text);
            return Err(Failure::Api(status, reason));
        }
        if text.trim().is_empty() {
            return Ok(J::Null);
        }
        serde_json::from_str(&text).map_err(|e| Failure::Api(status, format!("bad JSON: {e}")))
    }

    fn get(&self, path: &str) -> Result<J, Failure> {
        self.call("GET", path, None, None)
    }
}

/// Runs a `ctl` command; returns the process exit code.
pub fn run(c: Ctl) -> i32 {
    let client = match c.settings().and_then(|s| Client::new(&s)) {
        Ok(client) => client,
        Err(reason) => {
            eprintln!("Error: {reason}");
            return EXIT_USAGE;
        }
    };
    match execute(&client, c.command) {
        Ok(()) => 0,
        Err(Failure::Api(status, reason)) => {
            eprintln!("Error: the broker answered {status}: {reason}");
            EXIT_API
        }
        Err(Failure::Connect(reason)) => {
            eprintln!("Error: {reason}");
            EXIT_CONNECT
        }
        Err(Failure::Local(reason)) => {
            eprintln!("Error: {reason}");
            EXIT_API
        }
    }
}

fn execute(client: &Client, command: CtlCommand) -> Result<(), Failure> {
    match command {
        CtlCommand::Status => status(client),
        CtlCommand::List {
            what,
            format,
            vhost,
        } => list(client, what, format, vhost.as_deref()),
        CtlCommand::AddUser {
            name,
            password,
            tags,
        } => {
            let body = json!({ "password": password, "tags": tags });
            client.call("PUT", &format!("/users/{}", enc(&name)), Some(&body), None)?;
            println!("Adding user \"{name}\" ...");
            Ok(())
        }
        CtlCommand::DeleteUser { name } => {
            client.call("DELETE", &format!("/users/{}", enc(&name)), None, None)?;
            println!("Deleting user \"{name}\" ...");
            Ok(())
        }
        CtlCommand::SetPermissions {
            vhost,
            user,
            configure,
            write,
            read,
        } => {
            let body = json!({ "configure": configure, "write": write, "read": read });
            let path = format!("/permissions/{}/{}", enc(&vhost), enc(&user));
            client.call("PUT", &path, Some(&body), None)?;
            println!("Setting permissions for user \"{user}\" in vhost \"{vhost}\" ...");
            Ok(())
        }
        CtlCommand::DeclareQueue {
            name,
            vhost,
            durable,
            auto_delete,
        } => {
            let body = json!({ "durable": durable, "auto_delete": auto_delete, "arguments": {} });
            let path = format!("/queues/{}/{}", enc(&vhost), enc(&name));
            client.call("PUT", &path, Some(&body), None)?;
            println!("Declared queue \"{name}\" in vhost \"{vhost}\"");
            Ok(())
        }
        CtlCommand::DeleteQueue { name, vhost } => {
            let path = format!("/queues/{}/{}", enc(&vhost), enc(&name));
            client.call("DELETE", &path, None, None)?;
            println!("Deleted queue \"{name}\" in vhost \"{vhost}\"");
            Ok(())
        }
        CtlCommand::PurgeQueue { name, vhost } => {
            let path = format!("/queues/{}/{}/contents", enc(&vhost), enc(&name));
            client.call("DELETE", &path, None, None)?;
            println!("Purged queue \"{name}\" in vhost \"{vhost}\"");
            Ok(())
        }
        CtlCommand::CloseConnection { name, reason } => {
            let path = format!("/connections/{}", enc(&name));
            client.call("DELETE", &path, None, reason.as_deref())?;
            println!("Closing connection \"{name}\" ...");
            Ok(())
        }
        CtlCommand::ExportDefinitions { file } => {
            let defs = client.get("/definitions")?;
            let text = serde_json::to_string_pretty(&defs).unwrap_or_default();
            if file == "-" {
                println!("{text}");
            } else {
                std::fs::write(&file, text + "\n")
                    .map_err(|e| Failure::Local(format!("cannot write {file}: {e}")))?;
                eprintln!("Exported definitions to \"{file}\"");
            }
            Ok(())
        }
        CtlCommand::ImportDefinitions { file } => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| Failure::Local(format!("cannot read {file}: {e}")))?;
            let defs: J = serde_json::from_str(&text)
                .map_err(|e| Failure::Local(format!("{file} is not JSON: {e}")))?;
            client.call("POST", "/definitions", Some(&defs), None)?;
            println!("Imported definitions from \"{file}\"");
            Ok(())
        }
    }
}

fn status(client: &Client) -> Result<(), Failure> {
    let o = client.get("/overview")?;
    let field = |v: &J, k: &str| v.get(k).map(cell).unwrap_or_default();
    println!(
        "{} {} on node {}",
        field(&o, "product_name"),
        field(&o, "product_version"),
        field(&o, "node")
    );
    let uptime = o.get("uptime").and_then(J::as_u64).unwrap_or(0) / 1000;
    println!("Uptime: {uptime} s");
    if let Some(t) = o.get("object_totals") {
        for k in [
            "connections",
            "channels",
            "exchanges",
            "queues",
            "consumers",
        ] {
            println!("{k}: {}", field(t, k));
        }
    }
    if let Some(q) = o.get("queue_totals") {
        println!("messages: {}", field(q, "messages"));
    }
    let rows: Vec<Vec<String>> = o
        .get("listeners")
        .and_then(J::as_array)
        .map(|ls| {
            ls.iter()
                .map(|l| {
                    vec![
                        field(l, "protocol"),
                        field(l, "ip_address"),
                        field(l, "port"),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    println!("Listeners:");
    print!("{}", table(&["protocol", "address", "port"], &rows));
    Ok(())
}

/// The columns `list` shows for each kind.
fn columns(what: Listable) -> &'static [&'static str] {
    match what {
        Listable::Connections => &[
            "name",
            "tributary_protocol",
            "user",
            "vhost",
            "ssl",
            "channels",
        ],
        Listable::Queues => &[
            "vhost",
            "name",
            "durable",
            "messages",
            "messages_ready",
            "messages_unacknowledged",
            "consumers",
        ],
        Listable::Exchanges => &["vhost", "name", "type", "durable", "auto_delete"],
        Listable::Bindings => &[
            "vhost",
            "source",
            "destination",
            "destination_type",
            "routing_key",
        ],
        Listable::Users => &["name", "tags"],
        Listable::Vhosts => &["name", "messages"],
        Listable::Sessions => &["protocol", "client", "user", "connected", "connection"],
    }
}

fn list(
    client: &Client,
    what: Listable,
    format: Format,
    vhost: Option<&str>,
) -> Result<(), Failure> {
    let scoped = |kind: &str| match vhost {
        Some(v) => format!("/{kind}/{}", enc(v)),
        None => format!("/{kind}"),
    };
    let items = match what {
        Listable::Connections => client.get("/connections")?,
        Listable::Queues => client.get(&scoped("queues"))?,
        Listable::Exchanges => client.get(&scoped("exchanges"))?,
        Listable::Bindings => client.get(&scoped("bindings"))?,
        Listable::Users => client.get("/users")?,
        Listable::Vhosts => client.get("/vhosts")?,
        Listable::Sessions => {
            let mut all = Vec::new();
            for s in as_list(client.get("/mqtt/sessions")?) {
                all.push(json!({
                    "protocol": "mqtt",
                    "client": s.get("client_id").cloned().unwrap_or(J::Null),
                    "user": s.get("user").cloned().unwrap_or(J::Null),
                    "connected": s.get("connected").cloned().unwrap_or(J::Null),
                    "connection": s.get("connection").cloned().unwrap_or(J::Null),
                }));
            }
            for s in as_list(client.get("/xmpp/sessions")?) {
                all.push(json!({
                    "protocol": "xmpp",
                    "client": s.get("jid").cloned().unwrap_or(J::Null),
                    "user": s.get("user").cloned().unwrap_or(J::Null),
                    "connected": true,
                    "connection": s.get("connection").cloned().unwrap_or(J::Null),
                }));
            }
            J::Array(all)
        }
    };
    if format == Format::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&items).unwrap_or_default()
        );
        return Ok(());
    }
    let cols = columns(what);
    let rows: Vec<Vec<String>> = as_list(items)
        .iter()
        .map(|item| {
            cols.iter()
                .map(|c| item.get(*c).map(cell).unwrap_or_default())
                .collect()
        })
        .collect();
    print!("{}", table(cols, &rows));
    Ok(())
}

fn as_list(j: J) -> Vec<J> {
    match j {
        J::Array(a) => a,
        _ => Vec::new(),
    }
}

/// A JSON value as a table cell.
fn cell(v: &J) -> String {
    match v {
        J::Null => String::new(),
        J::String(s) => s.clone(),
        J::Array(a) => a.iter().map(cell).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// Rows under a header, each column as wide as its widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  "));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_aligned() {
        let t = table(
            &["name", "messages"],
            &[
                vec!["a-long-name".into(), "1".into()],
                vec!["q".into(), "22".into()],
            ],
        );
        assert_eq!(
            t,
            "name         messages\na-long-name  1\nq            22\n"
        );
    }
}
