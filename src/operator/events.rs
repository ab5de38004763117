//! Kubernetes Events (`events.k8s.io/v1`) created one per occurrence, without kube's
//! `Recorder` cache: the Recorder keeps every event it published for six minutes (to count
//! repeats into a series) and scans that cache on each publish, which for a 10,000-machine
//! plan — several step events per machine within minutes, each with a distinct note, so never
//! a series — holds tens of thousands of events in memory and costs quadratic time.
//! Step changes never repeat, so a plain create is the right shape for them.
//!
//! The engine hands its events to an [`EventQueue`]: they are created by a task of their own, so
//! an engine pass never waits on an event (events are informational; the state that matters is
//! written before a pass goes on).

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};
use kube::runtime::events::EventType;
use tokio::sync::mpsc;

use super::metrics::Metrics;

/// Events waiting to be created, at most: a burst (10,000 machines entering `Pending`) waits for
/// room instead of being held in memory all at once.
pub const EVENT_QUEUE: usize = 256;
/// Events created at once by the queue's task.
const EVENTS_IN_FLIGHT: usize = 2;

/// Publishes events for one reporting controller instance.
#[derive(Clone)]
pub struct Publisher {
    client: Client,
    controller: String,
    instance: String,
}

impl Publisher {
    pub fn new(client: Client, controller: &str, instance: Option<String>) -> Self {
        Self {
            client,
            controller: controller.to_string(),
            instance: instance.unwrap_or_else(|| controller.to_string()),
        }
    }

    /// The event as it will be created (pure, for tests).
    pub fn event(
        &self,
        reference: &ObjectReference,
        type_: EventType,
        reason: &str,
        note: &str,
        now: Timestamp,
    ) -> Event {
        let name = format!(
            "{}.{:x}",
            reference.name.as_deref().unwrap_or("object"),
            now.as_nanosecond()
        );
        Event {
            metadata: ObjectMeta {
                name: Some(name),
                namespace: reference.namespace.clone(),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(now)),
            action: Some(reason.to_string()),
            reason: Some(reason.to_string()),
            note: Some(note.to_string()),
            regarding: Some(reference.clone()),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            type_: Some(
                match type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .to_string(),
            ),
            ..Event::default()
        }
    }

    pub async fn publish(
        &self,
        reference: &ObjectReference,
        type_: EventType,
        reason: &str,
        note: &str,
    ) -> Result<(), kube::Error> {
        self.publish_at(reference, type_, reason, note, Timestamp::now())
            .await
    }

    /// Publish an event that happened at `at`.
    pub async fn publish_at(
        &self,
        reference: &ObjectReference,
        type_: EventType,
        reason: &str,
        note: &str,
        at: Timestamp,
    ) -> Result<(), kube::Error> {
        let ev = self.event(reference, type_, reason, note, at);
        let ns = reference.namespace.as_deref().unwrap_or("default");
        Api::<Event>::namespaced(self.client.clone(), ns)
            .create(&PostParams::default(), &ev)
            .await
            .map(|_| ())
    }
}

/// One event waiting in an [`EventQueue`].
struct Queued {
    reference: ObjectReference,
    type_: EventType,
    reason: String,
    note: String,
    at: Timestamp,
}

/// Events created in the background, in the order given (a few at once), each stamped with the
/// time it was queued; a full queue makes the sender wait. The task ends once every handle is
/// dropped and the queue is empty.
#[derive(Clone)]
pub struct EventQueue {
    tx: mpsc::Sender<Queued>,
    metrics: Arc<Metrics>,
}

impl EventQueue {
    /// Start the queue's task on `runtime`.
    pub fn spawn(
        publisher: Publisher,
        metrics: Arc<Metrics>,
        runtime: &tokio::runtime::Handle,
    ) -> Self {
        let (tx, mut rx) = mpsc::channel::<Queued>(EVENT_QUEUE);
        let task_metrics = metrics.clone();
        runtime.spawn(async move {
            futures::stream::poll_fn(|cx| rx.poll_recv(cx))
                .for_each_concurrent(EVENTS_IN_FLIGHT, |q| {
                    let publisher = &publisher;
                    let metrics = &task_metrics;
                    async move {
                        let result = publisher
                            .publish_at(&q.reference, q.type_, &q.reason, &q.note, q.at)
                            .await;
                        metrics.kube_write("events", result.is_ok());
                        if let Err(e) = result {
                            tracing::warn!(error = %e, reason = %q.reason, object = ?q.reference.name, "cannot publish an event");
                        }
                    }
                })
                .await;
        });
        Self { tx, metrics }
    }

    /// Queue an event, waiting only while the queue is full (the API server behind).
    pub async fn send(
        &self,
        reference: &ObjectReference,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        let q = Queued {
            reference: reference.clone(),
            type_,
            reason: reason.to_string(),
            note,
            at: Timestamp::now(),
        };
        if self.tx.send(q).await.is_err() {
            self.metrics.kube_write("events", false);
            tracing::warn!(reason, object = ?reference.name, "event not published: the event queue is closed");
        }
    }
}
