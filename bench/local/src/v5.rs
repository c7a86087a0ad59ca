//! The MQTT 5 halves of the login and publish measurements, with rumqttc's v5 client, so the
//! figures sit next to the MQTT 3.1.1 ones measured the same way.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::v5::mqttbytes::QoS as Qos5;
use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, Packet};
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
use rumqttc::{Outgoing, QoS, Transport};

use super::{password, username};

fn client(port: u16, tls: &Arc<rustls::ClientConfig>, device: usize) -> (AsyncClient, EventLoop) {
    let mut options = MqttOptions::new(username(device), "localhost", port);
    options.set_credentials(username(device), password(device));
    options.set_transport(Transport::tls_with_config(
        rumqttc::TlsConfiguration::Rustls(tls.clone()),
    ));
    options.set_keep_alive(Duration::from_secs(60));
    options.set_outgoing_inflight_upper_limit(100);
    AsyncClient::new(options, 1000)
}

fn qos5(qos: QoS) -> Qos5 {
    match qos {
        QoS::AtMostOnce => Qos5::AtMostOnce,
        QoS::AtLeastOnce => Qos5::AtLeastOnce,
        QoS::ExactlyOnce => Qos5::ExactlyOnce,
    }
}

async fn connected(events: &mut EventLoop) {
    loop {
        if let Event::Incoming(Packet::ConnAck(ack)) = events.poll().await.expect("login") {
            assert_eq!(ack.code, ConnectReturnCode::Success);
            return;
        }
    }
}

pub async fn login_once(port: u16, tls: &Arc<rustls::ClientConfig>, device: usize) -> Duration {
    let started = Instant::now();
    let (client, mut events) = client(port, tls, device);
    connected(&mut events).await;
    let took = started.elapsed();
    client.disconnect().await.unwrap();
    while let Ok(event) = events.poll().await {
        if matches!(event, Event::Outgoing(Outgoing::Disconnect)) {
            break;
        }
    }
    took
}

pub async fn publish_rate(
    port: u16,
    tls: &Arc<rustls::ClientConfig>,
    messages: usize,
    qos: QoS,
) -> (f64, usize) {
    let (subscriber, mut sub_events) = client(port, tls, 0);
    connected(&mut sub_events).await;
    subscriber
        .subscribe("telemetry/#", Qos5::AtLeastOnce)
        .await
        .unwrap();
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = sub_events.poll().await.unwrap() {
            break;
        }
    }
    let (publisher, mut pub_events) = client(port, tls, 1);
    connected(&mut pub_events).await;
    let topic = format!("telemetry/{}", username(1));
    let started = Instant::now();
    let publishing = tokio::spawn(async move {
        for i in 0..messages {
            publisher
                .publish(&topic, qos5(qos), false, i.to_string())
                .await
                .unwrap();
        }
        publisher
    });
    let driving = tokio::spawn(async move { while pub_events.poll().await.is_ok() {} });
    let mut received = 0;
    let mut last = started;
    let quiet = Duration::from_secs(2);
    while received < messages {
        match tokio::time::timeout(quiet, sub_events.poll()).await {
            Ok(Ok(Event::Incoming(Packet::Publish(_)))) => {
                received += 1;
                last = Instant::now();
            }
            Ok(Ok(_)) => {}
            _ => break,
        }
    }
    let rate = received as f64 / (last - started).as_secs_f64();
    let _ = publishing.await;
    driving.abort();
    (rate, received)
}
