//! An in-test OTLP/gRPC trace receiver and a log capture buffer.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

#[derive(Clone, Default)]
struct Store(Arc<Mutex<Vec<ExportTraceServiceRequest>>>);

#[tonic::async_trait]
impl TraceService for Store {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// A span as received, with its resource's attributes.
#[derive(Debug, Clone)]
pub struct Received {
    pub service_name: Option<String>,
    pub resource: Vec<KeyValue>,
    pub span: Span,
}

impl Received {
    pub fn resource_attr(&self, key: &str) -> Option<String> {
        match attr(&self.resource, key)? {
            any_value::Value::StringValue(s) => Some(s.clone()),
            _ => None,
        }
    }

    pub fn attr(&self, key: &str) -> Option<&any_value::Value> {
        attr(&self.span.attributes, key)
    }

    pub fn str_attr(&self, key: &str) -> Option<String> {
        match self.attr(key)? {
            any_value::Value::StringValue(s) => Some(s.clone()),
            _ => None,
        }
    }

    pub fn int_attr(&self, key: &str) -> Option<i64> {
        match self.attr(key)? {
            any_value::Value::IntValue(i) => Some(*i),
            _ => None,
        }
    }

    pub fn trace_id_hex(&self) -> String {
        hex(&self.span.trace_id)
    }

    pub fn span_id_hex(&self) -> String {
        hex(&self.span.span_id)
    }

    pub fn parent_span_id_hex(&self) -> String {
        hex(&self.span.parent_span_id)
    }
}

pub fn attr<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v: &AnyValue| v.value.as_ref())
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An OTLP/gRPC trace receiver on 127.0.0.1:0.
pub struct Receiver {
    pub addr: SocketAddr,
    store: Store,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Receiver {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let store = Store::default();
        let (stop, stopped) = oneshot::channel::<()>();
        let service = TraceServiceServer::new(store.clone());
        let task = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(
                    tonic::transport::server::TcpIncoming::from(listener),
                    async {
                        let _ = stopped.await;
                    },
                )
                .await
                .unwrap();
        });
        Self {
            addr,
            store,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting and closes the listener.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            // In-flight connections are drained by tonic; bound the wait.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), task).await;
        }
    }

    pub fn spans(&self) -> Vec<Received> {
        self.store.spans()
    }
}

impl Store {
    fn spans(&self) -> Vec<Received> {
        let requests = self.0.lock().unwrap();
        let mut out = Vec::new();
        for request in requests.iter() {
            for rs in &request.resource_spans {
                let service_name =
                    rs.resource
                        .as_ref()
                        .and_then(|r| match attr(&r.attributes, "service.name") {
                            Some(any_value::Value::StringValue(s)) => Some(s.clone()),
                            _ => None,
                        });
                for ss in &rs.scope_spans {
                    for span in &ss.spans {
                        out.push(Received {
                            service_name: service_name.clone(),
                            resource: rs
                                .resource
                                .as_ref()
                                .map(|r| r.attributes.clone())
                                .unwrap_or_default(),
                            span: span.clone(),
                        });
                    }
                }
            }
        }
        out
    }
}

/// An OTLP/HTTP (protobuf) trace receiver on 127.0.0.1:0.
pub struct HttpReceiver {
    pub addr: SocketAddr,
    store: Store,
}

impl HttpReceiver {
    pub async fn start() -> Self {
        use prost::Message as _;

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let store = Store::default();
        let shared = store.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |headers: http::HeaderMap, body: axum::body::Bytes| {
                let store = shared.clone();
                async move {
                    assert_eq!(
                        headers[http::header::CONTENT_TYPE],
                        "application/x-protobuf"
                    );
                    let request = ExportTraceServiceRequest::decode(body).unwrap();
                    store.0.lock().unwrap().push(request);
                    (
                        [(http::header::CONTENT_TYPE, "application/x-protobuf")],
                        ExportTraceServiceResponse::default().encode_to_vec(),
                    )
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { addr, store }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn spans(&self) -> Vec<Received> {
        self.store.spans()
    }
}

/// A `MakeWriter` collecting log output in memory.
#[derive(Clone, Default)]
pub struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl LogBuffer {
    pub fn contents(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuffer {
    type Writer = LogBuffer;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}
