//! A gRPC echo replica (tonic): unary, server-, client- and bidirectional
//! streaming calls, a slow call and a failing one, plus the standard health
//! service (`grpc.health.v1`). The balancer's tests put it behind the
//! balancer over h2c to check gRPC end to end: streams, status trailers,
//! `grpc-timeout`, and the gRPC health check as the heartbeat.

use std::{future::Future, pin::Pin, time::Duration};

use tokio::net::TcpListener;
use tokio_stream::{Stream, StreamExt as _, wrappers::TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

/// The generated messages, client and server.
#[allow(clippy::all, clippy::pedantic, unused_qualifications)]
pub mod pb {
    tonic::include_proto!("echo");
}

use pb::{
    Msg, SleepRequest,
    echo_server::{Echo, EchoServer},
};

/// The echo service of one replica.
#[derive(Debug, Clone)]
pub struct Replica {
    pub id: String,
}

type MsgStream = Pin<Box<dyn Stream<Item = Result<Msg, Status>> + Send>>;

impl Replica {
    fn msg(&self, text: impl Into<String>) -> Msg {
        Msg {
            text: text.into(),
            replica: self.id.clone(),
        }
    }
}

#[tonic::async_trait]
impl Echo for Replica {
    async fn unary(&self, request: Request<Msg>) -> Result<Response<Msg>, Status> {
        Ok(Response::new(self.msg(request.into_inner().text)))
    }

    type CountStream = MsgStream;

    async fn count(&self, request: Request<Msg>) -> Result<Response<Self::CountStream>, Status> {
        let n: u32 = request
            .into_inner()
            .text
            .parse()
            .map_err(|_| Status::invalid_argument("text must be a count"))?;
        let this = self.clone();
        let stream = tokio_stream::iter(1..=n).then(move |i| {
            let msg = this.msg(i.to_string());
            async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok(msg)
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn collect(&self, request: Request<Streaming<Msg>>) -> Result<Response<Msg>, Status> {
        let mut stream = request.into_inner();
        let mut texts = Vec::new();
        while let Some(msg) = stream.next().await {
            texts.push(msg?.text);
        }
        Ok(Response::new(self.msg(texts.join(","))))
    }

    type ChatStream = MsgStream;

    async fn chat(
        &self,
        request: Request<Streaming<Msg>>,
    ) -> Result<Response<Self::ChatStream>, Status> {
        let this = self.clone();
        let stream = request
            .into_inner()
            .map(move |msg| msg.map(|m| this.msg(m.text)));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn sleep(&self, request: Request<SleepRequest>) -> Result<Response<Msg>, Status> {
        let millis = request.into_inner().millis;
        tokio::time::sleep(Duration::from_millis(millis)).await;
        Ok(Response::new(self.msg(format!("slept {millis} ms"))))
    }

    async fn fail(&self, request: Request<Msg>) -> Result<Response<Msg>, Status> {
        Err(Status::not_found(request.into_inner().text))
    }
}

/// Serves the echo and health services on `listener` (h2c) until
/// `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    id: String,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_serving::<EchoServer<Replica>>().await;
    tonic::transport::Server::builder()
        .add_service(health)
        .add_service(EchoServer::new(Replica { id }))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await
}
