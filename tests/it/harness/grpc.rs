//! A real gRPC service (tonic, over HTTP/2 cleartext) and its client, with the messages
//! declared through prost's derive: no protoc, no generated code.
//!
//! `test.Greeter/SayHello` (unary) answers `hello NAME`, or NOT_FOUND with a message for
//! the name `nobody`; `test.Greeter/Count` (server streaming) sends `NAME 1` .. `NAME 3`.

use std::net::SocketAddr;
use std::pin::Pin;

use futures_util::Stream;
use http::uri::PathAndQuery;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};
use tonic_prost::ProstCodec;

#[derive(Clone, PartialEq, prost::Message)]
pub struct Hello {
    #[prost(string, tag = "1")]
    pub name: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Reply {
    #[prost(string, tag = "1")]
    pub message: String,
}

pub const SAY_HELLO: &str = "/test.Greeter/SayHello";
pub const COUNT: &str = "/test.Greeter/Count";

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;
type Replies = Pin<Box<dyn Stream<Item = Result<Reply, Status>> + Send>>;

struct SayHello;

impl tonic::server::UnaryService<Hello> for SayHello {
    type Response = Reply;
    type Future = BoxFuture<Result<Response<Reply>, Status>>;

    fn call(&mut self, req: Request<Hello>) -> Self::Future {
        Box::pin(async move {
            let name = req.into_inner().name;
            if name == "nobody" {
                return Err(Status::not_found("no greeter for nobody"));
            }
            let mut resp = Response::new(Reply {
                message: format!("hello {name}"),
            });
            resp.metadata_mut()
                .insert("x-greeter", "test".parse().unwrap());
            Ok(resp)
        })
    }
}

struct Count;

impl tonic::server::ServerStreamingService<Hello> for Count {
    type Response = Reply;
    type ResponseStream = Replies;
    type Future = BoxFuture<Result<Response<Replies>, Status>>;

    fn call(&mut self, req: Request<Hello>) -> Self::Future {
        Box::pin(async move {
            let name = req.into_inner().name;
            let replies = (1..=3).map(move |i| {
                Ok(Reply {
                    message: format!("{name} {i}"),
                })
            });
            Ok(Response::new(
                Box::pin(futures_util::stream::iter(replies)) as Replies
            ))
        })
    }
}

/// A running gRPC server; stops when dropped.
pub struct GrpcServer {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl GrpcServer {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let svc = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                        let mut grpc =
                            tonic::server::Grpc::new(ProstCodec::<Reply, Hello>::default());
                        let resp = match req.uri().path() {
                            SAY_HELLO => grpc.unary(SayHello, req).await,
                            COUNT => grpc.server_streaming(Count, req).await,
                            _ => Status::unimplemented("no such method").into_http(),
                        };
                        Ok::<_, std::convert::Infallible>(resp)
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .http2_only()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self { addr, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A tonic client for the greeter at `url` (`http://` for h2c).
pub struct Greeter(tonic::client::Grpc<tonic::transport::Channel>);

impl Greeter {
    pub async fn connect(url: String) -> Self {
        let channel = tonic::transport::Endpoint::from_shared(url)
            .unwrap()
            .connect()
            .await
            .expect("the gRPC client connects");
        Self(tonic::client::Grpc::new(channel))
    }

    pub async fn say_hello(&mut self, name: &str) -> Result<Response<Reply>, Status> {
        self.0.ready().await.expect("the channel is ready");
        let req = Request::new(Hello { name: name.into() });
        self.0
            .unary(
                req,
                PathAndQuery::from_static(SAY_HELLO),
                ProstCodec::default(),
            )
            .await
    }

    /// Every reply of the stream, in order, and the stream's end (its status).
    pub async fn count(&mut self, name: &str) -> (Vec<String>, Result<(), Status>) {
        self.0.ready().await.expect("the channel is ready");
        let req = Request::new(Hello { name: name.into() });
        let mut stream = self
            .0
            .server_streaming(req, PathAndQuery::from_static(COUNT), ProstCodec::default())
            .await
            .expect("the stream starts")
            .into_inner();
        let mut out = Vec::new();
        loop {
            match stream.message().await {
                Ok(Some(Reply { message })) => out.push(message),
                Ok(None) => return (out, Ok(())),
                Err(status) => return (out, Err(status)),
            }
        }
    }
}
