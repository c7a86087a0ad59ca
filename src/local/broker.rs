//! The listener and the message router shared by all connections.
//!
//! Why not a broker library: rumqttd, the maintained Rust broker, authenticates a CONNECT with
//! (client ID, username, password) → bool only. It cannot hand the authorizer the TLS SNI or keep
//! the policy the authorizer returned, has no hook to authorize each publish, subscribe and
//! delivery, no way to require ALPN, and no API to drop one client when its refresh is denied or
//! its `disconnectAfterInSeconds` runs out: all of which are what this gateway is for. So the MQTT
//! wire format comes from a maintained codec (`rumqttc::mqttbytes`, the same crate's packets that
//! `connect` uses) and only the small routing below is ours.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::mqttbytes::QoS;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::Console;
use super::codec::Message;
use super::lambda::Lambda;
use super::limits;

/// What every connection shares.
pub struct Gateway {
    pub tls: super::listener::Tls,
    pub lambda: Lambda,
    /// `arn:aws:iot:<region>:<account>`, the prefix of the resources policies are checked on.
    pub arn_prefix: String,
    pub console: Console,
    pub registry: Registry,
    /// The deployment's authorizer name: a username naming another is refused.
    pub authorizer: String,
    /// Whether a username naming no authorizer gets this one (IoT's default authorizer).
    pub default_authorizer: bool,
}

/// One client ID's session: its subscriptions and, while it is offline, its queued QoS 1
/// messages. It outlives the connection when the client asked for a persistent session.
struct Entry {
    connection: u64,
    online: Option<Online>,
    /// Filter as subscribed (`$share/group/...` included) → options.
    filters: HashMap<String, Subscription>,
    queued: VecDeque<Message>,
    /// When an offline session is forgotten.
    expires: Option<Instant>,
}

struct Online {
    deliveries: Outlet,
    /// Fired when a newer connection takes over the client ID.
    takeover: oneshot::Sender<()>,
}

/// The sending side of a session's deliveries.
struct Outlet {
    queue: mpsc::UnboundedSender<Message>,
    /// Bytes this session's queue holds (`Message::queued_bytes`).
    held: Arc<AtomicUsize>,
}

/// A session's waiting deliveries. The queue is bounded by the memory its messages hold, not by
/// their number: a burst of small messages to a subscriber that reads at full speed fits (a
/// count of 1,024 dropped 80% of a 20,000-message burst of 20-byte payloads), while a few large
/// ones cannot pin memory (1,024 payloads of 128 KB would be 128 MB). All sessions together are
/// bounded too (`limits::DELIVERIES_BYTES`).
pub struct Deliveries {
    queue: mpsc::UnboundedReceiver<Message>,
    held: Arc<AtomicUsize>,
    total: Arc<AtomicUsize>,
}

impl Deliveries {
    /// The next delivery. Cancel-safe, as `mpsc::UnboundedReceiver::recv` is.
    pub async fn recv(&mut self) -> Option<Message> {
        let message = self.queue.recv().await?;
        self.release(&message);
        Some(message)
    }

    /// The next delivery if one is waiting.
    pub fn try_recv(&mut self) -> Option<Message> {
        let message = self.queue.try_recv().ok()?;
        self.release(&message);
        Some(message)
    }

    /// Whether deliveries are waiting.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    fn release(&self, message: &Message) {
        let bytes = message.queued_bytes();
        self.held.fetch_sub(bytes, Ordering::Relaxed);
        self.total.fetch_sub(bytes, Ordering::Relaxed);
    }
}

impl Drop for Deliveries {
    /// What is still queued leaves the gateway-wide count with it.
    fn drop(&mut self) {
        self.queue.close();
        while let Some(message) = self.try_recv() {
            drop(message);
        }
    }
}

#[derive(Clone, Copy)]
pub struct Subscription {
    pub qos: QoS,
    /// MQTT 5 no local: not the client's own messages.
    pub no_local: bool,
}

/// A connection's membership in the registry.
pub struct Membership {
    pub connection: u64,
    pub deliveries: Deliveries,
    pub takeover: oneshot::Receiver<()>,
    /// A persistent session was resumed (CONNACK's session present).
    pub session_present: bool,
    /// QoS 1 messages queued while the session was offline, oldest first.
    pub queued: Vec<Message>,
}

/// What happened to a published message.
#[derive(Default)]
pub struct Routed {
    /// Queued for a connected subscriber or a persistent session.
    pub delivered: usize,
    /// Messages a full queue refused.
    pub dropped: usize,
}

/// Why a delivery was not queued.
enum Refused {
    /// The session's queue, or all sessions' together, hold their bound.
    Full,
    /// The session has just ended.
    Closed,
}

/// The sessions by client ID, their subscriptions indexed by topic level, and the retained
/// messages. Everything a publish touches is found through the index, so a publish costs the
/// levels of its topic and its matching subscriptions, never a scan of all subscriptions; and a
/// publish never waits on a receiver (full queues drop QoS 0 and flag the receiver as too slow).
#[derive(Default)]
pub struct Registry {
    state: Mutex<State>,
    next_connection: AtomicU64,
    /// Bytes queued for all sessions together.
    queued: Arc<AtomicUsize>,
}

#[derive(Default)]
struct State {
    sessions: HashMap<String, Entry>,
    index: Node,
    /// Topic → the last retained message on it (IoT Core stores retained messages).
    retained: HashMap<String, Message>,
}

impl Registry {
    /// Adds a connection under `client_id`, closing an older one with the same ID: IoT "doesn't
    /// allow two clients with the same client ID to stay connected at the same time". The
    /// session it had is resumed unless the client asked for a clean start.
    pub fn join(&self, client_id: &str, clean_start: bool) -> Membership {
        let connection = self.next_connection.fetch_add(1, Ordering::Relaxed);
        let (sender, queue) = mpsc::unbounded_channel();
        let held = Arc::new(AtomicUsize::new(0));
        let deliveries = Deliveries {
            queue,
            held: held.clone(),
            total: self.queued.clone(),
        };
        let (takeover_tx, takeover) = oneshot::channel();
        let online = Online {
            deliveries: Outlet {
                queue: sender,
                held,
            },
            takeover: takeover_tx,
        };
        let mut state = self.lock();
        state.forget_expired();
        let old = state.sessions.remove(client_id);
        let mut entry = Entry {
            connection,
            online: Some(online),
            filters: HashMap::new(),
            queued: VecDeque::new(),
            expires: None,
        };
        let mut session_present = false;
        if let Some(mut old) = old {
            if let Some(online) = old.online.take() {
                let _ = online.takeover.send(());
            }
            if clean_start {
                for filter in old.filters.keys() {
                    state.index.remove(filter, client_id);
                }
            } else {
                session_present = true;
                entry.filters = old.filters;
                entry.queued = old.queued;
            }
        }
        let queued = entry.queued.drain(..).collect();
        state.sessions.insert(client_id.to_string(), entry);
        Membership {
            connection,
            deliveries,
            takeover,
            session_present,
            queued,
        }
    }

    /// The connection ends. Unless a newer one holds the client ID, the session is forgotten
    /// or, with an expiry, kept offline with `unacked` messages queued first for the next
    /// connection.
    pub fn leave(&self, client_id: &str, connection: u64, expiry: Duration, unacked: Vec<Message>) {
        let mut state = self.lock();
        let Some(entry) = state.sessions.get_mut(client_id) else {
            return;
        };
        if entry.connection != connection {
            return;
        }
        if expiry.is_zero() {
            let entry = state.sessions.remove(client_id).expect("just found");
            for filter in entry.filters.keys() {
                state.index.remove(filter, client_id);
            }
            return;
        }
        entry.online = None;
        entry.expires = Some(Instant::now() + expiry);
        for message in unacked.into_iter().rev() {
            entry.queued.push_front(message);
        }
        entry.queued.truncate(limits::QUEUED_PER_SESSION);
    }

    /// Adds or replaces (same filter) a subscription; `Err` when the connection already has
    /// IoT's maximum. `Ok(true)` for a new subscription.
    pub fn subscribe(
        &self,
        client_id: &str,
        connection: u64,
        filter: &str,
        subscription: Subscription,
    ) -> Result<bool, ()> {
        let mut state = self.lock();
        let State {
            sessions, index, ..
        } = &mut *state;
        let Some(entry) = sessions
            .get_mut(client_id)
            .filter(|e| e.connection == connection)
        else {
            return Ok(false);
        };
        let new = !entry.filters.contains_key(filter);
        if new && entry.filters.len() >= limits::SUBSCRIPTIONS_PER_CONNECTION {
            return Err(());
        }
        entry.filters.insert(filter.to_string(), subscription);
        index.insert(filter, client_id, subscription);
        Ok(new)
    }

    pub fn unsubscribe(&self, client_id: &str, connection: u64, filter: &str) {
        let mut state = self.lock();
        let State {
            sessions, index, ..
        } = &mut *state;
        if let Some(entry) = sessions
            .get_mut(client_id)
            .filter(|e| e.connection == connection)
            && entry.filters.remove(filter).is_some()
        {
            index.remove(filter, client_id);
        }
    }

    /// Queues `message` for every session with a matching subscription, at the lower of the
    /// message's and the subscription's QoS; a shared subscription's group gets it once, in
    /// turn. Never waits: a full queue drops the message for that session (whose own loop
    /// disconnects a client that has stopped acknowledging, session.rs). Offline persistent
    /// sessions queue QoS 1.
    /// Whether a receiver may `iot:Receive` it is its own connection's check.
    pub fn route(&self, message: &Message, publisher: &str) -> Routed {
        let mut routed = Routed::default();
        let mut state = self.lock();
        let State {
            sessions, index, ..
        } = &mut *state;
        let mut recipients: HashMap<&str, QoS> = HashMap::new();
        let levels: Vec<&str> = message.topic.split('/').collect();
        let dollar = message.topic.starts_with('$');
        index.matches(&levels, dollar, &mut |client_id, subscription| {
            if subscription.no_local && client_id == publisher {
                return;
            }
            let qos = min_qos(subscription.qos, message.qos);
            let best = recipients.entry(client_id).or_insert(qos);
            *best = max_qos(*best, qos);
        });
        let now = Instant::now();
        for (client_id, qos) in recipients {
            let Some(entry) = sessions.get_mut(client_id) else {
                continue;
            };
            let mut copy = message.clone();
            copy.qos = qos;
            copy.pkid = 0;
            match &entry.online {
                Some(online) => match self.offer(&online.deliveries, copy) {
                    Ok(()) => routed.delivered += 1,
                    // IoT: a client with its in-flight messages unacknowledged "can't receive
                    // messages". The message is dropped for it.
                    Err(Refused::Full) => routed.dropped += 1,
                    Err(Refused::Closed) => {}
                },
                None if qos == QoS::AtLeastOnce && entry.expires.is_some_and(|e| e > now) => {
                    if entry.queued.len() >= limits::QUEUED_PER_SESSION {
                        entry.queued.pop_front();
                    }
                    entry.queued.push_back(copy);
                    routed.delivered += 1;
                }
                None => {}
            }
        }
        routed
    }

    /// Stores a retained message; an empty payload deletes the topic's.
    pub fn retain(&self, message: &Message) {
        let mut state = self.lock();
        if message.payload.is_empty() {
            state.retained.remove(&message.topic);
        } else {
            state
                .retained
                .insert(message.topic.clone(), message.clone());
        }
    }

    /// The retained messages a new subscription to `filter` receives.
    pub fn retained(&self, filter: &str) -> Vec<Message> {
        let state = self.lock();
        state
            .retained
            .values()
            .filter(|m| topic_matches(&m.topic, filter))
            .cloned()
            .collect()
    }

    /// Queues `message` for a session unless that would pass its bound or all sessions'
    /// (one message is always let into an empty queue, so no message is too large to deliver).
    fn offer(&self, outlet: &Outlet, message: Message) -> Result<(), Refused> {
        let bytes = message.queued_bytes();
        let held = outlet.held.fetch_add(bytes, Ordering::Relaxed);
        let total = self.queued.fetch_add(bytes, Ordering::Relaxed);
        let over =
            held + bytes > limits::DELIVERY_QUEUE_BYTES || total + bytes > limits::DELIVERIES_BYTES;
        let refused = if over && held > 0 {
            Some(Refused::Full)
        } else {
            outlet.queue.send(message).err().map(|_| Refused::Closed)
        };
        match refused {
            None => Ok(()),
            Some(why) => {
                outlet.held.fetch_sub(bytes, Ordering::Relaxed);
                self.queued.fetch_sub(bytes, Ordering::Relaxed);
                Err(why)
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("registry lock")
    }
}

impl State {
    fn forget_expired(&mut self) {
        let now = Instant::now();
        let expired: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, e)| e.online.is_none() && e.expires.is_none_or(|t| t <= now))
            .map(|(id, _)| id.clone())
            .collect();
        for client_id in expired {
            if let Some(entry) = self.sessions.remove(&client_id) {
                for filter in entry.filters.keys() {
                    self.index.remove(filter, &client_id);
                }
            }
        }
    }
}

/// `$share/group/filter` → (group, filter).
pub fn shared(filter: &str) -> Option<(&str, &str)> {
    filter.strip_prefix("$share/")?.split_once('/')
}

/// The subscription index: a tree of topic levels (`+` and `#` are levels of their own).
#[derive(Default)]
struct Node {
    children: HashMap<String, Node>,
    /// Client ID → subscription, for filters ending here.
    here: HashMap<String, Subscription>,
    /// Shared subscriptions ending here, by group.
    groups: HashMap<String, Group>,
}

#[derive(Default)]
struct Group {
    members: Vec<(String, Subscription)>,
    next: usize,
}

impl Node {
    fn insert(&mut self, filter: &str, client_id: &str, subscription: Subscription) {
        let (group, path) = match shared(filter) {
            Some((group, path)) => (Some(group), path),
            None => (None, filter),
        };
        let mut node = self;
        for level in path.split('/') {
            node = node.children.entry(level.to_string()).or_default();
        }
        match group {
            None => {
                node.here.insert(client_id.to_string(), subscription);
            }
            Some(group) => {
                let members = &mut node.groups.entry(group.to_string()).or_default().members;
                members.retain(|(id, _)| id != client_id);
                members.push((client_id.to_string(), subscription));
            }
        }
    }

    fn remove(&mut self, filter: &str, client_id: &str) {
        let (group, path) = match shared(filter) {
            Some((group, path)) => (Some(group), path),
            None => (None, filter),
        };
        let levels: Vec<&str> = path.split('/').collect();
        self.remove_at(&levels, group, client_id);
    }

    /// Removes the subscription and prunes emptied nodes; true if this node is now empty.
    fn remove_at(&mut self, levels: &[&str], group: Option<&str>, client_id: &str) -> bool {
        match levels.split_first() {
            None => match group {
                None => {
                    self.here.remove(client_id);
                }
                Some(group) => {
                    if let Some(g) = self.groups.get_mut(group) {
                        g.members.retain(|(id, _)| id != client_id);
                        if g.members.is_empty() {
                            self.groups.remove(group);
                        }
                    }
                }
            },
            Some((level, rest)) => {
                if let Some(child) = self.children.get_mut(*level)
                    && child.remove_at(rest, group, client_id)
                {
                    self.children.remove(*level);
                }
            }
        }
        self.children.is_empty() && self.here.is_empty() && self.groups.is_empty()
    }

    /// Calls `found` for every subscription matching the topic `levels` (MQTT 3.1.1 §4.7: `+`
    /// one level, `#` the rest including the parent, and no first-level wildcard for a topic
    /// starting with `$`). A shared group yields one member per message, in turn.
    fn matches<'a>(
        &'a mut self,
        levels: &[&str],
        dollar: bool,
        found: &mut dyn FnMut(&'a str, Subscription),
    ) {
        match levels.split_first() {
            None => {
                Self::yield_here(&mut self.here, &mut self.groups, found);
                // `a/#` matches `a`.
                if let Some(hash) = self.children.get_mut("#") {
                    Self::yield_here(&mut hash.here, &mut hash.groups, found);
                }
            }
            Some((level, rest)) => {
                // Only the first level of a `$` topic refuses wildcards; deeper calls pass false.
                for (key, child) in self.children.iter_mut() {
                    if key == level || (!dollar && key == "+") {
                        child.matches(rest, false, found);
                    } else if !dollar && key == "#" {
                        Self::yield_here(&mut child.here, &mut child.groups, found);
                    }
                }
            }
        }
    }

    fn yield_here<'a>(
        here: &'a mut HashMap<String, Subscription>,
        groups: &'a mut HashMap<String, Group>,
        found: &mut dyn FnMut(&'a str, Subscription),
    ) {
        for (client_id, subscription) in here.iter() {
            found(client_id, *subscription);
        }
        for group in groups.values_mut() {
            if group.members.is_empty() {
                continue;
            }
            let i = group.next % group.members.len();
            group.next = group.next.wrapping_add(1);
            let (client_id, subscription) = &group.members[i];
            found(client_id, *subscription);
        }
    }
}

fn min_qos(a: QoS, b: QoS) -> QoS {
    if (a as u8) < (b as u8) { a } else { b }
}

fn max_qos(a: QoS, b: QoS) -> QoS {
    if (a as u8) > (b as u8) { a } else { b }
}

/// MQTT topic matching: `+` is one level, `#` the rest (including the parent level), and topics
/// starting with `$` are not matched by a wildcard in the first level (MQTT 3.1.1 §4.7.2).
pub fn topic_matches(topic: &str, filter: &str) -> bool {
    if topic.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let mut levels = topic.split('/');
    for f in filter.split('/') {
        match (f, levels.next()) {
            ("#", _) => return true,
            ("+", Some(_)) => {}
            (f, Some(level)) if f == level => {}
            _ => return false,
        }
    }
    levels.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn topic_filters() {
        let cases = [
            ("a/b", "a/b", true),
            ("a/b", "a/+", true),
            ("a/b", "+/+", true),
            ("a/b", "a/#", true),
            ("a", "a/#", true),
            ("a/b/c", "a/+", false),
            ("a/b", "a/b/c", false),
            ("a/b", "#", true),
            ("a//b", "a/+/b", true),
            ("$aws/things/x", "#", false),
            ("$aws/things/x", "+/things/x", false),
            ("$aws/things/x", "$aws/things/+", true),
        ];
        for (topic, filter, expected) in cases {
            assert_eq!(topic_matches(topic, filter), expected, "{topic} {filter}");
            // The index agrees with the plain matcher.
            let registry = Registry::default();
            let mut member = registry.join("c", true);
            registry
                .subscribe("c", member.connection, filter, sub(QoS::AtMostOnce))
                .unwrap();
            registry.route(&message(topic, QoS::AtMostOnce), "p");
            assert_eq!(
                member.deliveries.try_recv().is_some(),
                expected,
                "index: {topic} {filter}"
            );
        }
    }

    fn sub(qos: QoS) -> Subscription {
        Subscription {
            qos,
            no_local: false,
        }
    }

    fn message(topic: &str, qos: QoS) -> Message {
        Message {
            topic: topic.into(),
            payload: Bytes::from_static(b"x"),
            qos,
            retain: false,
            pkid: 0,
            properties: None,
            expires: None,
        }
    }

    #[tokio::test]
    async fn routing_and_takeover() {
        let registry = Registry::default();
        let mut first = registry.join("c1", true);
        registry
            .subscribe("c1", first.connection, "t/+", sub(QoS::AtLeastOnce))
            .unwrap();
        let mut other = registry.join("c2", true);
        registry
            .subscribe("c2", other.connection, "x", sub(QoS::AtMostOnce))
            .unwrap();

        registry.route(&message("t/1", QoS::AtLeastOnce), "p");
        let got = first.deliveries.recv().await.unwrap();
        assert_eq!(got.topic, "t/1");
        assert_eq!(got.qos, QoS::AtLeastOnce);
        assert!(other.deliveries.try_recv().is_none());

        let mut second = registry.join("c1", true);
        assert!(first.takeover.try_recv().is_ok());
        // The old connection leaving must not remove the new one.
        registry.leave("c1", first.connection, Duration::ZERO, Vec::new());
        registry
            .subscribe("c1", second.connection, "t/#", sub(QoS::AtMostOnce))
            .unwrap();
        registry.route(&message("t/2", QoS::AtLeastOnce), "p");
        let got = second.deliveries.recv().await.unwrap();
        assert_eq!(got.qos, QoS::AtMostOnce, "the subscription's lower QoS");
    }

    #[test]
    fn a_full_queue_drops_without_waiting_and_frees_its_bytes_when_read() {
        let registry = Registry::default();
        let mut member = registry.join("slow", true);
        registry
            .subscribe("slow", member.connection, "t", sub(QoS::AtLeastOnce))
            .unwrap();
        let big = |qos| Message {
            payload: Bytes::from(vec![0u8; 100 * 1024]),
            ..message("t", qos)
        };
        let fits = limits::DELIVERY_QUEUE_BYTES / big(QoS::AtMostOnce).queued_bytes();
        for _ in 0..fits {
            assert_eq!(registry.route(&big(QoS::AtMostOnce), "p").delivered, 1);
        }
        assert_eq!(registry.route(&big(QoS::AtMostOnce), "p").dropped, 1);
        assert_eq!(registry.route(&big(QoS::AtLeastOnce), "p").dropped, 1);
        // Small messages are bounded by the same bytes, not by a count: thousands fit.
        let other = registry.join("fast", true);
        registry
            .subscribe("fast", other.connection, "u", sub(QoS::AtMostOnce))
            .unwrap();
        for _ in 0..20_000 {
            assert_eq!(
                registry
                    .route(&message("u", QoS::AtMostOnce), "p")
                    .delivered,
                1
            );
        }
        // Reading one makes room for one more.
        assert!(member.deliveries.try_recv().is_some());
        assert_eq!(registry.route(&big(QoS::AtMostOnce), "p").delivered, 1);
        // A session that ends gives back what it held.
        drop(member);
        drop(other);
        assert_eq!(registry.queued.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn one_message_larger_than_the_bound_still_reaches_an_empty_queue() {
        let registry = Registry::default();
        let mut member = registry.join("c", true);
        registry
            .subscribe("c", member.connection, "t", sub(QoS::AtMostOnce))
            .unwrap();
        let huge = Message {
            payload: Bytes::from(vec![0u8; limits::DELIVERY_QUEUE_BYTES]),
            ..message("t", QoS::AtMostOnce)
        };
        assert_eq!(registry.route(&huge, "p").delivered, 1);
        assert_eq!(registry.route(&huge, "p").dropped, 1);
        assert!(member.deliveries.try_recv().is_some());
        assert!(member.deliveries.is_empty());
    }

    #[test]
    fn shared_subscriptions_deliver_once_in_turn() {
        let registry = Registry::default();
        let mut a = registry.join("a", true);
        let mut b = registry.join("b", true);
        for m in [&a, &b] {
            let id = if m.connection == a.connection {
                "a"
            } else {
                "b"
            };
            registry
                .subscribe(id, m.connection, "$share/g/t/+", sub(QoS::AtLeastOnce))
                .unwrap();
        }
        for _ in 0..4 {
            registry.route(&message("t/1", QoS::AtLeastOnce), "p");
        }
        let count = |m: &mut Membership| std::iter::from_fn(|| m.deliveries.try_recv()).count();
        assert_eq!((count(&mut a), count(&mut b)), (2, 2));
    }

    #[test]
    fn a_persistent_session_keeps_subscriptions_and_queues_qos1() {
        let registry = Registry::default();
        let first = registry.join("p", false);
        registry
            .subscribe("p", first.connection, "t", sub(QoS::AtLeastOnce))
            .unwrap();
        registry.leave("p", first.connection, Duration::from_secs(60), Vec::new());
        registry.route(&message("t", QoS::AtLeastOnce), "x");
        registry.route(&message("t", QoS::AtMostOnce), "x");
        let second = registry.join("p", false);
        assert!(second.session_present);
        assert_eq!(second.queued.len(), 1, "QoS 1 only");
        registry.leave("p", second.connection, Duration::ZERO, Vec::new());
        let third = registry.join("p", false);
        assert!(!third.session_present);
    }

    #[test]
    fn subscriptions_per_connection_are_capped() {
        let registry = Registry::default();
        let m = registry.join("c", true);
        for i in 0..limits::SUBSCRIPTIONS_PER_CONNECTION {
            registry
                .subscribe("c", m.connection, &format!("t/{i}"), sub(QoS::AtMostOnce))
                .unwrap();
        }
        assert!(
            registry
                .subscribe("c", m.connection, "t/x", sub(QoS::AtMostOnce))
                .is_err()
        );
        // Replacing an existing one is not a new subscription.
        assert!(
            registry
                .subscribe("c", m.connection, "t/0", sub(QoS::AtLeastOnce))
                .is_ok()
        );
    }
}
