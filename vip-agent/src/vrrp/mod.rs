//! VRRP (RFC 9568 v3, RFC 3768 v2 for keepalived peers): the advert codec
//! (`packet`), the per-instance sans-IO state machine (`machine`), sync
//! groups (`sync`), sockets (`transport`) and the shell (`instance`).

pub mod instance;
pub mod machine;
pub mod packet;
pub mod sync;
pub mod transport;
