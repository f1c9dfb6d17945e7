//! The control API of the LSP and client daemons: JSON-RPC 2.0 over HTTP on loopback, with
//! cookie-file authentication as Bitcoin Core does it.
//!
//! # Transport
//!
//! The daemon listens on a loopback address only (`127.0.0.1` or `::1`; [`serve`] refuses any
//! other) and answers `POST` requests to any path, e.g. `http://127.0.0.1:<port>/`. Other HTTP
//! methods get `405 Method Not Allowed`.
//!
//! # Authentication
//!
//! At start the daemon writes a fresh random cookie, `__cookie__:<64 hex digits>`, to
//! [`COOKIE_FILE`] (`api.cookie`) in its data directory, readable by its owner only (mode
//! `0600`), and removes it when it stops. Every request carries it as HTTP Basic
//! authentication: `Authorization: Basic base64("__cookie__:<hex>")`. A request without it, or
//! with another, gets `401 Unauthorized` with `WWW-Authenticate: Basic realm="jsonrpc"` (a wrong
//! one after 250 ms); nothing of its body is read. Whoever can read the cookie file controls the
//! daemon.
//!
//! # Requests and responses
//!
//! A body is one JSON-RPC 2.0 request object or a batch (an array) of at most
//! [`MAX_BATCH`] of them:
//!
//! ```json
//! {"jsonrpc": "2.0", "id": 1, "method": "echo", "params": {"x": 1}}
//! ```
//!
//! `jsonrpc` must be `"2.0"`; `id` is a number, a string or `null`; `params` is an object (named
//! parameters) or an array (positional ones), and an absent or `null` `params` is an empty
//! object. A request without `id` is a notification: it runs, but gets no response. Responses
//! are `{"jsonrpc": "2.0", "result": ..., "id": ...}` or
//! `{"jsonrpc": "2.0", "error": {"code": ..., "message": ..., "data": ...}, "id": ...}` (`data`
//! only when there is some), with HTTP status 200 and `Content-Type: application/json`; a batch is
//! answered by an array in the batch's order. A body made of notifications only gets
//! `204 No Content`.
//!
//! # Error codes
//!
//! | code | meaning |
//! |---|---|
//! | -32700 | [`PARSE_ERROR`]: the body is not JSON |
//! | -32600 | [`INVALID_REQUEST`]: not a JSON-RPC 2.0 request object, or a batch that is empty or too large |
//! | -32601 | [`METHOD_NOT_FOUND`]: the daemon has no such method |
//! | -32602 | [`INVALID_PARAMS`]: the method's parameters are wrong |
//! | -32603 | [`INTERNAL_ERROR`]: the daemon failed, is shutting down, or did not answer in time |
//! | -1 to -31999 | application errors: each daemon documents its own, from -1 down |
//!
//! Codes from -32000 to -32768 are reserved by JSON-RPC 2.0; [`ApiError::app`] is for the
//! daemons' own codes.
//!
//! # Limits
//!
//! Bodies up to [`MAX_BODY_SIZE`] (1 MiB; larger get `413 Payload Too Large`), batches of at most
//! [`MAX_BATCH`] requests, [`MAX_CONNECTIONS`] connections at once, and
//! [`REQUEST_TIMEOUT`] (300 s) for the daemon to answer a request (then -32603 "timed out").
//! [`ApiClient`] waits [`CLIENT_TIMEOUT`] (310 s) for an answer.
//!
//! # Use
//!
//! A daemon is an actor: [`serve`] hands it a channel of [`Request`]s, which it answers in order
//! with [`Request::reply`]. A command-line tool calls it with the blocking [`ApiClient`].
//!
//! ```no_run
//! # async fn daemon(datadir: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
//! use superscalar_api::{serve, ApiError, COOKIE_FILE};
//!
//! let (server, mut requests) = serve("127.0.0.1:0".parse()?, &datadir.join(COOKIE_FILE)).await?;
//! // The actor answers in order; its loop ends once the server stopped and its connections closed.
//! let actor = tokio::spawn(async move {
//!     while let Some(request) = requests.recv().await {
//!         let answer = match request.method.as_str() {
//!             "echo" => Ok(request.params.clone()),
//!             other => Err(ApiError::method_not_found(other)),
//!         };
//!         request.reply(answer);
//!     }
//! });
//! // ... and when the daemon stops:
//! server.shutdown().await;
//! actor.await?;
//! # Ok(())
//! # }
//! ```

#![deny(missing_docs)]

mod client;
mod error;
mod events;
mod server;

pub use client::{ApiClient, ApiClientError, CLIENT_TIMEOUT};
pub use error::{
    ApiError, INTERNAL_ERROR, INVALID_PARAMS, INVALID_REQUEST, METHOD_NOT_FOUND, PARSE_ERROR,
};
pub use events::EventLog;
pub use server::{
    serve, ApiServer, ApiServerError, Request, MAX_BATCH, MAX_BODY_SIZE, MAX_CONNECTIONS,
    QUEUE_CAPACITY, REQUEST_TIMEOUT,
};

/// The cookie file's name in a daemon's data directory.
pub const COOKIE_FILE: &str = "api.cookie";
