//! VRRP state machine (being written).
