//! ssehub: a Server-Sent Events fan-out hub. Publishers POST events; subscribers read them in
//! order over `text/event-stream`, resume with `Last-Event-ID`, and slow ones are evicted.

pub mod auth;
pub mod broker;
pub mod config;
pub mod connection;
pub mod error;
pub mod health;
pub mod http;
pub mod hub;
pub mod limits;
pub mod metrics;
pub mod names;
pub mod rewind;
pub mod server;
pub mod sse;
pub mod stream_connection;
pub mod tls;

pub use config::Config;
