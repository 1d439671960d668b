//! End-to-end tests on one machine: the engine on real clips and models, the `deepemotion`
//! command, the local server over HTTP, and the worker over SQLite and files with the real
//! engine. One test binary rather than one per file: each binary links the whole engine.

#[path = "../common/mod.rs"]
mod common;

mod accuracy;
mod cli;
mod floods;
mod media;
mod people;
mod serve;
mod server;
mod webhooks;
mod worker;
