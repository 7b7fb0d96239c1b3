//! VRRP advert codec (being written).
