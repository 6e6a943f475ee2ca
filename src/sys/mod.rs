//! What the master and `wsfleet bench` both ask of the host: process figures from /proc
//! ([`procfs`]) and the open-file limit ([`nofile`]).

pub mod nofile;
pub mod procfs;
