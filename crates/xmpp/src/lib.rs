//! XMPP, sans-IO: the client stream machine (RFC 6120), and the IM and
//! presence logic (RFC 6121) with the XEPs every client expects.

pub mod c2s;
#[doc(hidden)]
pub mod fuzzing;
pub mod hub;
pub mod ns;
pub mod s2s;
