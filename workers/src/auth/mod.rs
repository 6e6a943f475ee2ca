//! Who a connection is and what it may do: connection tokens (JWT) verified in the
//! worker at the upgrade, the claims they carry, where the token is found in the request,
//! per-room permissions for anonymous, authenticated and granted users, and the expiry
//! of a token on an open connection.
//!
//! Self-contained: nothing here does I/O except loading a key at start
//! ([`token::load_secret`], [`token::read_file`]); the handshake and the session call in.
//!
//! - `token`: [`token::Verifier`] (HS256 / RS256 / ES256, built from a [`token::KeySpec`])
//!   and [`token::TokenError`].
//! - `claims`: [`claims::Claims`], [`claims::Grant`], [`claims::Identity`].
//! - `source`: [`source::AuthMode`], [`source::Auth::identify`] and finding the token in
//!   the upgrade request.
//! - `permissions`: [`permissions::PermissionRules::allowed`].
//! - `expiry`: the warn → grace → close state machine for an open connection.
//! - `settings`: [`settings::AuthSettings`], what the master sends a worker.
//! - `capability`, `pattern`: the capability set and the room-pattern syntax they share.

pub mod capability;
pub mod claims;
pub mod expiry;
pub mod pattern;
pub mod permissions;
pub mod settings;
pub mod source;
pub mod token;
