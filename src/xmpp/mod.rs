//! The XEP-0114 component: the link to the XMPP server, dispatch of incoming
//! stanzas, and delivery of queued alerts.
//!
//! The link reconnects with backoff, pings the server to stay alive, and
//! always sets `from`. Alerts leave the outbox only when the stream took them.

pub mod adhoc;
pub mod adhoc_front;
pub mod agents;
pub mod chat;
pub mod forms;
pub mod iq;
pub mod refusal;
pub mod stanzas;

use crate::store::StateStore as _;
use std::borrow::Cow;
use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::io::BufStream;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_xmpp::connect::ServerConnector;
use tokio_xmpp::parsers::jid::{BareJid, Jid};
use tokio_xmpp::parsers::message::MessageType;
use tokio_xmpp::parsers::presence::{Presence, Type as PresenceType};
use tokio_xmpp::xmlstream::{initiate_stream, PendingFeaturesRecv, StreamHeader, Timeouts};
use tokio_xmpp::{Component, Stanza};

use crate::config::{resolve_socket, Config, ConfigError};
use crate::engine::Engine;
use crate::model::{Delivery, Sink, MAX_DELIVERY_ATTEMPTS};
use crate::store::StoreError;

/// How often the link pings the server.
const PING_EVERY: Duration = Duration::from_secs(25);
/// Silence after which the link is considered dead.
const DEAD_AFTER: Duration = Duration::from_secs(90);
/// Reconnect backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// A stanza to write, with an optional acknowledgement once the stream took it;
/// or a request to end the stream.
enum Outgoing {
    Stanza {
        stanza: Box<Stanza>,
        ack: Option<oneshot::Sender<bool>>,
    },
    Close(oneshot::Sender<()>),
}

/// Stanzas waiting to be written to the server: room for a burst of
/// refusals (a few hundred IQs at once from one JID) and the answers of the
/// requests admitted with them.
pub const OUTGOING_QUEUE: usize = 1024;
/// How long a reply may wait for room in the outgoing queue.
pub const SEND_WAIT: Duration = Duration::from_secs(10);

/// Who a stanza is addressed to, for the log.
fn stanza_to(stanza: &Stanza) -> String {
    let to = match stanza {
        Stanza::Iq(iq) => iq.to().cloned(),
        Stanza::Message(m) => m.to.clone(),
        Stanza::Presence(p) => p.to.clone(),
    };
    to.map_or_else(|| "?".to_owned(), |j| j.to_string())
}

/// Why a stanza was not sent when there is no link.
const NO_LINK: &str = "no link to the server";

/// The current link to the server, if any.
#[derive(Default)]
pub struct Link {
    tx: Mutex<Option<mpsc::Sender<Outgoing>>>,
    up: watch::Sender<u64>,
}

impl Link {
    fn set(&self, tx: Option<mpsc::Sender<Outgoing>>) {
        *self.tx.lock().expect("link lock") = tx;
        self.up.send_modify(|g| *g += 1);
    }

    fn sender(&self) -> Option<mpsc::Sender<Outgoing>> {
        self.tx.lock().expect("link lock").clone()
    }

    /// Queues a stanza on the current link without waiting; when there is
    /// no link or its queue is full, the stanza is dropped and the drop
    /// logged with its addressee (never silently).
    pub fn send(&self, stanza: impl Into<Stanza>) {
        let stanza = stanza.into();
        let to = stanza_to(&stanza);
        match self.try_send(stanza) {
            Ok(()) => {}
            Err(why @ NO_LINK) => tracing::info!(%to, "reply not sent: {why}"),
            Err(why) => tracing::warn!(%to, "reply not sent: {why}"),
        }
    }

    /// Queues a stanza on the current link without waiting; says why not
    /// when there is no link or its queue is full (the stanza is dropped).
    pub fn try_send(&self, stanza: impl Into<Stanza>) -> Result<(), &'static str> {
        let tx = self.sender().ok_or(NO_LINK)?;
        let queued = tx.try_send(Outgoing::Stanza {
            stanza: Box::new(stanza.into()),
            ack: None,
        });
        queued.map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => "the outgoing queue is full",
            mpsc::error::TrySendError::Closed(_) => "the link just closed",
        })
    }

    /// Queues a stanza on the current link, waiting up to [`SEND_WAIT`] for
    /// room in the outgoing queue (for tasks that may wait: a burst of
    /// requests then slows its own answers instead of losing them).
    pub async fn send_waiting(&self, stanza: impl Into<Stanza>) {
        let stanza = stanza.into();
        let to = stanza_to(&stanza);
        let Some(tx) = self.sender() else {
            tracing::info!(%to, "reply not sent: no link to the server");
            return;
        };
        let queued = tx.send_timeout(
            Outgoing::Stanza {
                stanza: Box::new(stanza),
                ack: None,
            },
            SEND_WAIT,
        );
        if queued.await.is_err() {
            tracing::warn!(%to, "reply not sent: the outgoing queue stayed full for {SEND_WAIT:?}, or the link closed");
        }
    }

    /// Sends a stanza and waits until the stream has written it.
    async fn send_acked(&self, stanza: Stanza) -> bool {
        let Some(tx) = self.sender() else {
            return false;
        };
        let (ack, done) = oneshot::channel();
        if tx
            .send(Outgoing::Stanza {
                stanza: Box::new(stanza),
                ack: Some(ack),
            })
            .await
            .is_err()
        {
            return false;
        }
        done.await.unwrap_or(false)
    }

    /// Ends the stream politely (`</stream:stream>`), if there is one.
    async fn close(&self) {
        let Some(tx) = self.sender() else { return };
        let (ack, done) = oneshot::channel();
        if tx.send(Outgoing::Close(ack)).await.is_ok() {
            let _ = done.await;
        }
    }
}

/// A TCP connector that sets TCP_NODELAY, which tokio-xmpp does not, and
/// keeps the start of the stream to say why the server refused us.
#[derive(Clone, Debug)]
struct NodelayConnector(SocketAddr, refusal::Recording);

impl ServerConnector for NodelayConnector {
    type Stream = BufStream<refusal::Recorded<TcpStream>>;

    async fn connect(
        &self,
        jid: &Jid,
        ns: &'static str,
        timeouts: Timeouts,
    ) -> Result<
        (
            PendingFeaturesRecv<Self::Stream>,
            sasl::common::ChannelBinding,
        ),
        tokio_xmpp::Error,
    > {
        let tcp = tokio::time::timeout(Duration::from_secs(15), TcpStream::connect(self.0))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
            })??;
        tcp.set_nodelay(true)?;
        let header = StreamHeader {
            to: Some(Cow::Owned(jid.domain().as_str().to_owned())),
            from: None,
            id: None,
        };
        self.1.clear();
        let tcp = refusal::Recorded::new(tcp, self.1.clone());
        let pending = initiate_stream(BufStream::new(tcp), ns, header, timeouts).await?;
        Ok((pending, sasl::common::ChannelBinding::None))
    }
}

/// Everything a stanza handler needs.
pub struct Ctx {
    /// The engine.
    pub engine: Arc<Engine>,
    /// The link.
    pub link: Arc<Link>,
    /// The component's JID, used as `from` everywhere.
    pub me: Jid,
    /// Deliveries written to the stream lately, with when: re-sent if the
    /// link drops within [`RESEND_WINDOW`] of their write (XEP-0114 has no
    /// acknowledgement, so "written" is not "received").
    recent: Mutex<VecDeque<(Instant, Delivery)>>,
    /// Chat commands being answered ([`crate::engine::COMMANDS_IN_FLIGHT`]);
    /// checks wait in the engine's queue instead.
    in_flight: Arc<tokio::sync::Semaphore>,
    /// IQ requests being answered ([`crate::engine::IQS_IN_FLIGHT`]).
    iq_in_flight: Arc<tokio::sync::Semaphore>,
    /// Who has been sent our available presence, to be told when we go.
    pub presence: Mutex<PresenceBook>,
    /// The presence book changed since it was last stored.
    presence_dirty: std::sync::atomic::AtomicBool,
    /// XEP-0050 sessions waiting for their form.
    adhoc: adhoc_front::Sessions,
    /// The agents (`[[vantage]]`) checks probe through.
    pub agents: Arc<agents::Agents>,
}

/// Where the presence book is kept in the store's meta tree.
pub const PRESENCE_KEY: &str = "presence";

/// The most JIDs the presence book remembers (the oldest are forgotten first).
pub const PRESENCE_BOOK_MAX: usize = 10_000;

/// The bare JIDs that subscribed to, or probed, our presence, oldest first:
/// kept in the store (meta [`PRESENCE_KEY`]), they get our available
/// presence whenever the link comes up and unavailable presence on shutdown.
#[derive(Default)]
pub struct PresenceBook {
    order: VecDeque<String>,
    known: HashSet<String>,
}

impl PresenceBook {
    /// Remembers a JID, forgetting the oldest when full; whether it is new.
    pub fn add(&mut self, jid: &str) -> bool {
        if self.known.contains(jid) {
            return false;
        }
        if self.order.len() >= PRESENCE_BOOK_MAX {
            if let Some(old) = self.order.pop_front() {
                self.known.remove(&old);
            }
        }
        self.known.insert(jid.to_owned());
        self.order.push_back(jid.to_owned());
        true
    }

    /// Forgets a JID (it unsubscribed); whether it was known.
    pub fn remove(&mut self, jid: &str) -> bool {
        let known = self.known.remove(jid);
        if known {
            self.order.retain(|j| j != jid);
        }
        known
    }

    /// Every JID, oldest first.
    pub fn jids(&self) -> Vec<String> {
        self.order.iter().cloned().collect()
    }

    /// A book holding `jids` (the newest [`PRESENCE_BOOK_MAX`]).
    pub fn from_jids(jids: Vec<String>) -> PresenceBook {
        let mut book = PresenceBook::default();
        for j in jids {
            book.add(&j);
        }
        book
    }

    /// Every JID, oldest first, leaving the book empty.
    pub fn take(&mut self) -> Vec<String> {
        self.known.clear();
        self.order.drain(..).collect()
    }
}

/// How long after its write a delivery is still re-sent when the link drops.
pub const RESEND_WINDOW: Duration = Duration::from_secs(10);

/// How the front reaches its server, read from the `[xmpp]` config section.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The component's JID.
    pub me: Jid,
    /// The server's component port.
    pub server: SocketAddr,
    /// The shared secret.
    pub secret: String,
}

impl Settings {
    /// Reads and checks the `[xmpp]` section.
    pub fn from_config(config: &Config) -> Result<Settings, ConfigError> {
        let secret = config.secret()?;
        let server =
            resolve_socket(&config.xmpp.server, "xmpp.server").map_err(ConfigError::Invalid)?;
        let me = match BareJid::from_str(&config.xmpp.component) {
            Ok(j) if j.node().is_none() => Jid::from(j),
            _ => {
                return Err(ConfigError::Invalid(format!(
                    "xmpp.component {:?} must be a domain JID like certwatch.example.org",
                    config.xmpp.component
                )))
            }
        };
        Ok(Settings { me, server, secret })
    }
}

/// Runs the component until `shutdown` completes, then closes the stream
/// (waiting a few seconds at most for the server to take the close).
pub async fn run(
    engine: Arc<Engine>,
    settings: Settings,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let Settings { me, server, secret } = settings;
    stanzas::set_max_stanza(engine.config().xmpp.max_stanza_bytes);
    let link = Arc::new(Link::default());
    let followers = engine
        .store()
        .meta::<Vec<String>>(PRESENCE_KEY)
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read who follows our presence; starting afresh");
            None
        })
        .unwrap_or_default();
    let agents = Arc::new(agents::Agents::new(
        me.clone(),
        link.clone(),
        engine.config().vantage.clone(),
        engine.config().probe.vantage_away,
    ));
    if !engine.config().vantage.is_empty() {
        engine.set_vantages(Arc::new(agents.clone()));
        agent_notices(&engine, &agents);
    }
    let ctx = Arc::new(Ctx {
        agents,
        engine,
        link: link.clone(),
        me: me.clone(),
        recent: Mutex::new(VecDeque::new()),
        in_flight: Arc::new(tokio::sync::Semaphore::new(
            crate::engine::COMMANDS_IN_FLIGHT,
        )),
        iq_in_flight: Arc::new(tokio::sync::Semaphore::new(crate::engine::IQS_IN_FLIGHT)),
        presence: Mutex::new(PresenceBook::from_jids(followers)),
        presence_dirty: std::sync::atomic::AtomicBool::new(false),
        adhoc: adhoc_front::Sessions::default(),
    });
    let deliverer = tokio::spawn(deliver(ctx.clone()));
    let keeper = tokio::spawn(keep_presence(ctx.clone()));
    tracing::info!(component = %me, %server, "starting");
    let connection = connection_loop(ctx.clone(), server, secret);
    tokio::pin!(connection);
    tokio::select! {
        _ = &mut connection => {}
        _ = shutdown => tracing::info!("shutting down"),
    }
    deliverer.abort();
    keeper.abort();
    // Kept for the next start; a stuck store does not hold up the goodbye.
    let _ = tokio::time::timeout(Duration::from_secs(2), store_presence(&ctx)).await;
    let leaving = ctx.presence.lock().expect("presence lock").take();
    tracing::info!(jids = leaving.len(), "sending unavailable presence");
    let goodbye = async {
        for jid in &leaving {
            if let Ok(to) = Jid::new(jid) {
                let bye = stanzas::presence(&ctx.me, &to, PresenceType::Unavailable);
                link.send_waiting(bye).await;
            }
        }
        link.close().await;
    };
    // The link's writer lives in `connection`: keep driving it while it closes.
    let _ = tokio::time::timeout(Duration::from_secs(3), async {
        tokio::select! {
            _ = &mut connection => {}
            _ = goodbye => {}
        }
    })
    .await;
}

async fn connection_loop(ctx: Arc<Ctx>, server: SocketAddr, secret: String) {
    let mut backoff = BACKOFF_MIN;
    loop {
        let started = Instant::now();
        match run_link(&ctx, server, &secret).await {
            Ok(()) => tracing::info!("link to the server closed"),
            Err(e) => tracing::warn!(%server, error = %e, "link to the server failed"),
        }
        ctx.link.set(None);
        ctx.agents.link_lost();
        requeue_recent(&ctx).await;
        if started.elapsed() > BACKOFF_MAX {
            backoff = BACKOFF_MIN;
        }
        let pause =
            backoff + Duration::from_millis(rand::random_range(0..=backoff.as_millis() as u64 / 2));
        tracing::info!(seconds = pause.as_secs_f32(), "reconnecting");
        tokio::time::sleep(pause).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

async fn run_link(ctx: &Arc<Ctx>, server: SocketAddr, secret: &str) -> Result<(), String> {
    let timeouts = Timeouts {
        read_timeout: Duration::from_secs(60),
        response_timeout: Duration::from_secs(15),
    };
    let recording = refusal::Recording::default();
    let component = Component::new_with_connector(
        &ctx.me.to_string(),
        secret,
        NodelayConnector(server, recording.clone()),
        timeouts,
    )
    .await
    .map_err(|e| match recording.stream_error() {
        Some(refused) => format!(
            "the server refused the component with the stream error {refused}: {}",
            refused.hint(&ctx.me.to_string())
        ),
        None => e.to_string(),
    })?;
    recording.stop();
    tracing::info!(component = %ctx.me, "connected to the server");
    let (mut sink, mut stream) = component.split();
    let (tx, mut rx) = mpsc::channel::<Outgoing>(OUTGOING_QUEUE);
    ctx.link.set(Some(tx));
    announce(ctx);
    for jid in ctx.agents.jids() {
        // Agents answer our presence with theirs: who is online, at once.
        if let Ok(to) = Jid::new(&jid) {
            ctx.link.send(stanzas::available(
                &ctx.me,
                &to,
                crate::commands::HELP_LINES,
            ));
        }
    }
    let last_seen = Arc::new(Mutex::new(Instant::now()));
    let writer = async {
        while let Some(out) = rx.recv().await {
            match out {
                Outgoing::Stanza { stanza, ack } => {
                    let ok = sink.send(*stanza).await.is_ok();
                    if let Some(ack) = ack {
                        let _ = ack.send(ok);
                    }
                    if !ok {
                        return Err("write failed".to_string());
                    }
                }
                Outgoing::Close(done) => {
                    let _ = sink.close().await;
                    let _ = done.send(());
                    // Wait to be dropped: the caller is shutting down.
                    std::future::pending::<()>().await;
                }
            }
        }
        Ok(())
    };
    let reader = async {
        while let Some(stanza) = stream.next().await {
            *last_seen.lock().expect("clock lock") = Instant::now();
            dispatch(ctx, stanza);
        }
        Err::<(), _>("the server closed the stream".to_string())
    };
    let pinger = async {
        let server_jid = Jid::from(ctx.me.domain().to_owned());
        let parent = parent_domain(ctx.me.domain().as_str());
        let target = parent
            .map(|d| Jid::new(&d).unwrap_or(server_jid.clone()))
            .unwrap_or(server_jid);
        let mut n = 0u64;
        loop {
            tokio::time::sleep(PING_EVERY).await;
            let silent = last_seen.lock().expect("clock lock").elapsed();
            if silent > DEAD_AFTER {
                return Err::<(), _>(format!("no traffic for {}s", silent.as_secs()));
            }
            n += 1;
            ctx.link
                .send(stanzas::ping(&ctx.me, &target, &format!("keepalive-{n}")));
        }
    };
    tokio::select! {
        r = writer => r,
        r = reader => r,
        r = pinger => r,
    }
}

/// The server's domain for a component `certwatch.example.org` is `example.org`.
fn parent_domain(component: &str) -> Option<String> {
    component.split_once('.').map(|(_, rest)| rest.to_owned())
}

fn dispatch(ctx: &Arc<Ctx>, stanza: Stanza) {
    match stanza {
        Stanza::Message(m) => chat::on_message(ctx, m),
        Stanza::Presence(p) => on_presence(ctx, p),
        Stanza::Iq(iq) => iq::on_iq(ctx, iq),
    }
}

/// Our available presence to everyone who follows it (after a restart or
/// a reconnect, so rosters do not show us offline), sent as room allows.
fn announce(ctx: &Arc<Ctx>) {
    let jids = ctx.presence.lock().expect("presence lock").jids();
    if jids.is_empty() {
        return;
    }
    tracing::info!(jids = jids.len(), "sending available presence");
    let ctx = ctx.clone();
    tokio::spawn(async move {
        for jid in jids {
            if let Ok(to) = Jid::new(&jid) {
                let hello = stanzas::available(&ctx.me, &to, crate::commands::HELP_LINES);
                ctx.link.send_waiting(hello).await;
            }
        }
    });
}

/// How often a changed presence book is stored: a flood of presence
/// subscriptions costs one write per period, not one per stanza.
const PRESENCE_KEEP_EVERY: Duration = Duration::from_secs(5);

/// Marks the presence book as changed; [`keep_presence`] stores it.
fn presence_changed(ctx: &Ctx) {
    ctx.presence_dirty
        .store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Stores the presence book when it changed, every [`PRESENCE_KEEP_EVERY`].
async fn keep_presence(ctx: Arc<Ctx>) {
    loop {
        tokio::time::sleep(PRESENCE_KEEP_EVERY).await;
        store_presence(&ctx).await;
    }
}

/// Stores the presence book if it changed since it was last stored.
async fn store_presence(ctx: &Ctx) {
    if !ctx
        .presence_dirty
        .swap(false, std::sync::atomic::Ordering::SeqCst)
    {
        return;
    }
    let jids = ctx.presence.lock().expect("presence lock").jids();
    if let Err(e) = ctx.engine.store().put_meta(PRESENCE_KEY, &jids).await {
        tracing::warn!(error = %e, "cannot store who follows our presence");
        presence_changed(ctx);
    }
}

/// Tells the operators, once each way, when an agent stays away or keeps
/// failing and when it is back; looks for agents away every few seconds.
fn agent_notices(engine: &Arc<Engine>, agents: &Arc<agents::Agents>) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    agents.notify(tx);
    let engine = engine.clone();
    let agents = agents.clone();
    tokio::spawn(async move {
        let mut sweep = tokio::time::interval(AGENT_SWEEP);
        loop {
            tokio::select! {
                text = rx.recv() => match text {
                    Some(text) => engine.tell_operators_urgently(&text),
                    None => return,
                },
                _ = sweep.tick() => agents.sweep(std::time::SystemTime::now()),
            }
        }
    });
}

/// How often the coordinator looks for agents away too long.
const AGENT_SWEEP: Duration = Duration::from_secs(2);

fn on_presence(ctx: &Arc<Ctx>, p: Presence) {
    let Some(from) = p.from.clone() else { return };
    if ctx.agents.is_agent(&from) {
        match p.type_ {
            PresenceType::None => ctx.agents.on_presence(&from, true),
            PresenceType::Unavailable => ctx.agents.on_presence(&from, false),
            _ => {}
        }
        return;
    }
    let bare = Jid::from(from.to_bare());
    // Presence requests count with the sender's IQs: a flood from one JID
    // is ignored past its limit.
    let asks = matches!(
        p.type_,
        PresenceType::Subscribe | PresenceType::Unsubscribe | PresenceType::Probe
    );
    if asks && !ctx.engine.allow_iq(&bare.to_string()) {
        tracing::debug!(from = %from, "presence request over the sender's limit; ignored");
        return;
    }
    let commands = crate::commands::HELP_LINES;
    match p.type_ {
        PresenceType::Subscribe => {
            let fresh = ctx
                .presence
                .lock()
                .expect("presence lock")
                .add(&bare.to_string());
            if fresh {
                presence_changed(ctx);
            }
            ctx.link
                .send(stanzas::presence(&ctx.me, &bare, PresenceType::Subscribed));
            ctx.link.send(stanzas::available(&ctx.me, &bare, commands));
        }
        PresenceType::Probe => {
            ctx.presence
                .lock()
                .expect("presence lock")
                .add(&bare.to_string());
            ctx.link.send(stanzas::available(&ctx.me, &from, commands));
        }
        PresenceType::Unsubscribe => {
            let gone = ctx
                .presence
                .lock()
                .expect("presence lock")
                .remove(&bare.to_string());
            if gone {
                presence_changed(ctx);
            }
            ctx.link.send(stanzas::presence(
                &ctx.me,
                &bare,
                PresenceType::Unsubscribed,
            ))
        }
        _ => {}
    }
}

/// Sends queued alerts whenever the link is up; marks each sent once written.
async fn deliver(ctx: Arc<Ctx>) {
    // The in-memory operator messages go out on their own task: the store
    // may be what is stuck, with this loop waiting inside it.
    let urgent = tokio::spawn(deliver_urgent(ctx.clone()));
    let _urgent = AbortOnDrop(urgent);
    let mut up = ctx.link.up.subscribe();
    loop {
        if ctx.link.sender().is_some() {
            if let Err(e) = flush_outbox(&ctx).await {
                tracing::warn!(error = %e, "cannot deliver alerts");
            }
        }
        tokio::select! {
            _ = ctx.engine.outbox_woken() => {}
            _ = up.changed() => {}
            _ = tokio::time::sleep(Duration::from_secs(30)) => {}
        }
    }
}

/// Aborts a task when dropped (the deliverer's helper goes with it).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Sends the in-memory operator messages whenever some are queued or the
/// link comes up; never touches the store.
async fn deliver_urgent(ctx: Arc<Ctx>) {
    let mut up = ctx.link.up.subscribe();
    loop {
        if ctx.link.sender().is_some() {
            send_urgent(&ctx).await;
        }
        tokio::select! {
            _ = ctx.engine.urgent_woken() => {}
            _ = up.changed() => {}
            _ = tokio::time::sleep(Duration::from_secs(30)) => {}
        }
    }
}

/// Sends the operator messages kept in memory because the store could not
/// take them; what the link could not carry waits for the next one.
async fn send_urgent(ctx: &Ctx) {
    let mut waiting = ctx.engine.take_urgent().into_iter();
    while let Some(delivery) = waiting.next() {
        let Some(stanza) = delivery_stanza(&ctx.me, &delivery) else {
            tracing::warn!(alert = %delivery.alert_id, "undeliverable operator message dropped (bad JID)");
            continue;
        };
        if !ctx.link.send_acked(stanza).await {
            ctx.engine
                .keep_urgent(std::iter::once(delivery).chain(waiting).collect());
            return;
        }
        tracing::info!(alert = %delivery.alert_id, "operator message delivered from memory");
    }
}

async fn flush_outbox(ctx: &Ctx) -> Result<(), String> {
    let store = ctx.engine.store();
    for (id, delivery) in store.pending().map_err(|e| e.to_string())? {
        if delivery.attempts >= MAX_DELIVERY_ATTEMPTS {
            give_up(ctx, id, &delivery)
                .await
                .map_err(|e| e.to_string())?;
            continue;
        }
        let Some(stanza) = delivery_stanza(&ctx.me, &delivery) else {
            tracing::warn!(id, "undeliverable alert dropped (bad JID)");
            store.dead_letter(id).await.map_err(|e| e.to_string())?;
            continue;
        };
        // Counted before the try: a delivery that kills the link each time
        // it is written is given up after a few, not retried forever.
        let Some(delivery) = store.note_attempt(id).await.map_err(|e| e.to_string())? else {
            continue;
        };
        if !ctx.link.send_acked(stanza).await {
            return Ok(()); // the link went down; the rest waits for the next one
        }
        crate::crashpoint::reached(crate::crashpoint::AFTER_SEND);
        store.mark_sent(id).await.map_err(|e| e.to_string())?;
        ctx.engine.metrics().alerts_sent.inc();
        tracing::info!(alert = %delivery.alert_id, "alert delivered");
        remember_sent(ctx, delivery);
    }
    Ok(())
}

/// Keeps a written delivery for [`RESEND_WINDOW`], in case the link drops.
fn remember_sent(ctx: &Ctx, delivery: Delivery) {
    let mut recent = ctx.recent.lock().expect("recent lock");
    let now = Instant::now();
    while recent
        .front()
        .is_some_and(|(at, _)| now.duration_since(*at) > RESEND_WINDOW)
    {
        recent.pop_front();
    }
    // Bounded: a burst beyond this many in one window is re-sent in part.
    if recent.len() >= 1024 {
        recent.pop_front();
    }
    recent.push_back((now, delivery));
}

/// The link dropped: what was written within [`RESEND_WINDOW`] before may
/// not have reached the server, so it is queued again, with the same alert
/// id (the chat message id, and the PubSub item id, which replaces rather
/// than duplicates).
async fn requeue_recent(ctx: &Ctx) {
    let now = Instant::now();
    let again: Vec<Delivery> = ctx
        .recent
        .lock()
        .expect("recent lock")
        .drain(..)
        .filter(|(at, _)| now.duration_since(*at) <= RESEND_WINDOW)
        .map(|(_, d)| d)
        .collect();
    if again.is_empty() {
        return;
    }
    tracing::info!(
        count = again.len(),
        "the link dropped: alerts written in the last seconds are sent again"
    );
    if let Err(e) = ctx.engine.store().enqueue(&again).await {
        tracing::warn!(error = %e, "cannot queue alerts again");
    }
}

/// A delivery tried [`MAX_DELIVERY_ATTEMPTS`] times: kept as a dead letter,
/// and the operators are told (unless it was itself an operator notice).
async fn give_up(ctx: &Ctx, id: u64, delivery: &Delivery) -> Result<(), StoreError> {
    let store = ctx.engine.store();
    store.dead_letter(id).await?;
    let to = match &delivery.sink {
        Sink::Chat(j) => j.clone(),
        Sink::Event { jid, node } => format!("{jid} (PubSub node {node})"),
    };
    tracing::warn!(alert = %delivery.alert_id, %to, attempts = delivery.attempts, "alert given up");
    if delivery.alert_id.starts_with(OPERATOR_PREFIX) {
        return Ok(());
    }
    let text = format!(
        "CertWatch operator notice: the alert {} for {to} could not be delivered after {} tries (the server dropped the link each time, or would not take it). It is kept in the store's dead letters; the alerts queued after it go on. Its title: {}",
        delivery.alert_id, delivery.attempts, delivery.title
    );
    let now = ctx.engine.clock().now_rfc3339();
    let id = format!("{OPERATOR_PREFIX}dead-{}", delivery.alert_id);
    let notices = ctx.engine.operator_deliveries(&id, &text, &now);
    store.enqueue(&notices).await
}

/// Alert ids of operator notices start with this.
const OPERATOR_PREFIX: &str = "operator-";

fn delivery_stanza(me: &Jid, d: &Delivery) -> Option<Stanza> {
    match &d.sink {
        Sink::Chat(jid) => {
            let to = Jid::new(jid).ok()?;
            let mut m = stanzas::chat(me, &to, &d.content, MessageType::Chat);
            // Stable: a copy sent again after a dropped link has the same id.
            m.id = Some(tokio_xmpp::parsers::message::Id(d.alert_id.clone()));
            Some(m.into())
        }
        Sink::Event { node, jid } => {
            let to = Jid::new(jid).ok()?;
            let entry = stanzas::atom_entry(&d.alert_id, &d.title, &d.content, &d.updated);
            let item = stanzas::item(stanzas::NS_PUBSUB_EVENT, &d.alert_id, entry);
            // The summary as text too: a client that shows no PubSub
            // events (profanity, many bots) still shows the alert.
            let body = format!(
                "{} (CertWatch PubSub node {node}; send \"status {node}\" to {me} for the details)",
                d.title
            );
            Some(stanzas::event_message(me, &to, stanzas::event(node, item), &body).into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presence_book_is_bounded_and_forgets_the_oldest() {
        let mut book = PresenceBook::default();
        assert!(book.add("a@x"), "new");
        assert!(!book.add("a@x"), "known");
        book.add("b@x");
        assert!(book.remove("a@x"), "was known");
        assert!(!book.remove("a@x"), "no longer");
        assert_eq!(book.take(), vec!["b@x".to_string()]);
        for i in 0..PRESENCE_BOOK_MAX + 5 {
            book.add(&format!("u{i}@x"));
        }
        let all = book.take();
        assert_eq!(all.len(), PRESENCE_BOOK_MAX);
        assert_eq!(all[0], "u5@x");
        assert!(book.take().is_empty());
    }

    /// Log lines written while `f` runs.
    fn logs_of(f: impl FnOnce()) -> String {
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let out = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || out.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        text
    }

    #[test]
    fn a_reply_the_link_cannot_take_is_logged_with_its_jid() {
        let me = Jid::new("certwatch.localhost").unwrap();
        let reply = |to: &str| stanzas::chat(&me, &Jid::new(to).unwrap(), "hi", MessageType::Chat);
        let link = Link::default();
        let logs = logs_of(|| link.send(reply("nolink@x/r")));
        assert!(logs.contains("nolink@x/r"), "{logs}");
        let (tx, _rx) = mpsc::channel(1);
        link.set(Some(tx));
        let logs = logs_of(|| {
            link.send(reply("first@x/r"));
            link.send(reply("second@x/r"));
        });
        assert!(!logs.contains("first@x/r"), "the first was queued: {logs}");
        assert!(
            logs.contains("WARN")
                && logs.contains("second@x/r")
                && logs.contains("the outgoing queue is full"),
            "{logs}"
        );
    }

    #[test]
    fn parent_of_component_is_the_server_domain() {
        assert_eq!(
            parent_domain("certwatch.localhost").as_deref(),
            Some("localhost")
        );
        assert_eq!(parent_domain("localhost"), None);
    }

    #[test]
    fn deliveries_become_chat_or_event_stanzas_from_the_component() {
        let me = Jid::new("certwatch.localhost").unwrap();
        let mut d = Delivery {
            alert_id: "a1".into(),
            sink: Sink::Chat("alice@localhost".into()),
            title: "t".into(),
            content: "body".into(),
            updated: "2026-11-22T12:00:00Z".into(),
            attempts: 0,
        };
        let Some(Stanza::Message(m)) = delivery_stanza(&me, &d) else {
            panic!("chat expected")
        };
        assert_eq!(m.from.as_ref(), Some(&me));
        assert_eq!(m.type_, MessageType::Chat);
        // A copy sent again has the same id: recognisable as a repeat.
        assert_eq!(m.id.as_ref().map(|i| i.0.as_str()), Some("a1"));
        d.sink = Sink::Event {
            node: "example.org".into(),
            jid: "bob@localhost/r".into(),
        };
        let Some(Stanza::Message(m)) = delivery_stanza(&me, &d) else {
            panic!("event expected")
        };
        assert_eq!(m.payloads[0].name(), "event");
        d.sink = Sink::Chat("not a jid@@".into());
        assert!(delivery_stanza(&me, &d).is_none());
    }
}
