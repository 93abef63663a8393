//! `tributary serve`: binds the listeners, accepts connections and shuts down
//! cleanly on SIGINT/SIGTERM (stop accepting, close connections with 320
//! CONNECTION_FORCED, wait for them to finish).

use crate::amqp::driver::{self, AmqpContext};
use crate::config::Config;
use crate::limits::Limits;
use crate::users::{UserAdmin, UserDb};
use anyhow::Context;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tributary_amqp::ConnectionConfig;

/// How often expired messages and unused queues are swept.
const SWEEP_INTERVAL: Duration = Duration::from_millis(100);
/// How long shutdown waits for connections to finish their close handshake.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs the broker until a shutdown signal.
pub async fn serve(config: Config, data_dir: PathBuf) -> anyhow::Result<()> {
    // Install the handlers before anything is announced, so a signal sent as
    // soon as the listening line appears is never lost to the default action.
    let signals = Signals::install()?;
    let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("cannot install the SIGHUP handler")?;
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
    let admin = UserAdmin::open(&data_dir)?;
    admin.ensure_initialised(config.auth.create_guest)?;
    let users = Arc::new(UserDb::open(&data_dir, config.auth.loopback_users.clone())?);
    let vhost_names: Vec<(String, u64)> =
        users.vhosts().into_iter().map(|v| (v.name, v.id)).collect();
    let (broker, store) = crate::persistence::open(
        &data_dir.join("store"),
        config.store.memory_budget,
        &vhost_names,
    )?;
    let cluster = match config.cluster_addr() {
        Some(addr) => {
            crate::cluster::start(
                &config.cluster,
                &addr,
                broker.clone(),
                store.clone(),
                &data_dir,
            )
            .await?
        }
        None => None,
    };
    let shutdown = CancellationToken::new();
    let (flow_tx, flow_rx) = tokio::sync::watch::channel(false);
    let tracker = TaskTracker::new();
    tracing::info!(data_dir = %data_dir.display(), version = env!("CARGO_PKG_VERSION"), "starting Tributary");
    let limits = Limits::new(
        config.limits.connection_limit(),
        config.limits.max_connections_per_user,
    );
    tracing::info!(
        max_connections = config.limits.connection_limit(),
        max_connections_per_user = config.limits.max_connections_per_user,
        max_queues_per_vhost = config.limits.max_queues_per_vhost,
        max_buffered_bytes = config.limits.max_buffered_bytes,
        "limits (0 = none)"
    );

    let auth_failure_delay = Duration::from_millis(config.auth.failure_delay_ms);
    let amqp = Arc::new(AmqpContext {
        flow: flow_rx.clone(),
        watermark: config.flow.watermark(),
        broker: broker.clone(),
        users: users.clone(),
        config: ConnectionConfig {
            channel_max: config.amqp.channel_max,
            frame_max: config.amqp.frame_max,
            heartbeat: config.amqp.heartbeat,
            handshake_timeout: Duration::from_secs(config.amqp.handshake_timeout),
            max_message_size: config.amqp.max_message_size,
            ..ConnectionConfig::default()
        },
        shutdown: shutdown.clone(),
        limits: limits.clone(),
        max_buffered_bytes: config.limits.max_buffered_bytes,
        auth_failure_delay,
    });
    if let Some(addr) = config.amqp_addr() {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen for AMQP on {addr} (listeners.amqp)"))?;
        let local = listener.local_addr()?;
        tracing::info!("listening protocol=amqp addr={local}");
        tracker.spawn(accept_loop(
            listener,
            amqp.clone(),
            tracker.clone(),
            shutdown.clone(),
        ));
    }

    let mqtt = Arc::new(crate::mqtt::driver::MqttContext {
        broker: broker.clone(),
        users: users.clone(),
        registry: crate::mqtt::Registry::default(),
        retained: Arc::new(parking_lot::Mutex::new(
            crate::persistence::retained_messages(&store),
        )),
        shutdown: shutdown.clone(),
        received: Default::default(),
        sessions: crate::mqtt::stored::SessionTable::load(crate::persistence::mqtt_sessions(
            &store,
        )),
        max_keep_alive: config.mqtt.max_keep_alive,
        default_vhost: config.mqtt.vhost.clone(),
        tls_vhost: config.mqtt.tls_vhost().to_owned(),
        max_packet_size: config.mqtt.max_packet_size,
        max_inflight: config.mqtt.max_inflight,
        receive_maximum: config.mqtt.receive_maximum,
        limits: limits.clone(),
        connect_timeout: Duration::from_secs(config.limits.mqtt_connect_timeout),
        max_buffered_bytes: config.limits.max_buffered_bytes,
        ssl_cert_login: config.mqtt.ssl_cert_login,
        auth_failure_delay,
    });
    if let Some(addr) = config.mqtt_addr() {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen for MQTT on {addr} (listeners.mqtt)"))?;
        let local = listener.local_addr()?;
        tracing::info!("listening protocol=mqtt addr={local}");
        let ctx = mqtt.clone();
        spawn_accept(listener, &tracker, &shutdown, move |stream, peer| {
            crate::mqtt::driver::run(stream, peer, ctx.clone())
        });
    }

    tracker.spawn(crate::mqtt::sys::run(mqtt.clone()));
    // One certificate for the TLS listeners: [tls], or one generated for the XMPP domain.
    let tls = crate::tls::TlsSetup::load_or_generate(
        &config.tls,
        &config.tls.certificate,
        &config.tls.key,
        &config.xmpp.domain,
        &data_dir,
    )?;
    let coap_observations = crate::coap::Observations::default();
    let coap = (&mqtt, &tls, &coap_observations);
    start_coap(&config, coap, &limits, &shutdown, &tracker).await?;
    if let Some(addr) = config.mqtts_addr() {
        let listener = TcpListener::bind(addr).await.with_context(|| {
            format!("cannot listen for MQTT over TLS on {addr} (listeners.mqtts)")
        })?;
        tracing::info!("listening protocol=mqtts addr={}", listener.local_addr()?);
        let (ctx, tls) = (mqtt.clone(), tls.clone());
        spawn_accept(listener, &tracker, &shutdown, move |stream, peer| {
            crate::mqtt::driver::run_tls(stream, peer, ctx.clone(), tls.clone())
        });
    }
    if let Some(addr) = config.amqps_addr() {
        let listener = TcpListener::bind(addr).await.with_context(|| {
            format!("cannot listen for AMQP over TLS on {addr} (listeners.amqps)")
        })?;
        tracing::info!("listening protocol=amqps addr={}", listener.local_addr()?);
        let (ctx, tls) = (amqp.clone(), tls.clone());
        spawn_accept(listener, &tracker, &shutdown, move |stream, peer| {
            driver::run_tls(stream, peer, ctx.clone(), tls.clone())
        });
    }
    let services = Services {
        users: &users,
        broker: &broker,
        store: &store,
        tls: &tls,
        limits: &limits,
    };
    start_kafka(&config, &services, auth_failure_delay, &shutdown, &tracker).await?;
    let xmpp = start_xmpp(&config, &data_dir, &services, &shutdown, &tracker).await?;
    let mut certificates = vec![tls.clone()];
    if let Some(own) = xmpp.as_ref().and_then(|x| x.tls.clone())
        && !own.same_as(&tls)
    {
        certificates.push(own);
    }
    tracker.spawn(reload_on_hangup(hangup, certificates, shutdown.clone()));
    // Once the broker's own queues (the XMPP bridge's) exist, whatever the limit (they count).
    for vhost in broker.vhosts() {
        vhost.set_max_queues(config.limits.max_queues_per_vhost);
    }

    // HTTP and HTTPS serve the same routes (one management state).
    let mut http_listeners = Vec::new();
    if let Some(http) = config.http_addr() {
        let listener = TcpListener::bind(http)
            .await
            .with_context(|| format!("cannot listen for HTTP on {http} (listeners.http)"))?;
        tracing::info!("listening protocol=http addr={}", listener.local_addr()?);
        http_listeners.push((listener, None));
    }
    if let Some(https) = config.https_addr() {
        let listener = TcpListener::bind(https)
            .await
            .with_context(|| format!("cannot listen for HTTPS on {https} (listeners.https)"))?;
        tracing::info!("listening protocol=https addr={}", listener.local_addr()?);
        http_listeners.push((listener, Some(tls.clone())));
    }
    if let Some((first, first_tls)) = http_listeners.first() {
        let local = first.local_addr()?;
        if let Some(up) = xmpp.as_ref().and_then(|x| x.upload()) {
            up.set_listener(local, first_tls.is_some());
        }
        let mgmt = crate::mgmt::MgmtState::new(crate::mgmt::Services {
            broker: broker.clone(),
            users: users.clone(),
            admin: UserAdmin::open(&data_dir)?,
            registry: limits.registry().clone(),
            mqtt: mqtt.clone(),
            store: store.clone(),
            config: config.clone(),
            xmpp: xmpp.clone(),
            coap: coap_observations.clone(),
        });
        let state = crate::http::HttpState {
            mqtt: mqtt.clone(),
            xmpp: xmpp.clone(),
            local,
            mgmt,
            tls: false,
        };
        for (listener, tls) in http_listeners {
            let state = crate::http::HttpState {
                local: listener.local_addr()?,
                tls: tls.is_some(),
                ..state.clone()
            };
            match tls {
                None => tracker.spawn(crate::http::serve(listener, state, shutdown.clone())),
                Some(tls) => {
                    let listener = crate::tls::TlsListener::spawn(listener, tls, shutdown.clone())?;
                    tracker.spawn(crate::http::serve_tls(listener, state, shutdown.clone()))
                }
            };
        }
    }

    tracker.spawn(crate::vhosts::follow(
        broker.clone(),
        users.clone(),
        limits.registry().clone(),
        config.limits.max_queues_per_vhost,
        shutdown.clone(),
    ));
    tracker.spawn(sweep(
        broker.clone(),
        flow_tx,
        config.flow.watermark(),
        shutdown.clone(),
    ));
    signals.wait().await;
    tracing::info!("shutting down: closing connections");
    shutdown.cancel();
    tracker.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("some connections did not close in time");
    }
    if let Some(cluster) = &cluster {
        cluster.shutdown().await;
    }
    crate::persistence::flush_streams(&broker);
    if let Err(e) = store.close() {
        tracing::error!(error = %e, "closing the message store failed");
    }
    tracing::info!("stopped");
    Ok(())
}

/// Runs the core's periodic sweep (message TTLs, `x-expires`) and the memory
/// alarm (flow control) until shutdown.
async fn sweep(
    broker: Arc<tributary_core::Broker>,
    flow: tokio::sync::watch::Sender<bool>,
    watermark: usize,
    shutdown: CancellationToken,
) {
    let mut every = tokio::time::interval(SWEEP_INTERVAL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = every.tick() => {
                let b = broker.clone();
                // The sweep may touch many queues; keep it off the IO threads' hot path.
                let _ = tokio::task::spawn_blocking(move || b.tick()).await;
                let in_use = broker.memory_budget().in_use();
                let alarm = in_use > watermark;
                if alarm != *flow.borrow() {
                    if alarm {
                        tracing::warn!(in_use, watermark, "memory alarm set: blocking publishers");
                    } else {
                        tracing::info!(in_use, watermark, "memory alarm cleared: unblocking publishers");
                    }
                    let _ = flow.send(alarm);
                }
            }
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    ctx: Arc<AmqpContext>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok((stream, peer)) => {
                    tracker.spawn(driver::run(stream, peer, ctx.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// Reloads the TLS certificates on SIGHUP: new handshakes use the new ones,
/// established connections keep theirs; a bad file leaves the old one in force.
async fn reload_on_hangup(
    mut hangup: tokio::signal::unix::Signal,
    certificates: Vec<crate::tls::TlsSetup>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = hangup.recv() => {
                if r.is_none() {
                    return;
                }
                for tls in &certificates {
                    let certificate = tls.certificate_path().display();
                    match tls.reload() {
                        Ok(()) => tracing::info!(%certificate, "TLS certificate reloaded"),
                        Err(e) => tracing::error!(%certificate, error = format!("{e:#}"), "TLS certificate reload failed; the current certificate stays in use"),
                    }
                }
            }
        }
    }
}

/// SIGTERM and SIGINT, registered once at start-up.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?,
        })
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

/// Accepts connections until shutdown, spawning `handle` for each.
fn spawn_accept<F, Fut>(
    listener: TcpListener,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
    handle: F,
) where
    F: Fn(tokio::net::TcpStream, std::net::SocketAddr) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (t, s) = (tracker.clone(), shutdown.clone());
    tracker.spawn(async move {
        loop {
            tokio::select! {
                _ = s.cancelled() => return,
                r = listener.accept() => match r {
                    Ok((stream, peer)) => {
                        t.spawn(handle(stream, peer));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }
    });
}

/// The `host:port` a Kafka listener advertises: `[kafka] advertised_listener`, else the bound
/// address.
fn kafka_advertised(config: &Config, local: std::net::SocketAddr) -> Arc<(String, i32)> {
    let configured = config
        .kafka
        .advertised_listener
        .rsplit_once(':')
        .and_then(|(h, p)| {
            Some((
                h.trim_matches(['[', ']']).to_owned(),
                p.parse::<i32>().ok()?,
            ))
        });
    Arc::new(configured.unwrap_or_else(|| (local.ip().to_string(), i32::from(local.port()))))
}

/// Starts the Kafka listeners (`[listeners] kafka`, `kafkas`), off by default.
async fn start_kafka(
    config: &Config,
    services: &Services<'_>,
    auth_failure_delay: Duration,
    shutdown: &CancellationToken,
    tracker: &TaskTracker,
) -> anyhow::Result<()> {
    if config.kafka_addr().is_none() && config.kafkas_addr().is_none() {
        return Ok(());
    }
    let groups = crate::kafka::Groups::new(Some(services.store.clone()));
    tracker.spawn(groups.clone().run_ticker(shutdown.clone()));
    let ctx = Arc::new(crate::kafka::KafkaContext {
        broker: services.broker.clone(),
        users: services.users.clone(),
        limits: services.limits.clone(),
        shutdown: shutdown.clone(),
        config: config.kafka.clone(),
        groups,
        auth_failure_delay,
    });
    if let Some(addr) = config.kafka_addr() {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen for Kafka on {addr} (listeners.kafka)"))?;
        let local = listener.local_addr()?;
        tracing::info!("listening protocol=kafka addr={local}");
        let (ctx, advertised) = (ctx.clone(), kafka_advertised(config, local));
        spawn_accept(listener, tracker, shutdown, move |stream, peer| {
            crate::kafka::run(stream, peer, ctx.clone(), advertised.clone())
        });
    }
    if let Some(addr) = config.kafkas_addr() {
        let listener = TcpListener::bind(addr).await.with_context(|| {
            format!("cannot listen for Kafka over TLS on {addr} (listeners.kafkas)")
        })?;
        let local = listener.local_addr()?;
        tracing::info!("listening protocol=kafkas addr={local}");
        let (ctx, advertised, tls) = (
            ctx.clone(),
            kafka_advertised(config, local),
            services.tls.clone(),
        );
        spawn_accept(listener, tracker, shutdown, move |stream, peer| {
            crate::kafka::run_tls(stream, peer, ctx.clone(), advertised.clone(), tls.clone())
        });
    }
    Ok(())
}

/// Starts the CoAP listeners (`[listeners] coap`, UDP; `coaps`, DTLS with
/// the `[tls]` certificate and `[coap] psk_file`), which share MQTT's
/// retained messages.
async fn start_coap(
    config: &Config,
    (mqtt, tls, observations): (
        &Arc<crate::mqtt::driver::MqttContext>,
        &crate::tls::TlsSetup,
        &crate::coap::Observations,
    ),
    limits: &Arc<Limits>,
    shutdown: &CancellationToken,
    tracker: &TaskTracker,
) -> anyhow::Result<()> {
    if config.coap_addr().is_none() && config.coaps_addr().is_none() {
        return Ok(());
    }
    let ctx = Arc::new(crate::coap::CoapContext {
        broker: mqtt.broker.clone(),
        users: mqtt.users.clone(),
        retained: mqtt.retained.clone(),
        config: config.coap.clone(),
        limits: limits.clone(),
        shutdown: shutdown.clone(),
        observations: observations.clone(),
    });
    if let Some(addr) = config.coap_addr() {
        let socket = tokio::net::UdpSocket::bind(addr)
            .await
            .with_context(|| format!("cannot listen for CoAP on {addr} (listeners.coap)"))?;
        tracing::info!("listening protocol=coap addr={}", socket.local_addr()?);
        tracker.spawn(crate::coap::run_udp(socket, ctx.clone()));
    }
    if let Some(addr) = config.coaps_addr() {
        let psk = (!config.coap.psk_file.is_empty())
            .then(|| crate::coap::dtls::load_psk_file(std::path::Path::new(&config.coap.psk_file)))
            .transpose()?;
        let verify = config.tls.verify == crate::config::TlsVerify::VerifyPeer;
        let setup = crate::coap::dtls::DtlsSetup {
            psk: psk.map(Arc::new),
            certificate: tls.certificate_path().to_owned(),
            key: tls.key_path().to_owned(),
            ca_certificate: verify.then(|| config.tls.ca_certificate.clone().into()),
            fail_if_no_peer_cert: config.tls.fail_if_no_peer_cert,
        };
        let peer_addr = openssl::ssl::Ssl::new_ex_index()?;
        let dtls = crate::coap::coaps::Dtls {
            context: crate::coap::dtls::context(&setup, peer_addr)
                .context("cannot set up DTLS for listeners.coaps")?,
            peer_addr,
            login_from: config.tls.peer_cert_login_from,
        };
        let socket = tokio::net::UdpSocket::bind(addr).await.with_context(|| {
            format!("cannot listen for CoAP over DTLS on {addr} (listeners.coaps)")
        })?;
        tracing::info!("listening protocol=coaps addr={}", socket.local_addr()?);
        tracker.spawn(crate::coap::coaps::run(socket, ctx.clone(), dtls));
    }
    Ok(())
}

/// What the protocol services share.
struct Services<'a> {
    users: &'a Arc<UserDb>,
    broker: &'a Arc<tributary_core::Broker>,
    store: &'a Arc<tributary_store::Store>,
    tls: &'a crate::tls::TlsSetup,
    limits: &'a Arc<Limits>,
}

/// Starts federation: the outbound router and the server-to-server
/// listeners (5269 STARTTLS, 5270 direct TLS).
async fn start_s2s(
    config: &Config,
    ctx: &Arc<crate::xmpp::XmppContext>,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let files = ctx
        .tls
        .as_ref()
        .map(|t| (t.certificate_path(), t.key_path()));
    let s2s =
        crate::xmpp::s2s::S2s::new(Arc::downgrade(ctx), &config.xmpp, files, shutdown.clone())?;
    ctx.set_s2s(s2s.clone());
    for (addr, direct_tls, name, key) in [
        (
            config.xmpp_server_addr(),
            false,
            "xmpp-server",
            "listeners.xmpp_server",
        ),
        (
            config.xmpps_server_addr(),
            true,
            "xmpps-server",
            "listeners.xmpps_server",
        ),
    ] {
        let Some(addr) = addr else { continue };
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen for XMPP servers on {addr} ({key})"))?;
        tracing::info!(
            domain = %config.xmpp.domain,
            "listening protocol={name} addr={}",
            listener.local_addr()?
        );
        let s2s = s2s.clone();
        spawn_accept(listener, tracker, shutdown, move |stream, peer| {
            s2s.clone().run_inbound(stream, peer, direct_tls)
        });
    }
    Ok(())
}

/// Starts the XMPP service and its listeners (5222 STARTTLS, 5223 direct TLS).
async fn start_xmpp(
    config: &Config,
    data_dir: &std::path::Path,
    services: &Services<'_>,
    shutdown: &CancellationToken,
    tracker: &TaskTracker,
) -> anyhow::Result<Option<Arc<crate::xmpp::XmppContext>>> {
    let Services {
        users,
        broker,
        store,
        tls,
        limits,
    } = *services;
    let wanted = config.xmpp_addr().is_some()
        || config.xmpps_addr().is_some()
        || config.http_addr().is_some();
    if !wanted {
        return Ok(None);
    }
    let tls = if config.xmpp.certificate.is_empty() {
        tls.clone()
    } else {
        crate::tls::TlsSetup::load_or_generate(
            &config.tls,
            &config.xmpp.certificate,
            &config.xmpp.key,
            &config.xmpp.domain,
            data_dir,
        )?
    };
    let ctx = Arc::new(crate::xmpp::XmppContext::new(
        config.xmpp.clone(),
        crate::xmpp::XmppLimits {
            connections: limits.clone(),
            handshake_timeout: Duration::from_secs(config.limits.xmpp_handshake_timeout),
            stanza_rate: config.limits.xmpp_stanza_rate,
            stanza_burst: config.limits.xmpp_stanza_burst,
            max_buffered_bytes: config.limits.max_buffered_bytes,
            auth_failure_delay: Duration::from_millis(config.auth.failure_delay_ms),
        },
        users.clone(),
        store.clone(),
        data_dir.to_owned(),
        Some(tls),
        shutdown.clone(),
    )?);
    if config.xmpp.bridge {
        let vhost =
            crate::vhosts::resolve(broker, users, &config.xmpp.vhost).with_context(|| {
                format!(
                    "xmpp.vhost '{}' does not exist: create it with `tributary vhost add`",
                    config.xmpp.vhost
                )
            })?;
        let (bridge, rx) = crate::xmpp::bridge::Bridge::start(
            broker.clone(),
            store.clone(),
            users.clone(),
            vhost,
            &config.xmpp.domain,
            &config.xmpp.bridge_exchange,
        )?;
        ctx.set_bridge(bridge);
        tracker.spawn(crate::xmpp::bridge::run(ctx.clone(), rx));
    }
    if config.xmpp.s2s.enabled {
        start_s2s(config, &ctx, tracker, shutdown).await?;
    }
    for (addr, direct_tls, name, key) in [
        (config.xmpp_addr(), false, "xmpp", "listeners.xmpp"),
        (config.xmpps_addr(), true, "xmpps", "listeners.xmpps"),
    ] {
        let Some(addr) = addr else { continue };
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen for XMPP on {addr} ({key})"))?;
        tracing::info!(
            domain = %config.xmpp.domain,
            "listening protocol={name} addr={}",
            listener.local_addr()?
        );
        let ctx = ctx.clone();
        spawn_accept(listener, tracker, shutdown, move |stream, peer| {
            crate::xmpp::session::run_tcp(stream, peer, ctx.clone(), direct_tls)
        });
    }
    Ok(Some(ctx))
}
