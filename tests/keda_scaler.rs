//! KEDA's external scaler API, asked as KEDA asks it: gRPC over TLS with a
//! client certificate. A fake controller replica serves the metrics and a
//! fake gRPC API the truth, as in tests/inventory.rs.

use pravega_metrics_adapter::serve::keda::proto::{
    GetMetricSpecResponse, GetMetricsRequest, GetMetricsResponse, IsActiveResponse, MetricSpec, ScaledObjectRef,
};
use pravega_metrics_adapter::serve::keda::{METRIC_NAME, SERVICE};
use rcgen::ExtendedKeyUsagePurpose;
use std::path::PathBuf;
use std::time::Duration;
use test_support::adapter::Adapter;
use test_support::adapter_binary;
use test_support::controller_api::{FakeControllerApi, Stream};
use test_support::exposition::stream_exposition;
use test_support::fake_controller::FakeController;
use test_support::net::free_port;
use test_support::pki::Ca;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Status};

/// An exposition with no per-stream series: every stream quiet and evicted.
const QUIET: &str = "pravega_controller_hosts_count 2.0\n";

struct Setup {
    adapter: Adapter,
    port: u16,
    serving_ca: Ca,
    client_ca: Ca,
    dir: PathBuf,
}

impl Setup {
    async fn start(replica: &FakeController, api: &FakeControllerApi, extra: &[&str]) -> Self {
        let dir = std::env::temp_dir().join(format!("keda-scaler-test-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).unwrap();
        let (serving_ca, client_ca) = (Ca::new("serving-ca"), Ca::new("keda-client-ca"));
        let (cert, key) = serving_ca.leaf("adapter", &[], &["localhost"], ExtendedKeyUsagePurpose::ServerAuth);
        std::fs::write(dir.join("tls.crt"), cert).unwrap();
        std::fs::write(dir.join("tls.key"), key).unwrap();
        std::fs::write(dir.join("client-ca.crt"), &client_ca.pem).unwrap();
        let port = free_port();
        let api_url = format!("http://{}", api.start().await);
        let path = |name: &str| dir.join(name).to_str().unwrap().to_owned();
        let mut args: Vec<String> = vec![
            "--controller-url".into(),
            replica.url(),
            "--controller-api-url".into(),
            api_url,
            "--keda-scaler-port".into(),
            port.to_string(),
            "--keda-client-ca-file".into(),
            path("client-ca.crt"),
            "--tls-cert-file".into(),
            path("tls.crt"),
            "--tls-private-key-file".into(),
            path("tls.key"),
            "--bind-address".into(),
            "127.0.0.1".into(),
        ];
        let fast = ["--scrape-interval", "300ms", "--scrape-timeout", "200ms", "--max-staleness", "100ms"];
        let inventory = ["--inventory-refresh", "300ms", "--inventory-list-interval", "300ms", "--controller-api-timeout", "300ms"];
        args.extend(fast.iter().chain(&inventory).chain(extra).map(|s| (*s).to_owned()));
        let adapter = Adapter::start(adapter_binary!(), &args).await;
        Setup { adapter, port, serving_ca, client_ca, dir }
    }

    /// A channel presenting `identity` (certificate, key), if any.
    async fn channel(&self, identity: Option<(String, String)>) -> Result<Channel, tonic::transport::Error> {
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&self.serving_ca.pem)).domain_name("localhost");
        if let Some((cert, key)) = identity {
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        Endpoint::from_shared(format!("https://127.0.0.1:{}", self.port))?.tls_config(tls)?.connect().await
    }

    /// A channel with a client certificate of the trusted CA, as KEDA's.
    async fn keda(&self) -> Channel {
        self.channel(Some(self.client_ca.client("keda-operator", &[]))).await.unwrap()
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn reference(namespace: &str, metadata: &[(&str, &str)]) -> ScaledObjectRef {
    ScaledObjectRef {
        name: "flink-taskmanager".into(),
        namespace: namespace.into(),
        scaler_metadata: metadata.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
    }
}

async fn call<Req, Resp>(channel: &Channel, method: &str, request: Req) -> Result<Resp, Status>
where
    Req: prost::Message + Send + Sync + 'static,
    Resp: prost::Message + Default + Send + Sync + 'static,
{
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.map_err(|e| Status::unavailable(e.to_string()))?;
    let path = PathAndQuery::try_from(format!("{SERVICE}{method}")).unwrap();
    grpc.unary(tonic::Request::new(request), path, tonic_prost::ProstCodec::default()).await.map(tonic::Response::into_inner)
}

async fn metrics(channel: &Channel, reference: ScaledObjectRef) -> Result<f64, Status> {
    let request = GetMetricsRequest { scaled_object_ref: Some(reference), metric_name: METRIC_NAME.into() };
    let response: GetMetricsResponse = call(channel, "GetMetrics", request).await?;
    assert_eq!(response.metric_values.len(), 1, "{response:?}");
    let value = &response.metric_values[0];
    assert_eq!(value.metric_name, METRIC_NAME);
    assert_eq!(value.metric_value, value.metric_value_float.round() as i64, "the deprecated integer agrees");
    Ok(value.metric_value_float)
}

async fn is_active(channel: &Channel, reference: ScaledObjectRef) -> Result<bool, Status> {
    call::<_, IsActiveResponse>(channel, "IsActive", reference).await.map(|r| r.result)
}

/// Asks GetMetrics until it answers `expected`, a bounded number of times.
async fn until_metrics(setup: &Setup, channel: &Channel, reference: &ScaledObjectRef, expected: f64) {
    let mut last = None;
    for _ in 0..50 {
        last = Some(metrics(channel, reference.clone()).await);
        if last.as_ref().is_some_and(|r| r.as_ref().is_ok_and(|v| *v == expected)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("GetMetrics never answered {expected}: last {last:?}\n{}", setup.adapter.log());
}

#[tokio::test]
async fn metric_spec_and_values_are_the_sum_of_the_selected_streams() {
    let replica = FakeController::start(QUIET).await;
    let api = FakeControllerApi::default();
    api.set("test", "s", 5);
    api.set("test", "t", 2);
    let setup = Setup::start(&replica, &api, &[]).await;
    let keda = setup.keda().await;
    let spec: GetMetricSpecResponse =
        call(&keda, "GetMetricSpec", reference("flink", &[("scope", "test"), ("segmentsPerReplica", "2.5")])).await.unwrap();
    assert_eq!(spec.metric_specs, [MetricSpec { metric_name: METRIC_NAME.into(), target_size: 3, target_size_float: 2.5 }]);
    let default: GetMetricSpecResponse = call(&keda, "GetMetricSpec", reference("flink", &[("scope", "test")])).await.unwrap();
    assert_eq!(default.metric_specs[0].target_size_float, 1.0, "one segment per replica by default");

    let one = reference("flink", &[("scope", "test"), ("stream", "s"), ("scalerAddress", "adapter:9443")]);
    assert_eq!(metrics(&keda, one).await.map_err(|s| s.to_string()), Ok(5.0), "{}", setup.adapter.log());
    assert_eq!(metrics(&keda, reference("flink", &[("scope", "test")])).await.ok(), Some(7.0));
    let selector = reference("flink", &[("labelSelector", "scope=test,stream in (t)")]);
    assert_eq!(metrics(&keda, selector).await.ok(), Some(2.0));
    let none = metrics(&keda, reference("flink", &[("scope", "test"), ("stream", "nothing")])).await.unwrap_err();
    assert_eq!(none.code(), Code::NotFound, "no stream is an error, not 0: {none:?}");
}

#[tokio::test]
async fn a_withheld_value_is_an_error_never_0() {
    let replica = FakeController::start(QUIET).await;
    let api = FakeControllerApi::default();
    api.set("test", "s", 5);
    api.put("test", "t", Stream::Fails(Code::PermissionDenied));
    let setup = Setup::start(&replica, &api, &[]).await;
    let keda = setup.keda().await;
    let scope = reference("flink", &[("scope", "test")]);
    let withheld = metrics(&keda, scope.clone()).await.unwrap_err();
    assert_eq!(withheld.code(), Code::Unavailable, "{withheld:?}");
    assert!(withheld.message().contains("test/t (refused)"), "{withheld:?}");
    assert_eq!(is_active(&keda, scope.clone()).await.unwrap_err().code(), Code::Unavailable);
    assert_eq!(metrics(&keda, reference("flink", &[("scope", "test"), ("stream", "s")])).await.ok(), Some(5.0), "s alone is known");
    api.set("test", "t", 2);
    until_metrics(&setup, &keda, &scope, 7.0).await;
    let (_, own) = setup.adapter.get_text("/metrics").await;
    assert!(own.contains("pravega_adapter_withheld_answers_total{route=\"keda\"}"), "{own}");
}

#[tokio::test]
async fn bad_metadata_is_an_invalid_argument() {
    let replica = FakeController::start(QUIET).await;
    let api = FakeControllerApi::default();
    api.set("test", "s", 5);
    let setup = Setup::start(&replica, &api, &[]).await;
    let keda = setup.keda().await;
    for (metadata, says) in [
        (&[][..], "give `scope`"),
        (&[("stream", "s")][..], "needs `scope`"),
        (&[("scope", "test"), ("labelSelector", "scope=test")][..], "one or the other"),
        (&[("scope", "test,stream=s")][..], "not a Pravega name"),
        (&[("labelSelector", "scope in (")][..], "labelSelector"),
        (&[("scope", "test"), ("segmentsPerReplica", "0")][..], "segmentsPerReplica"),
        (&[("scope", "test"), ("activationThreshold", "x")][..], "activationThreshold"),
        (&[("scope", "test"), ("segmentPerReplica", "2")][..], "unknown metadata key `segmentPerReplica`"),
    ] {
        let refused = metrics(&keda, reference("flink", metadata)).await.unwrap_err();
        assert_eq!((refused.code(), refused.message().contains(says)), (Code::InvalidArgument, true), "{metadata:?}: {refused:?}");
        let spec = call::<_, GetMetricSpecResponse>(&keda, "GetMetricSpec", reference("flink", metadata)).await.unwrap_err();
        assert_eq!(spec.code(), Code::InvalidArgument, "{metadata:?}");
    }
    let request = GetMetricsRequest { scaled_object_ref: Some(reference("flink", &[("scope", "test")])), metric_name: "cpu".into() };
    let wrong_metric = call::<_, GetMetricsResponse>(&keda, "GetMetrics", request).await.unwrap_err();
    assert_eq!(wrong_metric.code(), Code::InvalidArgument, "{wrong_metric:?}");
}

#[tokio::test]
async fn clients_without_a_certificate_of_the_ca_are_refused() {
    let replica = FakeController::start(QUIET).await;
    let api = FakeControllerApi::default();
    api.set("test", "s", 5);
    let setup = Setup::start(&replica, &api, &[]).await;
    let one = reference("flink", &[("scope", "test"), ("stream", "s")]);
    // Refused in the handshake: the connection fails, or with TLS 1.3
    // (the client's handshake ends before the server's check) its first call.
    if let Ok(channel) = setup.channel(None).await {
        let outcome = metrics(&channel, one.clone()).await;
        assert!(outcome.is_err(), "no client certificate: {outcome:?}");
    }
    let rogue = Ca::new("keda-client-ca");
    if let Ok(channel) = setup.channel(Some(rogue.client("keda-operator", &[]))).await {
        let outcome = metrics(&channel, one.clone()).await;
        assert!(outcome.is_err(), "a certificate of another CA: {outcome:?}");
    }
    assert_eq!(metrics(&setup.keda().await, one).await.ok(), Some(5.0));
    assert!(setup.adapter.log().contains("TLS handshake refused"), "{}", setup.adapter.log());
}

#[tokio::test]
async fn namespace_scoping_applies_to_the_scaled_objects_namespace() {
    let replica = FakeController::start(QUIET).await;
    let api = FakeControllerApi::default();
    api.set("test", "s", 5);
    let setup = Setup::start(&replica, &api, &["--namespace-scopes", "same"]).await;
    let keda = setup.keda().await;
    let metadata = [("scope", "test"), ("stream", "s")];
    assert_eq!(metrics(&keda, reference("test", &metadata)).await.ok(), Some(5.0));
    let elsewhere = metrics(&keda, reference("other", &metadata)).await.unwrap_err();
    assert_eq!(elsewhere.code(), Code::NotFound, "scope test is not visible in namespace other: {elsewhere:?}");
}

#[tokio::test]
async fn is_active_is_above_the_activation_threshold() {
    let replica = FakeController::start(QUIET).await;
    let api = FakeControllerApi::default();
    api.set("test", "one", 1);
    api.set("test", "three", 3);
    api.set("test", "sealed", 0);
    let setup = Setup::start(&replica, &api, &[]).await;
    let keda = setup.keda().await;
    let active = |stream: &'static str, threshold: &'static str| {
        let keda = keda.clone();
        async move {
            let metadata = [("scope", "test"), ("stream", stream), ("activationThreshold", threshold)];
            is_active(&keda, reference("flink", &metadata)).await.map_err(|s| s.to_string())
        }
    };
    assert_eq!(active("sealed", "0").await, Ok(false), "{}", setup.adapter.log());
    assert_eq!(active("one", "0").await, Ok(true));
    assert_eq!(active("one", "1").await, Ok(false), "active only above the threshold");
    assert_eq!(active("three", "1").await, Ok(true));
    assert_eq!(active("three", "2.5").await, Ok(true));
    assert_eq!(active("three", "3").await, Ok(false));
}

/// The next message of a StreamIsActive stream, within a bound far above
/// any notification path (the test is about order and content).
async fn next(stream: &mut tonic::Streaming<IsActiveResponse>, setup: &Setup) -> bool {
    match tokio::time::timeout(Duration::from_secs(30), stream.message()).await {
        Ok(Ok(Some(message))) => message.result,
        other => panic!("no StreamIsActive message: {other:?}\n{}", setup.adapter.log()),
    }
}

async fn stream_is_active(channel: &Channel, reference: ScaledObjectRef) -> Result<tonic::Streaming<IsActiveResponse>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.map_err(|e| Status::unavailable(e.to_string()))?;
    let path = PathAndQuery::try_from(format!("{SERVICE}StreamIsActive")).unwrap();
    let codec = tonic_prost::ProstCodec::<ScaledObjectRef, IsActiveResponse>::default();
    grpc.server_streaming(tonic::Request::new(reference), path, codec).await.map(tonic::Response::into_inner)
}

#[tokio::test]
async fn stream_is_active_pushes_each_change_of_activity() {
    let replica = FakeController::start(stream_exposition("test", "s", 1, 0, 0)).await;
    let api = FakeControllerApi::default();
    api.set("test", "s", 1);
    let setup = Setup::start(&replica, &api, &[]).await;
    let keda = setup.keda().await;
    let metadata = [("scope", "test"), ("stream", "s"), ("activationThreshold", "1")];
    let mut stream = stream_is_active(&keda, reference("flink", &metadata)).await.unwrap();
    assert!(!next(&mut stream, &setup).await, "first the activity now: 1 segment is not above 1");
    // The stream splits to 3: the metrics show it and the API agrees.
    replica.set_body(stream_exposition("test", "s", 3, 1, 0));
    api.set("test", "s", 3);
    assert!(next(&mut stream, &setup).await, "3 segments: active");
    // And merges back to 1.
    replica.set_body(stream_exposition("test", "s", 1, 1, 2));
    api.set("test", "s", 1);
    assert!(!next(&mut stream, &setup).await, "1 segment: inactive again");
    // Nothing is sent while nothing changes: the next message would have
    // to be a change.
    assert!(tokio::time::timeout(Duration::from_secs(2), stream.message()).await.is_err(), "no repeated message");
    let bad = stream_is_active(&keda, reference("flink", &[("stream", "s")])).await;
    let bad = match bad {
        Ok(mut stream) => stream.message().await.unwrap_err(),
        Err(status) => status,
    };
    assert_eq!(bad.code(), Code::InvalidArgument, "{bad:?}");
}

#[tokio::test]
async fn push_streams_are_bounded_per_client_and_given_back_when_the_client_goes() {
    let replica = FakeController::start(QUIET).await;
    let api = FakeControllerApi::default();
    api.set("test", "s", 2);
    let setup = Setup::start(&replica, &api, &["--keda-max-streams-per-client", "2"]).await;
    let keda = setup.keda().await;
    let one = reference("flink", &[("scope", "test"), ("stream", "s")]);
    let mut first = stream_is_active(&keda, one.clone()).await.unwrap();
    let mut second = stream_is_active(&keda, one.clone()).await.unwrap();
    assert!(next(&mut first, &setup).await && next(&mut second, &setup).await);
    let third = match stream_is_active(&keda, one.clone()).await {
        Ok(mut stream) => stream.message().await.unwrap_err(),
        Err(status) => status,
    };
    assert_eq!(third.code(), Code::ResourceExhausted, "{third:?}");
    drop(first);
    // The slot comes back once the adapter sees the stream cancelled.
    for _ in 0..50 {
        if let Ok(mut stream) = stream_is_active(&keda, one.clone()).await {
            if let Ok(Some(message)) = stream.message().await {
                assert!(message.result);
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the closed stream's slot did not come back\n{}", setup.adapter.log());
}
