//! The service map's capacity across a reload: a plan that replaces every
//! service with as many new ones (16, the most a node takes) fits, because
//! apply removes the services that go before it adds the ones that come;
//! the other way round the map would need room for both sets at once.

use vip_agent::store::MapStore as _;
use vip_common::{MAX_SERVICES, Proto};
use vip_tests::{
    kit,
    xdp::{BACKENDS, VIP, with_fixture},
};

#[test]
fn a_reload_may_replace_every_service_with_as_many_new_ones() {
    with_fixture(|fx| {
        let before = fx.dp.services().expect("services").len();
        assert!(before > 0);
        let lan: Vec<String> = BACKENDS.iter().map(|(a, _)| a.to_string()).collect();
        let backends: Vec<(&str, u32)> = lan.iter().map(|a| (a.as_str(), 1)).collect();
        fx.config.services = (0..u16::try_from(MAX_SERVICES).unwrap())
            .map(|i| kit::config::service(VIP, 7000 + i, &backends))
            .collect();
        fx.provision();
        let live = fx.dp.services().expect("services");
        assert_eq!(live.len(), MAX_SERVICES as usize);
        for (key, _) in live.values() {
            let port = u16::from_be(key.port);
            assert!(
                (7000..7016).contains(&port),
                "an old service is left: {port}"
            );
            assert_eq!(key.proto, Proto::Tcp as u8);
        }
    });
}
