//! The CLI's side of the control socket: one HTTP/1.1 request per connection.

use std::path::PathBuf;

use http_body_util::{BodyExt as _, Full};
use hyper::{Method, Request, StatusCode, body::Bytes};
use hyper_util::rt::TokioIo;
use serde::{Serialize, de::DeserializeOwned};
use tokio::net::UnixStream;

use crate::api::{
    AddAllows, AddAllowsReply, AddBans, AddBansReply, AddUaRules, AllowView, BanList, BanListQuery,
    ErrorBody, FleetHost, RemoveAllows, RemoveAllowsReply, RemoveBans, RemoveBansReply,
    RemoveUaReply, RemoveUaRules, StatsView, StatusView, SyncQuery, SyncReply, UaRule, VisitorView,
};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "the agent is not running (nothing answers on {socket}: {reason}); start it with `tracking agent run`"
    )]
    NotRunning {
        socket: PathBuf,
        reason: std::io::Error,
    },
    #[error("{}{}", body.error, details(&body.details))]
    Api { status: StatusCode, body: ErrorBody },
    #[error("talking to the agent on {socket}: {message}")]
    Protocol { socket: PathBuf, message: String },
}

fn details(lines: &[String]) -> String {
    lines.iter().map(|l| format!("\n  {l}")).collect()
}

/// A client of one agent's control socket.
pub struct Client {
    socket: PathBuf,
}

impl Client {
    pub fn new(socket: PathBuf) -> Self {
        Client { socket }
    }

    async fn request<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<T, ClientError> {
        let protocol = |message: String| ClientError::Protocol {
            socket: self.socket.clone(),
            message,
        };
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|reason| ClientError::NotRunning {
                    socket: self.socket.clone(),
                    reason,
                })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| protocol(e.to_string()))?;
        tokio::spawn(conn);
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "tracking")
            .header("content-type", content_type)
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| protocol(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| protocol(e.to_string()))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| protocol(e.to_string()))?
            .to_bytes();
        if !status.is_success() {
            let body = serde_json::from_slice::<ErrorBody>(&bytes).unwrap_or_else(|_| ErrorBody {
                error: format!("{status}: {}", String::from_utf8_lossy(&bytes)),
                details: Vec::new(),
            });
            return Err(ClientError::Api { status, body });
        }
        serde_json::from_slice(&bytes).map_err(|e| protocol(format!("unexpected answer: {e}")))
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.request(Method::GET, path, "application/json", Vec::new())
            .await
    }

    async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let body = serde_json::to_vec(body).expect("request bodies serialise");
        self.request(Method::POST, path, "application/json", body)
            .await
    }

    pub async fn status(&self) -> Result<StatusView, ClientError> {
        self.get("/v1/status").await
    }

    pub async fn stats(&self) -> Result<StatsView, ClientError> {
        self.get("/v1/stats").await
    }

    /// One page of bans.
    pub async fn list_bans(&self, query: &BanListQuery) -> Result<BanList, ClientError> {
        let query = serde_urlencoded::to_string(query).expect("a query serialises");
        self.get(&format!("/v1/bans?{query}")).await
    }

    pub async fn fleet(&self) -> Result<Vec<FleetHost>, ClientError> {
        self.get("/v1/fleet").await
    }

    pub async fn add_bans(&self, req: &AddBans) -> Result<AddBansReply, ClientError> {
        self.post("/v1/bans", req).await
    }

    pub async fn remove_bans(&self, req: &RemoveBans) -> Result<RemoveBansReply, ClientError> {
        self.post("/v1/bans/remove", req).await
    }

    pub async fn sync(&self, query: &SyncQuery, list: Vec<u8>) -> Result<SyncReply, ClientError> {
        let path = format!(
            "/v1/bans/sync?source={}&force={}",
            encode(&query.source),
            query.force
        );
        self.request(Method::POST, &path, "text/plain", list).await
    }

    pub async fn list_allows(&self) -> Result<Vec<AllowView>, ClientError> {
        self.get("/v1/allow").await
    }

    pub async fn add_allows(&self, req: &AddAllows) -> Result<AddAllowsReply, ClientError> {
        self.post("/v1/allow", req).await
    }

    pub async fn list_ua_rules(&self, source: Option<&str>) -> Result<Vec<UaRule>, ClientError> {
        match source {
            Some(s) => self.get(&format!("/v1/ua?source={}", encode(s))).await,
            None => self.get("/v1/ua").await,
        }
    }

    pub async fn import_ua_rules(
        &self,
        req: &crate::api::ImportUaRules,
    ) -> Result<crate::api::ImportUaReply, ClientError> {
        self.post("/v1/ua/import", req).await
    }

    pub async fn add_ua_rules(&self, req: &AddUaRules) -> Result<Vec<UaRule>, ClientError> {
        self.post("/v1/ua", req).await
    }

    pub async fn remove_ua_rules(&self, req: &RemoveUaRules) -> Result<RemoveUaReply, ClientError> {
        self.post("/v1/ua/remove", req).await
    }

    pub async fn visitors(
        &self,
        active: bool,
        limit: usize,
    ) -> Result<Vec<VisitorView>, ClientError> {
        self.get(&format!("/v1/visitors?active={active}&limit={limit}"))
            .await
    }

    pub async fn remove_allows(
        &self,
        req: &RemoveAllows,
    ) -> Result<RemoveAllowsReply, ClientError> {
        self.post("/v1/allow/remove", req).await
    }
}

/// Percent-encodes a query value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
