//! The listener and the message router shared by all connections.
//!
//! Why not a broker library: rumqttd, the maintained Rust broker, authenticates a CONNECT with
//! (client ID, username, password) → bool only. It cannot hand the authorizer the TLS SNI or keep
//! the policy the authorizer returned, has no hook to authorize each publish, subscribe and
//! delivery, no way to require ALPN, and no API to drop one client when its refresh is denied or
//! its `disconnectAfterInSeconds` runs out: all of which are what this gateway is for. So the MQTT
//! wire format comes from a maintained codec (`rumqttc::mqttbytes`, the same crate's packets that
//! `connect` uses) and only the small routing below is ours.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use rumqttc::mqttbytes::QoS;
use tokio::sync::{mpsc, oneshot};

use super::Console;
use super::lambda::Lambda;

/// Messages queued for a subscriber before publishers to it have to wait.
const QUEUE: usize = 1024;

/// What every connection shares.
pub struct Gateway {
    pub tls: super::listener::Tls,
    pub lambda: Lambda,
    /// `arn:aws:iot:<region>:<account>`, the prefix of the resources policies are checked on.
    pub arn_prefix: String,
    pub console: Console,
    pub registry: Registry,
}

/// A message on its way to one subscriber.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub topic: String,
    pub payload: Bytes,
    pub qos: QoS,
}

/// The connected clients by client ID, with their subscriptions.
#[derive(Default)]
pub struct Registry {
    clients: Mutex<HashMap<String, Client>>,
    next_connection: AtomicU64,
}

struct Client {
    connection: u64,
    deliveries: mpsc::Sender<Delivery>,
    /// Fired when a newer connection takes over the client ID.
    takeover: oneshot::Sender<()>,
    subscriptions: Vec<(String, QoS)>,
}

/// A connection's membership in the registry.
pub struct Membership {
    pub connection: u64,
    pub deliveries: mpsc::Receiver<Delivery>,
    pub takeover: oneshot::Receiver<()>,
}

impl Registry {
    /// Adds a connection under `client_id`, closing an older one with the same ID: IoT "doesn't
    /// allow two clients with the same client ID to stay connected at the same time".
    pub fn join(&self, client_id: &str) -> Membership {
        let connection = self.next_connection.fetch_add(1, Ordering::Relaxed);
        let (deliveries_tx, deliveries) = mpsc::channel(QUEUE);
        let (takeover_tx, takeover) = oneshot::channel();
        let client = Client {
            connection,
            deliveries: deliveries_tx,
            takeover: takeover_tx,
            subscriptions: Vec::new(),
        };
        if let Some(old) = self.lock().insert(client_id.to_string(), client) {
            let _ = old.takeover.send(());
        }
        Membership {
            connection,
            deliveries,
            takeover,
        }
    }

    /// Removes the connection, unless a newer one already holds the client ID.
    pub fn leave(&self, client_id: &str, connection: u64) {
        let mut clients = self.lock();
        if clients
            .get(client_id)
            .is_some_and(|c| c.connection == connection)
        {
            clients.remove(client_id);
        }
    }

    /// Adds or replaces (same filter) a subscription.
    pub fn subscribe(&self, client_id: &str, connection: u64, filter: &str, qos: QoS) {
        self.with_client(client_id, connection, |client| {
            let subs = &mut client.subscriptions;
            subs.retain(|(f, _)| f != filter);
            subs.push((filter.to_string(), qos));
        });
    }

    pub fn unsubscribe(&self, client_id: &str, connection: u64, filter: &str) {
        self.with_client(client_id, connection, |client| {
            client.subscriptions.retain(|(f, _)| f != filter);
        });
    }

    /// The clients with a subscription matching `topic`, each with the QoS to deliver at: the
    /// lower of the message's and the subscription's. Whether a client may receive the message is
    /// its own connection's check (`iot:Receive` is checked on every delivery).
    pub fn recipients(&self, topic: &str, qos: QoS) -> Vec<(mpsc::Sender<Delivery>, QoS)> {
        self.lock()
            .values()
            .filter_map(|client| {
                let granted = client
                    .subscriptions
                    .iter()
                    .filter(|(filter, _)| topic_matches(topic, filter))
                    .map(|(_, q)| *q)
                    .reduce(|a, b| if b > a { b } else { a })?;
                let qos = if granted < qos { granted } else { qos };
                Some((client.deliveries.clone(), qos))
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Client>> {
        self.clients.lock().expect("registry lock")
    }

    /// Runs `f` on the client if this connection still holds its ID.
    fn with_client(&self, client_id: &str, connection: u64, f: impl FnOnce(&mut Client)) {
        if let Some(client) = self
            .lock()
            .get_mut(client_id)
            .filter(|c| c.connection == connection)
        {
            f(client);
        }
    }
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
        }
    }

    #[tokio::test]
    async fn routing_and_takeover() {
        let registry = Registry::default();
        let mut first = registry.join("c1");
        registry.subscribe("c1", first.connection, "t/+", QoS::AtLeastOnce);
        let mut other = registry.join("c2");
        registry.subscribe("c2", other.connection, "x", QoS::AtMostOnce);

        let recipients = registry.recipients("t/1", QoS::AtLeastOnce);
        assert_eq!(recipients.len(), 1);
        assert_eq!(recipients[0].1, QoS::AtLeastOnce);
        recipients[0].0.try_send(delivery("t/1")).unwrap();
        assert_eq!(first.deliveries.recv().await.unwrap().topic, "t/1");
        assert!(other.deliveries.try_recv().is_err());

        let second = registry.join("c1");
        assert!(first.takeover.try_recv().is_ok());
        // The old connection leaving must not remove the new one.
        registry.leave("c1", first.connection);
        registry.subscribe("c1", second.connection, "t/#", QoS::AtMostOnce);
        let recipients = registry.recipients("t/2", QoS::AtLeastOnce);
        assert_eq!(recipients.len(), 1);
        assert_eq!(
            recipients[0].1,
            QoS::AtMostOnce,
            "the subscription's lower QoS"
        );
        recipients[0].0.try_send(delivery("t/2")).unwrap();
        let mut second = second;
        assert_eq!(second.deliveries.recv().await.unwrap().topic, "t/2");
    }

    fn delivery(topic: &str) -> Delivery {
        Delivery {
            topic: topic.into(),
            payload: Bytes::new(),
            qos: QoS::AtMostOnce,
        }
    }
}
