//! VRRP (RFC 9568 v3, RFC 3768 v2 for keepalived peers): the advert codec
//! (`packet`) and the per-instance sans-IO state machine (`machine`).

pub mod instance;
pub mod machine;
pub mod packet;
pub mod transport;
